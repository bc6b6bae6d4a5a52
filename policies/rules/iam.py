"""IAM: PCI DSS password policy, MFA for humans, least privilege, no long-lived keys."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

from policies.rules._base import as_list, granted, items, number, principals, resource_policy, statements

PASSWORD_POLICY = "aws:iam/accountPasswordPolicy:AccountPasswordPolicy"  # noqa: S105 - a type token
POLICY = "aws:iam/policy:Policy"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
GROUP_POLICY = "aws:iam/groupPolicy:GroupPolicy"
USER_POLICY = "aws:iam/userPolicy:UserPolicy"
ROLE = "aws:iam/role:Role"
ROLE_ATTACH = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
GROUP_ATTACH = "aws:iam/groupPolicyAttachment:GroupPolicyAttachment"
USER_ATTACH = "aws:iam/userPolicyAttachment:UserPolicyAttachment"
ACCESS_KEY = "aws:iam/accessKey:AccessKey"
ADMIN_MANAGED_POLICIES = ("AdministratorAccess", "IAMFullAccess", "PowerUserAccess")
# Every resource type that carries identity-policy documents (a role's inline policies included).
IDENTITY_POLICY_TYPES = (POLICY, ROLE_POLICY, GROUP_POLICY, USER_POLICY, ROLE)
# Creating a role or user, or widening its permissions: allowed only under the permissions boundary.
BOUNDARY_GATED = (
    "iam:CreateRole", "iam:PutRolePolicy", "iam:AttachRolePolicy", "iam:PutRolePermissionsBoundary",
    "iam:CreateUser", "iam:PutUserPolicy", "iam:AttachUserPolicy", "iam:PutUserPermissionsBoundary",
)  # fmt: skip
BOUNDARY_REMOVAL = ("iam:DeleteRolePermissionsBoundary", "iam:DeleteUserPermissionsBoundary")
# Actions that destroy or blind the evidence and keys the stack relies on (trail, logs, detection,
# key policies and keys, recovery points, object lock): no identity policy may leave them allowed.
EVIDENCE_ACTIONS = (
    "cloudtrail:StopLogging", "cloudtrail:DeleteTrail", "cloudtrail:UpdateTrail", "cloudtrail:PutEventSelectors",
    "logs:DeleteLogGroup", "logs:DeleteLogStream", "guardduty:DeleteDetector", "guardduty:UpdateDetector",
    "securityhub:DisableSecurityHub", "kms:PutKeyPolicy", "kms:ScheduleKeyDeletion", "kms:DisableKey",
    "backup:DeleteRecoveryPoint", "backup:DeleteBackupVault", "backup:DeleteBackupVaultLockConfiguration",
    "s3:PutBucketObjectLockConfiguration",
)  # fmt: skip


def identity_statements(resource_type: str, props: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The statements of a resource's identity-policy documents (a role's are its inline policies)."""
    if resource_type == ROLE:
        docs = [p.get("policy") for p in items(props.get("inlinePolicies")) if isinstance(p, Mapping)]
    else:
        docs = [props.get("policy")]
    return [s for d in docs for s in statements(d)]


@resource_policy(
    "aws-iam-accountpasswordpolicy-configure-pci-requirements",
    description="Passwords: at least 12 characters, all character classes, history of 4, changed every 90 days.",
    resource_types=[PASSWORD_POLICY],
    controls=["HRD-02"],
    pci=["8.3.6", "8.3.7", "8.3.9"],
    severity=Severity.HIGH,
    remediation="Set minimum_password_length ≥ 12, require_* = True, password_reuse_prevention ≥ 4, "
    "max_password_age ≤ 90.",
)
def password_policy(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if number(props.get("minimumPasswordLength")) < 12:
        yield f"minimum length {number(props.get('minimumPasswordLength')):.0f} is below 12"
    for key in ("requireLowercaseCharacters", "requireUppercaseCharacters", "requireNumbers", "requireSymbols"):
        if props.get(key) is not True:
            yield f"{key} is off"
    if number(props.get("passwordReusePrevention")) < 4:
        yield "fewer than 4 previous passwords are remembered"
    age = number(props.get("maxPasswordAge"))
    if age == 0 or age > 90:
        yield "passwords need not change every 90 days"


def _admin_wildcard(stmt: Mapping[str, Any]) -> bool:
    """Every action, every IAM or every KMS action, on every resource."""
    actions = as_list(stmt.get("Action"))
    return "*" in as_list(stmt.get("Resource")) and any(a in ("*", "iam:*", "kms:*", "*:*") for a in actions)


def _allows_almost_everything(stmt: Mapping[str, Any]) -> bool:
    """What the admin-wildcards policy reports: an admin wildcard, or Allow + NotAction on every resource."""
    everywhere = "*" in as_list(stmt.get("Resource"))
    return _admin_wildcard(stmt) or (stmt.get("NotAction") is not None and everywhere)


@resource_policy(
    "aws-iam-policy-disallow-admin-wildcards",
    description="No identity policy allows every action, or every IAM or KMS action, on every resource.",
    resource_types=[POLICY, ROLE_POLICY, GROUP_POLICY, USER_POLICY],
    controls=["RBAC-03"],
    pci=["7.2.1", "7.2.2"],
    severity=Severity.CRITICAL,
    remediation="List the services and actions the job needs; scope IAM actions to the kit's path; give key "
    "administrators the administration actions only (infra/keys.py KEY_ADMIN_ACTIONS).",
)
def admin_wildcards(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    for s in statements(props.get("policy")):
        if s.get("Effect") != "Allow":
            continue
        actions = as_list(s.get("Action"))
        resources = as_list(s.get("Resource"))
        if _admin_wildcard(s):
            yield f"statement {s.get('Sid', '?')} allows {actions} on every resource"
        if s.get("NotAction") is not None and "*" in resources:
            yield f"statement {s.get('Sid', '?')} allows everything except a list (Allow + NotAction)"


def _requires_boundary(stmt: Mapping[str, Any]) -> bool:
    """Whether a statement holds only when iam:PermissionsBoundary names one exact policy."""
    for operator, values in (stmt.get("Condition") or {}).items():
        if operator in ("StringEquals", "ArnEquals") and isinstance(values, Mapping):
            boundary = as_list(values.get("iam:PermissionsBoundary"))
            if boundary and not any("*" in str(b) or "?" in str(b) for b in boundary):
                return True
    return False


@resource_policy(
    "aws-iam-policy-enable-permissions-boundary",
    description="Identity policies let their holders create roles or widen role permissions only under the "
    "permissions boundary (condition iam:PermissionsBoundary), and never let them remove a boundary.",
    resource_types=IDENTITY_POLICY_TYPES,
    controls=["RBAC-03"],
    pci=["7.2.1", "7.2.2", "7.2.5"],
    severity=Severity.CRITICAL,
    remediation='Add Condition {"StringEquals": {"iam:PermissionsBoundary": "<the boundary policy ARN>"}} to the '
    "statement allowing iam:CreateRole, iam:PutRolePolicy, iam:AttachRolePolicy, iam:PutRolePermissionsBoundary "
    "(see infra/identity.py); never allow iam:DeleteRolePermissionsBoundary.",
)
def permissions_boundary_required(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    for s in identity_statements(args.resource_type, props):
        # A wildcard for everything is the admin-wildcards policy's finding; this one is about listed actions.
        if s.get("Effect") != "Allow" or _allows_almost_everything(s):
            continue
        sid = s.get("Sid", "?")
        gated = granted(s, BOUNDARY_GATED)
        if gated and not _requires_boundary(s):
            yield (f"statement {sid} allows {gated} without requiring a permissions boundary "
                   "(condition iam:PermissionsBoundary)")  # fmt: skip
        removal = granted(s, BOUNDARY_REMOVAL)
        if removal:
            yield f"statement {sid} lets principals remove a permissions boundary: {removal}"


@resource_policy(
    "aws-iam-role-enable-permissions-boundary",
    description="Every role carries a permissions boundary: the ceiling of what any policy attached to it can grant.",
    resource_types=[ROLE],
    controls=["RBAC-03"],
    pci=["7.2.1", "7.2.2"],
    severity=Severity.HIGH,
    remediation="Set permissions_boundary to the kit's boundary policy (infra/identity.py Identity.boundary_arn).",
)
def role_boundary(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    if not props.get("permissionsBoundary"):
        yield "the role has no permissions boundary"


def _denied_everywhere(stmts: list[dict[str, Any]], action: str) -> bool:
    """An unconditional Deny on every resource covers the action."""
    return any(
        s.get("Effect") == "Deny"
        and not s.get("Condition")
        and "*" in as_list(s.get("Resource"))
        and granted(s, [action])
        for s in stmts
    )


@resource_policy(
    "aws-iam-policy-disallow-evidence-destruction",
    description="No identity policy leaves allowed what would destroy or blind the evidence and keys: stopping, "
    "changing or deleting the trail, deleting log groups, disabling GuardDuty or Security Hub, changing key "
    "policies, disabling or deleting keys, deleting recovery points or changing object lock.",
    resource_types=IDENTITY_POLICY_TYPES,
    controls=["RBAC-03", "LOG-01"],
    pci=["7.2.2", "10.3.2"],
    severity=Severity.CRITICAL,
    remediation="Add the actions to the policy's DenyDestructive statement (infra/identity.py DESTRUCTIVE_ACTIONS), "
    "or list narrower actions than the service wildcard.",
)
def evidence_destruction(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    stmts = identity_statements(args.resource_type, props)
    for s in stmts:
        if s.get("Effect") != "Allow":
            continue
        left = [a for a in granted(s, EVIDENCE_ACTIONS) if not _denied_everywhere(stmts, a)]
        if left:
            them = "it" if len(left) == 1 else "them"
            yield f"statement {s.get('Sid', '?')} allows {left} and no statement of the policy denies {them}"


@resource_policy(
    "aws-iam-rolepolicyattachment-disallow-admin-policies",
    description="No role or group gets AWS's administrator, IAM-full or power-user policies.",
    resource_types=[ROLE_ATTACH, GROUP_ATTACH, USER_ATTACH],
    controls=["RBAC-03"],
    pci=["7.2.1", "7.2.2"],
    severity=Severity.CRITICAL,
    remediation="Attach the kit's least-privilege policies (infra/identity.py) instead.",
)
def admin_attachments(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    arn = str(props.get("policyArn", ""))
    if arn.rsplit("/", 1)[-1] in ADMIN_MANAGED_POLICIES:
        yield f"attaches {arn}"


@resource_policy(
    "aws-iam-user-disallow-direct-policies",
    description="Permissions go to groups and roles, never directly to a user.",
    resource_types=[USER_POLICY, USER_ATTACH],
    controls=["RBAC-03"],
    pci=["7.2.2", "7.2.4"],
    severity=Severity.MEDIUM,
    remediation="Put the user in a group; grant roles the group may assume with MFA.",
)
def direct_user_policies(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    yield "a policy is attached directly to a user"


@resource_policy(
    "aws-iam-role-configure-mfa-for-humans",
    description="Roles that account principals (people) assume require MFA in the trust policy.",
    resource_types=[ROLE],
    controls=["MFA-02"],
    pci=["8.4.1", "8.4.3"],
    severity=Severity.CRITICAL,
    remediation='Add Condition {"Bool": {"aws:MultiFactorAuthPresent": "true"}} to the sts:AssumeRole statement.',
)
def role_mfa(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    for s in statements(props.get("assumeRolePolicy")):
        if s.get("Effect") != "Allow" or not any(p.startswith("AWS:") or p == "*" for p in principals(s)):
            continue
        bools = {**((s.get("Condition") or {}).get("Bool") or {})}
        if str(bools.get("aws:MultiFactorAuthPresent")).lower() != "true":
            yield f"trust statement {s.get('Sid', '?')} lets account principals assume the role without MFA"


@resource_policy(
    "aws-iam-accesskey-disallow-access-keys",
    description="No long-lived access key is created (its secret would be stored in the state).",
    resource_types=[ACCESS_KEY],
    controls=["CMP-03"],
    pci=["8.6.2", "8.3.2"],
    severity=Severity.CRITICAL,
    remediation="Use roles: instance profiles, OIDC federation for CI, SSO for people.",
)
def access_keys(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    yield "an IAM access key is created"
