"""The shape every policy of the pack shares: one function, full metadata, control IDs.

`resource_policy(...)` turns a check — a function from a resource's properties to violation
messages — into a CrossGuard ResourceValidationPolicy limited to the given resource types,
and records its metadata (PCI DSS requirements, catalogue control IDs) in REGISTRY.
Properties arrive as the engine sends them: camelCase names, numbers as floats, nested
objects as mappings.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyComplianceFramework,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Severity,
    StackValidationArgs,
    StackValidationPolicy,
)

MANDATORY = EnforcementLevel.MANDATORY
ADVISORY = EnforcementLevel.ADVISORY
DOCS_URL = "https://www.pcisecuritystandards.org/document_library/"

Check = Callable[[Mapping[str, Any], ResourceValidationArgs], Iterable[str]]
StackCheck = Callable[[StackValidationArgs], Iterable[str]]


@dataclass(frozen=True)
class PolicyMeta:
    name: str
    description: str
    controls: tuple[str, ...]
    pci_dss: tuple[str, ...]
    severity: Severity
    enforcement: EnforcementLevel
    remediation: str
    resource_types: tuple[str, ...]  # empty for stack policies
    config_defaults: Mapping[str, Any]


REGISTRY: dict[str, tuple[ResourceValidationPolicy | StackValidationPolicy, PolicyMeta]] = {}


def _metadata(name: str, controls: Sequence[str], pci: Sequence[str]) -> dict[str, Any]:
    if not controls:
        raise ValueError(f"policy {name} names no control ID")
    if not pci:
        raise ValueError(f"policy {name} names no PCI DSS requirement")
    if name in REGISTRY:
        raise ValueError(f"policy {name} is defined twice")
    return {
        "framework": PolicyComplianceFramework(name="PCI DSS", version="4.0", reference=", ".join(pci)),
        "tags": [f"control:{c}" for c in controls] + [f"pci-dss:{p}" for p in pci],
        "url": DOCS_URL,
    }


def _schema(config: Mapping[str, Any] | None) -> PolicyConfigSchema | None:
    if not config:
        return None
    return PolicyConfigSchema(properties={k: {"default": v} for k, v in config.items()})


def resource_policy(
    name: str,
    *,
    description: str,
    resource_types: Sequence[str],
    controls: Sequence[str],
    pci: Sequence[str],
    severity: Severity,
    remediation: str,
    enforcement: EnforcementLevel = MANDATORY,
    config: Mapping[str, Any] | None = None,
) -> Callable[[Check], ResourceValidationPolicy]:
    """Decorator: the check yields one message per violation; the policy reports each."""

    def wrap(check: Check) -> ResourceValidationPolicy:
        types = tuple(resource_types)
        meta_kwargs = _metadata(name, controls, pci)

        def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
            if args.resource_type not in types:
                return
            for message in check(args.props, args):
                report_violation(message, None)

        policy = ResourceValidationPolicy(
            name=name,
            description=description,
            validate=validate,
            enforcement_level=enforcement,
            severity=severity,
            remediation_steps=remediation,
            config_schema=_schema(config),
            **meta_kwargs,
        )
        REGISTRY[name] = (
            policy,
            PolicyMeta(name, description, tuple(controls), tuple(pci), severity, enforcement, remediation, types,
                       dict(config or {})),
        )  # fmt: skip
        return policy

    return wrap


def stack_policy(
    name: str,
    *,
    description: str,
    controls: Sequence[str],
    pci: Sequence[str],
    severity: Severity,
    remediation: str,
    enforcement: EnforcementLevel = MANDATORY,
) -> Callable[[StackCheck], StackValidationPolicy]:
    """Decorator for checks across resources; messages may start with a URN and ': '."""

    def wrap(check: StackCheck) -> StackValidationPolicy:
        meta_kwargs = _metadata(name, controls, pci)

        def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
            for message in check(args):
                urn = None
                if message.startswith("urn:") and ": " in message:
                    urn, message = message.split(": ", 1)
                report_violation(message, urn)

        policy = StackValidationPolicy(
            name=name,
            description=description,
            validate=validate,
            enforcement_level=enforcement,
            severity=severity,
            remediation_steps=remediation,
            **meta_kwargs,
        )
        REGISTRY[name] = (
            policy,
            PolicyMeta(name, description, tuple(controls), tuple(pci), severity, enforcement, remediation, (), {}),
        )
        return policy

    return wrap


# --- property helpers -------------------------------------------------------------------


def truthy(value: Any) -> bool:
    """True for True and for the strings "true" (launch templates carry booleans as strings)."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value is True


def number(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def items(value: Any) -> list[Any]:
    """A list property (None and a single mapping become lists)."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [value]
    return list(value)


def document(value: Any) -> dict[str, Any]:
    """An IAM/resource policy document from a JSON string or a mapping ({} if unparsable)."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str) and value.strip():
        try:
            doc = json.loads(value)
        except json.JSONDecodeError:
            return {}
        return doc if isinstance(doc, dict) else {}
    return {}


def statements(value: Any) -> list[dict[str, Any]]:
    return [dict(s) for s in items(document(value).get("Statement")) if isinstance(s, Mapping)]


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str | Mapping):
        return [value]
    return list(value)


def principals(stmt: Mapping[str, Any]) -> list[str]:
    """Every principal of a statement, as 'AWS:<arn>', 'Service:<name>', or '*'."""
    p = stmt.get("Principal")
    if p == "*":
        return ["*"]
    out: list[str] = []
    if isinstance(p, Mapping):
        for kind, values in p.items():
            out.extend("*" if v == "*" else f"{kind}:{v}" for v in as_list(values))
    return out


def grants(stmt: Mapping[str, Any], action: str) -> bool:
    """Whether a statement's actions cover one action: its Action patterns match, or its NotAction omits it.

    Patterns use IAM's wildcards (* and ?) and compare case-insensitively, as IAM does.
    """

    def match(patterns: Any) -> bool:
        return any(fnmatch.fnmatchcase(action.lower(), str(p).lower()) for p in as_list(patterns))

    if stmt.get("Action") is not None:
        return match(stmt.get("Action"))
    if stmt.get("NotAction") is not None:
        return not match(stmt.get("NotAction"))
    return False


def granted(stmt: Mapping[str, Any], actions: Iterable[str]) -> list[str]:
    """The actions of a list that a statement covers, sorted."""
    return sorted(a for a in actions if grants(stmt, a))
