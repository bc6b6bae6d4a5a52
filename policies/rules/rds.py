"""RDS PostgreSQL: encryption, privacy, availability, backups, authentication, logging, patching."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

from policies.rules._base import ADVISORY, items, number, resource_policy, truthy

INSTANCE = "aws:rds/instance:Instance"
PARAMETER_GROUP = "aws:rds/parameterGroup:ParameterGroup"
MIN_BACKUP_RETENTION = 35


@resource_policy(
    "aws-rds-instance-enable-storage-encryption",
    description="Database storage is encrypted with a customer-managed KMS key.",
    resource_types=[INSTANCE],
    controls=["EAR-01"],
    pci=["3.5.1"],
    severity=Severity.CRITICAL,
    remediation="Set storage_encrypted=True and kms_key_id to the database key.",
)
def rds_encryption(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if props.get("storageEncrypted") is not True:
        yield "storage is not encrypted: set storage_encrypted=True"
    elif not props.get("kmsKeyId"):
        yield "storage uses the AWS-managed key: set kms_key_id to a customer-managed key"


@resource_policy(
    "aws-rds-instance-disallow-public-access",
    description="The database is never publicly accessible.",
    resource_types=[INSTANCE],
    controls=["NET-03"],
    pci=["1.4.4", "1.3.1"],
    severity=Severity.CRITICAL,
    remediation="Set publicly_accessible=False and place the instance in the data-tier subnets.",
)
def rds_public(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if truthy(props.get("publiclyAccessible")):
        yield "the database is publicly accessible"


@resource_policy(
    "aws-rds-instance-enable-multi-az",
    description="The database runs Multi-AZ so an AZ failure loses no committed data.",
    resource_types=[INSTANCE],
    controls=["BAK-07"],
    pci=["12.10.1"],
    severity=Severity.MEDIUM,
    remediation="Set multi_az=True (billkit:dbMultiAz). Advisory: a dev stack may opt out.",
    enforcement=ADVISORY,
)
def rds_multi_az(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if not truthy(props.get("multiAz")):
        yield "the database is single-AZ (multi_az is off)"


@resource_policy(
    "aws-rds-instance-enable-deletion-protection",
    description="The database cannot be deleted until deletion protection is turned off.",
    resource_types=[INSTANCE],
    controls=["BAK-07"],
    pci=["12.10.1"],
    severity=Severity.HIGH,
    remediation="Set deletion_protection=True.",
)
def rds_deletion_protection(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if not truthy(props.get("deletionProtection")):
        yield "deletion protection is off"


@resource_policy(
    "aws-rds-instance-configure-final-snapshot",
    description="Deleting the database takes a final snapshot first.",
    resource_types=[INSTANCE],
    controls=["BAK-07"],
    pci=["12.10.1"],
    severity=Severity.HIGH,
    remediation="Set skip_final_snapshot=False and a final_snapshot_identifier.",
)
def rds_final_snapshot(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if truthy(props.get("skipFinalSnapshot")):
        yield "skip_final_snapshot is on: deleting the database would keep no final snapshot"
    elif not props.get("finalSnapshotIdentifier"):
        yield "no final_snapshot_identifier is set"


@resource_policy(
    "aws-rds-instance-configure-backup-retention",
    description=f"Automated backups are kept at least {MIN_BACKUP_RETENTION} days.",
    resource_types=[INSTANCE],
    controls=["BAK-01"],
    pci=["12.10.1"],
    severity=Severity.HIGH,
    remediation=f"Set backup_retention_period ≥ {MIN_BACKUP_RETENTION}.",
)
def rds_backup_retention(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    days = number(props.get("backupRetentionPeriod"))
    if days < MIN_BACKUP_RETENTION:
        yield f"backups are kept {days:.0f} days; keep at least {MIN_BACKUP_RETENTION}"


@resource_policy(
    "aws-rds-instance-enable-iam-authentication",
    description="IAM database authentication is on, so people and services use short-lived tokens.",
    resource_types=[INSTANCE],
    controls=["RBAC-05"],
    pci=["7.2.2", "8.6.3"],
    severity=Severity.MEDIUM,
    remediation="Set iam_database_authentication_enabled=True.",
)
def rds_iam_auth(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if not truthy(props.get("iamDatabaseAuthenticationEnabled")):
        yield "IAM database authentication is off"


@resource_policy(
    "aws-rds-instance-configure-managed-master-password",
    description="The master password is generated and kept by AWS; it never appears in code, config or state.",
    resource_types=[INSTANCE],
    controls=["CMP-03"],
    pci=["8.6.2", "8.3.2"],
    severity=Severity.CRITICAL,
    remediation="Remove `password` and set manage_master_user_password=True.",
)
def rds_managed_password(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if props.get("password"):
        yield "a master password is set in the program: it lands in the state; let AWS manage it"
    if not truthy(props.get("manageMasterUserPassword")):
        yield "manage_master_user_password is off"


@resource_policy(
    "aws-rds-instance-enable-performance-insights-encryption",
    description="Performance Insights, when on, is encrypted with a customer-managed key.",
    resource_types=[INSTANCE],
    controls=["EAR-01"],
    pci=["3.5.1"],
    severity=Severity.MEDIUM,
    remediation="Set performance_insights_kms_key_id to the database key.",
)
def rds_pi_encryption(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if truthy(props.get("performanceInsightsEnabled")) and not props.get("performanceInsightsKmsKeyId"):
        yield "Performance Insights uses the AWS-managed key"


@resource_policy(
    "aws-rds-instance-enable-log-exports",
    description="PostgreSQL logs (connections, pgaudit) are exported to CloudWatch Logs.",
    resource_types=[INSTANCE],
    controls=["LOG-10"],
    pci=["10.2.1", "10.2.2"],
    severity=Severity.HIGH,
    remediation='Set enabled_cloudwatch_logs_exports to include "postgresql".',
)
def rds_log_exports(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if "postgresql" not in items(props.get("enabledCloudwatchLogsExports")):
        yield 'the "postgresql" log is not exported to CloudWatch Logs'


@resource_policy(
    "aws-rds-instance-enable-minor-version-upgrade",
    description="The database receives minor version upgrades automatically in its maintenance window.",
    resource_types=[INSTANCE],
    controls=["PAT-02"],
    pci=["6.3.3"],
    severity=Severity.MEDIUM,
    remediation="Set auto_minor_version_upgrade=True.",
)
def rds_minor_upgrade(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if props.get("autoMinorVersionUpgrade") is False:
        yield "automatic minor version upgrades are off"


@resource_policy(
    "aws-rds-instance-enable-copy-tags-to-snapshot",
    description="Snapshots carry the instance's tags (backup selection and data classification).",
    resource_types=[INSTANCE],
    controls=["BAK-01"],
    pci=["12.10.1"],
    severity=Severity.LOW,
    remediation="Set copy_tags_to_snapshot=True.",
    enforcement=ADVISORY,
)
def rds_copy_tags(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if not truthy(props.get("copyTagsToSnapshot")):
        yield "snapshots do not carry the instance's tags"


def _params(props: Mapping[str, Any]) -> dict[str, str]:
    return {str(p.get("name")): str(p.get("value")) for p in items(props.get("parameters")) if isinstance(p, Mapping)}


@resource_policy(
    "aws-rds-parametergroup-enable-force-ssl",
    description="PostgreSQL refuses connections without TLS (rds.force_ssl=1, TLS 1.2 minimum).",
    resource_types=[PARAMETER_GROUP],
    controls=["ENC-02"],
    pci=["2.2.7", "8.3.2"],
    severity=Severity.CRITICAL,
    remediation="Add parameters rds.force_ssl=1 and ssl_min_protocol_version=TLSv1.2.",
)
def rds_force_ssl(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if not str(props.get("family", "")).startswith("postgres"):
        return
    params = _params(props)
    if params.get("rds.force_ssl") != "1":
        yield "rds.force_ssl is not 1: clients may connect without TLS"
    if params.get("ssl_min_protocol_version") not in ("TLSv1.2", "TLSv1.3"):
        yield "ssl_min_protocol_version is not TLSv1.2 or newer"


@resource_policy(
    "aws-rds-parametergroup-enable-audit-logging",
    description="Connections, disconnections, DDL, role changes and writes are logged (pgaudit).",
    resource_types=[PARAMETER_GROUP],
    controls=["LOG-10"],
    pci=["10.2.1", "10.2.2"],
    severity=Severity.HIGH,
    remediation="Set log_connections=1, log_disconnections=1, shared_preload_libraries with pgaudit, "
    "and pgaudit.log covering ddl, role and write.",
)
def rds_audit_logging(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if not str(props.get("family", "")).startswith("postgres"):
        return
    params = _params(props)
    for key in ("log_connections", "log_disconnections"):
        if params.get(key) != "1":
            yield f"{key} is not 1"
    if "pgaudit" not in params.get("shared_preload_libraries", "").split(","):
        yield "pgaudit is not in shared_preload_libraries"
    classes = {c.strip() for c in params.get("pgaudit.log", "").split(",")}
    missing = sorted({"ddl", "role", "write"} - classes - ({"ddl", "role", "write"} if "all" in classes else set()))
    if missing:
        yield f"pgaudit.log does not cover {', '.join(missing)}"
