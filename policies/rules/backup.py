"""AWS Backup: encrypted, locked vaults; retention; off-site copies; deletion refused."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

from policies.rules._base import as_list, items, number, resource_policy, statements

VAULT = "aws:backup/vault:Vault"
VAULT_LOCK = "aws:backup/vaultLockConfiguration:VaultLockConfiguration"
VAULT_POLICY = "aws:backup/vaultPolicy:VaultPolicy"
PLAN = "aws:backup/plan:Plan"
DAILY_DAYS = 35
MONTHLY_DAYS = 365


@resource_policy(
    "aws-backup-vault-enable-kms-encryption",
    description="Backup vaults encrypt recovery points with their own customer-managed key.",
    resource_types=[VAULT],
    controls=["BAK-02"],
    pci=["3.5.1"],
    severity=Severity.HIGH,
    remediation="Set kms_key_arn to the vault's key.",
)
def vault_kms(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if not props.get("kmsKeyArn"):
        yield "the vault uses the AWS-managed backup key"


@resource_policy(
    "aws-backup-vaultlockconfiguration-configure-compliance-mode",
    description="Vault lock in compliance mode: after the grace period nobody can delete or shorten backups.",
    resource_types=[VAULT_LOCK],
    controls=["BAK-03"],
    pci=["12.10.1"],
    severity=Severity.HIGH,
    remediation="Set changeable_for_days (≥ 3) to make the lock a compliance-mode lock, and min_retention_days ≥ 7.",
)
def vault_lock(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if props.get("changeableForDays") is None:
        yield "the lock is in governance mode (no changeable_for_days): privileged users can remove it"
    if number(props.get("minRetentionDays")) < 7:
        yield "min_retention_days is below 7"


@resource_policy(
    "aws-backup-vaultpolicy-disallow-recovery-point-deletion",
    description="The vault access policy denies deleting recovery points to everyone.",
    resource_types=[VAULT_POLICY],
    controls=["BAK-03"],
    pci=["12.10.1"],
    severity=Severity.HIGH,
    remediation="Add a Deny statement for backup:DeleteRecoveryPoint with Principal {'AWS': '*'}.",
)
def vault_policy(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    for s in statements(props.get("policy")):
        if s.get("Effect") == "Deny" and "backup:DeleteRecoveryPoint" in as_list(s.get("Action")):
            return
    yield "nothing denies backup:DeleteRecoveryPoint"


def _delete_after(rule: Mapping[str, Any]) -> float:
    return number((rule.get("lifecycle") or {}).get("deleteAfter"))


@resource_policy(
    "aws-backup-plan-configure-retention",
    description=f"The plan keeps daily points ≥ {DAILY_DAYS} days and monthly points ≥ 12 months.",
    resource_types=[PLAN],
    controls=["BAK-01"],
    pci=["12.10.1"],
    severity=Severity.HIGH,
    remediation=f"Add a daily rule with lifecycle.delete_after ≥ {DAILY_DAYS} and a monthly rule with "
    f"delete_after ≥ {MONTHLY_DAYS}.",
)
def plan_retention(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    rules = items(props.get("rules"))
    kept = sorted(_delete_after(r) for r in rules)
    if not any(d >= DAILY_DAYS for d in kept):
        yield f"no rule keeps recovery points {DAILY_DAYS} days"
    if not any(d >= MONTHLY_DAYS for d in kept):
        yield f"no rule keeps recovery points {MONTHLY_DAYS} days (monthly, 12 months)"
    for r in rules:
        if 0 < _delete_after(r) < DAILY_DAYS:
            yield f"rule {r.get('ruleName')} keeps points only {_delete_after(r):.0f} days"


@resource_policy(
    "aws-backup-plan-enable-cross-region-copy",
    description="Every rule copies its recovery points to a vault in another region.",
    resource_types=[PLAN],
    controls=["BAK-04"],
    pci=["12.10.1"],
    severity=Severity.HIGH,
    remediation="Add a copy_action to each rule with destination_vault_arn in the DR region.",
)
def plan_copy(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    for r in items(props.get("rules")):
        if not items(r.get("copyActions")):
            yield f"rule {r.get('ruleName')} copies nothing off-site"
