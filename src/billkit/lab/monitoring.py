"""The lab's monitoring stage: mon-1 and every host's exporter (MON-01, MON-02, MON-03).

1. ``prepare``: each host's identity certificate from ``pki_int`` (client and server: the exporters
   serve with it, Prometheus on mon-1 reads with it; 24 hours, re-issued by any ``up`` past half its
   lifetime) staged under ``.lab/monitoring/tls``; the web passwords (``operator`` for people and
   ``billkit alerts``, ``prometheus`` for Prometheus itself) and their bcrypt hashes; the roles'
   variables as group_vars (``all/monitoring``: host_monitoring; ``role_mon``: monitoring), ports from the topology.
2. the ``monitoring.yml`` playbook.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from billkit.lab.inventory import write_group_vars
from billkit.lab.state import LAB_DIR
from infra.topology import (
    ALERTMANAGER,
    APP_METRICS,
    APP_PORT,
    HTTPS,
    NODE_EXPORTER,
    PROMETHEUS,
    VAULT_API,
    hosts_of,
    lab_hosts,
)

Progress = Callable[[str], None]

FOLDER = LAB_DIR / "monitoring"
TLS = FOLDER / "tls"  # <host>.pem (leaf + chain), <host>.key, ca.pem
USERS = ("operator", "prometheus")
CERT_RENEW_FRACTION = 0.5
# The TLS endpoints mon-1 probes (role, port, service); each is a flow from mon in the topology.
TLS_SERVICES = (("waf", HTTPS, "edge"), ("app", APP_PORT, "app"), ("vault", VAULT_API, "vault"),
                ("backup", HTTPS, "backup-store"), ("mon", PROMETHEUS, "prometheus"),
                ("mon", ALERTMANAGER, "alertmanager"))  # fmt: skip


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class MonitoringAccess:
    """How an operator on the controller reaches mon-1's Prometheus and Alertmanager."""

    prometheus_url: str
    alertmanager_url: str
    ca_file: Path
    username: str
    password: str


def monitoring_access() -> MonitoringAccess:
    mon = hosts_of("mon")[0]
    password = FOLDER / "operator.password"
    if not password.exists():
        raise FileNotFoundError("the lab has no monitoring host yet: run `./billkit up`")
    return MonitoringAccess(
        f"https://{mon.address}:{PROMETHEUS}", f"https://{mon.address}:{ALERTMANAGER}", TLS / "ca.pem",
        "operator", password.read_text(encoding="ascii").strip(),
    )  # fmt: skip


def _password(user: str) -> tuple[Path, str, list[str]]:
    """The user's password file (made once, 0600) and its bcrypt hash (kept, so a re-run changes nothing)."""
    from billkit.vault.pki import write_private

    changes = []
    path, hashed = FOLDER / f"{user}.password", FOLDER / f"{user}.bcrypt"
    if not path.exists():
        write_private(path, secrets.token_urlsafe(24).encode())
        changes.append(f"web password of {user}")
    password = path.read_bytes().strip()
    if not hashed.exists() or not bcrypt.checkpw(password, hashed.read_bytes().strip()):
        write_private(hashed, bcrypt.hashpw(password, bcrypt.gensalt(rounds=10)))
    return path, hashed.read_text(encoding="ascii").strip(), changes


def ensure_identities(progress: Progress = _quiet) -> list[str]:
    """Every host's identity certificate, issued (one root session) only for those due."""
    from billkit.lab.data import lab_root_session
    from billkit.vault import configure
    from billkit.vault import lab as vault_lab
    from billkit.vault.deploy import open_cluster
    from billkit.vault.pki import needs_renewal
    from billkit.vault.server import lab_nodes

    TLS.mkdir(parents=True, exist_ok=True, mode=0o700)
    _, root = open_cluster(lab_nodes(), vault_lab.state())
    ca = TLS / "ca.pem"
    if not ca.exists() or ca.read_text(encoding="ascii") != root.pem:
        ca.write_text(root.pem, encoding="ascii")
    due = [h for h in lab_hosts() if needs_renewal(TLS / f"{h.name}.pem", CERT_RENEW_FRACTION)]
    if not due:
        return []
    changes = []
    with lab_root_session(progress) as c:
        for h in due:
            progress(f"identity certificate of {h.name}")
            if configure.ensure_host_cert(c, h.name, TLS / f"{h.name}.pem", TLS / f"{h.name}.key",
                                          (h.name,), (h.address,), CERT_RENEW_FRACTION):  # fmt: skip
                changes.append(f"identity certificate of {h.name} (pki_int)")
    return changes


def prepare(progress: Progress = _quiet) -> list[str]:
    """Identity certificates, web passwords and the roles' variables; returns what changed."""
    FOLDER.mkdir(parents=True, exist_ok=True, mode=0o700)
    changes = ensure_identities(progress)
    users: dict[str, str] = {}
    password_files: dict[str, Path] = {}
    for user in USERS:
        path, hashed, made = _password(user)
        users[user], password_files[user] = hashed, path
        changes += made
    every_host = {"host_monitoring_tls_src_dir": str(TLS), "host_monitoring_node_exporter_port": NODE_EXPORTER}
    mon = {
        "monitoring_prometheus_port": PROMETHEUS,
        "monitoring_alertmanager_port": ALERTMANAGER,
        "monitoring_node_exporter_port": NODE_EXPORTER,
        "monitoring_app_metrics_port": APP_METRICS,
        "monitoring_vault_port": VAULT_API,
        "monitoring_tls_services": [{"group": f"role_{r}", "port": p, "service": n} for r, p, n in TLS_SERVICES],
        "monitoring_web_users": users,
        "monitoring_prometheus_password_src": str(password_files["prometheus"]),
    }
    for name, body in (("all/monitoring", every_host), ("role_mon", mon)):
        if write_group_vars(name, body, "billkit.lab.monitoring", private=True):
            changes.append(f"group_vars/{name}.yml")
    return changes
