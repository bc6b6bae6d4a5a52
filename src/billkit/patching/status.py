"""Each host's patch status, read by ``playbooks/patch_check.yml`` (read only) and loaded per host.

The playbook runs ``roles/patching/files/patch_status.py`` on every host of an inventory (the lab's
generated one by default, or any EC2 inventory) and copies each host's JSON into a directory on
the controller. A host that cannot be reached or whose script fails is an operational error: the
check names it and says what to do, it never counts as a host with nothing pending.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from billkit.lab.ansible import PLAYBOOKS, ansible_env, parse_recap
from billkit.lab.state import INVENTORY, LOG_DIR

PLAYBOOK = "patch_check.yml"
# A failed task's first line: "fatal: [host]: UNREACHABLE! => ..." or "fatal: [host]: FAILED! => ..."
FATAL = re.compile(r"^fatal: \[([^\]]+)\]: (\S+)")
UNMATCHED = re.compile(r"Could not match supplied host pattern, ignoring: (.+)$")


class StatusError(RuntimeError):
    """The status could not be read at all (no inventory, Ansible missing); the message says what to do."""


@dataclass(frozen=True)
class Pending:
    """One upgradable package: its candidate, where it comes from and where apt would download it."""

    name: str
    installed: str
    candidate: str
    security: bool
    origin: str | None
    label: str | None
    codename: str | None
    archive: str | None
    site: str | None
    uri: str | None


@dataclass(frozen=True)
class Index:
    """One suite of a host's apt sources and the Release date of the index it last fetched."""

    uri: str
    dist: str
    fetched: bool
    date: datetime | None
    security: bool


@dataclass
class HostStatus:
    host: str  # the inventory name
    boot_id: str
    collected_at: str
    pending: list[Pending]
    indexes: list[Index]
    reboot_required: bool
    reboot_packages: list[str]
    kernel_status: int | None  # needrestart's KSTA: 2 or 3 mean a newer kernel waits for a reboot
    services: list[str]  # services running replaced code (needrestart's SVC lines)
    needrestart_error: str | None
    installed: dict[str, str] = field(default_factory=dict)

    @property
    def needs_reboot(self) -> bool:
        return self.reboot_required or (self.kernel_status or 0) >= 2


@dataclass
class Collection:
    hosts: dict[str, HostStatus] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # host (or "*") -> what failed and what to do


def _date(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def parse_host(host: str, data: dict[str, Any]) -> HostStatus:
    """One host's JSON as patch_status.py prints it."""
    restart = data.get("restart_needed") or {}
    reboot = data.get("reboot_required") or {}
    pending = [
        Pending(name=p["name"], installed=p["installed"], candidate=p["candidate"], security=bool(p["security"]),
                origin=p.get("origin"), label=p.get("label"), codename=p.get("codename"), archive=p.get("archive"),
                site=p.get("site"), uri=p.get("uri"))
        for p in data.get("pending", [])
    ]  # fmt: skip
    indexes = [
        Index(uri=i["uri"], dist=i["dist"], fetched=bool(i["fetched"]), date=_date(i.get("date")),
              security=bool(i["security"]))
        for i in data.get("indexes", [])
    ]  # fmt: skip
    return HostStatus(
        host=host,
        boot_id=data.get("boot_id", ""),
        collected_at=data.get("collected_at", ""),
        pending=pending,
        indexes=indexes,
        reboot_required=bool(reboot.get("required")),
        reboot_packages=list(reboot.get("packages", [])),
        kernel_status=restart.get("kernel_status"),
        services=list(restart.get("services", [])),
        needrestart_error=restart.get("error"),
        installed=dict(data.get("installed", {})),
    )


def load_dir(directory: Path) -> dict[str, HostStatus]:
    """The per-host JSON files the playbook wrote (``<inventory name>.json``)."""
    files = sorted(directory.glob("*.json"))
    return {p.stem: parse_host(p.stem, json.loads(p.read_text(encoding="utf-8"))) for p in files}


def _failures(lines: list[str]) -> dict[str, str]:
    """Per host, Ansible's own words for why it failed (the fatal line and its indented result lines)."""
    out: dict[str, str] = {}
    for i, line in enumerate(lines):
        m = FATAL.match(line)
        if m and m.group(1) not in out:
            detail = [line]
            for more in lines[i + 1 :]:
                if not more.startswith((" ", "\t")):
                    break
                detail.append(more.strip())
            out[m.group(1)] = " ".join(detail)[:400]
    return out


def collect(inventory: Path | None = None, hosts: list[str] | None = None) -> Collection:
    """Run the status playbook against the inventory (the lab's by default) and load each host's status."""
    inventory = inventory or INVENTORY
    if not inventory.is_file():
        hint = "run `billkit up` for the lab" if inventory == INVENTORY else "check the path"
        raise StatusError(f"no inventory at {inventory}: {hint}, or pass --inventory FILE")
    ansible = Path(sys.executable).parent / "ansible-playbook"
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / "ansible-patch_check.log"
    with tempfile.TemporaryDirectory(prefix="billkit-patch-check-") as tmp:
        cmd = [str(ansible), "-i", str(inventory), str(PLAYBOOKS / PLAYBOOK),
               "-e", json.dumps({"patching_status_dir": tmp})]  # fmt: skip
        if hosts:
            cmd += ["--limit", ",".join(hosts)]
        try:
            proc = subprocess.run(cmd, cwd=PLAYBOOKS, env=ansible_env(), capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL, timeout=900, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise StatusError(f"the status playbook ran over 15 minutes against {inventory}: see {log_path}") from None
        log_path.write_text(proc.stdout + proc.stderr, encoding="utf-8")
        found = load_dir(Path(tmp))
    lines = (proc.stdout + proc.stderr).splitlines()
    recap = parse_recap(proc.stdout)
    result = Collection(hosts=found)
    for host, why in _failures(lines).items():
        if host not in found:
            result.errors[host] = why
    for host, counts in recap.hosts.items():
        if host not in found and host not in result.errors:
            what = "unreachable" if counts["unreachable"] else "failed"
            result.errors[host] = f"{what} (ok={counts['ok']}, failed={counts['failed']})"
    for host, why in result.errors.items():
        result.errors[host] = (
            f"{why}; check that the host is up and reachable with the inventory's SSH settings, then re-run "
            f"(full log: {log_path})"
        )
    for line in lines:  # --hosts names (or patterns) that match nothing: a typo must not pass the gate
        m = UNMATCHED.search(line)
        if m:
            for name in m.group(1).split(","):
                result.errors[name.strip()] = (
                    f"matches no host of {inventory} (see `ansible-inventory -i {inventory} --graph`)"
                )
    if not found and not result.errors:
        tail = " ".join(x.strip() for x in lines[-6:])[:600]
        result.errors["*"] = f"the status playbook reported no host (exit {proc.returncode}): {tail}; log: {log_path}"
    return result
