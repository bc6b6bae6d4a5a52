"""Figures for the local lab: cold `billkit up`, warm `billkit up`, `billkit down`, memory used.

Run as root: ``.venv/bin/python bench/lab.py`` (about 5-10 minutes on 2 cores). ``--cold`` first
deletes the whole lab state (base image, apt cache, host disks) to time a fresh machine's first
`up`; without it the cold figure is skipped. The lab is left down unless ``--keep-up``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from billkit.lab import hosts  # noqa: E402
from billkit.lab.state import LAB_DIR, LOG_DIR, load_state  # noqa: E402
from infra.topology import lab_hosts  # noqa: E402


def billkit(*args: str) -> float:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "billkit", *args], cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"`billkit {' '.join(args)}` failed (exit {proc.returncode})")
    return time.monotonic() - start


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def lab_memory_mib() -> dict[str, float]:
    """Proportional set size of every process of the lab, per host and for the helpers."""
    state = load_state()
    out = {}
    for h in lab_hosts():
        pids = hosts.processes_rooted_in(hosts.merged(h.name))
        nspawn = state.nspawn.get(h.name)
        out[h.name] = sum(pss_kib(p) for p in [*pids, *([nspawn] if nspawn else [])]) / 1024
    out["helpers (apt proxy, published port)"] = sum(pss_kib(p) for p in state.helpers.values()) / 1024
    return out


def layer_of(step: str) -> str:
    """The lab layer a step of `up` belongs to (by its name or the playbook it applies)."""
    for prefix, layer in (("vault:", "keys (OpenBao)"), ("playbook openbao", "keys (OpenBao)"),
                          ("data:", "data (PostgreSQL)"), ("playbook postgresql", "data (PostgreSQL)"),
                          ("backup:", "backups"), ("playbook backup", "backups"),
                          ("app:", "app and WAF"), ("playbook billing_app", "app and WAF"),
                          ("playbook waf", "app and WAF")):  # fmt: skip
        if step.startswith(prefix):
            return layer
    return "hosts and hardening"


def per_layer() -> dict[str, float]:
    """Seconds the last `up` spent per layer (from the timings `up` records)."""
    timings = json.loads((LOG_DIR / "up-timings.json").read_text())
    out: dict[str, float] = {}
    for step, seconds in timings.items():
        out[layer_of(step)] = out.get(layer_of(step), 0.0) + seconds
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cold", action="store_true", help="delete the lab's state first and time a cold up")
    parser.add_argument("--keep-up", action="store_true", help="leave the lab running at the end")
    args = parser.parse_args()
    figures: dict[str, str] = {}
    if args.cold:
        billkit("down", "--purge")
        shutil.rmtree(LAB_DIR, ignore_errors=True)
        figures["cold up (no base image, no apt cache)"] = f"{billkit('up'):.0f} s"
        for layer, seconds in per_layer().items():
            figures[f"  cold, {layer}"] = f"{seconds:.0f} s"
    else:
        billkit("up")
    figures["warm up (nothing to change)"] = f"{billkit('up'):.0f} s"
    for layer, seconds in per_layer().items():
        figures[f"  warm, {layer}"] = f"{seconds:.0f} s"
    time.sleep(5)
    mem = lab_memory_mib()
    for name, mib in mem.items():
        figures[f"memory {name}"] = f"{mib:.0f} MiB"
    figures["memory, whole lab (PSS)"] = f"{sum(mem.values()):.0f} MiB"
    disk = subprocess.run(["du", "-sm", str(LAB_DIR)], capture_output=True, text=True, check=False).stdout.split()
    figures["disk, .lab/"] = f"{disk[0] if disk else '?'} MiB"
    if not args.keep_up:
        figures["down"] = f"{billkit('down'):.1f} s"
    print("\nbillkit lab figures")
    for k, v in figures.items():
        print(f"  {k:45s} {v}")


if __name__ == "__main__":
    main()
