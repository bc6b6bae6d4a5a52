"""Threat detection and continuous compliance: GuardDuty, Security Hub."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

from policies.rules._base import resource_policy

DETECTOR = "aws:guardduty/detector:Detector"
STANDARDS = "aws:securityhub/standardsSubscription:StandardsSubscription"


@resource_policy(
    "aws-guardduty-detector-enable-detector",
    description="The GuardDuty detector is enabled and publishes findings every 15 minutes.",
    resource_types=[DETECTOR],
    controls=["LOG-11"],
    pci=["11.5.1"],
    severity=Severity.MEDIUM,
    remediation="Set enable=True and finding_publishing_frequency='FIFTEEN_MINUTES'.",
)
def detector(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if props.get("enable") is False:
        yield "the detector is disabled"
    if props.get("findingPublishingFrequency") not in (None, "FIFTEEN_MINUTES"):
        yield f"findings are published only every {props.get('findingPublishingFrequency')}"


@resource_policy(
    "aws-securityhub-standardssubscription-configure-pci-standard",
    description="Security Hub subscriptions run the PCI DSS standard (v4).",
    resource_types=[STANDARDS],
    controls=["CMP-01"],
    pci=["2.2.1"],
    severity=Severity.LOW,
    remediation="Subscribe to standards/pci-dss/v/4.0.1.",
)
def pci_standard(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    arn = str(props.get("standardsArn", ""))
    if "pci-dss" in arn and "/v/3." in arn:
        yield "subscribes to PCI DSS v3.2.1; use v4.0.1"
