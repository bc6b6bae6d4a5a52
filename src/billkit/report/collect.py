"""Gather the evidence: catalogue coverage, the offline policy plan, JUnit files of the checks, the lab's files.

The app and cloud test suites are not run here (on this machine they take minutes): their JUnit XML is
reused, from ``--junit`` or the newest ``checks-*.xml`` in the lab's evidence directory. The host layer
comes from ``billkit verify``'s ``verify-*.xml`` there; without it, the host layer is not assessed. The
drills' runs (``billkit drill``'s ``drill-*.xml``) add each drill test's newest result to it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import xml.etree.ElementTree as ET  # noqa: S405 - parses JUnit files this kit's own runs wrote
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from billkit.checks import Check, Coverage, as_json, compute_coverage
from billkit.controls import Catalog
from billkit.report.bundle import Bundle, utc_iso
from billkit.report.model import FAILED, PASSED, SKIPPED, Result

Progress = Callable[[str], None]


def _v(dist: str) -> str:
    try:
        return version(dist)
    except Exception:  # noqa: BLE001 - a missing distribution only loses the version string
        return "unknown"


def coverage_evidence(bundle: Bundle, catalog: Catalog, checks: list[Check]) -> Coverage:
    cov = compute_coverage(catalog, checks)
    bundle.write(
        "coverage.json",
        json.dumps(as_json(catalog, cov), indent=2).encode(),
        "examine",
        "billkit controls --coverage",
        _v("billkit"),
        "Which checks prove each control, per layer (static)",
    )
    return cov


def plan_results(bundle: Bundle, stack: str) -> tuple[list[Result], dict[str, object]]:
    from billkit import plan as planner

    result = planner.plan(stack)
    ev = bundle.write(
        f"plan-{stack}.json",
        json.dumps(planner.as_json(result), indent=2).encode(),
        "test",
        "billkit plan (CrossGuard policy pack, offline)",
        _v("pulumi-policy"),
        f"Every policy of the pack evaluated on every resource of stack {stack}",
    )
    outcome = {"proven": PASSED, "violated": FAILED, "not exercised": SKIPPED}
    results = [
        Result(
            f"policy-pack:{stack}:{cid}",
            (cid,),
            "cloud",
            outcome[state],
            ev.id,
            message="; ".join(v.message for v in result.violations if cid in v.controls)[:500],
        )
        for cid, state in result.controls.items()
    ]
    return results, planner.as_sarif(result)


def _junit_key(nodeid: str) -> tuple[str, str]:
    """pytest's JUnit (classname, name) for a node id: tests/app/test_x.py::TestC::test_y[p]."""
    parts = nodeid.split("::")
    module = parts[0].removesuffix(".py").replace("/", ".")
    return ".".join([module, *parts[1:-1]]), parts[-1]


def _host_of(name: str, hosts: tuple[str, ...]) -> str | None:
    m = re.search(r"\[(.*)\]$", name)
    if not m:
        return None
    return next((h for h in hosts if re.search(rf"(?<![\w-]){re.escape(h)}(?![\w-])", m.group(1))), None)


def junit_results(path: Path, evidence_id: str, checks: list[Check], hosts: tuple[str, ...]) -> list[Result]:
    by_key = {_junit_key(c.name): c for c in checks}
    root = ET.parse(path).getroot()  # noqa: S314 - our own runs' files
    out: list[Result] = []
    for case in root.iter("testcase"):
        check = by_key.get((case.get("classname", ""), case.get("name", "")))
        if check is None or check.layer is None:
            continue
        failure = case.find("failure") if case.find("failure") is not None else case.find("error")
        if failure is not None:
            outcome, message = FAILED, failure.get("message", "") or (failure.text or "")[:300]
        elif case.find("skipped") is not None:
            outcome, message = SKIPPED, case.find("skipped").get("message", "")  # type: ignore[union-attr]
        else:
            outcome, message = PASSED, ""
        out.append(
            Result(
                check.name,
                check.controls,
                check.layer,
                outcome,
                evidence_id,
                _host_of(case.get("name", ""), hosts),
                message,
            )
        )
    return out


def junit_time(path: Path) -> str:
    root = ET.parse(path).getroot()  # noqa: S314 - our own runs' files
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    stamp = suite.get("timestamp") if suite is not None else None
    if stamp:
        when = dt.datetime.fromisoformat(stamp)
        when = when if when.tzinfo else when.astimezone()
        return when.astimezone(dt.UTC).replace(microsecond=0).isoformat()
    return utc_iso(path.stat().st_mtime)


def newest(folder: Path, pattern: str) -> Path | None:
    found = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def drill_results(bundle: Bundle, evidence_dir: Path, checks: list[Check], hosts: tuple[str, ...],
                  progress: Progress) -> list[Result]:  # fmt: skip
    """Each drill test's newest host result over every `billkit drill` run (one run may cover a few drills)."""
    newest_of: dict[str, tuple[Path, Result]] = {}
    for path in sorted(evidence_dir.glob("drill-*.xml"), key=lambda p: p.stat().st_mtime):
        for r in junit_results(path, "", checks, hosts):
            if r.layer == "host":
                newest_of[r.check] = (path, r)
    out: list[Result] = []
    for path in sorted({p for p, _ in newest_of.values()}, key=lambda p: p.stat().st_mtime):
        progress(f"drills {path.name}")
        ev = bundle.copy(path, "test", "billkit drill (pytest, testinfra)", _v("pytest-testinfra"),
                         "Drills on the lab: they disrupt or write", junit_time(path))  # fmt: skip
        out += [dataclasses.replace(r, evidence=ev.id) for p, r in newest_of.values() if p == path]
    return out


def lab_files(bundle: Bundle, evidence_dir: Path, progress: Progress) -> list[Result]:
    """Supporting records the lab wrote (Lynis, restore tests, patch runs, alert drills, role waivers)."""
    results: list[Result] = []
    specs = [
        ("lynis.json", "examine", "lynis", "Lynis audit per host: hardening index, warnings (HRD-07)", ("HRD-07",)),
        ("restore-test-*.json", "test", "billkit restore-test", "Latest restore test (BAK-05)", ("BAK-05",)),
        ("patch-*.json", "test", "billkit patch", "Latest patch rollout (PAT-07)", ("PAT-07",)),
        ("alert-drills-*.json", "test", "alert drills", "Event-to-alert times of the drills (MON-01)", ("MON-01",)),
        ("waivers.json", "examine", "ansible roles", "Items the roles waived on containers, by control", ()),
    ]
    for pattern, method, tool, description, controls in specs:
        path = newest(evidence_dir, pattern)
        if path is None:
            continue
        progress(f"lab evidence {path.name}")
        ev = bundle.copy(path, method, tool, _v("billkit"), description)
        if pattern.startswith("restore-test"):
            data = json.loads(path.read_text(encoding="utf-8"))
            outcome = PASSED if data.get("result") == "pass" else FAILED
            results.append(
                Result(
                    f"restore-test:{path.name}", controls, "host", outcome, ev.id, message=str(data.get("detail", ""))
                )
            )
    return results
