"""Composition of the components into one environment (used by __main__.py and the plan)."""

from __future__ import annotations

from typing import Any

import pulumi

from infra import topology
from infra.app_hosts import AppHosts, AppHostsArgs
from infra.audit import Audit, AuditArgs
from infra.backup import Backup, BackupArgs
from infra.common import debian_ami
from infra.database import Database, DatabaseArgs
from infra.edge import Edge, EdgeArgs
from infra.identity import Identity, IdentityArgs
from infra.keys import GRANT_ACTIONS, KEY_USE_ACTIONS, Keys, KeysArgs, KeyUser
from infra.monitoring import Monitoring, MonitoringArgs
from infra.network import Network, NetworkArgs
from infra.patching import Patching, PatchingArgs, ec2_roles, patch_group_name
from infra.settings import StackSettings
from infra.vault import VaultCluster, VaultClusterArgs


def build(cfg: StackSettings, account_id: pulumi.Input[str], prefix: str = "billkit") -> dict[str, Any]:
    base = cfg.tags
    region = cfg.region

    identity = Identity(
        f"{prefix}-identity",
        IdentityArgs(
            account_id=account_id,
            base_tags=base,
            ci_oidc_provider_arn=cfg.ci_oidc_provider_arn,
            ci_oidc_subject=cfg.ci_oidc_subject,
        ),
    )
    roles = identity.roles
    asg_linked_role = pulumi.Output.concat(
        "arn:aws:iam::", account_id, ":role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
    )
    logs_arn = pulumi.Output.concat("arn:aws:logs:", region, ":", account_id, ":*")
    logs_context = {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": logs_arn}}
    trails_arn = pulumi.Output.concat("arn:aws:cloudtrail:*:", account_id, ":trail/*")
    trail_context = {"StringLike": {"kms:EncryptionContext:aws:cloudtrail:arn": trails_arn}}
    use_and_grants = KEY_USE_ACTIONS + GRANT_ACTIONS
    keys = Keys(
        f"{prefix}-keys",
        KeysArgs(
            account_id=account_id,
            region=region,
            base_tags=base,
            users={
                "database": [KeyUser("RdsUsesKey", use_and_grants, via_service=f"rds.{region}.amazonaws.com")],
                "backup": [
                    KeyUser("BackupRoleUsesKey", use_and_grants, role_arns=[roles["backup"].arn]),
                    KeyUser("BackupServiceUsesKey", use_and_grants, via_service=f"backup.{region}.amazonaws.com"),
                ],
                "logs": [KeyUser("LogsUseKey", service=f"logs.{region}.amazonaws.com", condition=logs_context)],
                "ebs": [
                    KeyUser("Ec2UsesKey", use_and_grants, via_service=f"ec2.{region}.amazonaws.com"),
                    KeyUser("AutoScalingUsesKey", use_and_grants, role_arns=[asg_linked_role]),
                ],
                "vault-unseal": [
                    KeyUser(
                        "VaultUnseals",
                        ("kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"),
                        role_arns=[roles["vault"].arn],
                    )
                ],
                "audit": [
                    KeyUser(
                        "CloudTrailEncrypts",
                        ("kms:GenerateDataKey*", "kms:DescribeKey"),
                        service="cloudtrail.amazonaws.com",
                        condition=trail_context,
                    ),
                    KeyUser(
                        "AlarmsPublish", ("kms:Decrypt", "kms:GenerateDataKey*"), service="cloudwatch.amazonaws.com"
                    ),
                    KeyUser("AuditorReads", ("kms:Decrypt", "kms:DescribeKey"), role_arns=[roles["auditor"].arn]),
                    # MON-01: Alertmanager on the monitoring hosts publishes to the encrypted alarm topic.
                    KeyUser(
                        "MonitoringPublishesAlerts",
                        ("kms:Decrypt", "kms:GenerateDataKey*"),
                        role_arns=[roles["mon"].arn],
                        via_service=f"sns.{region}.amazonaws.com",
                    ),
                ],
                # PAT-07: hosts write patch evidence and read the playbook bundle; the deployer uploads the
                # bundle through S3 only; auditors read the evidence.
                "patching": [
                    KeyUser(
                        "HostsWriteEvidence",
                        ("kms:GenerateDataKey", "kms:Decrypt"),
                        role_arns=[roles[r].arn for r in ec2_roles()],
                    ),
                    KeyUser(
                        "DeployerUploadsPlaybooks",
                        ("kms:GenerateDataKey", "kms:Decrypt"),
                        role_arns=[roles["ci-deployer"].arn],
                        via_service=f"s3.{region}.amazonaws.com",
                    ),
                    KeyUser("AuditorReads", ("kms:Decrypt", "kms:DescribeKey"), role_arns=[roles["auditor"].arn]),
                ],
            },  # fmt: skip
        ),
    )
    dr_keys = Keys(
        f"{prefix}-dr-keys",
        KeysArgs(
            account_id=account_id,
            region=cfg.dr_region,
            key_region=cfg.dr_region,
            base_tags=base,
            ebs_encryption_by_default=False,
            users={
                "backup": [
                    KeyUser("BackupRoleUsesKey", use_and_grants, role_arns=[roles["backup"].arn]),
                    KeyUser(
                        "BackupServiceUsesKey", use_and_grants, via_service=f"backup.{cfg.dr_region}.amazonaws.com"
                    ),
                ]
            },
        ),
    )

    network = Network(
        f"{prefix}-net",
        NetworkArgs(
            region=region,
            availability_zones=cfg.availability_zones,
            vpc_cidr=cfg.vpc_cidr,
            nat_per_az=cfg.nat_per_az,
            logs_key_arn=keys.arn("logs"),
            flow_logs_role_arn=roles["flow-logs"].arn,
            flow_logs_role_name=roles["flow-logs"].name,
            flow_log_retention_days=cfg.log_retention_days,
            base_tags=base,
        ),
    )
    sgs = network.security_groups
    database = Database(
        f"{prefix}-db",
        DatabaseArgs(
            subnet_ids=list(network.subnet_ids("data")),
            security_group_id=sgs["db"].id,
            kms_key_arn=keys.arn("database"),
            logs_key_arn=keys.arn("logs"),
            monitoring_role_arn=roles["rds-monitoring"].arn,
            instance_class=cfg.db_instance_class,
            allocated_storage_gb=cfg.db_allocated_storage_gb,
            multi_az=cfg.db_multi_az,
            deletion_protection=cfg.db_deletion_protection,
            backup_retention_days=cfg.backup_daily_retention_days,
            log_retention_days=cfg.log_retention_days,
            base_tags=base,
        ),
    )
    edge = Edge(
        f"{prefix}-edge",
        EdgeArgs(
            vpc_id=network.vpc.id,
            subnet_ids=list(network.subnet_ids("edge")),
            security_group_id=sgs["waf"].id,
            certificate_arn=cfg.certificate_arn,
            logs_key_arn=keys.arn("logs"),
            account_id=account_id,
            log_retention_days=cfg.log_retention_days,
            base_tags=base,
        ),
    )
    ami = debian_ami(cfg.ami_id)
    patch_groups = {role: patch_group_name(prefix, role) for role in ec2_roles()}
    app = AppHosts(
        f"{prefix}-app",
        AppHostsArgs(
            subnet_ids=list(network.subnet_ids("app")),
            security_group_id=sgs["app"].id,
            ami_id=ami,
            ebs_key_arn=keys.arn("ebs"),
            instance_profile_arn=identity.instance_profiles["app"].arn,
            target_group_arns=[edge.target_group.arn],
            patch_group=patch_groups["app"],
            instance_type=cfg.app_instance_type,
            min_size=cfg.app_min_size,
            max_size=cfg.app_max_size,
            desired_capacity=cfg.app_desired_capacity,
            base_tags=base,
        ),
    )
    vault = VaultCluster(
        f"{prefix}-vault",
        VaultClusterArgs(
            vpc_id=network.vpc.id,
            subnet_ids=list(network.subnet_ids("data")),
            security_group_id=sgs["vault"].id,
            ami_id=ami,
            ebs_key_arn=keys.arn("ebs"),
            unseal_key_arn=keys.arn("vault-unseal"),
            role_name=roles["vault"].name,
            instance_profile_name=identity.instance_profiles["vault"].name,
            certificate_arn=cfg.vault_certificate_arn,
            patch_group=patch_groups["vault"],
            instance_type=cfg.vault_instance_type,
            base_tags=base,
        ),
    )
    backup = Backup(
        f"{prefix}-backup",
        BackupArgs(
            kms_key_arn=keys.arn("backup"),
            dr_kms_key_arn=dr_keys.arn("backup"),
            dr_region=cfg.dr_region,
            role_arn=roles["backup"].arn,
            daily_retention_days=cfg.backup_daily_retention_days,
            monthly_retention_days=cfg.backup_monthly_retention_days,
            base_tags=base,
        ),
    )
    audit = Audit(
        f"{prefix}-audit",
        AuditArgs(
            account_id=account_id,
            region=region,
            audit_key_arn=keys.arn("audit"),
            logs_key_arn=keys.arn("logs"),
            trail_role_arn=roles["trail-logs"].arn,
            trail_role_name=roles["trail-logs"].name,
            trail_name=f"{prefix}-trail",
            log_retention_days=cfg.log_retention_days,
            alarm_email=cfg.alarm_email,
            base_tags=base,
        ),
    )
    monitoring = Monitoring(
        f"{prefix}-mon",
        MonitoringArgs(
            region=region,
            subnet_ids=list(network.subnet_ids("management")),
            security_group_id=sgs["mon"].id,
            ami_id=ami,
            ebs_key_arn=keys.arn("ebs"),
            logs_key_arn=keys.arn("logs"),
            alarm_topic_arn=audit.topic.arn,
            alarm_key_arn=keys.arn("audit"),
            role_name=roles["mon"].name,
            instance_profile_name=identity.instance_profiles["mon"].name,
            patch_group=patch_groups["mon"],
            app_role_name=roles["app"].name,
            app_patch_group=patch_groups["app"],
            log_retention_days=cfg.log_retention_days,
            base_tags=base,
        ),
    )
    patching = Patching(
        f"{prefix}-patching",
        PatchingArgs(
            account_id=account_id,
            region=region,
            patch_groups=patch_groups,
            host_role_names={role: roles[role].name for role in patch_groups},
            evidence_key_arn=keys.arn("patching"),
            base_tags=base,
        ),
    )
    return {
        "vpcId": network.vpc.id,
        "subnetIds": {t.name: network.subnet_ids(t.name) for t in topology.TIERS},
        "endpoint": edge.load_balancer.dns_name,
        "webAclArn": edge.web_acl.arn,
        "databaseEndpoint": database.instance.endpoint,
        "databaseSecretArn": database.instance.master_user_secrets,
        "vaultAddress": vault.load_balancer.dns_name,
        "vaultNodeIds": [n.id for n in vault.nodes],
        "appAutoScalingGroup": app.group.name,
        "backupVaultArn": backup.vault.arn,
        "trailArn": audit.trail.arn,
        "alarmTopicArn": audit.topic.arn,
        "monitoringInstanceIds": [n.id for n in monitoring.instances],
        "monitoringPrivateIps": [n.private_ip for n in monitoring.instances],
        "prometheusUrls": monitoring.prometheus_urls,
        "alertmanagerUrls": monitoring.alertmanager_urls,
        "appAuditLogGroup": monitoring.app_log_group.name,
        "roleArns": {k: r.arn for k, r in roles.items()},
        "patchBaselineId": patching.baseline.id,
        "patchGroups": patch_groups,
        "patchWindowIds": {role: w.id for role, w in patching.windows.items()},
        "patchEvidenceBucket": patching.bucket.bucket.bucket,
    }
