"""CloudWatch Logs, alarms and the SNS topic they notify."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

from policies.rules._base import items, number, resource_policy

LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
TOPIC = "aws:sns/topic:Topic"
MIN_RETENTION_DAYS = 365


@resource_policy(
    "aws-cloudwatch-loggroup-enable-kms-encryption",
    description="Log groups are encrypted with the customer-managed logs key.",
    resource_types=[LOG_GROUP],
    controls=["EAR-06"],
    pci=["3.5.1", "10.3.2"],
    severity=Severity.HIGH,
    remediation="Set kms_key_id to the logs key.",
)
def log_group_kms(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if not props.get("kmsKeyId"):
        yield "the log group is not encrypted with a customer-managed key"


@resource_policy(
    "aws-cloudwatch-loggroup-configure-retention",
    description=f"Log groups keep events at least {MIN_RETENTION_DAYS} days.",
    resource_types=[LOG_GROUP],
    controls=["LOG-04"],
    pci=["10.5.1"],
    severity=Severity.HIGH,
    remediation=f"Set retention_in_days ≥ {MIN_RETENTION_DAYS} (e.g. 400).",
)
def log_group_retention(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    days = number(props.get("retentionInDays"))
    if 0 < days < MIN_RETENTION_DAYS:
        yield f"events are kept {days:.0f} days; keep at least {MIN_RETENTION_DAYS}"
    elif days == 0:
        yield "no retention is set: declare it (≥ 365 days) so it is reviewed"


ALARM_ACTION_KINDS = ("alarmActions", "okActions", "insufficientDataActions")


@resource_policy(
    "aws-cloudwatch-metricalarm-configure-notification",
    description="Every alarm notifies people: actions enabled, at least one alarm action, and every action an SNS "
    "topic (an alarm that only stops an instance or scales a group tells nobody).",
    resource_types=[ALARM],
    controls=["LOG-02", "MON-01"],
    pci=["10.4.1", "10.4.1.1"],
    severity=Severity.MEDIUM,
    remediation="Set actions_enabled=True and alarm_actions to the security topic's ARN.",
)
def alarm_actions(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if props.get("actionsEnabled") is False or not items(props.get("alarmActions")):
        yield "the alarm notifies nobody"
    for kind in ALARM_ACTION_KINDS:
        for action in items(props.get(kind)):
            if not is_topic(action):
                yield f"{kind} {action} is not an SNS topic: nobody is told"


def is_topic(arn: Any) -> bool:
    """An SNS topic's ARN, in any partition (arn:aws:sns:…, arn:aws-us-gov:sns:…)."""
    parts = str(arn).split(":")
    return len(parts) >= 6 and parts[0] == "arn" and parts[1].startswith("aws") and parts[2] == "sns"


@resource_policy(
    "aws-sns-topic-enable-kms-encryption",
    description="Notification topics are encrypted with a customer-managed key.",
    resource_types=[TOPIC],
    controls=["EAR-06"],
    pci=["3.5.1"],
    severity=Severity.MEDIUM,
    remediation="Set kms_master_key_id to a customer-managed key (not alias/aws/sns).",
)
def topic_kms(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    key = props.get("kmsMasterKeyId")
    if not key:
        yield "the topic is not encrypted"
    elif str(key).endswith("alias/aws/sns"):
        yield "the topic uses the AWS-managed SNS key"
