"""Audit and alerting: CloudTrail, security alarms, GuardDuty and Security Hub.

A multi-region trail with log-file validation writes, encrypted with the audit key, to an
Object-Lock (compliance mode) bucket and to a CloudWatch log group. Metric filters on that
group raise alarms (root use, unauthorised calls, console login without MFA, IAM policy,
KMS key, security-group, NACL and network changes) to an encrypted SNS topic. GuardDuty
detects threats; Security Hub runs the PCI DSS standard continuously.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.buckets import SecureBucket, SecureBucketArgs
from infra.common import policy_json, statement, tags

METRIC_NAMESPACE = "billkit/security"
# LOG-02: the CIS AWS Foundations patterns, one alarm each.
SECURITY_ALARMS: dict[str, str] = {
    "root-use": '{ $.userIdentity.type = "Root" && $.userIdentity.invokedBy NOT EXISTS '
    '&& $.eventType != "AwsServiceEvent" }',
    "unauthorized-api-calls": '{ ($.errorCode = "*UnauthorizedOperation") || ($.errorCode = "AccessDenied*") }',
    "console-login-without-mfa": '{ ($.eventName = "ConsoleLogin") && ($.additionalEventData.MFAUsed != "Yes") '
    '&& ($.responseElements.ConsoleLogin = "Success") }',
    "iam-policy-changes": "{ ($.eventName = DeleteGroupPolicy) || ($.eventName = DeleteRolePolicy) || "
    "($.eventName = DeleteUserPolicy) || ($.eventName = PutGroupPolicy) || ($.eventName = PutRolePolicy) || "
    "($.eventName = PutUserPolicy) || ($.eventName = CreatePolicy) || ($.eventName = DeletePolicy) || "
    "($.eventName = CreatePolicyVersion) || ($.eventName = DeletePolicyVersion) || "
    "($.eventName = AttachRolePolicy) || ($.eventName = DetachRolePolicy) || ($.eventName = AttachUserPolicy) || "
    "($.eventName = DetachUserPolicy) || ($.eventName = AttachGroupPolicy) || ($.eventName = DetachGroupPolicy) }",
    "kms-key-disable-or-deletion": "{ ($.eventSource = kms.amazonaws.com) && "
    "(($.eventName = DisableKey) || ($.eventName = ScheduleKeyDeletion)) }",
    "security-group-changes": "{ ($.eventName = AuthorizeSecurityGroupIngress) || "
    "($.eventName = AuthorizeSecurityGroupEgress) || ($.eventName = RevokeSecurityGroupIngress) || "
    "($.eventName = RevokeSecurityGroupEgress) || ($.eventName = CreateSecurityGroup) || "
    "($.eventName = DeleteSecurityGroup) }",
    "nacl-changes": "{ ($.eventName = CreateNetworkAcl) || ($.eventName = CreateNetworkAclEntry) || "
    "($.eventName = DeleteNetworkAcl) || ($.eventName = DeleteNetworkAclEntry) || "
    "($.eventName = ReplaceNetworkAclEntry) || ($.eventName = ReplaceNetworkAclAssociation) }",
    "network-changes": "{ ($.eventName = CreateRoute) || ($.eventName = CreateRouteTable) || "
    "($.eventName = ReplaceRoute) || ($.eventName = DeleteRoute) || ($.eventName = CreateVpc) || "
    "($.eventName = DeleteVpc) || ($.eventName = AttachInternetGateway) || ($.eventName = CreateNatGateway) }",
    "cloudtrail-changes": "{ ($.eventName = StopLogging) || ($.eventName = DeleteTrail) || "
    "($.eventName = UpdateTrail) }",
}
PCI_STANDARD = "standards/pci-dss/v/4.0.1"


@dataclass
class AuditArgs:
    account_id: pulumi.Input[str]
    region: str
    audit_key_arn: pulumi.Input[str]
    logs_key_arn: pulumi.Input[str]
    trail_role_arn: pulumi.Input[str]
    trail_role_name: pulumi.Input[str]
    base_tags: dict[str, str] = field(default_factory=dict)
    trail_name: str = "billkit-trail"
    log_retention_days: int = 365
    object_lock_days: int = 365
    alarm_email: str | None = None
    guardduty: bool = True
    security_hub: bool = True


class Audit(pulumi.ComponentResource):
    def __init__(self, name: str, args: AuditArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("billkit:audit:Audit", name, None, opts)
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        t = tags(args.base_tags, billkit_component="audit")
        trail_arn = pulumi.Output.concat(
            "arn:aws:cloudtrail:", args.region, ":", args.account_id, ":trail/", args.trail_name
        )
        source = {"StringEquals": {"aws:SourceArn": trail_arn}}

        def acl_check(bucket_arn: pulumi.Output[str]) -> dict[str, Any]:
            return statement(
                "CloudTrailAclCheck", ["s3:GetBucketAcl"], [bucket_arn],
                principal={"Service": "cloudtrail.amazonaws.com"}, condition=source,
            )  # fmt: skip

        self.bucket = SecureBucket(
            f"{name}-trail",
            SecureBucketArgs(
                account_id=args.account_id,
                base_tags=t,
                kms_key_arn=args.audit_key_arn,
                expire_after_days=max(args.log_retention_days, args.object_lock_days),
                writers=[{"Service": "cloudtrail.amazonaws.com"}],
                writer_conditions={
                    "StringEquals": {"aws:SourceArn": trail_arn, "s3:x-amz-acl": "bucket-owner-full-control"}
                },
                extra_statements=[acl_check],
                object_lock_days=args.object_lock_days,
            ),
            opts=child,
        )  # fmt: skip
        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-trail-logs",
            name=f"/billkit/{name}/cloudtrail",
            retention_in_days=args.log_retention_days,
            kms_key_id=args.logs_key_arn,
            tags=t,
            opts=child,
        )
        self.trail_role_policy = aws.iam.RolePolicy(
            f"{name}-trail-to-logs",
            role=args.trail_role_name,
            policy=policy_json(
                statement(
                    "TrailWritesLogs",
                    ["logs:CreateLogStream", "logs:PutLogEvents"],
                    [pulumi.Output.concat(self.log_group.arn, ":*")],
                )
            ),
            opts=child,
        )
        self.trail = aws.cloudtrail.Trail(
            f"{name}-trail",
            name=args.trail_name,
            s3_bucket_name=self.bucket.bucket.bucket,
            is_multi_region_trail=True,
            include_global_service_events=True,
            enable_log_file_validation=True,
            enable_logging=True,
            kms_key_id=args.audit_key_arn,
            cloud_watch_logs_group_arn=pulumi.Output.concat(self.log_group.arn, ":*"),
            cloud_watch_logs_role_arn=args.trail_role_arn,
            tags=t,
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[self.bucket, self.trail_role_policy])
            ),
        )

        self.topic = aws.sns.Topic(
            f"{name}-alarms", name=f"{name}-security-alarms", kms_master_key_id=args.audit_key_arn, tags=t, opts=child
        )
        if args.alarm_email:
            self.subscription = aws.sns.TopicSubscription(
                f"{name}-alarms-email", topic=self.topic.arn, protocol="email", endpoint=args.alarm_email, opts=child
            )
        self.alarms: list[aws.cloudwatch.MetricAlarm] = []
        for alarm, pattern in SECURITY_ALARMS.items():
            aws.cloudwatch.LogMetricFilter(
                f"{name}-{alarm}",
                log_group_name=self.log_group.name,
                pattern=pattern,
                metric_transformation=aws.cloudwatch.LogMetricFilterMetricTransformationArgs(
                    name=alarm, namespace=METRIC_NAMESPACE, value="1"
                ),
                opts=child,
            )
            self.alarms.append(
                aws.cloudwatch.MetricAlarm(
                    f"{name}-{alarm}-alarm",
                    name=f"{name}-{alarm}",
                    alarm_description=f"billkit security alarm: {alarm.replace('-', ' ')}",
                    namespace=METRIC_NAMESPACE,
                    metric_name=alarm,
                    statistic="Sum",
                    period=300,
                    evaluation_periods=1,
                    threshold=1,
                    comparison_operator="GreaterThanOrEqualToThreshold",
                    treat_missing_data="notBreaching",
                    actions_enabled=True,
                    alarm_actions=[self.topic.arn],
                    tags=t,
                    opts=child,
                )
            )

        if args.guardduty:
            self.detector = aws.guardduty.Detector(
                f"{name}-guardduty", enable=True, finding_publishing_frequency="FIFTEEN_MINUTES", tags=t, opts=child
            )
        if args.security_hub:
            self.security_hub = aws.securityhub.Account(
                f"{name}-securityhub", enable_default_standards=False, auto_enable_controls=True, opts=child
            )
            self.pci_standard = aws.securityhub.StandardsSubscription(
                f"{name}-pci-dss",
                standards_arn=pulumi.Output.concat("arn:aws:securityhub:", args.region, "::", PCI_STANDARD),
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[self.security_hub])),
            )
        self.register_outputs(
            {"trail_arn": self.trail.arn, "trail_bucket": self.bucket.bucket.bucket, "alarm_topic": self.topic.arn}
        )
