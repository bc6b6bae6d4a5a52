"""Backup: AWS Backup vaults, plan, selection, cross-region copy and restore testing.

The primary vault is encrypted with its own key and locked in compliance mode; a second
vault in the DR region (its own key) receives a copy of every recovery point. The plan keeps
daily points 35 days and monthly points 12 months. Resources are selected by tag
(infra.common.BACKUP_TAG_KEY): the database and the Vault raft volumes carry it. A vault
access policy denies deleting recovery points, and a restore-testing plan restores the
latest database snapshot every week and validates it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from infra.common import BACKUP_TAG_KEY, BACKUP_TAG_VALUE, policy_json, statement, tags

PROTECTIVE_DENY = (
    "backup:DeleteRecoveryPoint",
    "backup:UpdateRecoveryPointLifecycle",
    "backup:DeleteBackupVault",
)


@dataclass
class BackupArgs:
    kms_key_arn: pulumi.Input[str]
    dr_kms_key_arn: pulumi.Input[str]
    dr_region: str
    role_arn: pulumi.Input[str]
    base_tags: dict[str, str] = field(default_factory=dict)
    daily_retention_days: int = 35
    monthly_retention_days: int = 365
    daily_schedule: str = "cron(0 3 * * ? *)"
    monthly_schedule: str = "cron(0 4 1 * ? *)"
    # Vault lock: compliance mode becomes immutable after this grace period (days).
    lock_changeable_for_days: int = 3
    lock_min_retention_days: int = 7
    lock_max_retention_days: int = 400
    restore_test_schedule: str = "cron(0 6 ? * SUN *)"


class Backup(pulumi.ComponentResource):
    def __init__(self, name: str, args: BackupArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("billkit:backup:Backup", name, None, opts)
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        t = tags(args.base_tags, billkit_component="backup", billkit_role="backup")

        self.vault = aws.backup.Vault(
            f"{name}-vault", name=f"{name}-vault", kms_key_arn=args.kms_key_arn, tags=t, opts=child
        )
        self.dr_vault = aws.backup.Vault(
            f"{name}-dr-vault",
            name=f"{name}-dr-vault",
            kms_key_arn=args.dr_kms_key_arn,
            region=args.dr_region,
            tags=t,
            opts=child,
        )
        self.locks = [
            aws.backup.VaultLockConfiguration(
                f"{vault_name}-lock",
                backup_vault_name=vault.name,
                changeable_for_days=args.lock_changeable_for_days,
                min_retention_days=args.lock_min_retention_days,
                max_retention_days=args.lock_max_retention_days,
                region=region,
                opts=child,
            )
            for vault_name, vault, region in ((f"{name}-vault", self.vault, None),
                                              (f"{name}-dr-vault", self.dr_vault, args.dr_region))
        ]  # fmt: skip
        self.vault_policies = [
            aws.backup.VaultPolicy(
                f"{vault_name}-policy",
                backup_vault_name=vault.name,
                policy=policy_json(
                    statement(
                        "DenyRecoveryPointDeletion", list(PROTECTIVE_DENY), [vault.arn], effect="Deny",
                        principal={"AWS": "*"},
                    )  # fmt: skip
                ),
                region=region,
                opts=child,
            )
            for vault_name, vault, region in ((f"{name}-vault", self.vault, None),
                                              (f"{name}-dr-vault", self.dr_vault, args.dr_region))
        ]  # fmt: skip

        def rule(rule_name: str, schedule: str, keep_days: int) -> aws.backup.PlanRuleArgs:
            lifecycle = aws.backup.PlanRuleLifecycleArgs(delete_after=keep_days)
            return aws.backup.PlanRuleArgs(
                rule_name=rule_name,
                target_vault_name=self.vault.name,
                schedule=schedule,
                start_window=60,
                completion_window=360,
                lifecycle=lifecycle,
                copy_actions=[
                    aws.backup.PlanRuleCopyActionArgs(
                        destination_vault_arn=self.dr_vault.arn,
                        lifecycle=aws.backup.PlanRuleCopyActionLifecycleArgs(delete_after=keep_days),
                    )
                ],
                recovery_point_tags=t,
            )

        self.plan = aws.backup.Plan(
            f"{name}-plan",
            name=f"{name}-plan",
            rules=[
                rule("daily", args.daily_schedule, args.daily_retention_days),
                rule("monthly", args.monthly_schedule, args.monthly_retention_days),
            ],
            tags=t,
            opts=child,
        )
        self.selection = aws.backup.Selection(
            f"{name}-selection",
            name=f"{name}-tagged",
            plan_id=self.plan.id,
            iam_role_arn=args.role_arn,
            selection_tags=[
                aws.backup.SelectionSelectionTagArgs(type="STRINGEQUALS", key=BACKUP_TAG_KEY, value=BACKUP_TAG_VALUE)
            ],
            opts=child,
        )
        # BAK-05: restore the latest database recovery point weekly and validate it.
        self.restore_testing_plan = aws.backup.RestoreTestingPlan(
            f"{name}-restore-testing",
            name=f"{name.replace('-', '_')}_restore_testing",
            schedule_expression=args.restore_test_schedule,
            start_window_hours=24,
            recovery_point_selection=aws.backup.RestoreTestingPlanRecoveryPointSelectionArgs(
                algorithm="LATEST_WITHIN_WINDOW",
                include_vaults=[self.vault.arn],
                recovery_point_types=["SNAPSHOT"],
                selection_window_days=7,
            ),
            tags=t,
            opts=child,
        )
        self.restore_testing_selection = aws.backup.RestoreTestingSelection(
            f"{name}-restore-testing-db",
            name=f"{name.replace('-', '_')}_db",
            restore_testing_plan_name=self.restore_testing_plan.name,
            protected_resource_type="RDS",
            iam_role_arn=args.role_arn,
            protected_resource_conditions=aws.backup.RestoreTestingSelectionProtectedResourceConditionsArgs(
                string_equals=[
                    aws.backup.RestoreTestingSelectionProtectedResourceConditionsStringEqualArgs(
                        key=f"aws:ResourceTag/{BACKUP_TAG_KEY}", value=BACKUP_TAG_VALUE
                    )
                ]
            ),
            validation_window_hours=4,
            opts=child,
        )
        self.register_outputs({"vault_arn": self.vault.arn, "dr_vault_arn": self.dr_vault.arn, "plan_id": self.plan.id})
