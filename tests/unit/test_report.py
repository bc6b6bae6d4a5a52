"""`billkit report`: status per control, OSCAL, the manifest, waivers, the regression gate.

The bundle is built without the lab (as in the fast suite): the host layer must read "not assessed",
never passed. Tampering is done the way an attacker would: one byte, one file removed, one file added.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

from billkit.checks import Check, collect_policy_checks
from billkit.controls import load_catalog
from billkit.report import manifest, oscal
from billkit.report.model import MANUAL, NOT_ASSESSED, NOT_SATISFIED, SATISFIED, WAIVED
from billkit.report.run import Options, build, gate
from billkit.report.waivers import WaiverError, load_waivers
from tests.unit.reporthelpers import APP_CHECKS, junit, quick

CATALOG = load_catalog()


@pytest.fixture(scope="module")
def nolab(tmp_path_factory: pytest.TempPathFactory):
    """The report as the fast suite sees it: the offline policy plan, app JUnit, no lab evidence."""
    tmp = tmp_path_factory.mktemp("report")
    (tmp / "empty").mkdir()
    opts = Options(out=tmp / "bundle", junit=[junit(tmp / "app.xml")], evidence_dir=tmp / "empty",
                   checks=collect_policy_checks() + list(APP_CHECKS), waivers=tmp / "none.yaml")  # fmt: skip
    return build(opts), tmp / "bundle"


def _copy(src: Path, tmp: Path) -> Path:
    dst = tmp / "copy"
    shutil.copytree(src, dst)
    return dst


@pytest.mark.control("CMP-07", "CMP-02")
def test_without_the_lab_the_host_layer_is_not_assessed_never_passed(nolab) -> None:
    report, out = nolab
    assert not report.lab_assessed
    assert set(report.statuses) == {c.id for c in CATALOG.active()}  # every control has a status
    host = [s for s in report.statuses.values() if "host" in s.control.layers]
    assert host and all(s.layers["host"] == NOT_ASSESSED for s in host)
    assert all(s.status != SATISFIED for s in host), [s.control.id for s in host if s.status == SATISFIED]
    # the report can say "satisfied": a cloud-only control the policy pack proves, and an app-only one
    assert report.statuses["NET-03"].status == SATISFIED
    assert report.statuses["CMP-04"].status == SATISFIED
    assert report.statuses["EDU-03"].status == MANUAL and "Training register" in report.statuses["EDU-03"].reasons[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lab_assessed"] is False and summary["controls"]["ENC-01"]["layers"]["host"] == NOT_ASSESSED
    assert "host layer is NOT ASSESSED" in (out / "index.html").read_text()
    for ev in report.evidence:  # every evidence item: a file in evidence/ with hash, time, method, tool, version
        assert ev.path.startswith("evidence/") and (out / ev.path).is_file()
        assert ev.method in ("test", "examine") and ev.tool and ev.version and ev.collected and len(ev.sha256) == 64


@pytest.mark.control("CMP-07")
def test_oscal_documents_validate_and_a_broken_one_is_rejected(nolab, tmp_path: Path) -> None:
    _, out = nolab
    oscal.validate(out)
    results = json.loads((out / "assessment-results.json").read_text())["assessment-results"]
    findings = {f["target"]["target-id"]: f for f in results["results"][0]["findings"]}
    assert findings["NET-03"]["target"]["status"]["state"] == "satisfied"
    assert "status" not in findings["ENC-01"]["target"]  # not assessed is not "not-satisfied" and never satisfied
    assert results["import-ap"]["href"] == "assessment-plan.json"
    broken = _copy(out, tmp_path)
    doc = json.loads((broken / "assessment-results.json").read_text())
    del doc["assessment-results"]["import-ap"]
    (broken / "assessment-results.json").write_text(json.dumps(doc))
    with pytest.raises(oscal.OscalError, match="assessment-results.json"):
        oscal.validate(broken)
    doc = json.loads((out / "assessment-plan.json").read_text())
    doc["assessment-plan"]["uuid"] = "not-a-uuid"
    (broken / "assessment-results.json").write_text((out / "assessment-results.json").read_text())
    (broken / "assessment-plan.json").write_text(json.dumps(doc))
    with pytest.raises(oscal.OscalError, match="assessment-plan.json"):
        oscal.validate(broken)


@pytest.mark.control("CMP-07")
def test_verify_names_altered_removed_and_added_files(nolab, tmp_path: Path) -> None:
    _, out = nolab
    assert manifest.verify(out, allow_unsigned=True).ok
    unsigned = manifest.verify(out)
    assert not unsigned.ok and "UNSIGNED" in unsigned.problems[0]  # refused without --allow-unsigned
    bundle = _copy(out, tmp_path)
    ev = next(p for p in sorted((bundle / "evidence").iterdir()) if p.name.startswith("plan-"))
    data = bytearray(ev.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one byte
    ev.write_bytes(bytes(data))
    (bundle / "junit.xml").unlink()
    (bundle / "evidence" / "planted.json").write_text("{}")
    problems = manifest.verify(bundle, allow_unsigned=True).problems
    assert f"evidence/{ev.name}: altered (SHA-256 differs from the manifest)" in problems
    assert "junit.xml: missing" in problems
    assert "evidence/planted.json: extra (not in the manifest)" in problems
    assert len(problems) == 3


@pytest.mark.control("CMP-07")
def test_an_expired_waiver_makes_its_control_not_satisfied(tmp_path: Path) -> None:
    waivers = tmp_path / "waivers.yaml"
    waivers.write_text(
        "waivers:\n"
        "  - {id: WVR-01, controls: [CMP-04], justification: export rebuilt, approver: CISO, expires: 2026-01-31}\n"
        "  - {id: WVR-02, controls: [LOG-12], justification: log scrubber replaced, approver: CISO, "
        "expires: 2099-12-31}\n"
    )
    report = quick(tmp_path, "waived", failing={"test_no_pan_in_logs[case]"}, waivers=waivers,
                   today=dt.date(2026, 6, 1))  # fmt: skip
    cmp04, log12 = report.statuses["CMP-04"], report.statuses["LOG-12"]
    assert cmp04.status == NOT_SATISFIED and "waiver WVR-01 expired on 2026-01-31" in cmp04.reasons[0]
    assert log12.status == WAIVED and "until 2099-12-31" in log12.reasons[0]
    html = (tmp_path / "waived" / "index.html").read_text()
    assert "waiver WVR-01 expired on 2026-01-31" in html
    assert any(e.path == "evidence/waivers.yaml" for e in report.evidence)


def test_a_waiver_naming_an_unknown_control_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "waivers.yaml"
    bad.write_text(
        "waivers:\n  - {id: WVR-01, controls: [ENC-99], justification: x, approver: y, expires: 2027-01-01}\n"
    )
    with pytest.raises(WaiverError, match="ENC-99"):
        load_waivers(CATALOG, bad)
    bad.write_text("waivers:\n  - {id: WVR-01, controls: [ENC-01], justification: x, approver: y, expires: soon}\n")
    with pytest.raises(WaiverError, match="expires"):
        load_waivers(CATALOG, bad)


def test_the_kits_own_waivers_file_loads() -> None:
    load_waivers(CATALOG)


@pytest.mark.control("CMP-07", "CMP-02")
def test_the_baseline_gate_names_a_control_that_regressed(tmp_path: Path) -> None:
    before = quick(tmp_path, "before")
    assert before.statuses["CMP-04"].status == SATISFIED
    after = quick(tmp_path, "after", failing={"test_export"})
    assert after.statuses["CMP-04"].status == NOT_SATISFIED
    assert gate(after, tmp_path / "before") == ["CMP-04: satisfied → not satisfied"]
    assert gate(before, tmp_path / "before") == []


@pytest.mark.control("CMP-07", "CMP-02")
def test_the_suites_loopback_host_tests_never_count_as_the_lab_assessed(tmp_path: Path) -> None:
    """The suite's checks-*.xml carries host-layer tests run on loopback (a local OpenBao): passing, they
    must not make a host control satisfied; that layer is the lab's, from `billkit verify` alone."""
    host = Check("tests/hosts/keys/test_fake.py::test_sealed_at_rest", ("ENC-01",), "host")
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    junit(evidence / "checks-20261201T000000Z.xml")
    xml = (evidence / "checks-20261201T000000Z.xml").read_text()
    case = '<testcase classname="tests.hosts.keys.test_fake" name="test_sealed_at_rest" time="0.1"></testcase>'
    (evidence / "checks-20261201T000000Z.xml").write_text(xml.replace("</testsuite>", case + "</testsuite>"))
    report = build(Options(out=tmp_path / "bundle", evidence_dir=evidence, checks=[*APP_CHECKS, host], plan=False,
                           waivers=tmp_path / "none.yaml"))  # fmt: skip
    assert not report.lab_assessed
    assert report.statuses["CMP-04"].status == SATISFIED  # the app layer is read from the same file
    assert report.statuses["ENC-01"].layers["host"] == NOT_ASSESSED
