"""KMS key policies: rotation, deletion window, and who may use each key."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

from policies.rules._base import as_list, number, principals, resource_policy, statements

KEY = "aws:kms/key:Key"


@resource_policy(
    "aws-kms-key-enable-rotation",
    description="Customer-managed KMS keys rotate automatically at least yearly.",
    resource_types=[KEY],
    controls=["EAR-02"],
    pci=["3.6.1", "3.7.4"],
    severity=Severity.HIGH,
    remediation="Set enable_key_rotation=True and rotation_period_in_days ≤ 365 on the key.",
)
def kms_rotation(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if props.get("enableKeyRotation") is not True:
        yield "key rotation is off: set enable_key_rotation=True"
    elif number(props.get("rotationPeriodInDays"), 365) > 365:
        yield f"key rotates every {number(props.get('rotationPeriodInDays')):.0f} days; rotate at least yearly (≤ 365)"


@resource_policy(
    "aws-kms-key-configure-deletion-window",
    description="KMS keys wait 30 days before deletion, so a mistaken deletion can be cancelled.",
    resource_types=[KEY],
    controls=["EAR-02"],
    pci=["3.7.4"],
    severity=Severity.MEDIUM,
    remediation="Set deletion_window_in_days=30.",
)
def kms_deletion_window(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    days = number(props.get("deletionWindowInDays"), 30)
    if days < 30:
        yield f"deletion window is {days:.0f} days; use 30"


@resource_policy(
    "aws-kms-key-configure-least-privilege-policy",
    description="A key policy names who may use the key: no wildcard principal, no kms:* grant.",
    resource_types=[KEY],
    controls=["RBAC-06"],
    pci=["3.6.1.2", "3.6.1.3", "7.2.2"],
    severity=Severity.HIGH,
    remediation="Write an explicit key policy: administration for the account, use only for the roles or "
    "services (kms:ViaService) that need the key. Never Principal '*' or Action 'kms:*'.",
)
def kms_key_policy(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    stmts = statements(props.get("policy"))
    if not stmts:
        yield "the key has no explicit key policy (the default grants kms:* to the whole account)"
        return
    for s in stmts:
        if s.get("Effect") != "Allow":
            continue
        sid = s.get("Sid", "?")
        actions = as_list(s.get("Action"))
        if any(a in ("*", "kms:*") for a in actions):
            yield f"statement {sid} grants {actions}: list the key actions instead"
        if "*" in principals(s) and not s.get("Condition"):
            yield f"statement {sid} allows any principal ('*') without a condition"
