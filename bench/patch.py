"""Figures for the rolling patch run: total and per-host time, requests sent and failed through the
edge, p50/p99 latency during the rollout against before it, and how long the Vault election took.

Run as root on a running lab whose hosts have security updates pending (a fresh `billkit up`):
``.venv/bin/python bench/patch.py`` runs ``billkit patch --under-load`` once, then the second, idle
run, and prints both. ``--evidence FILE`` only prints the figures of a run already recorded
(``.lab/evidence/patch-*.json``, as the drill test leaves them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from billkit.lab.state import EVIDENCE_DIR  # noqa: E402


def latest() -> Path:
    runs = sorted(EVIDENCE_DIR.glob("patch-*.json"))
    if not runs:
        raise SystemExit("no patch evidence in .lab/evidence/: run `billkit patch --under-load` first")
    return runs[-1]


def run(*args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "billkit", "patch", *args], cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"`billkit patch {' '.join(args)}` failed (exit {proc.returncode})")
    return json.loads(latest().read_text())


def figures(ev: dict[str, Any]) -> list[str]:
    out = [f"rollout ({ev['mode']}, {ev['result']}): {ev['duration_s']} s in all, {len(ev['hosts'])} hosts"]
    for r in ev["hosts"]:
        what = "rebooted" if r["rebooted"] else f"restarted {', '.join(r['restarted_services']) or 'nothing'}"
        out.append(f"  {r['host']:9} {r['role']:7} {r['duration_s']:6} s  {len(r['packages']):3} packages  {what}")
    elections = [r["election_seconds"] for r in ev["hosts"] if r.get("election_seconds") is not None]
    if elections:
        out.append(f"Vault leader election after step-down: {', '.join(f'{float(e):.2f} s' for e in elections)}")
    if ld := ev.get("load"):
        out.append(
            f"requests through the edge: {ld['sent']} sent, {ld['failed']} failed "
            f"({ld['retried_idle_connections']} idle keep-alive connections reopened, as browsers do)"
        )
        out.append(
            f"latency p50 / p99: before {ld['baseline_p50_ms']} / {ld['baseline_p99_ms']} ms, "
            f"during {ld['p50_ms']} / {ld['p99_ms']} ms"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evidence", type=Path, help="print the figures of a recorded run instead")
    args = parser.parse_args()
    if args.evidence:
        print("\n".join(figures(json.loads(args.evidence.read_text()))))
        return
    first = run("--under-load")
    second = run()
    print("\n".join(figures(first)))
    print("\nsecond run, nothing pending:")
    print("\n".join(figures(second)))


if __name__ == "__main__":
    main()
