"""The kit's cloud identities under the mock runtime: every role bounded, the deployer unable to raise
its own rights, key administrators never using keys, evidence and keys beyond anyone's destruction."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Any

import pytest
from stackhelpers import doc, named, of, one

from billkit.plan import Resource

# pulumi_aws warns about its own deprecated aliases when a service module loads.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pulumi_aws")


@pytest.mark.control("HRD-02", "MFA-02", "RBAC-03")
def test_identity(prod: tuple[Resource, ...]) -> None:
    pw = one(prod, "aws:iam/accountPasswordPolicy:AccountPasswordPolicy").inputs
    assert pw["minimumPasswordLength"] >= 12 and pw["passwordReusePrevention"] >= 4 and pw["maxPasswordAge"] <= 90
    roles = {r.name.removeprefix("billkit-identity-"): r for r in of(prod, "aws:iam/role:Role")}
    for human in ("platform-admin", "auditor", "ci-deployer"):  # without CI OIDC config, CI is human-run, with MFA
        stmt = doc(roles[human].inputs["assumeRolePolicy"])["Statement"][0]
        assert stmt["Condition"]["Bool"] == {"aws:MultiFactorAuthPresent": "true"}, human
    mfa = next(p for p in of(prod, "aws:iam/policy:Policy") if p.name.endswith("enforce-mfa"))
    mfa_groups = {a.inputs["group"] for a in of(prod, "aws:iam/groupPolicyAttachment:GroupPolicyAttachment")}
    assert mfa_groups == {f"billkit-identity-{g}" for g in ("humans", "platform-admins", "auditors")}
    deny = doc(mfa.inputs["policy"])["Statement"][1]
    assert deny["Effect"] == "Deny" and deny["Condition"]["BoolIfExists"]["aws:MultiFactorAuthPresent"] == "false"
    for p in of(prod, "aws:iam/policy:Policy"):
        for s in doc(p.inputs["policy"])["Statement"]:
            if s["Effect"] == "Allow":
                assert "*" not in s.get("Action", []) and "iam:*" not in s.get("Action", []), p.name
    # Each job group may assume exactly its own role.
    groups = of(prod, "aws:iam/groupPolicy:GroupPolicy")
    assert len(groups) == 2
    for gp in groups:
        role = gp.name.removeprefix("billkit-identity-").removesuffix("s-assume")
        allowed = doc(gp.inputs["policy"])["Statement"][0]["Resource"]
        assert allowed == [f"arn:aws:iam:eu-central-1:123456789012:role/billkit-identity-{role}"], gp.name
    arns = {
        a.inputs["policyArn"].rsplit("/", 1)[-1] for a in of(prod, "aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    }
    assert not arns & {"AdministratorAccess", "PowerUserAccess", "IAMFullAccess"}


# What AWS would call these: the kit's IAM resources live under the /billkit/ path of the mock account.
ACCOUNT = "123456789012"
ROLE = "aws:iam/role:Role"
POLICY = "aws:iam/policy:Policy"


def iam_arn(kind: str, name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:{kind}/billkit/{name}"


BOUNDARY_ARN = iam_arn("policy", "billkit-identity-boundary")
DEPLOYER_ROLE_ARN = iam_arn("role", "billkit-identity-ci-deployer")
DEPLOYER_POLICY_ARN = iam_arn("policy", "billkit-identity-ci-deployer")
# Changes a principal could make to its own role, or to a policy that applies to it.
ROLE_CHANGES = (
    "iam:PutRolePolicy", "iam:AttachRolePolicy", "iam:DetachRolePolicy", "iam:DeleteRolePolicy",
    "iam:UpdateAssumeRolePolicy", "iam:UpdateRole", "iam:PutRolePermissionsBoundary",
    "iam:DeleteRolePermissionsBoundary", "iam:DeleteRole", "iam:TagRole", "iam:UntagRole", "iam:PassRole",
)  # fmt: skip
POLICY_CHANGES = (
    "iam:CreatePolicyVersion", "iam:SetDefaultPolicyVersion", "iam:DeletePolicyVersion", "iam:DeletePolicy",
    "iam:TagPolicy", "iam:UntagPolicy",
)  # fmt: skip
BOUNDARY_GATED = (
    "iam:CreateRole", "iam:PutRolePolicy", "iam:AttachRolePolicy", "iam:DetachRolePolicy", "iam:DeleteRolePolicy",
    "iam:PutRolePermissionsBoundary",
)  # fmt: skip
# Using a key, letting someone else use it, or rewriting who may: never an administrator's job.
KEY_USE = (
    "kms:Encrypt", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext", "kms:GenerateDataKeyPair", "kms:CreateGrant",
)  # fmt: skip


def _matches(pattern: str, action: str) -> bool:
    return fnmatch.fnmatchcase(action.lower(), pattern.lower())


def _list(value: Any) -> list[Any]:
    return [value] if isinstance(value, str) else list(value or [])


def _covers(stmt: dict[str, Any], action: str, resource: str) -> bool:
    return any(_matches(a, action) for a in _list(stmt.get("Action"))) and any(
        _matches(r, resource) for r in _list(stmt.get("Resource", "*"))
    )


def _decision(docs: Iterable[Any], action: str, resource: str) -> str:
    """IAM's evaluation, enough for the kit's documents: an unconditional Deny wins, then an Allow."""
    stmts = [s for d in docs for s in doc(d)["Statement"]]
    if any(s["Effect"] == "Deny" and not s.get("Condition") and _covers(s, action, resource) for s in stmts):
        return "deny"
    allows = [s for s in stmts if s["Effect"] == "Allow" and _covers(s, action, resource)]
    if not allows:
        return "not allowed"
    return "allow" if any(not s.get("Condition") for s in allows) else "conditional"


@pytest.mark.control("RBAC-03")
def test_every_role_is_bounded_and_the_deployer_creates_roles_only_within_the_boundary(
    prod: tuple[Resource, ...],
) -> None:
    boundary = named(prod, POLICY, "billkit-identity-boundary")
    assert boundary.inputs["path"] == "/billkit/" and boundary.inputs["name"] == "billkit-identity-boundary"
    roles = of(prod, ROLE)
    assert len(roles) == 10
    assert {r.name: r.inputs.get("permissionsBoundary") for r in roles} == {r.name: BOUNDARY_ARN for r in roles}
    deployer = named(prod, POLICY, "billkit-identity-ci-deployer")
    for policy in (deployer, boundary):  # the boundary repeats the rule: bounded roles create bounded roles only
        stmts = doc(policy.inputs["policy"])["Statement"]
        for action in BOUNDARY_GATED:
            granting = [s for s in stmts if s["Effect"] == "Allow" and _covers(s, action, iam_arn("role", "x"))]
            assert granting or policy is boundary, action
            for s in granting:
                assert s["Condition"] == {"StringEquals": {"iam:PermissionsBoundary": BOUNDARY_ARN}}, (action, s)
            outside = f"arn:aws:iam::{ACCOUNT}:role/admin"
            assert not [s for s in stmts if s["Effect"] == "Allow" and _covers(s, action, outside)], action
        assert _decision([policy.inputs["policy"]], "iam:DeleteRolePermissionsBoundary", iam_arn("role", "x")) in (
            "deny", "not allowed"
        )  # fmt: skip


@pytest.mark.control("RBAC-03")
def test_the_deployer_cannot_change_its_own_role_its_policies_or_the_boundary(prod: tuple[Resource, ...]) -> None:
    deployer_role = named(prod, ROLE, "billkit-identity-ci-deployer")
    assert (
        deployer_role.inputs["name"] == "billkit-identity-ci-deployer" and deployer_role.inputs["path"] == "/billkit/"
    )
    deployer = named(prod, POLICY, "billkit-identity-ci-deployer")
    boundary = named(prod, POLICY, "billkit-identity-boundary")
    attached = [
        a.inputs["policyArn"].rsplit("/", 1)[-1]
        for a in of(prod, "aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if a.inputs["role"] == "billkit-identity-ci-deployer"
    ]
    assert attached == ["billkit-identity-ci-deployer"]
    assert not [p for p in of(prod, "aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == deployer_role.name]
    # The deployer may change the kit's other roles and policies (so the denials below can fail) ...
    assert _decision([deployer.inputs["policy"]], "iam:PutRolePolicy", iam_arn("role", "x")) == "conditional"
    assert _decision([deployer.inputs["policy"]], "iam:CreatePolicyVersion", iam_arn("policy", "x")) == "allow"
    assert _decision([deployer.inputs["policy"]], "iam:UpdateAssumeRolePolicy", iam_arn("role", "x")) == "allow"
    # ... but never its own role, its own policy or the boundary that caps it.
    docs = [deployer.inputs["policy"], boundary.inputs["policy"]]
    assert {a: _decision(docs, a, DEPLOYER_ROLE_ARN) for a in ROLE_CHANGES} == dict.fromkeys(ROLE_CHANGES, "deny")
    for arn in (DEPLOYER_POLICY_ARN, BOUNDARY_ARN):
        assert {a: _decision(docs, a, arn) for a in POLICY_CHANGES} == dict.fromkeys(POLICY_CHANGES, "deny"), arn
    # Every bounded role, not only the deployer, is denied changing the boundary.
    boundary_only = [boundary.inputs["policy"]]
    assert {a: _decision(boundary_only, a, BOUNDARY_ARN) for a in POLICY_CHANGES} == dict.fromkeys(
        POLICY_CHANGES, "deny"
    )


@pytest.mark.control("RBAC-06", "EAR-07")
def test_key_administrators_never_use_keys_and_only_the_root_user_rewrites_key_policies(
    prod: tuple[Resource, ...],
) -> None:
    root = f"arn:aws:iam::{ACCOUNT}:root"
    for key in of(prod, "aws:kms/key:Key"):
        stmts = doc(key.inputs["policy"])["Statement"]
        for s in stmts:
            assert not {"*", "kms:*"} & set(_list(s["Action"])), (key.name, s["Sid"])
        admin = next(s for s in stmts if s["Sid"] == "AccountAdministersKey")
        assert not {"kms:Create*", "kms:Put*"} & set(admin["Action"]), key.name
        assert [u for u in (*KEY_USE, "kms:PutKeyPolicy") if any(_matches(a, u) for a in admin["Action"])] == []
        setters = [s for s in stmts if any(_matches(a, "kms:PutKeyPolicy") for a in _list(s["Action"]))]
        assert setters == [
            {"Sid": "RootUserSetsKeyPolicy", "Effect": "Allow", "Action": ["kms:PutKeyPolicy"],
             "Principal": {"AWS": root}, "Resource": "*",
             "Condition": {"StringEquals": {"aws:PrincipalType": "Account"}}}
        ], key.name  # fmt: skip
        # The deployer creates the key with a policy that does not let the deployer change it later.
        assert key.inputs["bypassPolicyLockoutSafetyCheck"] is True, key.name
    key_arn = f"arn:aws:kms:eu-central-1:{ACCOUNT}:key/x"
    admin = [named(prod, POLICY, "billkit-identity-platform-admin").inputs["policy"]]
    assert {u: _decision(admin, u, key_arn) for u in (*KEY_USE, "kms:PutKeyPolicy")} == {
        **dict.fromkeys(KEY_USE, "not allowed"),
        "kms:PutKeyPolicy": "deny",
    }
    for action in ("kms:DescribeKey", "kms:EnableKeyRotation", "kms:TagResource", "kms:GetKeyPolicy"):
        assert _decision(admin, action, key_arn) == "allow", action
    # The deployer uses keys only through the services that encrypt with them (RDS, EBS, Backup).
    deployer = doc(named(prod, POLICY, "billkit-identity-ci-deployer").inputs["policy"])["Statement"]
    for u in KEY_USE:
        for s in deployer:
            if s["Effect"] == "Allow" and _covers(s, u, key_arn):
                assert set(s["Condition"]["StringLike"]) == {"kms:ViaService"}, (u, s["Sid"])
    # No identity policy grants every KMS action.
    for kind in (POLICY, "aws:iam/rolePolicy:RolePolicy", "aws:iam/groupPolicy:GroupPolicy"):
        for p in of(prod, kind):
            for s in doc(p.inputs["policy"])["Statement"]:
                assert not (s["Effect"] == "Allow" and {"*", "kms:*"} & set(_list(s["Action"]))), p.name


# Evidence, detection and keys the stack relies on: no human or CI role may stop, rewrite or remove them.
MUST_BE_DENIED = (
    "cloudtrail:StopLogging", "cloudtrail:DeleteTrail", "cloudtrail:UpdateTrail", "cloudtrail:PutEventSelectors",
    "logs:DeleteLogGroup", "logs:DeleteLogStream",
    "guardduty:DeleteDetector", "guardduty:UpdateDetector",
    "securityhub:DisableSecurityHub", "securityhub:BatchDisableStandards",
    "kms:PutKeyPolicy", "kms:ScheduleKeyDeletion", "kms:DisableKey", "kms:DisableKeyRotation",
    "backup:DeleteRecoveryPoint", "backup:DeleteBackupVault", "backup:DeleteBackupVaultLockConfiguration",
    "backup:DeleteBackupVaultAccessPolicy", "backup:UpdateRecoveryPointLifecycle",
    "s3:PutBucketObjectLockConfiguration",
)  # fmt: skip


@pytest.mark.control("RBAC-03", "LOG-01", "LOG-11", "EAR-02", "BAK-03")
def test_no_human_or_ci_role_can_destroy_evidence_or_keys(prod: tuple[Resource, ...]) -> None:
    for name in ("platform-admin", "ci-deployer", "boundary"):
        policy = [named(prod, POLICY, f"billkit-identity-{name}").inputs["policy"]]
        decisions = {a: _decision(policy, a, "arn:aws:any") for a in MUST_BE_DENIED}
        assert decisions == dict.fromkeys(MUST_BE_DENIED, "deny"), name
