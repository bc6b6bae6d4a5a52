"""IAM: PCI DSS password policy, MFA for humans, least privilege, no long-lived keys."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

from policies.rules._base import as_list, number, principals, resource_policy, statements

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


@resource_policy(
    "aws-iam-policy-disallow-admin-wildcards",
    description="No identity policy allows every action, or every IAM action, on every resource.",
    resource_types=[POLICY, ROLE_POLICY, GROUP_POLICY, USER_POLICY],
    controls=["RBAC-03"],
    pci=["7.2.1", "7.2.2"],
    severity=Severity.CRITICAL,
    remediation="List the services and actions the job needs; scope IAM actions to the kit's path.",
)
def admin_wildcards(props: Mapping[str, Any], args: ResourceValidationArgs) -> Iterable[str]:
    for s in statements(props.get("policy")):
        if s.get("Effect") != "Allow":
            continue
        actions = as_list(s.get("Action"))
        resources = as_list(s.get("Resource"))
        if "*" in resources and any(a in ("*", "iam:*", "*:*") for a in actions):
            yield f"statement {s.get('Sid', '?')} allows {actions} on every resource"
        if s.get("NotAction") is not None and "*" in resources:
            yield f"statement {s.get('Sid', '?')} allows everything except a list (Allow + NotAction)"


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
