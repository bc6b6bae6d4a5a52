"""Edge: the internet-facing HTTPS load balancer and its WAFv2 web ACL.

HTTPS only with a modern TLS policy; port 80 answers only with a redirect to HTTPS; invalid
headers are dropped; access logs go to an encrypted, private, TLS-only bucket. The web ACL
runs AWS's managed rule groups and a rate limit on the login path, and logs requests with
the authorization and cookie headers redacted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from infra import topology
from infra.buckets import SecureBucket, SecureBucketArgs
from infra.common import tags

MODERN_TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-Res-2021-06"
MANAGED_RULE_GROUPS = (
    "AWSManagedRulesCommonRuleSet",
    "AWSManagedRulesKnownBadInputsRuleSet",
    "AWSManagedRulesSQLiRuleSet",
    "AWSManagedRulesAmazonIpReputationList",
)
REDACTED_HEADERS = ("authorization", "cookie")

W = aws.wafv2  # the WAF argument classes have long names


@dataclass
class EdgeArgs:
    vpc_id: pulumi.Input[str]
    subnet_ids: list[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    certificate_arn: pulumi.Input[str]
    logs_key_arn: pulumi.Input[str]
    account_id: pulumi.Input[str]
    base_tags: dict[str, str] = field(default_factory=dict)
    tls_policy: str = MODERN_TLS_POLICY
    login_path: str = "/login"
    # Requests per client IP per 5 minutes on the login path (NET-07).
    login_rate_limit: int = 100
    log_retention_days: int = 365
    deletion_protection: bool = True


def _visibility(metric: str) -> W.WebAclRuleVisibilityConfigArgs:
    return W.WebAclRuleVisibilityConfigArgs(
        cloudwatch_metrics_enabled=True, metric_name=metric, sampled_requests_enabled=True
    )


class Edge(pulumi.ComponentResource):
    def __init__(self, name: str, args: EdgeArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("billkit:edge:Edge", name, None, opts)
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        t = tags(args.base_tags, billkit_component="edge", billkit_role="waf")

        # ELB access-log delivery supports only SSE-S3 (AES256), not a customer key: the one waiver
        # of EAR-06, declared to the policy pack by the bucket's name (see policies/rules/s3.py).
        self.log_bucket = SecureBucket(
            f"{name}-alb-logs",
            SecureBucketArgs(
                base_tags=t,
                kms_key_arn=None,
                expire_after_days=args.log_retention_days,
                writers=[{"Service": "logdelivery.elasticloadbalancing.amazonaws.com"}],
                writer_prefix="alb/",
                account_id=args.account_id,
            ),
            opts=child,
        )
        self.load_balancer = aws.lb.LoadBalancer(
            f"{name}-alb",
            internal=False,
            load_balancer_type="application",
            subnets=args.subnet_ids,
            security_groups=[args.security_group_id],
            drop_invalid_header_fields=True,
            desync_mitigation_mode="strictest",
            enable_deletion_protection=args.deletion_protection,
            access_logs=aws.lb.LoadBalancerAccessLogsArgs(
                bucket=self.log_bucket.bucket.bucket, prefix="alb", enabled=True
            ),
            tags=t,
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[self.log_bucket])),
        )
        # WAF to app over TLS (ENC-01): the app listens with a certificate from the internal PKI.
        self.target_group = aws.lb.TargetGroup(
            f"{name}-app-tg",
            vpc_id=args.vpc_id,
            port=topology.APP_PORT,
            protocol="HTTPS",
            target_type="instance",
            health_check=aws.lb.TargetGroupHealthCheckArgs(
                protocol="HTTPS", path="/healthz", port=str(topology.APP_PORT), matcher="200"
            ),
            tags=t,
            opts=child,
        )
        self.https = aws.lb.Listener(
            f"{name}-https",
            load_balancer_arn=self.load_balancer.arn,
            port=topology.HTTPS,
            protocol="HTTPS",
            ssl_policy=args.tls_policy,
            certificate_arn=args.certificate_arn,
            default_actions=[aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=self.target_group.arn)],
            tags=t,
            opts=child,
        )
        # ENC-04: port 80 exists only to redirect to HTTPS.
        self.http = aws.lb.Listener(
            f"{name}-http-redirect",
            load_balancer_arn=self.load_balancer.arn,
            port=topology.HTTP,
            protocol="HTTP",
            default_actions=[
                aws.lb.ListenerDefaultActionArgs(
                    type="redirect",
                    redirect=aws.lb.ListenerDefaultActionRedirectArgs(
                        protocol="HTTPS", port=str(topology.HTTPS), status_code="HTTP_301"
                    ),
                )
            ],
            tags=t,
            opts=child,
        )

        rules = [
            W.WebAclRuleArgs(
                name=group,
                priority=10 + i,
                override_action=W.WebAclRuleOverrideActionArgs(none=W.WebAclRuleOverrideActionNoneArgs()),
                statement=W.WebAclRuleStatementArgs(
                    managed_rule_group_statement=W.WebAclRuleStatementManagedRuleGroupStatementArgs(
                        name=group, vendor_name="AWS"
                    )
                ),
                visibility_config=_visibility(group),
            )
            for i, group in enumerate(MANAGED_RULE_GROUPS)
        ]
        rules.insert(
            0,
            W.WebAclRuleArgs(
                name="login-rate-limit",
                priority=1,
                action=W.WebAclRuleActionArgs(block=W.WebAclRuleActionBlockArgs()),
                statement=W.WebAclRuleStatementArgs(
                    rate_based_statement=W.WebAclRuleStatementRateBasedStatementArgs(
                        aggregate_key_type="IP",
                        limit=args.login_rate_limit,
                        evaluation_window_sec=300,
                        scope_down_statement=W.WebAclRuleStatementRateBasedStatementScopeDownStatementArgs(
                            byte_match_statement=W.WebAclRuleStatementRateBasedStatementScopeDownStatementByteMatchStatementArgs(
                                positional_constraint="STARTS_WITH",
                                search_string=args.login_path,
                                field_to_match=W.WebAclRuleStatementRateBasedStatementScopeDownStatementByteMatchStatementFieldToMatchArgs(
                                    uri_path=W.WebAclRuleStatementRateBasedStatementScopeDownStatementByteMatchStatementFieldToMatchUriPathArgs()
                                ),
                                text_transformations=[
                                    W.WebAclRuleStatementRateBasedStatementScopeDownStatementByteMatchStatementTextTransformationArgs(
                                        priority=0, type="LOWERCASE"
                                    )
                                ],
                            )
                        ),
                    )
                ),
                visibility_config=_visibility("login-rate-limit"),
            ),
        )  # fmt: skip
        self.web_acl = W.WebAcl(
            f"{name}-waf",
            scope="REGIONAL",
            description="billkit edge: AWS managed rules and a login rate limit",
            default_action=W.WebAclDefaultActionArgs(allow=W.WebAclDefaultActionAllowArgs()),
            rules=rules,
            visibility_config=W.WebAclVisibilityConfigArgs(
                cloudwatch_metrics_enabled=True, metric_name=f"{name}-waf", sampled_requests_enabled=True
            ),
            tags=t,
            opts=child,
        )
        self.association = W.WebAclAssociation(
            f"{name}-waf-alb", resource_arn=self.load_balancer.arn, web_acl_arn=self.web_acl.arn, opts=child
        )
        # LOG-13: WAF logs (name must start with aws-waf-logs-), encrypted, credentials redacted.
        self.waf_log_group = aws.cloudwatch.LogGroup(
            f"{name}-waf-logs",
            name=f"aws-waf-logs-{name}",
            retention_in_days=args.log_retention_days,
            kms_key_id=args.logs_key_arn,
            tags=t,
            opts=child,
        )
        self.waf_logging = W.WebAclLoggingConfiguration(
            f"{name}-waf-logging",
            resource_arn=self.web_acl.arn,
            log_destination_configs=[self.waf_log_group.arn],
            redacted_fields=[
                W.WebAclLoggingConfigurationRedactedFieldArgs(
                    single_header=W.WebAclLoggingConfigurationRedactedFieldSingleHeaderArgs(name=h)
                )
                for h in REDACTED_HEADERS
            ],
            opts=child,
        )
        self.register_outputs(
            {
                "dns_name": self.load_balancer.dns_name,
                "web_acl_arn": self.web_acl.arn,
                "target_group_arn": self.target_group.arn,
            }
        )
