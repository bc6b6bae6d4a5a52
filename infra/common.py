"""Small helpers shared by the components: tags and IAM policy documents (no resources here)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pulumi

# The tag AWS Backup selects on: every resource that must be backed up carries it.
BACKUP_TAG_KEY = "billkit:backup"
BACKUP_TAG_VALUE = "daily-monthly"
# The tag SSM Patch Manager reads to pick a host's patch baseline; maintenance windows target it too.
PATCH_GROUP_TAG = "Patch Group"


def tags(base: Mapping[str, str], **extra: str) -> dict[str, str]:
    """The stack's common tags plus the component's own (keys are sorted for stable diffs).

    Keyword names map to tag keys: the first "_" becomes ":", the others "-"
    (billkit_key_purpose -> billkit:key-purpose).
    """
    merged = {**base, **{_key(k): v for k, v in extra.items()}}
    return dict(sorted(merged.items()))


def _key(name: str) -> str:
    head, sep, rest = name.partition("_")
    return f"{head}:{rest.replace('_', '-')}" if sep else head


def statement(
    sid: str,
    actions: Sequence[str],
    resources: Sequence[Any] | str | None = "*",
    *,
    effect: str = "Allow",
    principal: Mapping[str, Any] | str | None = None,
    condition: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One IAM policy statement; values may be Outputs (resolved by policy_json)."""
    out: dict[str, Any] = {"Sid": sid, "Effect": effect, "Action": list(actions)}
    if principal is not None:
        out["Principal"] = principal
    if resources is not None:  # trust policies name no resource
        out["Resource"] = resources if isinstance(resources, str) else list(resources)
    if condition:
        out["Condition"] = condition
    return out


def policy_json(*statements: dict[str, Any]) -> pulumi.Output[str]:
    """A policy document as JSON, resolving any Outputs inside the statements."""
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": list(statements)})


def static_policy_json(*statements: dict[str, Any]) -> str:
    """A policy document without Outputs, as a plain string."""
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def assume_role_policy(service: str, *, conditions: Mapping[str, Any] | None = None) -> str:
    """A trust policy that lets one AWS service assume the role."""
    return static_policy_json(
        statement("ServiceAssume", ["sts:AssumeRole"], None, principal={"Service": service}, condition=conditions)
    )
