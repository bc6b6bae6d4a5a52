"""`billkit patch --check` against the running lab (PAT-05): every host read, the gate's exit code
observed at both ends of the limit, and release dates that are the mirror's, not the hosts'.

Holds whether updates are pending or not (before or after a rollout): the expected exit code is
derived from what the report shows, with its own arithmetic, at each limit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from billkit.controls import ROOT
from billkit.lab.state import INVENTORY
from infra.topology import lab_hosts

pytestmark = pytest.mark.lab

LIMITS = (0, 100000)  # both ends; the default (30) sits between, in the same arithmetic
# Every pending update is newer than bookworm's release (2023-06-10); anything before is no release date.
BOOKWORM = datetime(2023, 6, 10, tzinfo=UTC)


def check(max_age_days: int) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "billkit", "patch", "--check", "--format", "json", "--max-age-days", str(max_age_days)],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert proc.returncode in (0, 1, 2), proc.stderr[-2000:]
    try:
        return proc.returncode, json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"no JSON on stdout (exit {proc.returncode}): {proc.stdout[:500]} {proc.stderr[-2000:]}")


@pytest.fixture(scope="module")
def reports(lab_up: None) -> dict[int, tuple[int, dict[str, Any]]]:
    return {limit: check(limit) for limit in LIMITS}


def expected_exit(report: dict[str, Any], limit: int) -> int:
    """1 iff a security update is older than the limit or undated, or a host's security index is
    missing or older than the limit (it could hide such an update); else 0."""
    now = datetime.fromisoformat(report["checked_at"])
    for host in report["hosts"]:
        security = [i for i in host["indexes"] if i["security"]]
        if not security:
            return 1
        for ix in security:
            if not ix["fetched"] or ix["date"] is None or now - datetime.fromisoformat(ix["date"]) > timedelta(limit):
                return 1
        for p in host["pending"]:
            if p["security"] and (p["age_days"] is None or p["age_days"] > limit):
                return 1
    return 0


@pytest.mark.control("PAT-05")
def test_every_lab_host_is_reported(reports: dict[int, tuple[int, dict[str, Any]]]) -> None:
    inventory = set(yaml.safe_load(INVENTORY.read_text())["all"]["hosts"])
    assert {h.name for h in lab_hosts()} <= inventory
    for limit, (code, report) in reports.items():
        assert report["errors"] == [], f"limit {limit}: {report['errors']}"
        assert code != 2
        assert {h["host"] for h in report["hosts"]} == inventory
        for host in report["hosts"]:
            assert len(host["boot_id"]) == 36, host["host"]
            assert host["needrestart_error"] is None, host["host"]
            assert host["pending_security"] == len([p for p in host["pending"] if p["security"]])


@pytest.mark.control("PAT-05")
def test_the_exit_code_is_1_iff_a_security_update_is_older_than_the_limit(
    reports: dict[int, tuple[int, dict[str, Any]]],
) -> None:
    for limit, (code, report) in reports.items():
        assert report["max_age_days"] == limit and report["mode"] == "security"
        assert code == expected_exit(report, limit), f"limit {limit}: {report['violations'][:5]}"
        assert code == report["exit_code"] and report["result"] == ("fail" if code else "pass")
        assert bool(report["violations"]) == bool(code)
    # At 0 days any published update is too old, and any index is older than the limit: the gate must fail.
    assert reports[0][0] == 1
    pending = [p for _, r in reports.values() for h in r["hosts"] for p in h["pending"]]
    if any(p["security"] for p in pending):
        assert any(v["package"] for v in reports[0][1]["violations"])


@pytest.mark.control("PAT-05")
def test_ages_are_release_dates_from_the_mirror(reports: dict[int, tuple[int, dict[str, Any]]]) -> None:
    _, report = reports[100000]
    now = datetime.fromisoformat(report["checked_at"])
    by_uri: dict[str, str] = {}
    for host in report["hosts"]:
        index_dates: dict[str, datetime] = {}  # per mirror URI, its newest suite index
        for ix in host["indexes"]:
            if ix["date"]:
                date = datetime.fromisoformat(ix["date"])
                index_dates[ix["uri"]] = max(date, index_dates.get(ix["uri"], date))
        for p in host["pending"]:
            assert p["released"], f"{host['host']} {p['name']}: {p['age_error']}"
            released = datetime.fromisoformat(p["released"])
            assert BOOKWORM <= released < now, f"{host['host']} {p['name']}: {released}"
            assert abs((now - released).total_seconds() / 86400 - p["age_days"]) < 0.02
            # Built before the index that lists it was published: a release date, not when the host saw it.
            index = next((d for uri, d in index_dates.items() if p["uri"].startswith(uri)), None)
            assert index is not None and released <= index, f"{p['name']} {released} after its index {index}"
            assert by_uri.setdefault(p["uri"], p["released"]) == p["released"]  # the same on every host
