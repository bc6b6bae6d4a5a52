"""The billkit CrossGuard policies, one module per AWS service, plus stack-wide policies.

Importing this package defines every policy (nothing starts: only policies/__main__.py builds
the PolicyPack, which serves gRPC and blocks). The contract with billkit's coverage code:
`control_links()` maps each policy name to the catalogue control IDs it proves.
"""

from __future__ import annotations

from pulumi_policy import Policy, ResourceValidationPolicy, StackValidationPolicy

from policies.rules import (  # noqa: F401 - importing a module registers its policies
    backup,
    cloudtrail,
    cloudwatch,
    detection,
    ec2,
    elb,
    iam,
    kms,
    rds,
    s3,
    ssm,
    stack,
    vpc,
    wafv2,
)
from policies.rules._base import REGISTRY, PolicyMeta

PACK_NAME = "billkit-aws"


def all_policies() -> list[Policy]:
    return [policy for policy, _ in REGISTRY.values()]


def resource_policies() -> list[ResourceValidationPolicy]:
    return [p for p, _ in REGISTRY.values() if isinstance(p, ResourceValidationPolicy)]


def stack_policies() -> list[StackValidationPolicy]:
    return [p for p, _ in REGISTRY.values() if isinstance(p, StackValidationPolicy)]


def metadata(name: str) -> PolicyMeta:
    try:
        return REGISTRY[name][1]
    except KeyError:
        raise KeyError(f"no policy named {name!r} in the pack") from None


def all_metadata() -> list[PolicyMeta]:
    return [meta for _, meta in REGISTRY.values()]


def control_links() -> dict[str, tuple[str, ...]]:
    """Each policy's name -> the catalogue control IDs it proves."""
    return {name: meta.controls for name, (_, meta) in sorted(REGISTRY.items())}
