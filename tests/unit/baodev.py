"""A real ``bao server -dev`` on loopback for unit tests: in memory, unsealed, with a file audit device.

Dev mode starts in about half a second (billkit.localsvc.openbao, with raft and TLS, takes ten). Audit
devices cannot be enabled through OpenBao's API: the device is declared in a config file passed next to
``-dev``. The server is stopped by its PID, and only that one.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac

from billkit.localsvc import LOOPBACK, bao_binary, stop_process


@dataclass(frozen=True)
class BaoDev:
    url: str
    root_token: str
    unseal_key: str
    audit_log: Path
    pid: int

    def client(self, token: str | None = None) -> hvac.Client:
        return hvac.Client(url=self.url, token=self.root_token if token is None else token)


def _two_free_ports() -> int:
    """A port p on loopback with p + 1 free too: dev mode puts its cluster listener on the next port."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind((LOOPBACK, 0))
            port = int(a.getsockname()[1])
            with socket.socket() as b:
                try:
                    b.bind((LOOPBACK, port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two consecutive free ports on loopback")


def _active(url: str) -> bool:
    try:
        return hvac.Client(url=url).sys.read_health_status(method="GET").get("sealed") is False
    except Exception:  # noqa: BLE001 - not listening yet, or answering 5xx while it becomes active
        return False


@contextlib.contextmanager
def bao_dev(root: Path, timeout: float = 15.0) -> Iterator[BaoDev]:
    root.mkdir(parents=True, exist_ok=True)
    audit_log = root / "audit.log"
    config = root / "audit.hcl"
    config.write_text(f'audit "file" "file" {{\n  options {{\n    file_path = "{audit_log}"\n  }}\n}}\n')
    port, token = _two_free_ports(), secrets.token_hex(16)
    log = root / "bao.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(bao_binary()), "server", "-dev", f"-dev-root-token-id={token}",
             f"-dev-listen-address={LOOPBACK}:{port}", f"-config={config}"],
            stdout=out, stderr=subprocess.STDOUT, cwd=root, start_new_session=True,
            env={"PATH": os.environ.get("PATH", ""), "HOME": str(root)},
        )  # fmt: skip
    try:
        url = f"http://{LOOPBACK}:{port}"
        deadline = time.monotonic() + timeout
        key = None
        while key is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bao server -dev did not start:\n{log.read_text(errors='replace')[-3000:]}")
            # The banner with the unseal key is printed once the server is up.
            m = re.search(r"^Unseal Key: (\S+)$", log.read_text(errors="replace"), re.M)
            key = m.group(1) if m else None
            time.sleep(0.05)
        while not _active(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bao server -dev is not active:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
        yield BaoDev(url, token, key, audit_log, proc.pid)
    finally:
        stop_process(proc, timeout=10)
