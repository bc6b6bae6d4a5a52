"""Test support for checks that run against the lab (tests/hosts, tests/lab).

``ensure_lab()`` brings the lab up if it is not running and hardened (the same idempotent
``billkit up``), once per test session. ``host_urls()`` names every lab host for testinfra
through the generated inventory (``ansible://``).
"""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from billkit.controls import ROOT
from billkit.lab.inventory import write_inventory
from billkit.lab.state import INVENTORY, LAB_DIR, load_state
from infra.topology import hosts_of, lab_hosts


def host_urls(role: str | None = None) -> list[str]:
    """testinfra host specs for every lab host (or those of one role)."""
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    if not INVENTORY.exists():
        write_inventory()  # pure function of the topology: fine before the lab exists
    chosen = hosts_of(role) if role else lab_hosts()
    return [f"ansible://{h.name}?ansible_inventory={INVENTORY}" for h in chosen]


def lab_is_ready() -> bool:
    from billkit.lab.pipeline import PLAYBOOKS, status_rows

    state = load_state()
    roles = {r for pb in PLAYBOOKS for r in pb.roles}
    return all(r["state"] == "running" for r in status_rows()) and roles <= set(state.roles_applied)


def ensure_lab() -> None:
    if lab_is_ready():
        return
    proc = subprocess.run([sys.executable, "-m", "billkit", "up"], cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"`billkit up` failed (exit {proc.returncode}); see its output above and .lab/log/")


def run_on_hosts(names: list[str], command: list[str], timeout: float = 120) -> dict[str, subprocess.CompletedProcess]:
    """Run one command on many hosts in parallel over SSH (as the lab's admin account)."""
    from billkit.lab.hosts import ssh_command
    from infra.topology import lab_host

    def one(name: str) -> subprocess.CompletedProcess:
        proc = subprocess.CompletedProcess([], 255)
        for _ in range(3):  # 255: SSH itself failed (a busy machine can miss the banner timeout); retry
            proc = subprocess.run(ssh_command(lab_host(name), shlex.join(command)), capture_output=True, text=True,
                                  timeout=timeout, check=False)  # fmt: skip
            if proc.returncode != 255:
                break
        return proc

    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        return dict(zip(names, pool.map(one, names), strict=True))


def python_command(script: str, *args: str) -> list[str]:
    """A command that runs a Python script on a host, immune to shell quoting."""
    code = base64.b64encode(script.encode()).decode()
    return ["python3", "-c", f"import base64; exec(base64.b64decode('{code}'))", *args]


def collect_waivers() -> dict[str, list[dict[str, Any]]]:
    """The waivers every host recorded (/etc/billkit/waivers/*.json), by host."""
    names = [h.name for h in lab_hosts()]
    out: dict[str, list[dict[str, Any]]] = {}
    for name, proc in run_on_hosts(names, ["sh", "-c", "cat /etc/billkit/waivers/*.json 2>/dev/null"]).items():
        items: list[dict[str, Any]] = []
        decoder = json.JSONDecoder()
        text = proc.stdout.strip()
        while text:
            value, end = decoder.raw_decode(text)
            items.extend(value)
            text = text[end:].strip()
        out[name] = items
    return out
