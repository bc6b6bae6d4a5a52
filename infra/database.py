"""Database: RDS PostgreSQL in the data tier, encrypted, private, highly available, audited.

The master password is generated and kept by AWS (Secrets Manager): it is never in the
program, the config or the state. TLS is forced by the parameter group; pgaudit records
DDL, role changes and writes; logs go to encrypted CloudWatch log groups kept ≥ 365 days.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from infra.common import BACKUP_TAG_KEY, BACKUP_TAG_VALUE, tags

LOG_EXPORTS = ("postgresql", "upgrade", "iam-db-auth-error")


@dataclass
class DatabaseArgs:
    subnet_ids: list[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]
    logs_key_arn: pulumi.Input[str]
    monitoring_role_arn: pulumi.Input[str]
    base_tags: dict[str, str] = field(default_factory=dict)
    engine_version: str = "16"
    instance_class: str = "db.m6g.large"
    allocated_storage_gb: int = 100
    max_allocated_storage_gb: int = 500
    multi_az: bool = True
    deletion_protection: bool = True
    skip_final_snapshot: bool = False
    backup_retention_days: int = 35
    log_retention_days: int = 365
    performance_insights: bool = True
    monitoring_interval_seconds: int = 60
    db_name: str = "billing"
    master_username: str = "billkit_admin"
    # pgaudit classes: DDL, role changes and every write (PCI DSS 10.2.1.x).
    pgaudit_log: str = "ddl,role,write"


class Database(pulumi.ComponentResource):
    def __init__(self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("billkit:database:Database", name, None, opts)
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        t = tags(args.base_tags, billkit_component="database")
        family = f"postgres{args.engine_version.split('.')[0]}"
        identifier = f"{name}-postgres"

        self.subnet_group = aws.rds.SubnetGroup(
            f"{name}-subnets", subnet_ids=args.subnet_ids, description="billkit data tier", tags=t, opts=child
        )
        self.parameter_group = aws.rds.ParameterGroup(
            f"{name}-params",
            family=family,
            description="billkit: TLS forced, connections and pgaudit logged",
            parameters=[
                aws.rds.ParameterGroupParameterArgs(name="rds.force_ssl", value="1"),
                aws.rds.ParameterGroupParameterArgs(name="ssl_min_protocol_version", value="TLSv1.2"),
                aws.rds.ParameterGroupParameterArgs(name="log_connections", value="1"),
                aws.rds.ParameterGroupParameterArgs(name="log_disconnections", value="1"),
                aws.rds.ParameterGroupParameterArgs(
                    name="shared_preload_libraries", value="pg_stat_statements,pgaudit", apply_method="pending-reboot"
                ),
                aws.rds.ParameterGroupParameterArgs(name="pgaudit.log", value=args.pgaudit_log),
                aws.rds.ParameterGroupParameterArgs(name="pgaudit.log_parameter", value="0"),
                aws.rds.ParameterGroupParameterArgs(name="pgaudit.role", value="rds_pgaudit"),
            ],
            tags=t,
            opts=child,
        )
        # Log groups exist before the instance so they are encrypted and retained from the first line.
        self.log_groups = [
            aws.cloudwatch.LogGroup(
                f"{name}-log-{export}",
                name=f"/aws/rds/instance/{identifier}/{export}",
                retention_in_days=args.log_retention_days,
                kms_key_id=args.logs_key_arn,
                tags=t,
                opts=child,
            )
            for export in LOG_EXPORTS
        ]
        self.instance = aws.rds.Instance(
            f"{name}-postgres",
            identifier=identifier,
            engine="postgres",
            engine_version=args.engine_version,
            instance_class=args.instance_class,
            allocated_storage=args.allocated_storage_gb,
            max_allocated_storage=args.max_allocated_storage_gb,
            storage_type="gp3",
            storage_encrypted=True,
            kms_key_id=args.kms_key_arn,
            db_name=args.db_name,
            username=args.master_username,
            manage_master_user_password=True,
            master_user_secret_kms_key_id=args.kms_key_arn,
            iam_database_authentication_enabled=True,
            db_subnet_group_name=self.subnet_group.name,
            vpc_security_group_ids=[args.security_group_id],
            publicly_accessible=False,
            multi_az=args.multi_az,
            parameter_group_name=self.parameter_group.name,
            backup_retention_period=args.backup_retention_days,
            backup_window="02:00-03:00",
            maintenance_window="sun:03:30-sun:04:30",
            copy_tags_to_snapshot=True,
            delete_automated_backups=False,
            deletion_protection=args.deletion_protection,
            skip_final_snapshot=args.skip_final_snapshot,
            final_snapshot_identifier=f"{identifier}-final",
            auto_minor_version_upgrade=True,
            allow_major_version_upgrade=False,
            enabled_cloudwatch_logs_exports=list(LOG_EXPORTS),
            performance_insights_enabled=args.performance_insights,
            performance_insights_kms_key_id=args.kms_key_arn if args.performance_insights else None,
            performance_insights_retention_period=7 if args.performance_insights else None,
            monitoring_interval=args.monitoring_interval_seconds,
            monitoring_role_arn=args.monitoring_role_arn if args.monitoring_interval_seconds else None,
            ca_cert_identifier="rds-ca-rsa2048-g1",
            tags=tags({**t, BACKUP_TAG_KEY: BACKUP_TAG_VALUE}, billkit_role="db"),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=self.log_groups)),
        )
        self.register_outputs(
            {"endpoint": self.instance.endpoint, "arn": self.instance.arn, "secret": self.instance.master_user_secrets}
        )
