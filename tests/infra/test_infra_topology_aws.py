"""The AWS side of the topology: subnet split, security-group and NACL rules from the flows."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra import topology

# VPCs from /16 to /24 at any aligned private address.
vpcs = st.builds(
    lambda prefix, n: str(ipaddress.ip_network(f"10.{n % 256}.0.0/{prefix}", strict=False)),
    st.integers(min_value=16, max_value=24),
    st.integers(min_value=0, max_value=255),
)


@pytest.mark.control("NET-02")
@settings(max_examples=150, deadline=None)
@given(vpc=vpcs, az_count=st.integers(min_value=1, max_value=4))
def test_aws_subnets_do_not_overlap_and_fit_the_vpc(vpc: str, az_count: int) -> None:
    subnets = topology.aws_subnets(vpc, az_count)
    assert set(subnets) == {t.name for t in topology.TIERS}
    nets = [ipaddress.ip_network(c) for cidrs in subnets.values() for c in cidrs]
    assert len(nets) == len(topology.TIERS) * az_count
    parent = ipaddress.ip_network(vpc)
    assert all(n.subnet_of(parent) for n in nets)  # type: ignore[arg-type]
    for i, a in enumerate(nets):
        for b in nets[i + 1 :]:
            assert not a.overlaps(b), f"{a} overlaps {b}"
    # Each tier's subnets sit inside its own block: tier rules can use the block.
    blocks = topology.aws_tier_blocks(vpc)
    for tier_name, cidrs in subnets.items():
        block = ipaddress.ip_network(blocks[tier_name])
        assert all(ipaddress.ip_network(c).subnet_of(block) for c in cidrs)  # type: ignore[arg-type]


@settings(max_examples=30, deadline=None)
@given(vpc=vpcs, az_count=st.integers(min_value=1, max_value=4))
def test_adding_azs_never_moves_existing_subnets(vpc: str, az_count: int) -> None:
    fewer = topology.aws_subnets(vpc, az_count)
    more = topology.aws_subnets(vpc, 4)
    for tier_name, cidrs in fewer.items():
        assert more[tier_name][: len(cidrs)] == cidrs


@pytest.mark.parametrize(("vpc", "azs"), [("10.0.0.0/25", 2), ("10.0.0.0/16", 0), ("10.0.0.0/16", 5)])
def test_aws_subnets_refuses_bad_input_with_a_clear_message(vpc: str, azs: int) -> None:
    with pytest.raises(ValueError, match="VPC|az_count"):
        topology.aws_subnets(vpc, azs)


@pytest.mark.control("NET-02", "NET-09")
def test_security_group_rules_are_exactly_the_aws_flows() -> None:
    rules = topology.aws_sg_rules()
    flows = topology.flows("aws")
    # Every rule names its flow's purpose and port; no rule without a flow.
    for r in rules:
        assert any(f.port == r.port and f.protocol == r.protocol and f.purpose in r.description for f in flows), r
    # Every AWS flow between two groups shows up as egress at the source and ingress at the destination.
    for f in flows:
        src, dst = topology.AWS_ENDPOINTS[f.src], topology.AWS_ENDPOINTS[f.dst]
        if not src.initiates:
            continue
        if dst.sg:
            assert any(r.sg == dst.sg and r.direction == "ingress" and r.port == f.port for r in rules), f
        if src.sg:
            assert any(r.sg == src.sg and r.direction == "egress" and r.port == f.port for r in rules), f
    # SSM replaces SSH: no administration port anywhere in AWS.
    assert topology.admin_ports() == {topology.SSH}
    assert not [r for r in rules if r.port in topology.admin_ports()]
    # Only the internet-facing ports accept the internet.
    public = {(r.port, r.protocol) for r in rules if r.direction == "ingress" and topology.ANY_IPV4 in r.peer_cidrs}
    assert public == set(topology.internet_ports("aws")) == {(topology.HTTPS, "tcp"), (topology.HTTP, "tcp")}


@pytest.mark.control("NET-01", "NET-02")
def test_nacls_fit_aws_limits_and_keep_private_tiers_off_the_internet() -> None:
    nacls = topology.aws_nacl_rules()
    assert set(nacls) == {t.name for t in topology.TIERS}
    for tier_name, rules in nacls.items():
        for egress in (True, False):
            numbers = [r.rule_number for r in rules if r.egress is egress]
            assert len(numbers) == len(set(numbers))
            assert len(numbers) <= 20, f"{tier_name}: {len(numbers)} entries exceed the default NACL quota of 20"
        assert not [r for r in rules if topology.SSH in range(r.from_port, r.to_port + 1) and not r.egress
                    and r.cidr == topology.ANY_IPV4 and r.from_port != topology.EPHEMERAL_PORTS[0]]  # fmt: skip
    # The only inbound new connections from anywhere land on the edge tier, on the internet ports.
    for tier_name, rules in nacls.items():
        inbound_public = {(r.from_port, r.protocol) for r in rules
                          if not r.egress and r.cidr == topology.ANY_IPV4 and r.from_port == r.to_port}  # fmt: skip
        if tier_name == "edge":
            assert inbound_public == set(topology.internet_ports("aws"))
        else:
            assert inbound_public == set(), tier_name
    # Private tiers open new connections to 0.0.0.0/0 only on HTTPS: S3 through the gateway endpoint
    # (their route tables have no internet route; the stack policy on routes proves that part).
    for tier_name in ("data", "management"):
        anywhere = {(r.from_port, r.to_port) for r in nacls[tier_name] if r.egress and r.cidr == topology.ANY_IPV4}
        assert anywhere <= {(topology.HTTPS, topology.HTTPS)}, tier_name


def test_flows_marked_lab_only_do_not_exist_in_aws() -> None:
    lab_only = [f for f in topology.FLOWS if f.realms == topology.LAB_ONLY]
    assert lab_only and all(f not in topology.flows("aws") for f in lab_only)
    assert all(f.dst != topology.GATEWAY and f.src != topology.GATEWAY for f in topology.flows("aws"))
    # The AWS-only flows never reach the lab's nftables or segmentation matrix.
    assert all(f.dst != topology.AWS_APIS for f in topology.flows("lab"))


@pytest.mark.control("NET-02")
@settings(max_examples=40, deadline=None)
@given(vpc=vpcs, az_count=st.integers(min_value=2, max_value=3))
def test_rule_peers_stay_inside_the_vpc_or_are_the_internet(vpc: str, az_count: int) -> None:
    parent = ipaddress.ip_network(vpc)
    cidrs = [r.cidr for rules in topology.aws_nacl_rules(vpc, az_count).values() for r in rules]
    cidrs += [c for r in topology.aws_sg_rules(vpc, az_count) for c in r.peer_cidrs]
    for c in cidrs:
        assert c == topology.ANY_IPV4 or ipaddress.ip_network(c).subnet_of(parent)  # type: ignore[arg-type]
