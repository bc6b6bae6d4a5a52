"""The rolling patch run on the lab (`billkit patch`): a drill, it installs real security updates.

The lab's base image comes from the release suite, so the security suite has real updates pending
on every host. In order, one module-scoped sequence (each rollout is minutes of work, done once):

1. the first host of the order is broken so that it fails its health check once patched: the rollout
   stops there, it stays drained, and no other host is touched;
2. after the fix, the whole rollout under a bounded load through the published port: 0 failed
   requests, no security update left, Vault kept accepting writes (none lost), backups still archive;
3. a second run changes nothing and takes far less time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from billkit.controls import ROOT
from billkit.lab.state import EVIDENCE_DIR
from billkit.lab.testing import run_on_hosts
from infra.topology import hosts_of, lab_hosts

pytestmark = [pytest.mark.lab]

FIRST = hosts_of("backup")[0].name  # the playbook's order starts with the backup store
BREAK = "/etc/systemd/system/billkit-s3.service.d/zz-drill.conf"


def _patch(*args: str, timeout: float = 1800) -> tuple[subprocess.CompletedProcess, dict[str, Any]]:
    before = set(EVIDENCE_DIR.glob("patch-*.json"))
    proc = subprocess.run([sys.executable, "-m", "billkit", "patch", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip
    new = sorted(set(EVIDENCE_DIR.glob("patch-*.json")) - before)
    assert new, f"no evidence written:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc, json.loads(new[-1].read_text())


def _status() -> dict[str, dict[str, Any]]:
    """Every host's patch status (boot ID, pending updates), read-only."""
    script = (ROOT / "playbooks/roles/patching/files/patch_status.py").read_text()
    names = [h.name for h in lab_hosts()]
    procs = run_on_hosts(names, ["sudo", "python3", "-c", script])
    out = {}
    for name, proc in procs.items():
        assert proc.returncode == 0, (name, proc.stderr)
        out[name] = json.loads(proc.stdout)
    return out


def _security_pending(status: dict[str, Any]) -> int:
    return sum(1 for p in status["pending"] if p["security"])


class VaultWriter:
    """Writes to Vault (a cubbyhole of its own token) through whichever node answers, and remembers
    every write Vault acknowledged, to read them all back after the rollout."""

    def __init__(self) -> None:
        from billkit.lab.app import vault_root
        from billkit.vault import lab as vault_lab
        from billkit.vault.deploy import open_cluster
        from billkit.vault.server import lab_nodes

        with vault_root() as c:
            # an orphan: the root token that makes it is revoked at the end of this block
            self.token = c.auth.token.create(policies=["default"], ttl="2h", no_parent=True)["auth"]["client_token"]
        self.cluster, _ = open_cluster(lab_nodes(), vault_lab.state())
        self.clients = [self.cluster.client(n, self.token) for n in self.cluster.nodes]
        self.acked: list[str] = []
        self.refused = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(0.5):
            key = f"w{i:05d}"
            for c in self.clients:
                try:
                    c.write(f"cubbyhole/{key}", value=key)
                    self.acked.append(key)
                    break
                except Exception:  # noqa: BLE001, S112 - a node restarting or sealed: try the next one
                    continue
            else:
                self.refused += 1
            i += 1

    def __enter__(self) -> VaultWriter:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        # a write in flight may try every node (10 s each): the read-back must not race it
        self._t.join(timeout=60)
        assert not self._t.is_alive(), "the Vault writer did not stop"

    def lost(self) -> list[str]:
        # read from the active node: what a standby holds may trail the leader's last commit
        keys = set(self.cluster.active_client(self.token).list("cubbyhole/")["data"]["keys"])
        return [k for k in self.acked if k not in keys]


@pytest.fixture(scope="module")
def drill() -> dict[str, Any]:
    """The three runs, once, with what was observed around them."""
    from billkit.lab import backups

    seen: dict[str, Any] = {"before": _status()}
    assert sum(_security_pending(s) for s in seen["before"].values()) > 0, "the drill needs pending updates"
    # 1. a patch that breaks the store: it will not start again once patched
    broken = f"mkdir -p {Path(BREAK).parent} && printf '[Service]\\nExecStartPre=/bin/false\\n' > {BREAK}"
    proc = run_on_hosts([FIRST], ["sudo", "sh", "-c", f"{broken} && systemctl daemon-reload"])
    assert proc[FIRST].returncode == 0, proc[FIRST].stderr
    try:
        seen["failed"] = _patch("--health-timeout", "20")  # it will not come back: no need to wait a minute
        seen["after_failure"] = _status()
    finally:
        run_on_hosts([FIRST], ["sudo", "sh", "-c", f"rm -f {BREAK} && systemctl daemon-reload && "
                               "systemctl restart billkit-s3.service"])  # fmt: skip
    # 2. the whole rollout under load, with Vault writes going on
    with VaultWriter() as writer:
        seen["full"] = _patch("--under-load")
    seen["vault_lost"], seen["vault_acked"] = writer.lost(), len(writer.acked)
    seen["after"] = _status()
    seen["gate_after"] = subprocess.run([sys.executable, "-m", "billkit", "patch", "--check", "--format", "json"],
                                        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    try:  # archives the current WAL segment through the patched store, and checks it arrived
        backups.pgbackrest(backups.db_host(), "check", timeout=300)
        seen["archive_error"] = None
        # PostgreSQL archives segments in order and retries one until it is stored: nothing waiting
        # (no .ready file) means every segment written during the rollout reached the store, no gap.
        seen["wal_waiting"] = backups.psql(
            backups.db_host(), "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"
        )[0][0]
    except Exception as exc:  # noqa: BLE001 - reported by its own test
        seen["archive_error"] = str(exc)
    # 3. again: nothing to do
    seen["again"] = _patch()
    return seen


@pytest.mark.control("PAT-04")
def test_a_host_failing_its_health_check_stops_the_rollout_and_stays_drained(drill: dict[str, Any]) -> None:
    proc, ev = drill["failed"]
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert ev["result"] == "failed" and ev["stopped_at"] == FIRST
    assert f"billkit patch --hosts {FIRST}" in ev["message"], ev["message"]  # it says what to do
    first = next(r for r in ev["hosts"] if r["host"] == FIRST)
    assert not first["health"]["ok"] and first["packages"], first
    # the others were not touched: same boot, same pending updates
    for name, status in drill["after_failure"].items():
        if name == FIRST:
            continue
        before = drill["before"][name]
        assert status["boot_id"] == before["boot_id"], name
        assert _security_pending(status) == _security_pending(before), name
    assert {r["host"] for r in ev["hosts"]} == {FIRST}


@pytest.mark.control("PAT-04", "PAT-05", "PAT-07")
def test_rollout_under_load_fails_no_request_and_leaves_no_security_update(drill: dict[str, Any]) -> None:
    proc, ev = drill["full"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert ev["result"] == "ok" and ev["mode"] == "security"
    load = ev["load"]
    assert load["sent"] >= 50 and load["failed"] == 0, load
    assert {r["host"] for r in ev["hosts"]} == {h.name for h in lab_hosts()}
    for name, status in drill["after"].items():
        assert _security_pending(status) == 0, (name, [p["name"] for p in status["pending"] if p["security"]])
    for r in ev["hosts"]:
        assert r["health"]["ok"] and r["boot_id_before"] and r["duration_s"], r
        for p in r["packages"]:  # evidence an assessor can compare with the published updates
            assert p["name"] and p["after"] and p["before"] != p["after"], p


@pytest.mark.control("PAT-05")
def test_the_gate_passes_once_the_rollout_is_done(drill: dict[str, Any]) -> None:
    gate = drill["gate_after"]
    report = json.loads(gate.stdout)
    assert gate.returncode == 0 and report["result"] == "pass", report.get("violations", [])[:5]


@pytest.mark.control("PAT-06")
def test_services_using_replaced_libraries_were_restarted_or_the_host_rebooted(drill: dict[str, Any]) -> None:
    _, ev = drill["full"]
    for r in ev["hosts"]:
        if r["rebooted"]:
            assert r["boot_id_after"] != r["boot_id_before"], r
    for name, status in drill["after"].items():
        left = [s for s in status["restart_needed"]["services"] if not s.startswith(("user@", "getty@"))]
        assert not left, (name, left)


@pytest.mark.control("PAT-04")
def test_vault_kept_accepting_writes_and_lost_none(drill: dict[str, Any]) -> None:
    _, ev = drill["full"]
    assert drill["vault_acked"] > 20 and drill["vault_lost"] == []
    leaders = [r for r in ev["hosts"] if r["election_seconds"] is not None]
    assert len(leaders) == 1 and leaders[0]["role"] == "vault", leaders  # the active node stepped down, once
    assert [r["host"] for r in ev["hosts"] if r["role"] == "vault"][-1] == leaders[0]["host"]  # and went last


@pytest.mark.control("PAT-04")
def test_backups_still_archive_after_the_rollout(drill: dict[str, Any]) -> None:
    assert drill["archive_error"] is None, drill["archive_error"]
    assert drill["wal_waiting"] == "0", drill["wal_waiting"]


@pytest.mark.control("PAT-04", "PAT-07")
def test_a_second_run_changes_nothing_and_is_faster(drill: dict[str, Any]) -> None:
    proc, ev = drill["again"]
    assert proc.returncode == 0 and ev["result"] == "ok", proc.stderr[-2000:]
    assert all(not r["packages"] and not r["rebooted"] for r in ev["hosts"]), ev["hosts"]
    assert ev["duration_s"] < drill["full"][1]["duration_s"] * 0.6, (ev["duration_s"], drill["full"][1]["duration_s"])
