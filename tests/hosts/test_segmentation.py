"""Segmentation, tested from inside the hosts: every cell of the topology's matrix.

On every host a throwaway listener takes each topology port that no service holds, so a probe
that connects proves the packet reached the destination host (router and host firewall both let
it through), and a probe that fails proves it was dropped, not merely refused for want of a
listener. All probes of a source run in parallel with short timeouts. The listeners change every
host for 45 seconds: the checks that use them are the "segmentation" drill; the others read.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from billkit.lab.net import DROP_PREFIX
from billkit.lab.testing import python_command, run_on_hosts
from billkit.system import debian_mirror
from infra.topology import (
    INTERNET,
    OPERATOR,
    Probe,
    flows_into,
    lab_host,
    lab_hosts,
    segmentation_matrix,
    topology_ports,
)

pytestmark = pytest.mark.lab
DRILL = pytest.mark.drill(
    "segmentation", disrupts="starts throwaway listeners on every free topology port of every host, probes the matrix"
)

LISTENER = r"""
import os, select, socket, sys, time
deadline = time.monotonic() + float(sys.argv[1])
socks = []
for port in map(int, sys.argv[2:]):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("0.0.0.0", port))
    except OSError:
        continue  # a real service holds the port: it answers the probe itself
    s.listen(64)
    socks.append(s)
open("/run/billkit-probe.pid", "w").write(str(os.getpid()))
while time.monotonic() < deadline:
    for s in select.select(socks, [], [], 0.5)[0]:
        conn, _ = s.accept()
        conn.close()
"""

PROBER = r"""
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
targets = json.loads(sys.argv[1])
def probe(t):
    try:
        with socket.create_connection((t[0], t[1]), timeout=2):
            return True
    except OSError:
        return False
with ThreadPoolExecutor(64) as pool:
    print(json.dumps(dict(zip([f"{a}:{p}" for a, p in targets], pool.map(probe, targets)))))
"""

MATRIX = segmentation_matrix()


def _router_drops() -> int:
    out = subprocess.run(["nft", "-j", "list", "chain", "inet", "billkit_lab", "lab_forward"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    total = 0
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if rule and any("drop" in e for e in rule["expr"]):
            total += sum(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
    return total


def operator_matrix() -> list[tuple[str, int, bool]]:
    """From the machine (the operator, and the published port's forwarder) to every host and port.

    The machine's own packets are not forwarded, so only the host firewall decides (NET-05).
    """
    out = []
    for h in lab_hosts():
        granted = {f.port for f in flows_into(h.role, "lab") if f.src in (OPERATOR, INTERNET)}
        out += [(h.name, port, port in granted) for port, proto in topology_ports() if proto == "tcp"]
    return out


def _probe_from_machine() -> dict[str, bool]:
    def probe(cell: tuple[str, int, bool]) -> bool:
        try:
            with socket.create_connection((lab_host(cell[0]).address, cell[1]), timeout=2):
                return True
        except OSError:
            return False

    cells = operator_matrix()
    with ThreadPoolExecutor(64) as pool:
        return {f"{lab_host(c[0]).address}:{c[1]}": ok for c, ok in zip(cells, pool.map(probe, cells), strict=True)}


@pytest.fixture(scope="module")
def results(lab_up: None) -> dict[str, Any]:  # module fixtures run before the autouse one: ask for the lab
    names = [h.name for h in lab_hosts()]
    ports = [str(p) for p, proto in topology_ports() if proto == "tcp"]
    pidfile = "/run/billkit-probe.pid"
    launch = shlex.join(["setsid", "-f", *python_command(LISTENER, "45", *ports)])
    wait = f"for i in $(seq 50); do [ -s {pidfile} ] && exit 0; sleep 0.1; done; exit 1"
    started = run_on_hosts(names, ["sudo", "-n", "sh", "-c", f"{launch} </dev/null >/dev/null 2>&1; {wait}"])
    assert all(p.returncode == 0 for p in started.values()), {n: p.stderr for n, p in started.items()}
    drops_before = _router_drops()
    try:
        per_src: dict[str, list[tuple[str, int]]] = {}
        for p in MATRIX:
            per_src.setdefault(p.src_host, []).append((lab_host(p.dst_host).address, p.port))
        outs: dict[str, Any] = {}
        procs = {}
        from billkit.lab.hosts import ssh_command

        def one(src: str) -> subprocess.CompletedProcess:
            cmd = ssh_command(lab_host(src), shlex.join(python_command(PROBER, json.dumps(per_src[src]))))
            return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)

        with ThreadPoolExecutor(len(per_src)) as pool:
            procs = dict(zip(per_src, pool.map(one, per_src), strict=True))
        for src, proc in procs.items():
            assert proc.returncode == 0, f"{src}: {proc.stderr}"
            outs[src] = json.loads(proc.stdout)
        outs["operator"] = _probe_from_machine()
    finally:
        run_on_hosts(names, ["sudo", "-n", "sh", "-c", f"kill $(cat {pidfile}) 2>/dev/null; rm -f {pidfile}"])
    return {"probes": outs, "router_drops": _router_drops() - drops_before}


@DRILL
@pytest.mark.control("NET-02")
@pytest.mark.parametrize("probe", MATRIX, ids=lambda p: f"{p.src_host}->{p.dst_host}:{p.port}")
def test_segmentation_matrix(results, probe: Probe):
    got = results["probes"][probe.src_host][f"{lab_host(probe.dst_host).address}:{probe.port}"]
    verdict = "connected" if got else "was dropped"
    assert got == probe.allowed, (
        f"{probe.src_host} -> {probe.dst_host}:{probe.port} {verdict}; the topology says "
        f"{'allowed' if probe.allowed else 'refused'} ({' '.join(probe.controls)})"
    )


@DRILL
@pytest.mark.control("LOG-03", "NET-02")
def test_router_logs_and_counts_refused_flows(results):
    refused_across_tiers = [
        p for p in MATRIX if not p.allowed and lab_host(p.src_host).tier != lab_host(p.dst_host).tier
    ]
    assert results["router_drops"] >= len(refused_across_tiers)

    ruleset = subprocess.run(["nft", "list", "table", "inet", "billkit_lab"], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
    assert f'log prefix "{DROP_PREFIX}"' in ruleset


@DRILL
@pytest.mark.control("NET-05")
@pytest.mark.parametrize("cell", operator_matrix(), ids=lambda c: f"machine->{c[0]}:{c[1]}")
def test_host_firewall_from_the_machine(results, cell):
    got = results["probes"]["operator"][f"{lab_host(cell[0]).address}:{cell[1]}"]
    assert got == cell[2], f"machine -> {cell[0]}:{cell[1]} {'connected' if got else 'was dropped'}"


@DRILL
@pytest.mark.control("LOG-03", "NET-05")
def test_hosts_log_and_count_refused_packets(results):
    outs = run_on_hosts(
        [h.name for h in lab_hosts()], ["sudo", "-n", "nft", "list", "chain", "inet", "billkit_host", "input"]
    )
    for name, proc in outs.items():
        assert 'log prefix "billkit-host-drop "' in proc.stdout, name
        packets = [int(w.split()[0]) for w in proc.stdout.split("counter packets ")[1:]]
        assert packets and packets[-1] > 0, f"{name}: the default-deny counter never moved"


@pytest.mark.control("NET-01")
@pytest.mark.parametrize("name", [h.name for h in lab_hosts()])
def test_no_route_beyond_the_lab(name):
    """No host has a default route: an address outside 10.77.0.0/16 is unreachable (a lookup, no packet)."""
    out = run_on_hosts([name], ["sh", "-c", "ip route show default; ip route get 192.0.2.1 2>&1; true"])[name]
    assert "default" not in out.stdout.split("\n")[0]
    assert "unreachable" in out.stdout


@pytest.mark.control("NET-01")
def test_router_has_no_way_out():
    """The router forwards only between lab hosts, does no NAT, and its proxy serves only the mirror."""

    ruleset = subprocess.run(["nft", "-j", "list", "table", "inet", "billkit_lab"], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
    lab_addrs = {h.address for h in lab_hosts()} | {h.gateway for h in lab_hosts()}
    for item in json.loads(ruleset)["nftables"]:
        rule = item.get("rule")
        if not rule or not any("accept" in e for e in rule["expr"]):
            continue
        for e in rule["expr"]:
            match = e.get("match", {})
            if match.get("left", {}).get("payload", {}).get("field") == "daddr":
                right = match["right"]
                addrs = right.get("set", [right]) if isinstance(right, dict) else [right]
                assert set(addrs) <= lab_addrs, f"forward accept to {addrs} outside the lab"
    nat = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout
    assert "masquerade" not in nat and "snat" not in nat
    from billkit.lab.state import PROXY_DIR

    acng = (PROXY_DIR / "conf" / "acng.conf").read_text()
    assert "ForceManaged: 1" in acng and debian_mirror().split("://")[1] in acng
