"""One cgroup subtree per host, so that the containers' systemd instances never share one.

This machine has no systemd: without a unit of its own, every container's systemd would treat
the same cgroup paths (``/system.slice/…``) as its own, and they would remove each other's
cgroups (units then fail with 219/CGROUP). Each nspawn process is moved, before it starts, into
``<its cgroup>/billkit-lab/<host>`` of the hierarchies systemd uses (``name=systemd`` and the
unified one), never of a resource controller (that would escape the machine's limits).
The subtree also finds every process of a host after its nspawn died, and ``down`` removes it.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
SUBTREE = "billkit-lab"


def _own_paths() -> dict[str, str]:
    """Hierarchy key ("name=systemd" or "" for the unified one) -> this process's cgroup path."""
    out = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers in ("name=systemd", ""):
            out[controllers] = path
    return out


def _mount_of(key: str) -> Path | None:
    """Where a hierarchy is mounted (hybrid layout: systemd/ and unified/; pure v2: the root)."""
    if key == "name=systemd":
        p = CGROUP_ROOT / "systemd"
        return p if (p / "cgroup.procs").exists() else None
    for p in (CGROUP_ROOT / "unified", CGROUP_ROOT):
        if (p / "cgroup.procs").exists() and (p / "cgroup.controllers").exists():
            return p
    return None


def host_cgroups(name: str) -> list[Path]:
    out = []
    for key, path in _own_paths().items():
        mount = _mount_of(key)
        if mount is None:
            continue
        base = mount / path.lstrip("/")
        # Never nest inside our own subtree (a process started from within the lab).
        parts = base.parts
        if SUBTREE in parts:
            base = Path(*parts[: parts.index(SUBTREE)])
        out.append(base / SUBTREE / name)
    return out


def enter(name: str) -> None:
    """Move the calling process into the host's cgroups (run in the child before exec)."""
    for cg in host_cgroups(name):
        cg.mkdir(parents=True, exist_ok=True)
        (cg / "cgroup.procs").write_text("0")


def pids(name: str) -> set[int]:
    out: set[int] = set()
    for cg in host_cgroups(name):
        if cg.exists():
            for procs in cg.rglob("cgroup.procs"):
                try:
                    out |= {int(p) for p in procs.read_text().split()}
                except OSError:
                    continue
    return out


def kill_all(name: str) -> None:
    for pid in pids(name):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def remove(name: str) -> None:
    """Remove the host's (empty) cgroups, deepest first, then the lab's subtree if empty."""
    for cg in host_cgroups(name):
        if cg.exists():
            for d in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    d.rmdir()
            try:
                cg.rmdir()
                cg.parent.rmdir()
            except OSError:
                pass
