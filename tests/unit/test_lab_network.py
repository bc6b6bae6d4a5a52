"""The lab's network model, derived from the topology (no lab needed)."""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from billkit.controls import ROOT
from billkit.lab import inventory, net
from billkit.lab.ansible import parse_recap
from infra.topology import (
    APT_PROXY,
    GATEWAY,
    INTERNET,
    OPERATOR,
    TIERS,
    VAULT_API,
    flows,
    flows_into,
    hosts_of,
    lab_hosts,
    topology_ports,
)


@pytest.mark.control("NET-02", layer="host")
def test_vrrp_has_no_port_and_is_matched_by_its_protocol_number():
    assert net.proto_match("vrrp", 0) == "ip protocol 112"  # minimal hosts cannot resolve the name
    assert net.proto_match("tcp", 443) == "tcp dport 443"
    assert all(proto != "vrrp" for _, proto in topology_ports())  # nothing to connect to in the matrix


def test_bridge_names_fit_the_kernel_and_are_unique():
    names = list(net.bridges())
    assert len(names) == len(TIERS) == len(set(names))
    assert all(len(n) <= 15 for n in names)


@pytest.mark.control("NET-02", layer="host")
def test_one_forward_rule_per_flow_between_hosts():
    rules = net.forward_rules()
    host_flows = [f for f in flows("lab") if {f.src, f.dst}.isdisjoint({INTERNET, OPERATOR, GATEWAY})]
    assert len(rules) == len(host_flows)
    for f, rule in zip(host_flows, rules, strict=True):
        assert f"{net.proto_match(f.protocol, f.port)} accept" in rule
        for h in hosts_of(f.src):
            assert h.address in rule.split("ip daddr")[0]
        for h in hosts_of(f.dst):
            assert h.address in rule.split("ip daddr")[1]


@pytest.mark.control("NET-01", layer="host")
def test_gateway_offers_only_the_apt_proxy_and_the_router_no_nat():
    for rule in net.gateway_rules():
        assert f"dport {APT_PROXY} accept" in rule
    text = net.ruleset()
    assert "nat" not in text and "masquerade" not in text
    assert text.count("drop") >= 2 and 'log prefix "billkit-drop "' in text


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft is installed by `billkit up`")
def test_ruleset_is_valid_nftables(tmp_path: Path):
    path = tmp_path / "lab.nft"
    path.write_text(net.ruleset())
    proc = subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.control("NET-05", layer="host")
@pytest.mark.parametrize("host", lab_hosts(), ids=lambda h: h.name)
def test_host_firewall_variable_is_the_topology(host):
    got = inventory.inbound_flows(host)
    want = {(f.port, f.src) for f in flows_into(host.role, "lab")}
    assert {(g["port"], g["from"]) for g in got} <= want
    lab = ipaddress.ip_network("10.77.0.0/16")
    for g in got:
        for src in g["sources"]:
            net_ = ipaddress.ip_network(src)
            assert net_.subnet_of(lab) or g["from"] == INTERNET
            assert src != host.address, "a host never grants itself"


def test_inventory_groups_per_role_and_tier():
    inv = inventory.inventory()["all"]
    assert set(inv["hosts"]) == {h.name for h in lab_hosts()}
    for h in lab_hosts():
        assert h.name in inv["children"][f"role_{h.role}"]["hosts"]
        assert h.name in inv["children"][f"tier_{h.tier}"]["hosts"]
        assert inv["hosts"][h.name]["ansible_host"] == h.address


def test_roles_list_no_port_numbers():
    """Ports come from the topology through the inventory; roles never write one."""
    ports = {str(p) for p, _ in topology_ports()}
    offenders = []
    for path in (ROOT / "playbooks" / "roles").rglob("*"):
        if path.is_file():
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(r"\b(dport|[Pp]ort)\s*[:=]?\s*(\d+)\b", line):
                    m = re.search(r"(\d+)\s*$", line)
                    if m and m.group(1) in ports:
                        offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders


def test_recap_parsing():
    text = "PLAY RECAP ***\nedge-1 : ok=40 changed=0 unreachable=0 failed=0 skipped=9\n"
    text += "db-1                       : ok=42   changed=2    unreachable=0    failed=1    skipped=11\n"
    recap = parse_recap(text)
    assert recap.hosts["edge-1"]["changed"] == 0 and recap.changed == 2 and recap.failed == 1


@pytest.mark.control("NET-05", layer="host")
def test_ec2_inventory_sets_the_same_role_variables():
    """The same roles run on EC2: only the inventory differs (AWS subnets as sources, no SSH flow)."""
    from infra.topology import aws_subnets

    inv = inventory.ec2_inventory({"app-a": ("app", "10.40.64.10"), "vault-a": ("vault", "10.40.128.10")})["all"]
    app_rules = inv["hosts"]["app-a"]["host_firewall_inbound"]
    assert {r["from"] for r in app_rules} == {"waf", "mon"}
    assert next(r for r in app_rules if r["from"] == "waf")["sources"] == list(aws_subnets()["edge"])
    assert next(r for r in app_rules if r["from"] == "mon")["sources"] == list(aws_subnets()["management"])
    vault_ports = {(r["from"], r["port"]) for r in inv["hosts"]["vault-a"]["host_firewall_inbound"]}
    assert ("app", VAULT_API) in vault_ports and all(src != OPERATOR for src, _ in vault_ports)
    assert "vault-a" in inv["children"]["tier_data"]["hosts"]


def test_one_lab_per_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Bridges, nft table and addresses are machine-wide: a second checkout's `up` is refused."""
    from billkit.lab import state

    monkeypatch.setattr(state, "OWNER_FILE", tmp_path / "owner")
    other = tmp_path / "other" / ".lab"
    other.mkdir(parents=True)
    (other / "state.json").write_text('{"bridges": ["bk-edge"]}')
    state.OWNER_FILE.write_text(str(other))
    with pytest.raises(RuntimeError, match="another checkout"):
        state.claim_machine()
    (other / "state.json").write_text('{"bridges": []}')  # that lab is down: the machine is free
    state.claim_machine()
    assert state.lab_owner() == str(state.LAB_DIR)
    state.release_machine()
    assert state.lab_owner() is None


def test_dead_lab_claim_is_taken_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A lab whose processes all died (its session ended) no longer blocks `up`: its changes are adopted."""
    from billkit.lab import state

    monkeypatch.setattr(state, "OWNER_FILE", tmp_path / "owner")
    monkeypatch.setattr(state, "LAB_DIR", tmp_path / "mine")
    monkeypatch.setattr(state, "STATE_FILE", tmp_path / "mine" / "state.json")
    other = tmp_path / "other" / ".lab"
    other.mkdir(parents=True)
    live = subprocess.Popen(["sleep", "30"])
    try:
        body = {"bridges": ["bk-edge"], "nft_table": True, "sysctl": {"net.ipv4.ip_forward": "0"}}
        (other / "state.json").write_text(json.dumps({**body, "nspawn": {"edge-1": live.pid}}))
        state.OWNER_FILE.write_text(str(other))
        mine = state.LabState()
        with pytest.raises(RuntimeError, match="another checkout"):  # still running: refused
            state.claim_machine(mine)
    finally:
        live.kill()
        live.wait()
    adopted = state.claim_machine(mine)  # every process is gone now
    assert adopted == ["bridge bk-edge", f"nft table {state.NFT_TABLE}"]
    assert mine.bridges == ["bk-edge"] and mine.nft_table and mine.sysctl == {"net.ipv4.ip_forward": "0"}
    left = json.loads((other / "state.json").read_text())
    assert left["bridges"] == [] and not left["nft_table"], "the dead lab's `down` must not undo them twice"
    assert state.lab_owner() == str(state.LAB_DIR)
