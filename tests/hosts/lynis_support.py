"""Lynis on every lab host (HRD-07): minutes of CPU, so the session starts it early in the background."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from billkit.lab.testing import run_on_hosts
from infra.topology import lab_hosts

LYNIS = ["sudo", "-n", "sh", "-c",
         "lynis audit system --quick --no-colors >/dev/null 2>&1; "
         "grep -E '^(hardening_index|warning\\[\\]|suggestion\\[\\])=' /var/log/lynis-report.dat"]  # fmt: skip


def run_lynis() -> dict[str, subprocess.CompletedProcess[str]]:
    names = [h.name for h in lab_hosts()]
    # Two at a time per core is enough: Lynis is CPU-bound and the machine has two.
    with ThreadPoolExecutor(4) as pool:
        return dict(zip(names, pool.map(lambda n: run_on_hosts([n], LYNIS, timeout=600)[n], names), strict=True))


def start_lynis_if_selected(request: pytest.FixtureRequest) -> None:
    """Start Lynis now when this session also runs its check: the alert drills, which then wait on
    Prometheus for minutes, call this once their events are triggered, and Lynis's CPU minutes fit in that wait."""
    if any(item.path.name == "test_lynis.py" for item in request.session.items):
        request.getfixturevalue("lynis_started")
