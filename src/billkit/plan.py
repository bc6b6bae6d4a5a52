"""`billkit plan`: run the Pulumi program offline and evaluate the policy pack on it.

The Pulumi engine cannot run here, so the program runs under Pulumi's mock runtime with the
stack's own config (Pulumi.<stack>.yaml). A MockMonitor subclass captures every resource the
program registers (type, name, inputs as the engine would see them, parent, dependencies);
then every policy of the CrossGuard pack is applied to them, exactly as `pulumi preview
--policy-pack policies` would, and the result is printed as a table, JSON or SARIF.
"""

from __future__ import annotations

import functools
import json
import runpy
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from billkit.controls import ROOT

ACCOUNT_ID = "123456789012"  # the mock account (AWS documentation style), never a real one
STACKS = ("dev", "prod")
PROJECT = "billkit"


class PlanError(RuntimeError):
    """The plan could not run; the message says what to fix."""


# --- capturing the program's resources ---------------------------------------------------


@dataclass
class Resource:
    type: str
    name: str
    urn: str
    parent: str | None
    custom: bool
    inputs: dict[str, Any]
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    dependencies: list[str] = field(default_factory=list)


def _engine_view(inputs: Any, wire: Any) -> dict[str, Any]:
    """The inputs as the engine hands them to the analyzer: assets and archives stay in their wire form
    (a signature key and a path, hash or text), not the SDK's objects."""
    import pulumi
    from google.protobuf import json_format

    def keep_wire(value: Any, raw: Any) -> Any:
        if isinstance(value, pulumi.Asset | pulumi.Archive):
            return raw
        if isinstance(value, dict) and isinstance(raw, dict):
            return {k: keep_wire(v, raw.get(k)) for k, v in value.items()}
        if isinstance(value, list) and isinstance(raw, list) and len(value) == len(raw):
            return [keep_wire(v, r) for v, r in zip(value, raw, strict=True)]
        return value

    return dict(keep_wire(dict(inputs), json_format.MessageToDict(wire)))


def _mocks_and_monitor(region: str) -> tuple[Any, Any]:
    import pulumi
    from pulumi.runtime import rpc
    from pulumi.runtime.mocks import MockMonitor

    class BillkitMocks(pulumi.runtime.Mocks):
        """Outputs = inputs + the attributes dependants read (id, arn, name, and a few per type)."""

        def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
            state = dict(args.inputs)
            rid = f"{args.name}-id"
            if not args.custom:
                return rid, state
            service, _, kind = args.typ.partition(":")[2].partition("/")
            kind = kind.split(":")[-1].lower()
            state.setdefault("id", rid)
            state.setdefault("name", args.name)
            state.setdefault("arn", f"arn:aws:{service}:{region}:{ACCOUNT_ID}:{kind}/{args.name}")
            extra = {
                "aws:s3/bucket:Bucket": {"bucket": f"{args.name}-bucket"},
                "aws:kms/key:Key": {"keyId": f"{args.name}-key-id"},
                "aws:ec2/vpcEndpoint:VpcEndpoint": {"prefixListId": "pl-mock"},
                "aws:lb/loadBalancer:LoadBalancer": {"dnsName": f"{args.name}.elb.mock", "arnSuffix": args.name},
                "aws:lb/targetGroup:TargetGroup": {"arnSuffix": args.name},
                "aws:ec2/instance:Instance": {"privateIp": "10.0.0.10", "availabilityZone": f"{region}a"},
                "aws:rds/instance:Instance": {"endpoint": f"{args.name}.rds.mock:5432"},
                "aws:ec2/eip:Eip": {"allocationId": f"{args.name}-alloc"},
            }.get(args.typ, {})
            for key, value in extra.items():
                state.setdefault(key, value)
            return rid, state

        def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
            if args.token == "aws:index/getCallerIdentity:getCallerIdentity":  # noqa: S105 - an invoke token
                return {"accountId": ACCOUNT_ID, "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/plan", "userId": "plan",
                        "id": ACCOUNT_ID}, []  # fmt: skip
            if args.token == "aws:ec2/getAmi:getAmi":  # noqa: S105 - an invoke token
                return {"id": "ami-0123456789abcdef0", "imageId": "ami-0123456789abcdef0"}, []
            return {}, []

    class CapturingMonitor(MockMonitor):
        def __init__(self, mocks: Any) -> None:
            super().__init__(mocks)
            self.captured: list[Resource] = []

        def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - the gRPC method's name
            response = super().RegisterResource(request)
            if request.type != "pulumi:pulumi:Stack":
                self.captured.append(
                    Resource(
                        type=request.type,
                        name=request.name,
                        urn=response.urn,
                        parent=request.parent or None,
                        custom=bool(request.custom),
                        inputs=_engine_view(rpc.deserialize_properties(request.object), request.object),
                        property_dependencies={k: list(v.urns) for k, v in request.propertyDependencies.items()},
                        dependencies=list(request.dependencies),
                    )
                )
            return response

    mocks = BillkitMocks()
    return mocks, CapturingMonitor(mocks)


def stack_config(stack: str) -> dict[str, Any]:
    """The config of Pulumi.<stack>.yaml (the file the real `pulumi` reads)."""
    path = ROOT / f"Pulumi.{stack}.yaml"
    if not path.exists():
        raise PlanError(f"no stack file {path.name}; stacks are {', '.join(STACKS)} (or create Pulumi.{stack}.yaml)")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    config = data.get("config") or {}
    for key, value in config.items():
        if isinstance(value, Mapping) and "secure" in value:
            raise PlanError(f"{path.name}: {key} is an encrypted secret; the offline plan cannot decrypt it")
    return dict(config)


def _config_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def run_program(stack: str, config: Mapping[str, Any], program: Callable[[], Any]) -> list[Resource]:
    """Run a Pulumi program under the mock runtime and return every resource it registers."""
    import pulumi
    from pulumi.runtime import settings
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    values = {k: _config_value(v) for k, v in config.items()}
    pulumi.runtime.set_all_config(values)
    mocks, monitor = _mocks_and_monitor(values.get("aws:region", "eu-central-1"))
    settings.ROOT.set(None)  # a fresh root stack resource for every run
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    _sync_await(run_pulumi_func(program))
    return monitor.captured


def main_program() -> None:
    """The real entry point, infra/__main__.py, as `pulumi up` runs it."""
    runpy.run_path(str(ROOT / "infra" / "__main__.py"), run_name="__main__")


def capture_stack(stack: str) -> list[Resource]:
    return run_program(stack, stack_config(stack), main_program)


@functools.cache
def captured(stack: str) -> tuple[Resource, ...]:
    """One mock run per stack and process (tests share it; treat the resources as read-only)."""
    return tuple(capture_stack(stack))


# --- evaluating the policy pack -------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    policy: str
    enforcement: str  # mandatory | advisory
    severity: str
    resource_type: str
    resource_name: str
    urn: str
    message: str
    controls: tuple[str, ...]
    pci_dss: tuple[str, ...]


@dataclass
class PlanResult:
    stack: str
    resources: list[Resource]
    violations: list[Violation]
    # control ID -> "proven" | "violated" | "not exercised"
    controls: dict[str, str]
    policies_evaluated: int

    @property
    def mandatory(self) -> list[Violation]:
        return [v for v in self.violations if v.enforcement == "mandatory"]

    @property
    def exit_code(self) -> int:
        return 1 if self.mandatory else 0

    def resources_by_type(self) -> dict[str, int]:
        return dict(sorted(Counter(r.type for r in self.resources if r.custom).items()))


def evaluate(stack: str, resources: list[Resource]) -> PlanResult:
    """Apply every policy of the pack to the captured resources, as the engine's analyzer does."""
    from pulumi_policy import (
        PolicyCustomTimeouts,
        PolicyResource,
        PolicyResourceOptions,
        ResourceValidationArgs,
        StackValidationArgs,
    )

    from policies.rules import REGISTRY, resource_policies, stack_policies

    def options(r: Resource) -> PolicyResourceOptions:
        return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], r.parent)

    custom = [r for r in resources if r.custom]
    violations: list[Violation] = []
    applied: set[str] = set()

    def reporter(policy_name: str, r: Resource | None) -> Callable[[str, str | None], None]:
        meta = REGISTRY[policy_name][1]

        def report(message: str, urn: str | None = None) -> None:
            target = r or by_urn.get(urn or "")
            violations.append(
                Violation(
                    policy=policy_name,
                    enforcement=meta.enforcement.value,
                    severity=meta.severity.value,
                    resource_type=target.type if target else "pulumi:pulumi:Stack",
                    resource_name=target.name if target else stack,
                    urn=(target.urn if target else urn)
                    or f"urn:pulumi:{stack}::{PROJECT}::pulumi:pulumi:Stack::{PROJECT}-{stack}",
                    message=message,
                    controls=meta.controls,
                    pci_dss=meta.pci_dss,
                )
            )

        return report

    by_urn = {r.urn: r for r in custom}
    for policy in resource_policies():
        meta = REGISTRY[policy.name][1]
        for r in custom:
            if r.type not in meta.resource_types:
                continue
            applied.add(policy.name)
            args = ResourceValidationArgs(r.type, r.inputs, r.urn, r.name, options(r), None, dict(meta.config_defaults))
            policy.validate(args, reporter(policy.name, r))

    # Stack policies see every resource with its parent and dependencies resolved.
    policy_resources: dict[str, PolicyResource] = {
        r.urn: PolicyResource(r.type, r.inputs, r.urn, r.name, options(r), None, None, [], {}) for r in custom
    }
    for r in custom:
        pr = policy_resources[r.urn]
        pr.parent = policy_resources.get(r.parent or "")
        pr.dependencies = [policy_resources[u] for u in r.dependencies if u in policy_resources]
        pr.property_dependencies = {
            k: [policy_resources[u] for u in urns if u in policy_resources]
            for k, urns in r.property_dependencies.items()
        }
    stack_args = StackValidationArgs(list(policy_resources.values()))
    for policy in stack_policies():
        applied.add(policy.name)
        policy.validate(stack_args, reporter(policy.name, None))

    controls: dict[str, str] = {}
    violated = {c for v in violations for c in v.controls}
    for name, (_, meta) in REGISTRY.items():
        for c in meta.controls:
            if c in violated:
                controls[c] = "violated"
            elif name in applied:
                controls[c] = "proven" if controls.get(c) != "violated" else "violated"
            else:
                controls.setdefault(c, "not exercised")
    return PlanResult(stack, resources, violations, dict(sorted(controls.items())), len(REGISTRY))


def plan(stack: str) -> PlanResult:
    if stack not in STACKS and not (ROOT / f"Pulumi.{stack}.yaml").exists():
        raise PlanError(f"unknown stack {stack!r}; stacks are {', '.join(STACKS)}")
    return evaluate(stack, list(captured(stack)))


# --- output -----------------------------------------------------------------------------------


def as_json(result: PlanResult) -> dict[str, Any]:
    return {
        "stack": result.stack,
        "resources": len([r for r in result.resources if r.custom]),
        "resources_by_type": result.resources_by_type(),
        "policies_evaluated": result.policies_evaluated,
        "violations": [asdict(v) for v in result.violations],
        "mandatory_violations": len(result.mandatory),
        "controls": result.controls,
    }


def _component_file(urn: str) -> str:
    """The infra/ file of the component that declared a resource (from the URN's type chain)."""
    chain = urn.split("::")[2] if urn.count("::") >= 3 else ""
    for token in chain.split("$"):
        parts = token.split(":")
        if len(parts) == 3 and parts[0] == "billkit":
            return f"infra/{parts[1]}.py"
    return "infra/__main__.py"


def as_sarif(result: PlanResult) -> dict[str, Any]:
    """SARIF 2.1.0: one rule per policy, one result per violation, located at the component's file."""
    from policies.rules import all_metadata

    metas = all_metadata()
    index = {m.name: i for i, m in enumerate(metas)}
    rules = [
        {
            "id": m.name,
            "name": m.name,
            "shortDescription": {"text": m.description},
            "fullDescription": {"text": f"{m.description} Controls: {', '.join(m.controls)}."},
            "help": {"text": m.remediation},
            "defaultConfiguration": {"level": "error" if m.enforcement.value == "mandatory" else "warning"},
            "properties": {
                "tags": [*m.controls, *(f"PCI-DSS-{p}" for p in m.pci_dss)],
                "security-severity": {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "3.0"}[
                    m.severity.value
                ],
                "controls": list(m.controls),
                "pci_dss": list(m.pci_dss),
            },
        }
        for m in metas
    ]
    results = [
        {
            "ruleId": v.policy,
            "ruleIndex": index[v.policy],
            "level": "error" if v.enforcement == "mandatory" else "warning",
            "message": {"text": f"{v.resource_name} ({v.resource_type}): {v.message}"},
            "locations": [
                {
                    "physicalLocation": {"artifactLocation": {"uri": _component_file(v.urn), "uriBaseId": "%SRCROOT%"}},
                    "logicalLocations": [{"fullyQualifiedName": v.urn, "kind": "resource"}],
                }
            ],
            "partialFingerprints": {"billkitResource/v1": f"{v.policy}:{v.urn}:{v.message}"},
        }
        for v in result.violations
    ]
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "billkit-policy-pack",
                        "informationUri": "https://www.pulumi.com/docs/iac/crossguard/",
                        "version": "0.1.0",
                        "rules": rules,
                    }
                },  # fmt: skip
                "automationDetails": {"id": f"billkit-plan/{result.stack}"},
                "results": results,
            }
        ],
    }


def print_table(result: PlanResult, console: Any) -> None:
    from rich.table import Table

    kinds = Table(title=f"billkit plan — stack {result.stack}: {sum(result.resources_by_type().values())} resources")
    kinds.add_column("Resource type")
    kinds.add_column("Count", justify="right")
    for kind, n in result.resources_by_type().items():
        kinds.add_row(kind, str(n))
    console.print(kinds)
    if result.violations:
        vt = Table(title=f"{len(result.violations)} violation(s), {len(result.mandatory)} mandatory")
        for col in ("Policy", "Level", "Resource", "Message", "Controls"):
            vt.add_column(col, overflow="fold")
        for v in sorted(result.violations, key=lambda v: (v.enforcement != "mandatory", v.policy, v.resource_name)):
            level = "[red]mandatory[/red]" if v.enforcement == "mandatory" else "[yellow]advisory[/yellow]"
            vt.add_row(v.policy, level, v.resource_name, v.message, ", ".join(v.controls))
        console.print(vt)
    else:
        console.print(f"[green]no violations: {result.policies_evaluated} policies passed[/green]")
    ct = Table(title="Cloud-layer controls (policy pack)")
    ct.add_column("Control")
    ct.add_column("Status")
    colour = {"proven": "green", "violated": "red", "not exercised": "yellow"}
    for cid, status in result.controls.items():
        ct.add_row(cid, f"[{colour[status]}]{status}[/{colour[status]}]")
    console.print(ct)
