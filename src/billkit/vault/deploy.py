"""One entry point for the controller: bring a Vault cluster to its desired state.

``converge`` initialises and unseals (first run), joins raft, applies the configuration as
code under a short-lived root token, replaces the nodes' bootstrap certificates with ones
from the PKI engine, exports the SSH user CA key, then revokes root. Re-runs change nothing.
"""

from __future__ import annotations

import hashlib
import secrets
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import hvac

from billkit.vault import configure
from billkit.vault.bootstrap import ADMIN_USER, Cluster, Progress, init_and_unseal, root_session, wait_voters
from billkit.vault.keystore import Keystore
from billkit.vault.pki import RootCA, ensure_root_ca, issuer_cn, needs_renewal, pem_needs_renewal
from billkit.vault.server import Node

# Installs a node's certificate chain and key where the server reads them, then reloads it.
CertInstaller = Callable[[Node, str, str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class StateLayout:
    """The controller's state folder for one Vault cluster (kept out of git: .lab/)."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def vault(self) -> Path:
        return self.root / "vault"

    @property
    def ssh_user_ca(self) -> Path:
        return self.root / "ssh" / "user-ca.pub"


@dataclass
class Result:
    changes: list[str] = field(default_factory=list)
    voters: list[str] = field(default_factory=list)
    ssh_ca_public_key: str = ""


def open_cluster(nodes: tuple[Node, ...], state: StateLayout) -> tuple[Cluster, RootCA]:
    root = ensure_root_ca(state.pki)
    return Cluster(nodes, root.cert_path, Keystore(state.vault)), root


def served_cert(node: Node) -> bytes | None:
    """The certificate the node's API listener presents right now (wherever the node runs)."""
    try:
        return ssl.get_server_certificate((node.host, node.api_port), timeout=5).encode()
    except OSError:
        return None


def node_cert_due(node: Node, root: RootCA) -> bool:
    """A node still on its bootstrap certificate (signed by the offline root), or near expiry."""
    pem = served_cert(node)
    if pem is None:
        return False  # not reachable: nothing to renew now; the next run will
    return pem_needs_renewal(pem) or issuer_cn(pem) == issuer_cn(root.cert_path.read_bytes())


def renew_node_certs(
    c: hvac.Client, nodes: tuple[Node, ...], root: RootCA, install: CertInstaller, force: bool = False
) -> list[str]:
    changed = []
    for node in nodes:
        if force or node_cert_due(node, root):
            cert = configure.issue_cert(c, node.name, dns=node.dns_names, ips=node.ip_sans)
            install(node, cert.fullchain, cert.private_key)
            changed.append(f"certificate of {node.name} from the PKI engine")
    return changed


def fingerprint(nodes: tuple[Node, ...], settings: configure.Settings, db: configure.Database | None) -> str:
    """What the configuration is derived from: policies, settings, nodes, database target."""
    h = hashlib.sha256()
    for name, text in sorted(configure.policy_texts().items()):
        h.update(f"{name}\0{text}\0".encode())
    h.update(repr(settings).encode())
    h.update(repr([(n.name, n.api_addr) for n in nodes]).encode())
    h.update(repr(None if db is None else (db.host, db.port, db.dbname, db.admin_user)).encode())
    h.update(configure.source())
    return h.hexdigest()


@dataclass(frozen=True)
class ServiceCert:
    """A certificate the PKI engine issues for another host's service, staged on the controller."""

    name: str
    dns: tuple[str, ...]
    ips: tuple[str, ...]
    folder: Path  # gets server.pem (leaf + chain) and server.key (0600)

    def due(self) -> bool:
        return needs_renewal(self.folder / "server.pem")


def converge(
    nodes: tuple[Node, ...],
    state: StateLayout,
    settings: configure.Settings,
    install_cert: CertInstaller,
    db: configure.Database | None = None,
    progress: Progress = _quiet,
    force: bool = False,
    service_certs: tuple[ServiceCert, ...] = (),
) -> Result:
    """Bring the cluster to its desired state.

    Root is regenerated only when needed: when the configuration's inputs changed since the last
    successful run (fingerprint), a node certificate is due, or ``force`` (drift check).
    """
    cluster, root = open_cluster(nodes, state)
    result = Result()
    result.changes += init_and_unseal(cluster, progress)
    wanted = fingerprint(nodes, settings, db)
    material = cluster.keystore.load()
    certs_due = any(node_cert_due(n, root) for n in nodes) or any(sc.due() for sc in service_certs)
    if not force and material.extra.get("config_fingerprint") == wanted and not certs_due:
        progress("Vault configuration unchanged since the last run: no root token needed")
        result.ssh_ca_public_key = state.ssh_user_ca.read_text().strip() if state.ssh_user_ca.exists() else ""
        return result
    with root_session(cluster, progress) as c:
        progress("applying the Vault configuration")
        applied = configure.apply(c, root, settings, db)
        result.changes += applied.changes
        material = cluster.keystore.load()
        if not material.extra.get("admin_password"):
            password = secrets.token_urlsafe(32)
            op = configure.add_operator(c, ADMIN_USER, password, policies=("break-glass", "operator"))
            material = cluster.keystore.load()
            material.extra.update(admin_password=password, admin_totp=op.totp_secret)
            cluster.keystore.save(material)
            result.changes.append(f"administrator identity {ADMIN_USER} (password + TOTP, break-glass only)")
        result.changes += renew_node_certs(c, nodes, root, install_cert)
        for sc in service_certs:
            if configure.ensure_host_cert(c, sc.name, sc.folder / "server.pem", sc.folder / "server.key", sc.dns,
                                          sc.ips):  # fmt: skip
                result.changes.append(f"service certificate of {sc.name}")
        result.voters = wait_voters(c, len(nodes))
        material = cluster.keystore.load()
        material.extra["config_fingerprint"] = wanted
        cluster.keystore.save(material)
    state.ssh_user_ca.parent.mkdir(parents=True, exist_ok=True)
    if not state.ssh_user_ca.exists() or state.ssh_user_ca.read_text().strip() != applied.ssh_ca_public_key:
        state.ssh_user_ca.write_text(applied.ssh_ca_public_key + "\n", encoding="ascii")
    result.ssh_ca_public_key = applied.ssh_ca_public_key
    return result
