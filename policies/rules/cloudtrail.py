"""CloudTrail: one multi-region trail, validated, encrypted, feeding the security alarms."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

from policies.rules._base import resource_policy

TRAIL = "aws:cloudtrail/trail:Trail"


@resource_policy(
    "aws-cloudtrail-trail-enable-multi-region",
    description="The trail records every region and global service events.",
    resource_types=[TRAIL],
    controls=["LOG-01"],
    pci=["10.2.1"],
    severity=Severity.HIGH,
    remediation="Set is_multi_region_trail=True and include_global_service_events=True.",
)
def trail_multi_region(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if props.get("isMultiRegionTrail") is not True:
        yield "the trail records only its own region"
    if props.get("includeGlobalServiceEvents") is False:
        yield "global service events (IAM, STS) are not recorded"


@resource_policy(
    "aws-cloudtrail-trail-enable-log-file-validation",
    description="Log-file integrity validation is on (tampering is detectable).",
    resource_types=[TRAIL],
    controls=["LOG-01"],
    pci=["10.3.2", "10.3.4"],
    severity=Severity.HIGH,
    remediation="Set enable_log_file_validation=True.",
)
def trail_validation(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if props.get("enableLogFileValidation") is not True:
        yield "log-file validation is off"


@resource_policy(
    "aws-cloudtrail-trail-enable-kms-encryption",
    description="Trail log files are encrypted with the customer-managed audit key.",
    resource_types=[TRAIL],
    controls=["EAR-06"],
    pci=["3.5.1", "10.3.2"],
    severity=Severity.HIGH,
    remediation="Set kms_key_id to the audit key.",
)
def trail_kms(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if not props.get("kmsKeyId"):
        yield "trail logs are not encrypted with a customer-managed key"


@resource_policy(
    "aws-cloudtrail-trail-enable-cloudwatch-delivery",
    description="The trail also delivers to CloudWatch Logs, where metric filters raise security alarms.",
    resource_types=[TRAIL],
    controls=["LOG-02"],
    pci=["10.4.1", "10.4.1.1"],
    severity=Severity.HIGH,
    remediation="Set cloud_watch_logs_group_arn and cloud_watch_logs_role_arn.",
)
def trail_cloudwatch(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if not props.get("cloudWatchLogsGroupArn") or not props.get("cloudWatchLogsRoleArn"):
        yield "the trail does not deliver to CloudWatch Logs: no alarm can fire"
    if props.get("enableLogging") is False:
        yield "logging is stopped"
