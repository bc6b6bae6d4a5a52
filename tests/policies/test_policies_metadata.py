"""The pack's metadata: names, severities, remediation, PCI DSS references and control IDs."""

from __future__ import annotations

import re

import pytest
from pulumi_policy import EnforcementLevel, ResourceValidationPolicy, StackValidationPolicy

from billkit.checks import collect_policy_checks
from billkit.controls import PCI_RE, load_catalog
from policies.rules import all_metadata, all_policies, control_links, resource_policies, stack_policies

# pulumi_aws warns about its own deprecated aliases when a service module loads.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pulumi_aws")

NAME_RE = re.compile(r"^aws-[a-z0-9]+-[a-z0-9]+-(disallow|enable|configure)-[a-z0-9-]+$")
# The cloud-layer controls this pack and the infra tests must cover (issue 4).
CLOUD_CONTROLS = [
    "ENC-01",
    "ENC-02",
    "ENC-03",
    "ENC-04",
    "MFA-02",
    "PAT-02",
    "PAT-04",
    "PAT-05",
    "PAT-07",
    "RBAC-03",
    "RBAC-05",
    "RBAC-06",
    "EAR-01",
    "EAR-02",
    "EAR-03",
    "EAR-06",
    "EAR-07",
    "EAR-08",
    "BAK-01",
    "BAK-02",
    "BAK-03",
    "BAK-04",
    "BAK-05",
    "BAK-07",
    "LOG-01",
    "LOG-02",
    "LOG-03",
    "LOG-04",
    "LOG-10",
    "LOG-11",
    "LOG-13",
    "NET-01",
    "NET-02",
    "NET-03",
    "NET-04",
    "NET-06",
    "NET-07",
    "NET-08",
    "NET-09",
    "HRD-02",
    "CMP-01",
    "CMP-02",
    "CMP-03",
]


def test_the_pack_is_big_enough() -> None:
    assert len(resource_policies()) >= 40
    assert len(stack_policies()) >= 3
    assert len(all_policies()) == len(resource_policies()) + len(stack_policies())


@pytest.mark.control("CMP-02")
def test_every_policy_has_full_metadata() -> None:
    names = [m.name for m in all_metadata()]
    assert len(names) == len(set(names))
    for policy in all_policies():
        assert NAME_RE.match(policy.name), policy.name
        assert isinstance(policy, ResourceValidationPolicy | StackValidationPolicy)
        assert policy.description and policy.description.endswith("."), policy.name
        assert policy.severity is not None and policy.remediation_steps, policy.name
        assert policy.enforcement_level in (EnforcementLevel.MANDATORY, EnforcementLevel.ADVISORY), policy.name
        assert policy.framework is not None and policy.framework.name == "PCI DSS" and policy.framework.version == "4.0"
        assert policy.tags and any(t.startswith("control:") for t in policy.tags)
    for meta in all_metadata():
        assert meta.pci_dss and all(PCI_RE.match(p) for p in meta.pci_dss), meta.name


@pytest.mark.control("CMP-02")
def test_every_policy_names_known_active_cloud_controls() -> None:
    catalog = load_catalog()
    for name, ids in control_links().items():
        assert ids, name
        assert catalog.unknown(ids) == [], f"{name} names unknown or retired controls"
        for cid in ids:
            assert "cloud" in catalog[cid].layers, f"{name}: {cid} is not a cloud-layer control"


def test_policy_pci_references_belong_to_their_controls_family() -> None:
    """A policy cites requirements from the same PCI DSS principal requirements as its controls."""
    catalog = load_catalog()
    for meta in all_metadata():
        control_roots = {p.split(".")[0] for c in meta.controls for p in catalog[c].pci_dss}
        assert {p.split(".")[0] for p in meta.pci_dss} & control_roots, meta.name


def test_coverage_contract_with_the_checks_module() -> None:
    checks = collect_policy_checks()
    assert {c.name for c in checks} == {f"policy:{n}" for n in control_links()}
    assert all(c.layer == "cloud" for c in checks)


def test_every_required_cloud_control_has_a_policy_or_a_test() -> None:
    """Controls without a policy must be named by a test under tests/infra or tests/policies."""
    from pathlib import Path

    by_policy = {c for ids in control_links().values() for c in ids}
    here = Path(__file__).resolve().parents[1]
    text = "".join(p.read_text(encoding="utf-8") for d in ("infra", "policies") for p in (here / d).glob("test_*.py"))
    missing = [c for c in CLOUD_CONTROLS if c not in by_policy and f'"{c}"' not in text]
    assert missing == []


def test_mandatory_and_advisory_are_chosen_deliberately() -> None:
    advisory = sorted(m.name for m in all_metadata() if m.enforcement is EnforcementLevel.ADVISORY)
    # Advisory: availability or hygiene a dev stack may opt out of, visibly. Everything else blocks.
    assert advisory == [
        "aws-ec2-vpcendpoint-enable-private-dns",
        "aws-rds-instance-enable-copy-tags-to-snapshot",
        "aws-rds-instance-enable-multi-az",
    ]
