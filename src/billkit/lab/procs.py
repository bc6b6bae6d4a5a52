"""Processes the lab started: identified by PID and checked by command line, never by name."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


class StepError(RuntimeError):
    """A lab step failed; the message says what failed and what to do."""


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


def is_ours(pid: int | None, marker: str) -> bool:
    """The PID is alive and its command line contains the marker (guards against PID reuse)."""
    if not pid:
        return False
    args = cmdline(pid)
    if not args:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and any(marker in a for a in args)


def processes_rooted_in(root: Path) -> list[int]:
    """PIDs of every process whose root directory is the given directory (a container's rootfs).

    Compared by device and inode: inside a container's mount namespace the link text of
    /proc/PID/root reads "/", but stat() through it reaches the container's real root.
    """
    try:
        st = os.stat(root)
    except OSError:
        return []
    want = (st.st_dev, st.st_ino)
    out = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            other = os.stat(entry / "root")
        except OSError:
            continue
        if (other.st_dev, other.st_ino) == want:
            out.append(int(entry.name))
    return out


def stop_pid(pid: int, marker: str, *, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Stop one of our processes: the signal, then SIGKILL after the timeout."""
    if not is_ours(pid, marker):
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_ours(pid, marker):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def run(
    cmd: list[str], step: str, *, check: bool = True, timeout: float | None = None, **kw
) -> subprocess.CompletedProcess:
    """Run a command; on failure raise StepError naming the step, the command and its output."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()[-1500:]
        raise StepError(f"{step}: `{' '.join(cmd[:6])}` exited {proc.returncode}: {detail}")
    return proc
