"""The pack as the Pulumi engine loads it: policies/__main__.py serves CrossGuard's gRPC analyzer.

The engine cannot run here, but its side of the conversation can: start the pack exactly as
`pulumi preview --policy-pack policies` does (it prints its port on stdout, on 127.0.0.1),
then call GetAnalyzerInfo, Analyze and AnalyzeStack like the engine.
"""

from __future__ import annotations

import copy
import select
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from billkit.controls import ROOT
from billkit.plan import captured
from policies.rules import control_links

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pulumi_aws")


@pytest.fixture(scope="module")
def analyzer() -> Iterator[Any]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "policies" / "__main__.py")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "the policy pack did not print its port within 120 s"
        assert proc.stdout is not None
        port = int(proc.stdout.readline().decode().strip())
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        yield analyzer_pb2_grpc.AnalyzerStub(channel)
        channel.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _struct(props: dict[str, Any]) -> struct_pb2.Struct:
    return json_format.ParseDict(props, struct_pb2.Struct())


@pytest.mark.control("CMP-02")
def test_the_engine_sees_every_policy_with_its_metadata(analyzer: Any) -> None:
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == "billkit-aws"
    assert {p.name for p in info.policies} == set(control_links())
    for p in info.policies:
        assert p.description and p.remediation_steps and p.framework.name == "PCI DSS"
        assert any(t.startswith("control:") for t in p.tags)


@pytest.mark.control("CMP-02", "EAR-01", "NET-03")
def test_analyze_over_grpc_refuses_an_insecure_database(analyzer: Any) -> None:
    db = next(r for r in captured("prod") if r.type == "aws:rds/instance:Instance")

    def analyze(props: dict[str, Any]) -> set[str]:
        request = analyzer_pb2.AnalyzeRequest(type=db.type, properties=_struct(props), urn=db.urn, name=db.name)
        return {d.policyName for d in analyzer.Analyze(request).diagnostics}

    assert analyze(db.inputs) == set()
    insecure = copy.deepcopy(db.inputs) | {"storageEncrypted": False, "publiclyAccessible": True}
    assert analyze(insecure) == {
        "aws-rds-instance-enable-storage-encryption",
        "aws-rds-instance-disallow-public-access",
    }


@pytest.mark.control("CMP-02", "NET-06")
def test_analyze_stack_over_grpc_finds_an_unprotected_load_balancer(analyzer: Any) -> None:
    resources = [r for r in captured("prod") if r.custom and r.type != "aws:wafv2/webAclAssociation:WebAclAssociation"]
    request = analyzer_pb2.AnalyzeStackRequest(
        resources=[
            analyzer_pb2.AnalyzerResource(
                type=r.type,
                properties=_struct(r.inputs),
                urn=r.urn,
                name=r.name,
                parent=r.parent or "",
                dependencies=r.dependencies,
                propertyDependencies={
                    k: analyzer_pb2.AnalyzerPropertyDependencies(urns=v) for k, v in r.property_dependencies.items()
                },
            )
            for r in resources
        ]
    )
    found = {(d.policyName, d.urn.rsplit("::", 1)[-1]) for d in analyzer.AnalyzeStack(request).diagnostics}
    assert found == {("aws-elb-stack-enable-waf-association", "billkit-edge-alb")}
