"""Monitoring: the Prometheus and Alertmanager host of the management tier, and CloudWatch alarms on
the app's security events.

The host (mon-1 in the lab) is a hardened EC2 host (infra.common.hardened_instances) in the management
tier's private subnets, in the topology's `mon` security group, so it reaches only what
infra/topology.py lets it scrape and probe. Ansible (playbooks/) configures Debian's prometheus,
prometheus-alertmanager and prometheus-blackbox-exporter on it as in the lab; Alertmanager delivers to
the stack's alarm topic. Its instance role may publish to that topic and nothing else, and may use the
topic's key only through SNS.

The app's audit records (app_stub/audit.py: one JSON line per record, with `action` and `outcome`) reach
CloudWatch Logs through the CloudWatch agent on the app hosts (installed and configured by SSM), into a
log group encrypted with the logs key and kept at least 365 days. A metric filter per security event
(failed sign-ins, lockouts, failed step-ups, detokenizations, role grants, a broken audit chain) feeds
an alarm that notifies the topic; each alarm's description names its controls, its PCI DSS
requirements and the runbook (MON-01).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from infra import topology
from infra.common import (
    PATCH_GROUP_TAG,
    HostArgs,
    hardened_instances,
    policy_json,
    statement,
    tags,
    write_logs_statement,
)

METRIC_NAMESPACE = "billkit/app-security"
# Where the billing_app role writes the app's audit JSON lines for the CloudWatch agent to read.
APP_AUDIT_LOG_FILE = "/var/log/billing-app/audit.jsonl"
AGENT_PACKAGE = "AmazonCloudWatchAgent"
INSTALL_PACKAGE_DOCUMENT = "AWS-ConfigureAWSPackage"
MANAGE_AGENT_DOCUMENT = "AmazonCloudWatch-ManageAgent"
MIN_LOG_RETENTION_DAYS = 365


@dataclass(frozen=True)
class AppAlarm:
    """One security event of the app: the metric filter that counts it and the alarm on the count."""

    name: str
    pattern: str
    # The alarm fires when this many events happen within one period.
    threshold: int
    severity: str  # critical | warning | info, as the lab's alert rules
    controls: tuple[str, ...]
    pci: tuple[str, ...]
    summary: str
    runbook: str


def _audit(condition: str) -> str:
    """A JSON filter pattern on the app's audit records (type "audit") that also meet the condition."""
    return f'{{ ($.type = "audit") && {condition} }}'


def _any_action(*actions: str) -> str:
    return "(" + " || ".join(f'($.action = "{a}")' for a in actions) + ")"


# Actions and outcomes as app_stub/audit.py records them (app_stub/metrics.py counts the same events).
APP_ALARMS: tuple[AppAlarm, ...] = (
    AppAlarm(
        "app-failed-sign-ins",
        _audit(f'{_any_action("auth.login", "auth.mfa", "auth.password_change")} && ($.outcome != "ok")'),
        10, "warning", ("MON-01", "HRD-03", "MFA-01"), ("10.4.1", "8.3.4"),
        "staff passwords or MFA codes refused 10 times in 5 minutes: someone is guessing",
        "Find the accounts and source addresses in the app's audit log group; block the source at the WAF.",
    ),
    AppAlarm(
        "app-lockouts",
        _audit('($.action = "auth.lockout")'),
        1, "warning", ("MON-01", "HRD-03"), ("10.4.1", "8.3.4"),
        "a staff account was locked after repeated failed sign-ins",
        "Ask the account's owner whether the attempts were theirs; if not, reset the password and MFA.",
    ),
    AppAlarm(
        "app-step-up-failures",
        _audit('($.action = "auth.step_up") && ($.outcome != "ok")'),
        3, "critical", ("MON-01", "MFA-04"), ("10.4.1", "8.4.2"),
        "step-up MFA refused 3 times in 5 minutes before a detokenization or a role grant",
        "Suspend the staff account in the audit records and review its session with its owner.",
    ),
    AppAlarm(
        "app-detokenizations",
        _audit('($.action = "card.detokenize") && ($.outcome = "ok")'),
        1, "info", ("MON-01", "TOK-03"), ("10.4.1", "3.4.1"),
        "a card number was revealed (detokenized)",
        "Check that the revealing staff account had a business reason (a refund, a dispute) for that card.",
    ),
    AppAlarm(
        "app-role-grants",
        _audit(f'{_any_action("role.grant", "role.approve")} && ($.outcome = "ok")'),
        1, "warning", ("MON-01", "RBAC-02"), ("10.4.1", "7.2.3", "10.2.1.5"),
        "a staff role was granted",
        "Confirm the grant against its approved access request; revoke it if there is none.",
    ),
    AppAlarm(
        "app-audit-chain-broken",
        '{ $.type = "audit.alarm" }',
        1, "critical", ("MON-01", "LOG-08"), ("10.4.1", "10.3.2"),
        "the app's audit chain lost records it had signed: records were removed or altered",
        "Run billkit's audit verification, keep the database and its backups as evidence, start incident response.",
    ),
)  # fmt: skip


def alarm_description(alarm: AppAlarm) -> str:
    """What the operator reads in the notification: the event, its controls, requirements and runbook."""
    return (
        f"billkit app security alarm ({alarm.severity}): {alarm.summary}. "
        f"Controls: {', '.join(alarm.controls)}. PCI DSS: {', '.join(alarm.pci)}. Runbook: {alarm.runbook}"
    )


def agent_config(log_file: str, log_group_name: str) -> str:
    """The CloudWatch agent's configuration: ship one file's lines to one log group, and nothing else.

    No metrics section, so the agent needs no cloudwatch:PutMetricData; no retention, so it never
    changes the group's (the program sets it).
    """
    collect = {"file_path": log_file, "log_group_name": log_group_name, "log_stream_name": "{instance_id}"}
    return json.dumps({"logs": {"logs_collected": {"files": {"collect_list": [collect]}}, "force_flush_interval": 5}})


def service_url(address: str, port: int) -> str:
    return f"https://{address}:{port}"


@dataclass(kw_only=True)
class MonitoringArgs(HostArgs):
    """The hosts' part (HostArgs): the management tier's subnets and the topology's `mon` security group."""

    region: str
    logs_key_arn: pulumi.Input[str]
    # The stack's alarm topic (infra/audit.py) and the KMS key that encrypts it.
    alarm_topic_arn: pulumi.Input[str]
    alarm_key_arn: pulumi.Input[str]
    role_name: pulumi.Input[str]
    # The app hosts: their role writes the audit log group; their patch group targets the agent.
    app_role_name: pulumi.Input[str]
    app_patch_group: str
    base_tags: dict[str, str] = field(default_factory=dict)
    instance_count: int = 1
    # Prometheus keeps its time series on the root volume.
    root_volume_gb: int = 50
    log_retention_days: int = 365
    app_audit_log_file: str = APP_AUDIT_LOG_FILE
    alarms: tuple[AppAlarm, ...] = APP_ALARMS
    alarm_period_seconds: int = 300


class Monitoring(pulumi.ComponentResource):
    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        # Checked before anything is registered: a bad argument leaves nothing half-built.
        if args.instance_count < 1:
            raise ValueError(f"monitoring needs at least one host (got instance_count={args.instance_count})")
        if args.log_retention_days < MIN_LOG_RETENTION_DAYS:
            days = args.log_retention_days
            raise ValueError(f"log_retention_days is {days}; PCI DSS 10.5.1 needs {MIN_LOG_RETENTION_DAYS} or more")
        super().__init__("billkit:monitoring:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        t = tags(args.base_tags, billkit_component="monitoring", billkit_role="mon")

        self.instances = hardened_instances(name, args, args.instance_count, t, child)
        # MON-01: Alertmanager publishes to the alarm topic only; the topic's key only through SNS.
        self.publish_policy = aws.iam.RolePolicy(
            f"{name}-publish",
            role=args.role_name,
            policy=policy_json(
                statement("PublishAlerts", ["sns:Publish"], [args.alarm_topic_arn]),
                statement(
                    "EncryptAlerts",
                    ["kms:GenerateDataKey*", "kms:Decrypt"],
                    [args.alarm_key_arn],
                    condition={"StringEquals": {"kms:ViaService": f"sns.{args.region}.amazonaws.com"}},
                ),
            ),
            opts=child,
        )

        # LOG-04, EAR-06: the app's audit records, encrypted and kept at least a year.
        self.app_log_group = aws.cloudwatch.LogGroup(
            f"{name}-app-audit",
            name=f"/billkit/{name}/app-audit",
            retention_in_days=args.log_retention_days,
            kms_key_id=args.logs_key_arn,
            tags=t,
            opts=child,
        )
        self.app_log_policy = aws.iam.RolePolicy(
            f"{name}-app-audit-write",
            role=args.app_role_name,
            policy=policy_json(write_logs_statement("ShipAuditRecords", self.app_log_group.arn)),
            opts=child,
        )
        config_name = f"AmazonCloudWatch-{name}-app"
        self.agent_config = aws.ssm.Parameter(
            f"{name}-app-agent-config",
            name=config_name,
            type="String",
            tier="Standard",
            description="CloudWatch agent: the app's audit records to their log group",
            # Not a secret: kept readable, so a change to what is shipped shows in the preview's diff.
            insecure_value=agent_config(args.app_audit_log_file, f"/billkit/{name}/app-audit"),
            tags=t,
            opts=child,
        )
        app_hosts = [aws.ssm.AssociationTargetArgs(key=f"tag:{PATCH_GROUP_TAG}", values=[args.app_patch_group])]
        self.agent_install = aws.ssm.Association(
            f"{name}-app-agent-install",
            name=INSTALL_PACKAGE_DOCUMENT,
            association_name=f"{name}-app-agent-install",
            parameters={"action": "Install", "name": AGENT_PACKAGE},
            targets=app_hosts,
            schedule_expression="rate(7 days)",
            tags=t,
            opts=child,
        )
        self.agent_configure = aws.ssm.Association(
            f"{name}-app-agent-configure",
            name=MANAGE_AGENT_DOCUMENT,
            association_name=f"{name}-app-agent-configure",
            parameters={
                "action": "configure",
                "mode": "ec2",
                "optionalConfigurationSource": "ssm",
                "optionalConfigurationLocation": config_name,
                "optionalRestart": "yes",
            },
            targets=app_hosts,
            # Daily: a host that started before the agent was installed is configured the next day at the latest.
            schedule_expression="rate(1 day)",
            tags=t,
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[self.agent_config, self.agent_install])
            ),
        )

        # MON-01: one metric filter and one alarm per security event of the app.
        self.filters: list[aws.cloudwatch.LogMetricFilter] = []
        self.alarms: list[aws.cloudwatch.MetricAlarm] = []
        for alarm in args.alarms:
            self.filters.append(
                aws.cloudwatch.LogMetricFilter(
                    f"{name}-{alarm.name}",
                    log_group_name=self.app_log_group.name,
                    pattern=alarm.pattern,
                    metric_transformation=aws.cloudwatch.LogMetricFilterMetricTransformationArgs(
                        name=alarm.name, namespace=METRIC_NAMESPACE, value="1"
                    ),
                    opts=child,
                )
            )
            self.alarms.append(
                aws.cloudwatch.MetricAlarm(
                    f"{name}-{alarm.name}-alarm",
                    name=f"{name}-{alarm.name}",
                    alarm_description=alarm_description(alarm),
                    namespace=METRIC_NAMESPACE,
                    metric_name=alarm.name,
                    statistic="Sum",
                    period=args.alarm_period_seconds,
                    evaluation_periods=1,
                    threshold=alarm.threshold,
                    comparison_operator="GreaterThanOrEqualToThreshold",
                    treat_missing_data="notBreaching",
                    actions_enabled=True,
                    alarm_actions=[args.alarm_topic_arn],
                    tags=tags(t, billkit_controls=" ".join(alarm.controls), billkit_severity=alarm.severity),
                    opts=child,
                )
            )

        self.prometheus_urls = [
            n.private_ip.apply(lambda ip: service_url(ip, topology.PROMETHEUS)) for n in self.instances
        ]
        self.alertmanager_urls = [
            n.private_ip.apply(lambda ip: service_url(ip, topology.ALERTMANAGER)) for n in self.instances
        ]
        self.register_outputs(
            {
                "instance_ids": [n.id for n in self.instances],
                "private_ips": [n.private_ip for n in self.instances],
                "prometheus_urls": self.prometheus_urls,
                "alertmanager_urls": self.alertmanager_urls,
                "app_audit_log_group": self.app_log_group.name,
            }
        )
