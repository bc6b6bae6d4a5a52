"""Fault drills on the live cluster: lose the leader, seal a node, back the keys up encrypted."""

from __future__ import annotations

import time
from pathlib import Path

import hvac
import pytest
from cryptography.exceptions import InvalidTag

from billkit.vault import snapshot
from billkit.vault.bootstrap import unseal_all
from billkit.vault.server import Node
from tests.hosts.keys.support import VaultEnv


def _write(c: hvac.Client, i: int) -> None:
    c.secrets.kv.v2.create_or_update_secret(f"drill/{i}", secret={"n": str(i)}, mount_point="secret")


def _read(c: hvac.Client, i: int) -> str:
    return c.secrets.kv.v2.read_secret_version(f"drill/{i}", mount_point="secret", raise_on_deleted_version=True)[
        "data"
    ]["data"]["n"]


def _voters(vault: VaultEnv, count: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    state: dict = {}
    while time.monotonic() < deadline:
        try:
            state = vault.client(vault.operator_token).adapter.get("/v1/sys/storage/raft/autopilot/state")["data"]
            healthy = [s for s in state["servers"].values() if s["healthy"] and s["status"] in ("leader", "voter")]
            if len(healthy) >= count:
                return state
        except hvac.exceptions.VaultError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"fewer than {count} healthy voters after {timeout}s: {state}")


def _rejoin(vault: VaultEnv, node: Node) -> None:
    vault.local.start(node.name)
    assert node.name in unseal_all(vault.cluster)
    _voters(vault, 3)


@pytest.mark.control("BAK-08", "LOG-09")
def test_leader_crash_elects_a_new_leader_and_loses_no_write(vault: VaultEnv) -> None:
    leader = vault.cluster.active()
    c = vault.client(vault.drill_token)
    for i in range(25):
        _write(c, i)  # each acknowledged write is committed on a raft quorum
    vault.local.kill(leader.name)
    started = time.monotonic()
    try:
        new = vault.cluster.active(timeout=45)
        failover = time.monotonic() - started
        assert new != leader
        c = vault.client(vault.drill_token)
        assert [_read(c, i) for i in range(25)] == [str(i) for i in range(25)]
        audit_before = new.paths.audit_file.stat().st_size if new.paths.audit_file.exists() else 0
        _write(c, 25)
        assert _read(c, 25) == "25"
        assert new.paths.audit_file.stat().st_size > audit_before, "the new leader does not audit"
        print(f"failover to {new.name} in {failover:.1f}s")
    finally:
        _rejoin(vault, leader)  # back as a healthy voter: it caught up with the writes it missed


@pytest.mark.control("BAK-08")
def test_a_sealed_node_does_not_stop_the_cluster(vault: VaultEnv) -> None:
    active = vault.cluster.active()
    standby = next(n for n in vault.local.nodes if n != active)
    vault.local.stop(standby.name)
    vault.local.start(standby.name)  # a restarted node comes back sealed
    try:
        health = vault.cluster.client(standby).sys.read_health_status(method="GET", standby_ok=True, sealed_code=200)
        assert health["sealed"] is True
        c = vault.client(vault.drill_token)
        _write(c, 100)
        assert _read(c, 100) == "100"
        app = vault.client(vault.app_token).secrets.transit
        assert app.encrypt_data("pan", "MTIzNA==")["data"]["ciphertext"].startswith("vault:v")
    finally:
        assert standby.name in unseal_all(vault.cluster)
        _voters(vault, 3)


@pytest.mark.control("BAK-08")
def test_raft_snapshot_is_taken_by_the_backup_agent_and_encrypted(vault: VaultEnv, tmp_path: Path) -> None:
    key = snapshot.snapshot_key(vault.cluster.keystore.folder)
    snap = snapshot.take(vault.client(vault.backup_token), tmp_path / "vault.snap.enc", key)
    blob = snap.path.read_bytes()
    assert blob.startswith(snapshot.MAGIC) and b"\x1f\x8b" not in blob[: len(snapshot.MAGIC) + 12]
    raw = snapshot.decrypt(snap.path, key)
    assert raw.startswith(b"\x1f\x8b") and len(raw) > 1000
    with pytest.raises(InvalidTag):
        snapshot.decrypt(snap.path, b"\x00" * 32)
    with pytest.raises(hvac.exceptions.Forbidden):
        vault.client(vault.app_token).sys.take_raft_snapshot()
