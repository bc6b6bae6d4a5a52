"""Keys: one customer-managed KMS key per purpose, rotated, with a narrow key policy.

Every key policy has the same shape: the account may administer the key — never use it, grant
its use (kms:CreateGrant) or rewrite the policy (kms:PutKeyPolicy) — then one statement per user
of the key — a named role, or an AWS service acting for this account (kms:ViaService / the
service principal with a source condition) — and last, the account's root user alone may change
the key policy (break-glass). No statement grants "kms:*" and none names the principal "*".
The deployer creates each key with its policy but cannot change the policy afterwards, so the key
is created with the lockout safety check bypassed: the root user keeps kms:PutKeyPolicy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.common import policy_json, statement, tags

# Administering a key: never using it, granting its use (kms:Create* would cover CreateGrant) or
# rewriting its policy (kms:Put* is PutKeyPolicy), any of which would let an administrator use it.
KEY_ADMIN_ACTIONS = (
    "kms:CreateAlias", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Update*", "kms:Revoke*",
    "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource", "kms:UntagResource",
    "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion", "kms:RotateKeyOnDemand",
)  # fmt: skip
KEY_USE_ACTIONS = ("kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey")
GRANT_ACTIONS = ("kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant")

# The purposes of the primary region; the DR region gets its own backup key.
PURPOSES = ("database", "backup", "logs", "ebs", "vault-unseal", "audit", "patching")


@dataclass
class KeyUser:
    """Who may use a key: roles by ARN, or a service principal, or any caller via one service."""

    sid: str
    actions: tuple[str, ...] = KEY_USE_ACTIONS
    role_arns: list[pulumi.Input[str]] = field(default_factory=list)
    service: str | None = None  # a service principal, e.g. logs.<region>.amazonaws.com
    via_service: str | None = None  # kms:ViaService, e.g. rds.<region>.amazonaws.com
    condition: dict[str, Any] | None = None


@dataclass
class KeysArgs:
    account_id: pulumi.Input[str]
    region: str
    # Who uses each key; the purposes listed here are the keys created.
    users: dict[str, list[KeyUser]]
    base_tags: dict[str, str] = field(default_factory=dict)
    deletion_window_days: int = 30
    rotation_period_days: int = 365
    # Turn on EBS encryption by default in the region, with the "ebs" key.
    ebs_encryption_by_default: bool = True
    # Create the keys in another region (the DR copy of backups); None: the provider's region.
    key_region: str | None = None


def key_policy(account_id: pulumi.Input[str], users: list[KeyUser]) -> pulumi.Output[str]:
    root = pulumi.Output.concat("arn:aws:iam::", account_id, ":root")
    stmts = [statement("AccountAdministersKey", list(KEY_ADMIN_ACTIONS), principal={"AWS": root})]
    for u in users:
        cond: dict[str, Any] = dict(u.condition or {})
        if u.via_service:
            cond.setdefault("StringEquals", {})
            cond["StringEquals"] = {**cond["StringEquals"], "kms:ViaService": u.via_service,
                                    "kms:CallerAccount": account_id}  # fmt: skip
        if u.role_arns:
            principal: dict[str, Any] = {"AWS": list(u.role_arns)}
        elif u.service:
            principal = {"Service": u.service}
        else:
            principal = {"AWS": root}
            if not u.via_service:
                raise ValueError(f"key user {u.sid}: name roles, a service, or a via_service condition")
        stmts.append(statement(u.sid, list(u.actions), principal=principal, condition=cond or None))
    # Break-glass: only the root user itself (not the IAM principals the root principal delegates to).
    root_user = {"StringEquals": {"aws:PrincipalType": "Account"}}
    stmts.append(statement("RootUserSetsKeyPolicy", ["kms:PutKeyPolicy"], principal={"AWS": root}, condition=root_user))
    return policy_json(*stmts)


class Keys(pulumi.ComponentResource):
    keys: dict[str, aws.kms.Key]

    def __init__(self, name: str, args: KeysArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("billkit:keys:Keys", name, None, opts)
        child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(parent=self))
        if args.deletion_window_days < 30:
            pulumi.log.warn(f"{name}: KMS deletion window {args.deletion_window_days} d is below the 30 d of EAR-02")
        self.keys = {}
        self.aliases: dict[str, aws.kms.Alias] = {}
        for purpose, users in args.users.items():
            self.keys[purpose] = aws.kms.Key(
                f"{name}-{purpose}",
                description=f"billkit {purpose} key",
                key_usage="ENCRYPT_DECRYPT",
                customer_master_key_spec="SYMMETRIC_DEFAULT",
                enable_key_rotation=True,
                rotation_period_in_days=args.rotation_period_days,
                deletion_window_in_days=args.deletion_window_days,
                multi_region=False,
                policy=key_policy(args.account_id, users),
                # The creator (the deployer) is deliberately not allowed kms:PutKeyPolicy; the root user is.
                bypass_policy_lockout_safety_check=True,
                region=args.key_region,
                tags=tags(args.base_tags, billkit_component="keys", billkit_key_purpose=purpose),
                opts=child,
            )
            self.aliases[purpose] = aws.kms.Alias(
                f"{name}-{purpose}-alias",
                name=f"alias/{name}-{purpose}",
                target_key_id=self.keys[purpose].key_id,
                region=args.key_region,
                opts=child,
            )
        if args.ebs_encryption_by_default and "ebs" in self.keys:
            self.ebs_default = aws.ebs.EncryptionByDefault(f"{name}-ebs-default", enabled=True, opts=child)
            self.ebs_default_key = aws.ebs.DefaultKmsKey(
                f"{name}-ebs-default-key", key_arn=self.keys["ebs"].arn, opts=child
            )
        self.register_outputs({"key_arns": {k: v.arn for k, v in self.keys.items()}})

    def arn(self, purpose: str) -> pulumi.Output[str]:
        try:
            return self.keys[purpose].arn
        except KeyError:
            raise KeyError(f"no KMS key for purpose {purpose!r}; keys are {sorted(self.keys)}") from None
