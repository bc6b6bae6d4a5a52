"""KMS key policies: rotation, deletion window, and who may use each key."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

from policies.rules._base import as_list, granted, grants, number, principals, resource_policy, statements

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
    pci=["3.6.1", "7.2.2"],
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


# Probes for what a statement allows, matched against its patterns (kms:Create* covers CreateGrant).
KEY_ADMIN_PROBES = (
    "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion", "kms:DisableKey", "kms:EnableKey", "kms:DisableKeyRotation",
    "kms:EnableKeyRotation", "kms:UpdateKeyDescription", "kms:TagResource", "kms:UntagResource", "kms:CreateAlias",
    "kms:DeleteAlias", "kms:UpdateAlias",
)  # fmt: skip
# Using the key, or letting someone else use it (a grant).
KEY_USE_PROBES = (
    "kms:Encrypt", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext", "kms:GenerateDataKeyPair", "kms:GenerateDataKeyPairWithoutPlaintext",
    "kms:Sign", "kms:GenerateMac", "kms:CreateGrant",
)  # fmt: skip


def _root_user_only(stmt: Mapping[str, Any]) -> bool:
    """The statement names the account and holds only for its root user (aws:PrincipalType = Account)."""
    who = principals(stmt)
    equals = (stmt.get("Condition") or {}).get("StringEquals") or {}
    return (
        bool(who)
        and all(p.startswith("AWS:") and p.endswith(":root") for p in who)
        and as_list(equals.get("aws:PrincipalType")) == ["Account"]
    )


@resource_policy(
    "aws-kms-key-disallow-admin-key-use",
    description="Key administrators never use a key: a statement that administers the key neither uses it nor "
    "creates grants, and only the account's root user may change the key policy.",
    resource_types=[KEY],
    controls=["RBAC-06"],
    pci=["3.6.1", "7.2.2"],
    severity=Severity.CRITICAL,
    remediation="Give administrators the administration actions only (infra/keys.py KEY_ADMIN_ACTIONS: no "
    "kms:Create*, kms:Put*, kms:CreateGrant or cryptographic actions); allow kms:PutKeyPolicy only to the root "
    'principal with Condition {"StringEquals": {"aws:PrincipalType": "Account"}}.',
)
def kms_admin_use(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    for s in statements(props.get("policy")):
        actions = as_list(s.get("Action"))
        # kms:* and * are the least-privilege policy's finding; this one is about listed actions.
        if s.get("Effect") != "Allow" or any(a in ("*", "kms:*") for a in actions):
            continue
        sid = s.get("Sid", "?")
        if granted(s, KEY_ADMIN_PROBES):
            use = granted(s, KEY_USE_PROBES)
            if use:
                yield f"statement {sid} administers the key and may also use it or grant its use: {use}"
        if grants(s, "kms:PutKeyPolicy") and not _root_user_only(s):
            yield (f"statement {sid} lets {principals(s)} change the key policy; only the root user may "
                   "(condition aws:PrincipalType = Account)")  # fmt: skip


UNSEAL_ACTIONS = {"kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"}
PURPOSE_TAG = "billkit:key-purpose"


@resource_policy(
    "aws-kms-key-configure-unseal-key-users",
    description="The Vault unseal key may be used only by named roles, only to wrap and unwrap the root key.",
    resource_types=[KEY],
    controls=["EAR-07", "RBAC-06"],
    pci=["3.6.1.2", "3.7.6"],
    severity=Severity.CRITICAL,
    remediation="Give the unseal key one use statement: Principal the Vault instance role(s), "
    "Action kms:Encrypt, kms:Decrypt, kms:DescribeKey. No service principals, no kms:ViaService grants.",
)
def kms_unseal_users(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if (props.get("tags") or {}).get(PURPOSE_TAG) != "vault-unseal":
        return
    for s in statements(props.get("policy")):
        # Statements that cannot use the key (administration) are the admin-key-use policy's concern.
        if s.get("Effect") != "Allow" or not granted(s, KEY_USE_PROBES):
            continue
        who = principals(s)
        # Roles only: not the account root (that would delegate to every IAM policy), no service.
        if not who or any(not p.startswith("AWS:arn:aws:iam:") or p.endswith(":root") for p in who):
            yield f"statement {s.get('Sid', '?')} lets {who} use the unseal key; name the Vault role only"
        extra = sorted(set(as_list(s.get("Action"))) - UNSEAL_ACTIONS)
        if extra:
            yield f"statement {s.get('Sid', '?')} allows {extra} on the unseal key"
