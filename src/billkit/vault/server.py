"""Vault (OpenBao) nodes: where they listen, where their files live, their rendered config.

The same description serves the lab's hosts (``/etc/openbao`` …, addresses of the data tier),
an AWS cluster's internal endpoints, and a throwaway cluster on loopback for the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import hvac
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from billkit.controls import ROOT
from billkit.tls_policy import IANA_CIPHER_SUITES
from infra.topology import VAULT_API, VAULT_CLUSTER, hosts_of

TEMPLATE_DIR = ROOT / "playbooks" / "roles" / "openbao" / "templates" / "etc" / "openbao"
TEMPLATE_NAME = "openbao.hcl.j2"
DOMAIN = "billkit.internal"


@dataclass(frozen=True)
class NodePaths:
    """Files of one node, as seen on that node."""

    config: Path = Path("/etc/openbao/openbao.hcl")
    data_dir: Path = Path("/var/lib/openbao/raft")
    tls_cert: Path = Path("/etc/openbao/tls/server.pem")
    tls_key: Path = Path("/etc/openbao/tls/server.key")
    # The audit device's options must be identical on every node (OpenBao refuses to activate a
    # node whose declared device differs from the replicated audit table), so the path is the same
    # string everywhere; nodes sharing one machine use a relative path and their own working dir.
    audit_log: Path = Path("/var/log/openbao/audit.log")
    workdir: Path = Path("/")

    @property
    def audit_file(self) -> Path:
        """Where this node's audit log actually is."""
        return self.workdir / self.audit_log

    @classmethod
    def under(cls, base: Path) -> NodePaths:
        return cls(
            config=base / "openbao.hcl",
            data_dir=base / "raft",
            tls_cert=base / "tls" / "server.pem",
            tls_key=base / "tls" / "server.key",
            audit_log=Path("audit.log"),
            workdir=base,
        )


@dataclass(frozen=True)
class Node:
    name: str
    host: str  # the address (or DNS name) clients and peers use
    api_port: int = VAULT_API
    cluster_port: int = VAULT_CLUSTER
    listen: str = ""  # address to bind; defaults to host
    dns_names: tuple[str, ...] = ()
    ip_sans: tuple[str, ...] = ()
    paths: NodePaths = field(default_factory=NodePaths)

    @property
    def api_addr(self) -> str:
        return f"https://{self.host}:{self.api_port}"

    @property
    def cluster_addr(self) -> str:
        return f"https://{self.host}:{self.cluster_port}"

    @property
    def bind(self) -> str:
        return self.listen or self.host

    def template_vars(self, cluster_name: str = "billkit", log_level: str = "info") -> dict[str, str | int | list[str]]:
        """The openbao role's variables for this node (the role's defaults derive the same from inventory)."""
        return {
            "openbao_node_name": self.name, "openbao_api_addr": self.api_addr,
            "openbao_cluster_addr": self.cluster_addr, "openbao_listen_address": self.bind,
            "openbao_api_port": self.api_port, "openbao_cluster_port": self.cluster_port,
            "openbao_data_dir": str(self.paths.data_dir), "openbao_tls_cert": str(self.paths.tls_cert),
            "openbao_tls_key": str(self.paths.tls_key), "openbao_audit_log": str(self.paths.audit_log),
            "openbao_cluster_name": cluster_name, "openbao_log_level": log_level,
            "openbao_default_lease_ttl": "1h", "openbao_max_lease_ttl": "768h", "openbao_telemetry_retention": "60s",
            "openbao_tls_cipher_suites": list(IANA_CIPHER_SUITES),
        }  # fmt: skip

    def render_config(self, cluster_name: str = "billkit", log_level: str = "info") -> str:
        """The server config from the openbao role's own template: one source for hosts and loopback."""
        # HCL, not HTML: no autoescaping; every value comes from the kit's node model.
        env = Environment(
            loader=FileSystemLoader(TEMPLATE_DIR), undefined=StrictUndefined, keep_trailing_newline=True,
            autoescape=select_autoescape(["html", "xml"]),
        )  # fmt: skip
        return env.get_template(TEMPLATE_NAME).render(**self.template_vars(cluster_name, log_level))


def lab_nodes() -> tuple[Node, ...]:
    """The lab's vault hosts (vault-1..3 on the data tier)."""
    return tuple(
        Node(h.name, h.address, dns_names=(h.name, f"{h.name}.{DOMAIN}"), ip_sans=(h.address,))
        for h in hosts_of("vault")
    )


def client(node: Node, ca_file: Path, token: str | None = None, timeout: int = 10) -> hvac.Client:
    """An hvac client for one node that verifies the node's certificate against the lab's root CA."""
    return hvac.Client(url=node.api_addr, verify=str(ca_file), token=token, timeout=timeout)
