"""Identity: the account password policy, MFA for humans, and least-privilege roles.

Human roles (platform admin, auditor) can only be assumed with MFA; the CI deployer trusts
the CI's OIDC provider for one subject only. Workload roles (Vault, app, backup, flow logs,
RDS monitoring, CloudTrail) are created here with their trust policy only; each component
attaches the narrow permissions it needs (e.g. the Vault role may use only the unseal key).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from infra.common import assume_role_policy, policy_json, statement, tags

AWS_MANAGED = "arn:aws:iam::aws:policy/"

# The services the platform administers. Deliberately no "iam:*", no "*": identity changes go
# through this program (the CI deployer), and organisation-level actions are out of reach.
PLATFORM_ADMIN_SERVICES = (
    "ec2", "elasticloadbalancing", "autoscaling", "rds", "backup", "cloudwatch", "logs", "sns",
    "wafv2", "guardduty", "securityhub", "ssm", "ssmmessages", "cloudtrail", "s3", "kms",
)  # fmt: skip
# What a human without MFA may still do: enrol a device and change their own password.
MFA_SELF_SERVICE = (
    "iam:CreateVirtualMFADevice", "iam:EnableMFADevice", "iam:ListMFADevices", "iam:ResyncMFADevice",
    "iam:GetUser", "iam:ChangePassword", "sts:GetSessionToken",
)  # fmt: skip
# Actions that would destroy evidence or keys: denied to every human and CI role.
DESTRUCTIVE_ACTIONS = (
    "cloudtrail:StopLogging", "cloudtrail:DeleteTrail", "kms:ScheduleKeyDeletion", "kms:DisableKey",
    "backup:DeleteRecoveryPoint", "backup:DeleteBackupVault", "backup:DeleteBackupVaultLockConfiguration",
    "guardduty:DeleteDetector", "securityhub:DisableSecurityHub", "s3:PutBucketObjectLockConfiguration",
)  # fmt: skip


@dataclass
class IdentityArgs:
    account_id: pulumi.Input[str]
    base_tags: dict[str, str] = field(default_factory=dict)
    # PCI DSS 8.3.6 / 8.3.7 / 8.3.9: length ≥ 12 (we use 14), history ≥ 4, change every ≤ 90 days.
    password_min_length: int = 14
    password_reuse_prevention: int = 24
    password_max_age_days: int = 90
    # Sessions of human roles (PCI DSS 8.2.8 idle limits apply in the console; 1 h is the ceiling).
    human_session_seconds: int = 3600
    # CI: the OIDC provider ARN and the token subject allowed to deploy; without them the deployer
    # role is assumable only by account principals with MFA.
    ci_oidc_provider_arn: str | None = None
    ci_oidc_subject: str | None = None


class Identity(pulumi.ComponentResource):
    roles: dict[str, aws.iam.Role]
    instance_profiles: dict[str, aws.iam.InstanceProfile]

    def __init__(self, name: str, args: IdentityArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("billkit:identity:Identity", name, None, opts)
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        t = tags(args.base_tags, billkit_component="identity")

        self.password_policy = aws.iam.AccountPasswordPolicy(
            f"{name}-password-policy",
            minimum_password_length=args.password_min_length,
            require_lowercase_characters=True,
            require_uppercase_characters=True,
            require_numbers=True,
            require_symbols=True,
            allow_users_to_change_password=True,
            password_reuse_prevention=args.password_reuse_prevention,
            max_password_age=args.password_max_age_days,
            hard_expiry=False,
            opts=child,
        )

        # MFA for every human: IAM users live in this group; without MFA they can only enrol a device.
        self.humans = aws.iam.Group(f"{name}-humans", path="/billkit/", opts=child)
        self.enforce_mfa = aws.iam.Policy(
            f"{name}-enforce-mfa",
            path="/billkit/",
            description="Deny everything except MFA self-service unless the caller signed in with MFA",
            policy=policy_json(
                statement(
                    "AllowMfaSelfService",
                    list(MFA_SELF_SERVICE),
                    [
                        pulumi.Output.concat("arn:aws:iam::", args.account_id, ":user/${aws:username}"),
                        pulumi.Output.concat("arn:aws:iam::", args.account_id, ":mfa/${aws:username}"),
                    ],
                ),  # fmt: skip
                {
                    "Sid": "DenyAllWithoutMfa",
                    "Effect": "Deny",
                    "NotAction": list(MFA_SELF_SERVICE),
                    "Resource": "*",
                    "Condition": {"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}},
                },
            ),
            tags=t,
            opts=child,
        )
        self.humans_mfa = aws.iam.GroupPolicyAttachment(
            f"{name}-humans-mfa", group=self.humans.name, policy_arn=self.enforce_mfa.arn, opts=child
        )
        # Humans may assume the role for their job, with MFA; nothing else is granted to the group.
        self.roles = {}
        human_trust = policy_json(
            statement(
                "AssumeWithMfa",
                ["sts:AssumeRole"],
                None,
                principal={"AWS": pulumi.Output.concat("arn:aws:iam::", args.account_id, ":root")},
                condition={
                    "Bool": {"aws:MultiFactorAuthPresent": "true"},
                    "NumericLessThan": {"aws:MultiFactorAuthAge": "3600"},
                },
            )
        )
        for role in ("platform-admin", "auditor"):
            self.roles[role] = aws.iam.Role(
                f"{name}-{role}",
                path="/billkit/",
                assume_role_policy=human_trust,
                max_session_duration=args.human_session_seconds,
                description=f"billkit {role} (human, MFA required)",
                tags=tags(t, billkit_human="true"),
                opts=child,
            )
        # One group per job: membership decides which role a person may assume (with MFA).
        self.job_groups: dict[str, aws.iam.Group] = {}
        for role in ("platform-admin", "auditor"):
            group = aws.iam.Group(f"{name}-{role}s", path="/billkit/", opts=child)
            self.job_groups[role] = group
            aws.iam.GroupPolicy(
                f"{name}-{role}s-assume",
                group=group.name,
                policy=policy_json(statement("AssumeJobRole", ["sts:AssumeRole"], [self.roles[role].arn])),
                opts=child,
            )

        self.platform_admin_policy = aws.iam.Policy(
            f"{name}-platform-admin",
            path="/billkit/",
            description="Operate the billkit services; no IAM or organisation administration, no evidence deletion",
            policy=policy_json(
                statement("OperateServices", [f"{s}:*" for s in PLATFORM_ADMIN_SERVICES]),
                statement("ReadIam", ["iam:Get*", "iam:List*"]),
                statement("DenyDestructive", list(DESTRUCTIVE_ACTIONS), effect="Deny"),
            ),
            tags=t,
            opts=child,
        )
        self.platform_admin_attach = aws.iam.RolePolicyAttachment(
            f"{name}-platform-admin-attach",
            role=self.roles["platform-admin"].name,
            policy_arn=self.platform_admin_policy.arn,
            opts=child,
        )
        # The auditor reads configuration and evidence; AWS's read-only job policies, nothing more.
        self.auditor_attach = [
            aws.iam.RolePolicyAttachment(
                f"{name}-auditor-{p.rsplit('/', 1)[-1].lower()}",
                role=self.roles["auditor"].name,
                policy_arn=AWS_MANAGED + p,
                opts=child,
            )
            for p in ("SecurityAudit", "job-function/ViewOnlyAccess")
        ]

        if args.ci_oidc_provider_arn and args.ci_oidc_subject:
            ci_trust: pulumi.Input[str] = policy_json(
                statement(
                    "AssumeFromCi",
                    ["sts:AssumeRoleWithWebIdentity"],
                    None,
                    principal={"Federated": args.ci_oidc_provider_arn},
                    # The provider ARN ends with the issuer's host; its ":sub" claim names the pipeline.
                    condition={
                        "StringEquals": {f"{args.ci_oidc_provider_arn.split('/', 1)[-1]}:sub": args.ci_oidc_subject}
                    },
                )
            )
        else:
            ci_trust = human_trust
        self.roles["ci-deployer"] = aws.iam.Role(
            f"{name}-ci-deployer",
            path="/billkit/",
            assume_role_policy=ci_trust,
            max_session_duration=3600,
            description="billkit CI deployer: runs pulumi up after the policy pack passed",
            tags=t,
            opts=child,
        )
        self.ci_policy = aws.iam.Policy(
            f"{name}-ci-deployer",
            path="/billkit/",
            description="Deploy the billkit stack; IAM only under /billkit/, no evidence or key destruction",
            policy=policy_json(
                statement("DeployServices", [f"{s}:*" for s in PLATFORM_ADMIN_SERVICES]),
                statement(
                    "ManageBillkitIam",
                    [
                        "iam:*Role*",
                        "iam:*Policy*",
                        "iam:*InstanceProfile*",
                        "iam:PassRole",
                        "iam:Get*",
                        "iam:List*",
                        "iam:UpdateAccountPasswordPolicy",
                        "iam:*Group*",
                        "iam:TagRole",
                        "iam:UntagRole",
                    ],
                    [
                        pulumi.Output.concat("arn:aws:iam::", args.account_id, ":role/billkit/*"),
                        pulumi.Output.concat("arn:aws:iam::", args.account_id, ":policy/billkit/*"),
                        pulumi.Output.concat("arn:aws:iam::", args.account_id, ":instance-profile/billkit/*"),
                        pulumi.Output.concat("arn:aws:iam::", args.account_id, ":group/billkit/*"),
                    ],
                ),  # fmt: skip
                statement("DenyDestructive", list(DESTRUCTIVE_ACTIONS), effect="Deny"),
            ),
            tags=t,
            opts=child,
        )
        self.ci_attach = aws.iam.RolePolicyAttachment(
            f"{name}-ci-deployer-attach", role=self.roles["ci-deployer"].name, policy_arn=self.ci_policy.arn, opts=child
        )

        # Workload roles: trust only, permissions are attached by the component that uses them.
        services = {
            "vault": "ec2.amazonaws.com",
            "app": "ec2.amazonaws.com",
            "backup": "backup.amazonaws.com",
            "flow-logs": "vpc-flow-logs.amazonaws.com",
            "rds-monitoring": "monitoring.rds.amazonaws.com",
            "trail-logs": "cloudtrail.amazonaws.com",
        }
        for role, service in services.items():
            self.roles[role] = aws.iam.Role(
                f"{name}-{role}",
                path="/billkit/",
                assume_role_policy=assume_role_policy(service),
                description=f"billkit workload role: {role}",
                tags=t,
                opts=child,
            )
        managed = {
            "vault": ("AmazonSSMManagedInstanceCore",),
            "app": ("AmazonSSMManagedInstanceCore",),
            "backup": ("service-role/AWSBackupServiceRolePolicyForBackup",
                       "service-role/AWSBackupServiceRolePolicyForRestores"),
            "rds-monitoring": ("service-role/AmazonRDSEnhancedMonitoringRole",),
        }  # fmt: skip
        self.managed_attachments = [
            aws.iam.RolePolicyAttachment(
                f"{name}-{role}-{p.rsplit('/', 1)[-1].lower()}",
                role=self.roles[role].name,
                policy_arn=AWS_MANAGED + p,
                opts=child,
            )
            for role, policies in managed.items()
            for p in policies
        ]
        self.instance_profiles = {
            role: aws.iam.InstanceProfile(
                f"{name}-{role}", path="/billkit/", role=self.roles[role].name, tags=t, opts=child
            )
            for role in ("vault", "app")
        }

        self.register_outputs(
            {
                "role_arns": {k: r.arn for k, r in self.roles.items()},
                "humans_group": self.humans.name,
                "job_groups": {k: g.name for k, g in self.job_groups.items()},
            }
        )
