"""The stack's configuration: every key, its default, and the checks on it.

Keys live in the "billkit" namespace (Pulumi.<stack>.yaml, `pulumi config set billkit:<key>`),
plus the standard `aws:region`. The stack needs no secret: the database master password is
generated and kept by AWS, Vault unseals with KMS. Should a secret ever be needed, read it with
`config.require_secret` only, so it stays encrypted in config and state.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from infra import topology


class ConfigError(ValueError):
    """A config value is missing or out of range; the message names the key and the fix."""


@dataclass(frozen=True)
class StackSettings:
    stack: str
    region: str
    dr_region: str
    availability_zones: list[str]
    vpc_cidr: str
    nat_per_az: bool
    certificate_arn: str
    vault_certificate_arn: str
    ami_id: str | None
    db_instance_class: str
    db_allocated_storage_gb: int
    db_multi_az: bool
    db_deletion_protection: bool
    app_instance_type: str
    app_min_size: int
    app_max_size: int
    app_desired_capacity: int
    vault_instance_type: str
    log_retention_days: int
    backup_daily_retention_days: int
    backup_monthly_retention_days: int
    alarm_email: str | None
    ci_oidc_provider_arn: str | None
    ci_oidc_subject: str | None

    @property
    def tags(self) -> dict[str, str]:
        return {"billkit:stack": self.stack, "billkit:managed-by": "pulumi", "billkit:data-class": "pci"}


def load(stack: str | None = None) -> StackSettings:
    cfg = pulumi.Config("billkit")
    aws_cfg = pulumi.Config("aws")
    stack = stack or pulumi.get_stack()
    region = aws_cfg.require("region")
    dr_region = cfg.require("drRegion")
    if dr_region == region:
        raise ConfigError(f"billkit:drRegion must differ from aws:region ({region}): backups are copied off-site")
    az_count = cfg.get_int("azCount") or 3
    if not 2 <= az_count <= 3:
        raise ConfigError(f"billkit:azCount is {az_count}; use 2 or 3 zones")
    azs = cfg.get_object("availabilityZones")
    if azs is None:
        azs = [f"{region}{letter}" for letter in "abc"[:az_count]]
    if not isinstance(azs, list) or not 2 <= len(azs) <= 3:
        raise ConfigError(f"billkit:availabilityZones / azCount must give 2 or 3 zones, got {azs!r}")
    vpc_cidr = cfg.get("vpcCidr") or topology.VPC_CIDR_DEFAULT
    topology.aws_subnets(vpc_cidr, len(azs))  # raises a clear error for a VPC that is too small
    retention = cfg.get_int("logRetentionDays") or 365
    if retention < 365:
        raise ConfigError(f"billkit:logRetentionDays is {retention}; PCI DSS 10.5.1 needs at least 365")
    return StackSettings(
        stack=stack,
        region=region,
        dr_region=dr_region,
        availability_zones=[str(a) for a in azs],
        vpc_cidr=vpc_cidr,
        nat_per_az=_bool(cfg, "natPerAz", True),
        certificate_arn=cfg.require("certificateArn"),
        vault_certificate_arn=cfg.require("vaultCertificateArn"),
        ami_id=cfg.get("amiId"),
        db_instance_class=cfg.get("dbInstanceClass") or "db.m6g.large",
        db_allocated_storage_gb=cfg.get_int("dbAllocatedStorageGb") or 100,
        db_multi_az=_bool(cfg, "dbMultiAz", True),
        db_deletion_protection=_bool(cfg, "dbDeletionProtection", True),
        app_instance_type=cfg.get("appInstanceType") or "m6i.large",
        app_min_size=cfg.get_int("appMinSize") or 2,
        app_max_size=cfg.get_int("appMaxSize") or 6,
        app_desired_capacity=cfg.get_int("appDesiredCapacity") or 2,
        vault_instance_type=cfg.get("vaultInstanceType") or "m6i.large",
        log_retention_days=retention,
        backup_daily_retention_days=cfg.get_int("backupDailyRetentionDays") or 35,
        backup_monthly_retention_days=cfg.get_int("backupMonthlyRetentionDays") or 365,
        alarm_email=cfg.get("alarmEmail"),
        ci_oidc_provider_arn=cfg.get("ciOidcProviderArn"),
        ci_oidc_subject=cfg.get("ciOidcSubject"),
    )


def _bool(cfg: pulumi.Config, key: str, default: bool) -> bool:
    value = cfg.get_bool(key)
    return default if value is None else value
