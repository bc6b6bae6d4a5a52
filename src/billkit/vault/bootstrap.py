"""Initialise, unseal and join a Vault raft cluster; hold root only while it is needed.

Idempotent: every step first reads the cluster's state (initialised? sealed? a raft peer?)
and does only what is missing. The same code drives loopback test clusters, the lab's
vault-1..3 and an AWS cluster's internal endpoints; only the node list differs.

Root token policy (EAR-07): the initial root token is used for the first configuration and
then revoked. Later runs that need root regenerate one from the unseal key shares
(``sys/generate-root`` with a one-time pad), use it, and revoke it again.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac
import hvac.exceptions
import requests

from billkit.vault.keystore import Keystore, KeystoreError, UnsealMaterial
from billkit.vault.server import Node, client

SHARES = 5
THRESHOLD = 3

Progress = Callable[[str], None]


class VaultError(RuntimeError):
    """The Vault cluster is not in a state the kit can work with; the message says what to do."""


def _quiet(_: str) -> None:
    pass


@dataclass
class Cluster:
    """The controller's view of one Vault cluster: its nodes, the CA that signs them, its key store."""

    nodes: tuple[Node, ...]
    ca_file: Path  # the root CA the nodes' certificates chain to
    keystore: Keystore

    def client(self, node: Node, token: str | None = None) -> hvac.Client:
        return client(node, self.ca_file, token)

    def reachable(self) -> list[Node]:
        out = []
        for node in self.nodes:
            try:
                self.client(node).sys.read_seal_status()
                out.append(node)
            except (requests.exceptions.RequestException, hvac.exceptions.VaultError):
                continue
        return out

    def active(self, timeout: float = 30) -> Node:
        """The node that currently holds the raft leadership and serves writes."""
        deadline = time.monotonic() + timeout
        last = "no node answered"
        while time.monotonic() < deadline:
            for node in self.nodes:
                try:
                    status = self.client(node).sys.read_leader_status()
                except (requests.exceptions.RequestException, hvac.exceptions.VaultError) as exc:
                    last = f"{node.name}: {exc}"
                    continue
                if status.get("is_self"):
                    return node
                last = f"{node.name}: not active (leader {status.get('leader_address') or 'unknown'})"
            time.sleep(0.3)
        raise VaultError(f"no active Vault node within {timeout}s ({last}); check the nodes' server logs")

    def active_client(self, token: str | None = None) -> hvac.Client:
        return self.client(self.active(), token)


# --- initialise, unseal, join -------------------------------------------------------------


def unseal(c: hvac.Client, material: UnsealMaterial) -> bool:
    """Submit key shares until the node is unsealed; True if it was sealed."""
    status = c.sys.read_seal_status()
    if not status["sealed"]:
        return False
    for key in material.keys_b64[: material.threshold]:
        status = c.sys.submit_unseal_key(key=key)
        if not status["sealed"]:
            break
    # A node that has just joined raft finishes unsealing only after it has fetched the keyring.
    deadline = time.monotonic() + 60
    while status["sealed"] and time.monotonic() < deadline:
        time.sleep(0.3)
        status = c.sys.read_seal_status()
    if status["sealed"]:
        raise VaultError(f"{c.url} is still sealed after {material.threshold} shares: are these the right keys?")
    return True


def _initialised(cluster: Cluster) -> Node | None:
    for node in cluster.nodes:
        try:
            if cluster.client(node).sys.is_initialized():
                return node
        except (requests.exceptions.RequestException, hvac.exceptions.VaultError):
            continue
    return None


def _wait_unsealed_standby_or_active(c: hvac.Client, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            health = c.sys.read_health_status(method="GET", standby_ok=True)
            if isinstance(health, dict) and health.get("initialized") and not health.get("sealed"):
                return
        except (requests.exceptions.RequestException, hvac.exceptions.VaultError):
            pass
        time.sleep(0.3)
    raise VaultError(f"{c.url} did not become a healthy member within {timeout}s")


def init_and_unseal(cluster: Cluster, progress: Progress = _quiet) -> list[str]:
    """Initialise the cluster once (5 shares, threshold 3), unseal every node, join followers to raft.

    Returns what changed (empty when nothing had to be done).
    """
    changed: list[str] = []
    ca_pem = cluster.ca_file.read_text(encoding="ascii")
    first = _initialised(cluster)
    if first is None:
        if cluster.keystore.exists():
            raise VaultError(
                f"no Vault node is initialised, but unseal keys exist in {cluster.keystore.folder}: they belong to "
                "a cluster that is gone. Move that folder away if the old cluster is truly lost, then retry."
            )
        first = cluster.nodes[0]
        progress(f"initialising Vault on {first.name} ({SHARES} shares, threshold {THRESHOLD})")
        res = cluster.client(first).sys.initialize(secret_shares=SHARES, secret_threshold=THRESHOLD)
        cluster.keystore.save(
            UnsealMaterial(
                keys_b64=res["keys_base64"], threshold=THRESHOLD, shares=SHARES, root_token=res["root_token"]
            )
        )
        changed.append(f"initialised {first.name}")
        unseal(cluster.client(first), cluster.keystore.load())
        cluster.active(timeout=60)
        # Promote joined nodes to voters after 5 s of stable contact (default 10 s).
        cluster.client(first, res["root_token"]).adapter.post(
            "/v1/sys/storage/raft/autopilot/configuration",
            json={"server_stabilization_time": "5s", "cleanup_dead_servers": False},
        )
    try:
        material = cluster.keystore.load()
    except KeystoreError as exc:
        raise VaultError(str(exc)) from None
    # After a restart every node is sealed, and raft elects a leader only once a quorum of voters
    # is unsealed: unseal every initialised node before waiting for the active one.
    for node in cluster.nodes:
        c = cluster.client(node)
        if c.sys.is_initialized() and unseal(c, material):
            changed.append(f"unsealed {node.name}")
    cluster.active(timeout=60)
    for node in cluster.nodes:
        if node == first:
            continue
        c = cluster.client(node)
        if not c.sys.is_initialized():
            leader = cluster.active()
            progress(f"joining {node.name} to the raft cluster led by {leader.name}")
            c.sys.join_raft_cluster(leader_api_addr=leader.api_addr, leader_ca_cert=ca_pem)
            changed.append(f"joined {node.name}")
        if unseal(c, material):
            changed.append(f"unsealed {node.name}")
            progress(f"unsealed {node.name}")
    for node in cluster.nodes:
        _wait_unsealed_standby_or_active(cluster.client(node))
    return changed


def wait_voters(c: hvac.Client, count: int, timeout: float = 90) -> list[str]:
    """Wait until autopilot reports `count` healthy voters (joined nodes start as non-voters)."""
    deadline = time.monotonic() + timeout
    voters: list[str] = []
    while time.monotonic() < deadline:
        state = c.adapter.get("/v1/sys/storage/raft/autopilot/state")
        data = state.get("data", {}) if isinstance(state, dict) else {}
        voters = list(data.get("voters") or [])
        if len(voters) >= count and data.get("healthy"):
            return voters
        time.sleep(0.5)
    raise VaultError(f"only {len(voters)} of {count} Vault nodes are raft voters after {timeout}s: check their logs")


def unseal_all(cluster: Cluster) -> list[str]:
    """Unseal every reachable sealed node (what `billkit up` does after a restart)."""
    material = cluster.keystore.load()
    return [node.name for node in cluster.reachable() if unseal(cluster.client(node), material)]


# --- root token: generate when needed, revoke after -----------------------------------------

ADMIN_USER = "billkit-admin"
ROOT_TTL = "15m"


def _decode_root(encoded: str, otp: str) -> str:
    raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    pad = otp.encode()
    if len(raw) != len(pad):
        raise VaultError("the encoded root token and the one-time pad differ in length")
    return bytes(a ^ b for a, b in zip(raw, pad, strict=True)).decode()


def admin_login(cluster: Cluster) -> str:
    """Log the kit's administrator identity in (password + TOTP); it holds only break-glass."""
    from pyotp.totp import TOTP

    from billkit.vault.configure import operator_login

    material = cluster.keystore.load()
    password, secret = material.extra.get("admin_password"), material.extra.get("admin_totp")
    if not password or not secret:
        raise VaultError(
            f"no administrator credentials in {cluster.keystore.folder}: the cluster was bootstrapped without "
            "them; regenerate a root token by hand (bao operator generate-root) and re-run"
        )
    totp = TOTP(secret)
    # Each code is accepted once; the method allows a skew of one period either way. Use the current
    # period's code, or the next one if the current was used, or wait.
    last = int(material.extra.get("admin_totp_last_step", "0"))
    now = int(time.time()) // totp.interval
    # Never the previous period's code: a period boundary on the way would push it out of the skew.
    step = max(last + 1, now)
    if step > now + 1:
        time.sleep((step - 1) * totp.interval - time.time() + 0.5)
    material.extra["admin_totp_last_step"] = str(step)
    cluster.keystore.save(material)
    return operator_login(cluster.active_client(), ADMIN_USER, password, totp.at(step * totp.interval))


def generate_root(cluster: Cluster) -> str:
    """A new root token: the administrator (password + TOTP) starts it, 3 of 5 key shares finish it.

    Uses the authenticated sys/generate-root-token endpoints (the unauthenticated
    sys/generate-root ones are disabled by default since OpenBao 2.5.3, rightly).
    """
    material = cluster.keystore.load()
    c = cluster.active_client(admin_login(cluster))
    try:
        with contextlib.suppress(hvac.exceptions.VaultError):
            c.adapter.delete("/v1/sys/generate-root-token/attempt")
        start = c.adapter.put("/v1/sys/generate-root-token/attempt", json={})
        data = start["data"] if isinstance(start, dict) else {}
        otp, nonce = data["otp"], data["nonce"]
        for key in material.keys_b64[: material.threshold]:
            resp = c.adapter.put("/v1/sys/generate-root-token/update", json={"key": key, "nonce": nonce})
            data = resp["data"] if isinstance(resp, dict) else {}
            if data.get("complete"):
                break
        if not data.get("complete"):
            raise VaultError("root token generation did not complete: are the unseal keys right?")
        return _decode_root(data["encoded_token"], otp)
    finally:
        with contextlib.suppress(hvac.exceptions.VaultError, requests.exceptions.RequestException):
            c.auth.token.revoke_self()


def revoke_token(cluster: Cluster, token: str) -> None:
    """Revoke a token, trying every node; say how to finish by hand if that fails."""
    last: Exception | None = None
    for _ in range(3):
        try:
            cluster.active_client(token).auth.token.revoke_self()
            return
        except hvac.exceptions.Forbidden:
            return  # already revoked or expired
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException, VaultError) as exc:
            last = exc
            time.sleep(1)
    raise VaultError(f"could not revoke a token ({last}); revoke it by hand: bao token revoke -self")


@contextlib.contextmanager
def root_session(cluster: Cluster, progress: Progress = _quiet) -> Iterator[hvac.Client]:
    """A root client for one block; the token expires in 15 minutes and is revoked at the end.

    The initial root token (fresh clusters) is used once then revoked; later sessions generate a
    root token, trade it at once for a 15-minute orphan root token, and revoke the generated one.
    """
    # One generation at a time per key store: Vault runs one generate-root at a time, and two
    # processes must not spend the same administrator TOTP step.
    cluster.keystore.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with (cluster.keystore.folder / "root-session.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        material = cluster.keystore.load()
        if material.root_token:
            base = material.root_token
            material.root_token = None  # forgotten whatever happens next: revoked below
            cluster.keystore.save(material)
        else:
            progress("generating a root token (administrator MFA + 3 of 5 key shares)")
            base = generate_root(cluster)
        try:
            c = cluster.active_client(base)
            token = c.auth.token.create_orphan(policies=["root"], ttl=ROOT_TTL, renewable=False)["auth"]["client_token"]
        finally:
            revoke_token(cluster, base)
    try:
        yield cluster.active_client(token)
    finally:
        revoke_token(cluster, token)
        progress("root token revoked")
