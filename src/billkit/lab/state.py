"""Where the lab keeps its state, and the record of what it changed on this machine.

Everything lives in ``.lab/`` at the root of the checkout (git-ignored). ``state.json`` records
what the lab started or changed (process IDs, bridges, the nft table, sysctl values it found),
so that ``billkit down`` undoes exactly that, and ``billkit up`` can reconcile a lab whose
processes died with an earlier session.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from billkit.controls import ROOT

LAB_DIR = Path(os.environ.get("BILLKIT_LAB_DIR", str(ROOT / ".lab")))
STATE_FILE = LAB_DIR / "state.json"
BASE_DIR = LAB_DIR / "base"
HOSTS_DIR = LAB_DIR / "hosts"
SSH_DIR = LAB_DIR / "ssh"
SSH_KEY = SSH_DIR / "id_ed25519"
KNOWN_HOSTS = SSH_DIR / "known_hosts"
INVENTORY = LAB_DIR / "inventory.yml"
PROXY_DIR = LAB_DIR / "apt-proxy"
# The proxy runs as its own user, which cannot reach a checkout under a private directory (root's home is
# 0700): it sees PROXY_DIR bind-mounted here instead, and its cache stays with the checkout.
PROXY_VIEW = Path("/run/billkit-lab/apt-proxy")
LOG_DIR = LAB_DIR / "log"
EVIDENCE_DIR = LAB_DIR / "evidence"


def junit_evidence(kind: str) -> Path:
    """A new JUnit file for one run: `billkit report` takes the newest of each kind."""
    EVIDENCE_DIR.mkdir(parents=True, exist_ok=True)
    return EVIDENCE_DIR / f"{kind}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.xml"


def junit_options(junit: Path) -> list[str]:
    """pytest's options that write ``junit`` in the shape the report reads."""
    return [f"--junitxml={junit}", "-o", "junit_family=xunit2"]


# The lab's account on every host: key-only, in the SSH allowed group, sudo for Ansible.
ADMIN_USER = "ops"
SSH_GROUP = "ssh-users"
NFT_TABLE = "billkit_lab"
_SAVE_LOCK = threading.Lock()


@dataclass
class LabState:
    # host name -> PID of its systemd-nspawn process
    nspawn: dict[str, int] = field(default_factory=dict)
    # PIDs of the helper processes the lab started (apt proxy, published-port forwarder)
    helpers: dict[str, int] = field(default_factory=dict)
    # bridges the lab created (never one it found)
    bridges: list[str] = field(default_factory=list)
    # sysctl name -> the value found before the lab changed it
    sysctl: dict[str, str] = field(default_factory=dict)
    nft_table: bool = False
    # role -> ISO time it was last applied with zero failures
    roles_applied: dict[str, str] = field(default_factory=dict)

    def save(self) -> None:
        """Write the state atomically (steps may save from several threads at once)."""
        with _SAVE_LOCK:
            LAB_DIR.mkdir(parents=True, exist_ok=True)
            tmp = STATE_FILE.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True), encoding="utf-8")
            tmp.replace(STATE_FILE)


# The lab's bridges, nft table and addresses are machine-wide: one checkout's lab at a time.
OWNER_FILE = Path("/run/billkit-lab.owner")


def lab_owner() -> str | None:
    """The state folder of the lab that holds this machine's lab resources, if any."""
    try:
        return OWNER_FILE.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_machine(state: LabState | None = None) -> list[str]:
    """Record this checkout as the machine's lab; refuse while another checkout's lab is running.

    A claim whose lab has no live process left (its session died) is taken over: ``state`` adopts
    the bridges, nft table and original sysctl values that lab recorded, so this checkout's
    ``billkit down`` undoes them, and the other state file is emptied of them. Returns what was
    adopted (empty when nothing was).
    """
    owner = lab_owner()
    adopted: list[str] = []
    if owner and owner != str(LAB_DIR):
        other_file = Path(owner) / "state.json"
        try:
            other: dict[str, Any] = json.loads(other_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            other = {}
        if other.get("bridges") or other.get("nft_table"):
            pids = [*other.get("nspawn", {}).values(), *other.get("helpers", {}).values()]
            if state is None or any(_pid_alive(int(p)) for p in pids):
                raise RuntimeError(
                    f"the lab of another checkout ({owner}) holds this machine's bridges and nft table: "
                    f"run `billkit down` in {Path(owner).parent} first (one lab per machine)"
                )
            for bridge in other.get("bridges", []):
                if bridge not in state.bridges:
                    state.bridges.append(bridge)
                    adopted.append(f"bridge {bridge}")
            for name, value in other.get("sysctl", {}).items():
                state.sysctl.setdefault(name, value)  # the other lab saw the machine's original value
            if other.get("nft_table") and not state.nft_table:
                state.nft_table = True
                adopted.append(f"nft table {NFT_TABLE}")
            state.save()
            other.update(bridges=[], sysctl={}, nft_table=False, nspawn={}, helpers={})
            other_file.write_text(json.dumps(other, indent=2, sort_keys=True), encoding="utf-8")
    OWNER_FILE.write_text(str(LAB_DIR) + "\n", encoding="utf-8")
    return adopted


def release_machine() -> None:
    if lab_owner() == str(LAB_DIR):
        OWNER_FILE.unlink(missing_ok=True)


def load_state() -> LabState:
    if not STATE_FILE.exists():
        return LabState()
    try:
        data: dict[str, Any] = json.loads(STATE_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return LabState()
    known = LabState.__dataclass_fields__
    return LabState(**{k: v for k, v in data.items() if k in known})
