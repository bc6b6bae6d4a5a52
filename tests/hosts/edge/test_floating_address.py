"""The edge's floating address: on exactly one edge host, whose nginx is active; VRRP only between
the edge hosts (read-only checks; moving the address is the patch drill's, tests/lab/test_patch.py)."""

from __future__ import annotations

import pytest
from conftest import active_edge, ssh

from infra.topology import hosts_of, lab_floating_address

pytestmark = pytest.mark.lab


@pytest.mark.control("PAT-04", "NET-06")
def test_the_floating_address_is_held_by_one_edge_host_with_nginx_and_keepalived_on_every_one() -> None:
    holder = active_edge()  # asserts exactly one holder
    for h in hosts_of("waf"):
        proc = ssh(h.name, "systemctl is-active keepalived.service nginx.service")
        assert proc.stdout.split() == ["active", "active"], (h.name, proc.stdout)
    assert holder in {h.name for h in hosts_of("waf")}


@pytest.mark.control("NET-05", "PAT-04")
def test_vrrp_is_accepted_from_the_peer_edge_hosts_only() -> None:
    """The host firewall accepts VRRP (IP protocol 112) from the other edge hosts, from nobody else."""
    for h in hosts_of("waf"):
        peers = {o.address for o in hosts_of("waf") if o.name != h.name}
        rules = ssh(h.name, "sudo nft list chain inet billkit_host input").stdout
        vrrp = [line for line in rules.splitlines() if "ip protocol" in line and "accept" in line]
        assert len(vrrp) == 1, (h.name, vrrp)
        assert all(p in vrrp[0] for p in peers) and h.address not in vrrp[0], vrrp[0]
        assert lab_floating_address("waf") not in vrrp[0]
