"""`billkit report` takes the drills' runs (`billkit drill`'s drill-*.xml) as host evidence, newest result per test,
besides `billkit verify`'s read-only checks (verify-*.xml, still the host layer's baseline)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from billkit.checks import Check
from billkit.report.model import FAILED, NOT_SATISFIED, PASSED, SATISFIED
from billkit.report.run import Options, build

READ = Check("tests/hosts/test_fake_read.py::test_journal_is_sealed", ("MON-04",), "host")
TIMED = Check("tests/hosts/edge/test_fake_drill.py::test_lab_converges", ("HRD-08",), "host")
SWEEP = Check("tests/hosts/edge/test_fake_drill.py::test_tamper_is_noticed", ("MON-04",), "host")


def write_junit(path: Path, cases: dict[Check, bool], age_s: int) -> Path:
    """A pytest JUnit file (xunit2) with one case per check (True: failed), ``age_s`` seconds old."""
    body = []
    for check, failed in cases.items():
        module, name = check.name.split("::")
        classname = module.removesuffix(".py").replace("/", ".")
        inner = f'<failure message="{name} failed">assert False</failure>' if failed else ""
        body.append(f'<testcase classname="{classname}" name="{name}" time="0.1">{inner}</testcase>')
    when = dt.datetime.now() - dt.timedelta(seconds=age_s)
    path.write_text(
        '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="0" '
        f'skipped="0" tests="{len(body)}" timestamp="{when.replace(microsecond=0).isoformat()}">{"".join(body)}'
        "</testsuite></testsuites>",
        encoding="utf-8",
    )
    os.utime(path, (when.timestamp(), when.timestamp()))
    return path


def _build(tmp: Path, ev: Path):
    opts = Options(out=tmp / "bundle", evidence_dir=ev, checks=[READ, TIMED, SWEEP], plan=False,
                   waivers=tmp / "none.yaml")  # fmt: skip
    return build(opts)


@pytest.mark.control("CMP-07")
def test_each_drill_tests_newest_result_is_host_evidence(tmp_path: Path) -> None:
    ev = tmp_path / "evidence"
    ev.mkdir()
    write_junit(ev / "verify-1.xml", {READ: False}, age_s=300)
    older = write_junit(ev / "drill-20250101T000000Z.xml", {TIMED: True, SWEEP: False}, age_s=200)
    newer = write_junit(ev / "drill-20250101T000100Z.xml", {TIMED: False}, age_s=100)
    report = _build(tmp_path, ev)
    drills = [e for e in report.evidence if e.tool.startswith("billkit drill")]
    assert sorted(Path(e.path).name for e in drills) == [older.name, newer.name]
    assert all(e.method == "test" for e in drills)
    by_file = {Path(e.path).name: e.id for e in drills}
    got = {(r.check, r.outcome, r.evidence) for r in report.results if r.check != READ.name}
    assert got == {(TIMED.name, PASSED, by_file[newer.name]), (SWEEP.name, PASSED, by_file[older.name])}
    assert report.statuses["HRD-08"].status == SATISFIED  # the earlier failure was re-run and passed
    assert report.statuses["MON-04"].status == SATISFIED and report.lab_assessed


@pytest.mark.control("CMP-07")
def test_a_drill_that_failed_last_fails_its_control(tmp_path: Path) -> None:
    ev = tmp_path / "evidence"
    ev.mkdir()
    write_junit(ev / "verify-1.xml", {READ: False}, age_s=300)
    write_junit(ev / "drill-a.xml", {TIMED: False}, age_s=200)
    write_junit(ev / "drill-b.xml", {TIMED: True}, age_s=100)
    report = _build(tmp_path, ev)
    assert [r.outcome for r in report.results if r.check == TIMED.name] == [FAILED]
    assert report.statuses["HRD-08"].status == NOT_SATISFIED
    # verify's read checks are unchanged by the drills: still the host layer's evidence
    assert [r.outcome for r in report.results if r.check == READ.name] == [PASSED]
