"""Identity: the account password policy, MFA for humans, and least-privilege roles.

Human roles (platform admin, auditor) can only be assumed with MFA; the CI deployer trusts
the CI's OIDC provider for one subject only. Workload roles (Vault, app, monitoring, backup, flow logs,
RDS monitoring, CloudTrail) are created here with their trust policy only; each component
attaches the narrow permissions it needs (e.g. the Vault role may use only the unseal key).

Every role carries one permissions boundary, the ceiling of what any policy attached to it can
grant. The deployer may create and change roles under /billkit/ only when they carry that
boundary, never its own role, its own policy or the boundary (an explicit Deny). Key
administrators (platform admin, deployer) administer keys but never use them directly. Nobody
here may stop, rewrite or delete the trail, log groups, GuardDuty, key policies, keys or
recovery points: those changes are break-glass work for the account's root user.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from infra.common import assume_role_policy, policy_json, statement, tags
from infra.keys import GRANT_ACTIONS, KEY_ADMIN_ACTIONS, KEY_USE_ACTIONS

AWS_MANAGED = "arn:aws:iam::aws:policy/"
PATH = "/billkit/"

# The services the platform administers. Deliberately no "iam:*", no "*": identity changes go
# through this program (the CI deployer), and organisation-level actions are out of reach.
# KMS is not a service wildcard: key administrators get KEY_ADMIN_ACTIONS only.
PLATFORM_ADMIN_SERVICES = (
    "ec2", "elasticloadbalancing", "autoscaling", "rds", "backup", "cloudwatch", "logs", "sns",
    "wafv2", "guardduty", "securityhub", "ssm", "ssmmessages", "cloudtrail", "s3",
)  # fmt: skip
# What workload roles need beyond those: the SSM agent's channel and AWS Backup's tag lookups.
WORKLOAD_SERVICES = ("ec2messages", "tag")
# The deployer encrypts with the keys only through the services that store the data (S3: the playbook
# bundle the patching windows run; only the patching key's policy lets it).
KEY_SERVICES = ("rds.*.amazonaws.com", "ec2.*.amazonaws.com", "backup.*.amazonaws.com", "s3.*.amazonaws.com")
# What a human without MFA may still do: enrol a device and change their own password.
MFA_SELF_SERVICE = (
    "iam:CreateVirtualMFADevice", "iam:EnableMFADevice", "iam:ListMFADevices", "iam:ResyncMFADevice",
    "iam:GetUser", "iam:ChangePassword", "sts:GetSessionToken",
)  # fmt: skip
# Actions that would stop, rewrite or destroy the evidence, the detection or the keys the stack
# relies on: denied to every human and CI role (and, through the boundary, to every role).
# The deployer creates these resources; changing them afterwards is break-glass work.
DESTRUCTIVE_ACTIONS = (
    "cloudtrail:StopLogging", "cloudtrail:DeleteTrail", "cloudtrail:UpdateTrail", "cloudtrail:PutEventSelectors",
    "logs:DeleteLogGroup", "logs:DeleteLogStream",
    "guardduty:DeleteDetector", "guardduty:UpdateDetector",
    "securityhub:DisableSecurityHub", "securityhub:BatchDisableStandards",
    "kms:PutKeyPolicy", "kms:ScheduleKeyDeletion", "kms:DisableKey", "kms:DisableKeyRotation",
    "backup:DeleteRecoveryPoint", "backup:DeleteBackupVault", "backup:DeleteBackupVaultLockConfiguration",
    "backup:DeleteBackupVaultAccessPolicy", "backup:UpdateRecoveryPointLifecycle",
    "s3:PutBucketObjectLockConfiguration",
)  # fmt: skip
# Creating a role or changing its permissions: allowed only with the boundary attached.
BOUNDED_ROLE_ACTIONS = (
    "iam:CreateRole", "iam:PutRolePermissionsBoundary", "iam:PutRolePolicy", "iam:DeleteRolePolicy",
    "iam:AttachRolePolicy", "iam:DetachRolePolicy",
)  # fmt: skip
# The rest of the deployer's IAM work on the kit's own roles, policies, instance profiles and groups
# (not group membership: who may assume a job role is an administrator's decision, not the pipeline's).
KIT_ROLE_ACTIONS = (
    "iam:UpdateRole", "iam:UpdateRoleDescription", "iam:UpdateAssumeRolePolicy", "iam:DeleteRole", "iam:TagRole",
    "iam:UntagRole", "iam:PassRole",
)  # fmt: skip
KIT_POLICY_ACTIONS = (
    "iam:CreatePolicy", "iam:CreatePolicyVersion", "iam:DeletePolicy", "iam:DeletePolicyVersion",
    "iam:SetDefaultPolicyVersion", "iam:TagPolicy", "iam:UntagPolicy",
)  # fmt: skip
KIT_INSTANCE_PROFILE_ACTIONS = (
    "iam:CreateInstanceProfile", "iam:DeleteInstanceProfile", "iam:AddRoleToInstanceProfile",
    "iam:RemoveRoleFromInstanceProfile", "iam:TagInstanceProfile", "iam:UntagInstanceProfile",
)  # fmt: skip
KIT_GROUP_ACTIONS = (
    "iam:CreateGroup", "iam:DeleteGroup", "iam:UpdateGroup", "iam:PutGroupPolicy", "iam:DeleteGroupPolicy",
    "iam:AttachGroupPolicy", "iam:DetachGroupPolicy",
)  # fmt: skip
# Every change to a role or a policy: denied on the deployer's own role and policy and on the boundary.
SELF_CHANGES = (
    "iam:Put*", "iam:Attach*", "iam:Detach*", "iam:Delete*", "iam:Update*", "iam:Tag*", "iam:Untag*",
    "iam:CreatePolicyVersion", "iam:SetDefaultPolicyVersion", "iam:PassRole",
)  # fmt: skip


def kit_arn(account_id: pulumi.Input[str], kind: str, name: pulumi.Input[str]) -> pulumi.Output[str]:
    """The ARN of one of the kit's IAM resources (they all live under PATH)."""
    return pulumi.Output.concat("arn:aws:iam::", account_id, f":{kind}{PATH}", name)


def kit_iam_statements(account_id: pulumi.Input[str], boundary_arn: pulumi.Input[str]) -> list[dict[str, object]]:
    """What the deployer may do in IAM: the kit's roles only with the boundary, the kit's policies,
    instance profiles and groups. The boundary repeats these statements, so a role it bounds can
    only ever create bounded roles."""

    def on(kind: str) -> list[pulumi.Output[str]]:
        return [kit_arn(account_id, kind, "*")]

    return [
        statement("ReadIam", ["iam:Get*", "iam:List*"]),
        statement("AccountPasswordPolicy", ["iam:UpdateAccountPasswordPolicy"]),
        statement(
            "CreateRolesWithinBoundary",
            list(BOUNDED_ROLE_ACTIONS),
            on("role"),
            condition={"StringEquals": {"iam:PermissionsBoundary": boundary_arn}},
        ),
        statement("ManageKitRoles", list(KIT_ROLE_ACTIONS), on("role")),
        statement("ManageKitPolicies", list(KIT_POLICY_ACTIONS), on("policy")),
        statement("ManageKitInstanceProfiles", list(KIT_INSTANCE_PROFILE_ACTIONS), on("instance-profile")),
        statement("ManageKitGroups", list(KIT_GROUP_ACTIONS), on("group")),
    ]


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

        # The permissions boundary of every role below. Its own ARN is built from its fixed name: a
        # document cannot refer to its resource's output.
        boundary_name = f"{name}-boundary"
        self.boundary = aws.iam.Policy(
            f"{name}-boundary",
            name=boundary_name,
            path=PATH,
            description="Permissions boundary of every billkit role: the kit's services, key administration and "
            "use, bounded IAM; never its own change, never evidence or key destruction",
            policy=policy_json(
                statement("KitServices", [f"{s}:*" for s in PLATFORM_ADMIN_SERVICES + WORKLOAD_SERVICES]),
                statement(
                    "Keys", ["kms:CreateKey", *KEY_ADMIN_ACTIONS, *KEY_USE_ACTIONS, *GRANT_ACTIONS, "kms:RetireGrant"]
                ),
                statement("AuditReports", ["iam:GenerateCredentialReport", "iam:GenerateServiceLastAccessedDetails"]),
                *kit_iam_statements(args.account_id, kit_arn(args.account_id, "policy", boundary_name)),
                statement(
                    "DenyChangingTheBoundary",
                    [a for a in SELF_CHANGES if a != "iam:PassRole"],
                    [kit_arn(args.account_id, "policy", boundary_name)],
                    effect="Deny",
                ),
                statement("DenyDestructive", list(DESTRUCTIVE_ACTIONS), effect="Deny"),
            ),
            tags=t,
            opts=child,
        )
        # Depends on the boundary resource (through its name), so roles are created after it.
        self.boundary_arn = kit_arn(args.account_id, "policy", self.boundary.name)

        # MFA for every human: IAM users live in this group; without MFA they can only enrol a device.
        self.humans = aws.iam.Group(f"{name}-humans", path=PATH, opts=child)
        self.enforce_mfa = aws.iam.Policy(
            f"{name}-enforce-mfa",
            path=PATH,
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
                path=PATH,
                assume_role_policy=human_trust,
                permissions_boundary=self.boundary_arn,
                max_session_duration=args.human_session_seconds,
                description=f"billkit {role} (human, MFA required)",
                tags=tags(t, billkit_human="true"),
                opts=child,
            )
        # One group per job: membership decides which role a person may assume (with MFA).
        self.job_groups: dict[str, aws.iam.Group] = {}
        for role in ("platform-admin", "auditor"):
            group = aws.iam.Group(f"{name}-{role}s", path=PATH, opts=child)
            self.job_groups[role] = group
            aws.iam.GroupPolicy(
                f"{name}-{role}s-assume",
                group=group.name,
                policy=policy_json(statement("AssumeJobRole", ["sts:AssumeRole"], [self.roles[role].arn])),
                opts=child,
            )
            # MFA enforcement follows the user into every job group, not only the humans group.
            aws.iam.GroupPolicyAttachment(
                f"{name}-{role}s-mfa", group=group.name, policy_arn=self.enforce_mfa.arn, opts=child
            )

        self.platform_admin_policy = aws.iam.Policy(
            f"{name}-platform-admin",
            path=PATH,
            description="Operate the billkit services and administer (never use) the keys; no IAM or organisation "
            "administration, no evidence deletion",
            policy=policy_json(
                statement("OperateServices", [f"{s}:*" for s in PLATFORM_ADMIN_SERVICES]),
                statement("AdministerKeys", list(KEY_ADMIN_ACTIONS)),
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
        # Fixed names: the deployer's policy denies changes to its own role and to itself by ARN.
        deployer_name = f"{name}-ci-deployer"
        self.roles["ci-deployer"] = aws.iam.Role(
            f"{name}-ci-deployer",
            name=deployer_name,
            path=PATH,
            assume_role_policy=ci_trust,
            permissions_boundary=self.boundary_arn,
            max_session_duration=3600,
            description="billkit CI deployer: runs pulumi up after the policy pack passed",
            tags=t,
            opts=child,
        )
        self.ci_policy = aws.iam.Policy(
            f"{name}-ci-deployer",
            name=deployer_name,
            path=PATH,
            description="Deploy the billkit stack; IAM only under /billkit/ and within the boundary, never its own "
            "role or policy, keys used only through services, no evidence or key destruction",
            policy=policy_json(
                statement("DeployServices", [f"{s}:*" for s in PLATFORM_ADMIN_SERVICES]),
                statement("CreateAndAdministerKeys", ["kms:CreateKey", *KEY_ADMIN_ACTIONS]),
                # RDS, EBS and Backup need the caller's grant on the key; direct use stays impossible.
                statement(
                    "UseKeysThroughServices",
                    [*KEY_USE_ACTIONS, *GRANT_ACTIONS],
                    condition={"StringLike": {"kms:ViaService": list(KEY_SERVICES)}},
                ),
                *kit_iam_statements(args.account_id, self.boundary_arn),
                statement(
                    "DenyChangingItself",
                    list(SELF_CHANGES),
                    [
                        kit_arn(args.account_id, "role", self.roles["ci-deployer"].name),
                        kit_arn(args.account_id, "policy", deployer_name),
                        self.boundary_arn,
                    ],
                    effect="Deny",
                ),
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
            "mon": "ec2.amazonaws.com",
            "backup": "backup.amazonaws.com",
            "flow-logs": "vpc-flow-logs.amazonaws.com",
            "rds-monitoring": "monitoring.rds.amazonaws.com",
            "trail-logs": "cloudtrail.amazonaws.com",
        }
        for role, service in services.items():
            self.roles[role] = aws.iam.Role(
                f"{name}-{role}",
                path=PATH,
                assume_role_policy=assume_role_policy(service),
                permissions_boundary=self.boundary_arn,
                description=f"billkit workload role: {role}",
                tags=t,
                opts=child,
            )
        managed = {
            "vault": ("AmazonSSMManagedInstanceCore",),
            "app": ("AmazonSSMManagedInstanceCore",),
            "mon": ("AmazonSSMManagedInstanceCore",),
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
            role: aws.iam.InstanceProfile(f"{name}-{role}", path=PATH, role=self.roles[role].name, tags=t, opts=child)
            for role in ("vault", "app", "mon")
        }

        self.register_outputs(
            {
                "role_arns": {k: r.arn for k, r in self.roles.items()},
                "humans_group": self.humans.name,
                "boundary_arn": self.boundary_arn,
                "job_groups": {k: g.name for k, g in self.job_groups.items()},
            }
        )
