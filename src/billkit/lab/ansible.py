"""Running a playbook against the lab, with live progress and a parsed recap."""

from __future__ import annotations

import importlib.util
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from billkit.controls import ROOT
from billkit.lab.procs import StepError
from billkit.lab.state import INVENTORY, LOG_DIR

PLAYBOOKS = ROOT / "playbooks"
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


@dataclass
class Recap:
    hosts: dict[str, dict[str, int]] = field(default_factory=dict)
    log: Path | None = None

    @property
    def changed(self) -> int:
        return sum(h["changed"] for h in self.hosts.values())

    @property
    def failed(self) -> int:
        return sum(h["failed"] + h["unreachable"] for h in self.hosts.values())


def parse_recap(text: str) -> Recap:
    recap = Recap()
    in_recap = False
    for line in text.splitlines():
        if line.startswith("PLAY RECAP"):
            in_recap = True
            continue
        m = RECAP.match(line) if in_recap else None
        if m:
            recap.hosts[m.group(1)] = {"ok": int(m.group(2)), "changed": int(m.group(3)),
                                       "unreachable": int(m.group(4)), "failed": int(m.group(5))}  # fmt: skip
    return recap


# Playbooks run with Ansible's own strategy: the patch run reboots hosts in the middle of a play, and
# its read-only twin reports unreachable hosts in the words the gate reads. Every other playbook runs
# under Mitogen's: one Python per host for the whole run instead of one per task, 3.5 times faster
# on the lab's hosts (harden.yml on three hosts, 24.7 s against 87.8 s), with the same results.
STOCK_STRATEGY = frozenset({"patch.yml", "patch_check.yml"})
# Mitogen's strategy has been seen to stall: a task finished on some hosts, the others' Python idle, and
# nothing more for good. A Mitogen run that prints nothing for this long is stopped and run again under
# Ansible's own strategy (the playbooks are idempotent), so a stall costs minutes, never the whole lab.
MITOGEN_STALL_S = 300


def ansible_env(*, mitogen: bool = False) -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    env = dict(
        os.environ,
        PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        ANSIBLE_FORKS="12",  # every lab host in one wave (9 hosts)
        ANSIBLE_PIPELINING="true",
        ANSIBLE_HOST_KEY_CHECKING="true",
        ANSIBLE_NOCOLOR="true",
        ANSIBLE_RETRY_FILES_ENABLED="false",
        ANSIBLE_ROLES_PATH=str(PLAYBOOKS / "roles"),
        ANSIBLE_LOCAL_TEMP=str(LOG_DIR.parent / "ansible-tmp"),
        ANSIBLE_CALLBACK_RESULT_FORMAT="yaml",
    )
    if mitogen:
        spec = importlib.util.find_spec("ansible_mitogen")
        if spec and spec.submodule_search_locations:
            env["ANSIBLE_STRATEGY_PLUGINS"] = str(Path(spec.submodule_search_locations[0]) / "plugins" / "strategy")
            env["ANSIBLE_STRATEGY"] = "mitogen_linear"
    return env


def _run(cmd: list[str], env: dict[str, str], log: TextIO, seen: Callable[[str], None],
         stall: float | None) -> int | None:  # fmt: skip
    """Run ansible-playbook, logging and passing on each line; None when it printed nothing for ``stall``
    seconds (then it and everything it started, in its own session, are killed)."""
    proc = subprocess.Popen(cmd, cwd=PLAYBOOKS, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in proc.stdout or ():
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=stall)
        except queue.Empty:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None
        if line is None:
            return proc.wait()
        log.write(line)
        seen(line.rstrip("\n"))


def run_playbook(playbook: str, *, on_task=None, limit: str | None = None, on_line=None,
                 inventory: Path | None = None, extra: tuple[str, ...] = ()) -> Recap:  # fmt: skip
    """Run playbooks/<playbook> against the lab's inventory (or another); raise StepError on failure.

    ``on_task`` gets each task's name; ``on_line`` every output line; ``extra`` more ansible-playbook arguments.
    """
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"ansible-{Path(playbook).stem}.log"
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory or INVENTORY),
           str(PLAYBOOKS / playbook), *extra]  # fmt: skip
    if limit:
        cmd += ["--limit", limit]
    lines: list[str] = []
    start = time.monotonic()
    mitogen = Path(playbook).name not in STOCK_STRATEGY

    def seen(line: str) -> None:
        lines.append(line)
        if on_line:
            on_line(line)
        if on_task and line.startswith("TASK ["):
            on_task(line[6:].split("]", 1)[0])

    with open(log_path, "w", encoding="utf-8") as log:
        rc = _run(cmd, ansible_env(mitogen=mitogen), log, seen, MITOGEN_STALL_S if mitogen else None)
        if rc is None:
            note = (f"billkit: no progress for {MITOGEN_STALL_S}s under Mitogen's strategy: stopped; running "
                    "the playbook again under Ansible's own strategy\n")  # fmt: skip
            log.write(note)
            seen(note.rstrip("\n"))
            lines.clear()
            rc = _run(cmd, ansible_env(mitogen=False), log, seen, None)
    recap = parse_recap("\n".join(lines))
    recap.log = log_path
    if rc != 0 or recap.failed or not recap.hosts:
        failures = [
            " ".join(x.strip() for x in lines[i : i + 4])[:400]
            for i, ln in enumerate(lines)
            if ln.startswith(("fatal:", "failed:", "ERROR", "[ERROR]"))
        ][-5:]
        raise StepError(
            f"playbook {playbook} failed (exit {rc}, {recap.failed} host failures) after "
            f"{time.monotonic() - start:.0f}s:\n  " + "\n  ".join(failures) + f"\nfull log: {log_path}"
        )
    return recap
