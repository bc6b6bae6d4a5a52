"""`billkit drill [NAME]`: the list of drills, the selection of one, the refusals; and `billkit verify` saying it reads.

Nothing here runs a drill: pytest's collection needs no lab, and every run goes through a stand-in for subprocess.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from billkit.cli import app
from billkit.controls import ROOT
from billkit.lab import cli as lab_cli
from billkit.lab import drills as dr
from tests.unit.drillscan import Index, drill_marks


@pytest.fixture(scope="module")
def drills() -> list[dr.Drill]:
    return dr.collect_drills()


@pytest.fixture()
def out(monkeypatch: pytest.MonkeyPatch, drills: list[dr.Drill]) -> dict[str, io.StringIO]:
    """The CLI's consoles, wide and captured; the drills as collected once for the module."""
    bufs = {"out": io.StringIO(), "err": io.StringIO()}
    monkeypatch.setattr(lab_cli, "console", Console(file=bufs["out"], width=300))
    monkeypatch.setattr(lab_cli, "err", Console(file=bufs["err"], width=300))
    monkeypatch.setattr(dr, "collect_drills", lambda: drills)
    return bufs


def _no_run(*args: Any, **kw: Any) -> Any:
    raise AssertionError(f"nothing may run here: {args}")


@pytest.mark.control("CMP-07")
def test_the_list_is_every_drill_module_and_nothing_that_is_not_a_drill(drills: list[dr.Drill]) -> None:
    marked = drill_marks(Index())  # read from the sources, not from pytest
    names = {m.args[0].value for _, m in marked}  # type: ignore[attr-defined]
    assert [d.name for d in drills] == sorted(names) and len(drills) >= 10
    collected = {t.name.split("[")[0] for d in drills for t in d.tests}
    assert collected == {test for test, _ in marked}
    for d in drills:
        assert d.disrupts and d.controls, d
        assert {t.name.split("::")[0] for t in d.tests} == {d.module}, d.name
        assert all(t.layer == "host" and t.controls for t in d.tests), d.name


@pytest.mark.control("CMP-07")
def test_billkit_drill_lists_names_what_they_disrupt_and_their_controls(
    out: dict[str, io.StringIO], drills: list[dr.Drill], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subprocess, "run", _no_run)
    assert lab_cli.cmd_drill([], every=False) == 0
    text = out["out"].getvalue()
    for d in drills:
        row = next(line for line in text.splitlines() if f" {d.name} " in line)
        assert d.disrupts.split(",")[0] in row and d.controls[0] in row, row
    assert "billkit drill --all" in text


@pytest.mark.control("CMP-07")
def test_an_unknown_name_exits_2_naming_the_valid_ones(out: dict[str, io.StringIO], drills: list[dr.Drill]) -> None:
    result = CliRunner().invoke(app, ["drill", "backup", "no-such-drill"])
    assert result.exit_code == 2
    message = out["err"].getvalue()
    assert "unknown drill no-such-drill" in message
    assert all(d.name in message for d in drills)
    assert lab_cli.cmd_drill(["backup"], every=True) == 2  # names and --all: one or the other
    assert "not both" in out["err"].getvalue()


@pytest.mark.control("CMP-07")
def test_without_this_checkouts_lab_nothing_runs(out: dict[str, io.StringIO], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dr, "lab_problem", lambda: "no lab is running on this machine: run `./billkit up` first")
    monkeypatch.setattr(subprocess, "run", _no_run)
    assert lab_cli.cmd_drill(["data"], every=False) == 3
    assert "run `./billkit up` first" in out["err"].getvalue()


def test_the_lab_check_names_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    from billkit.lab import state, testing

    monkeypatch.setattr(testing, "lab_is_ready", lambda: True)
    monkeypatch.setattr(state, "lab_owner", lambda: None)
    assert "no lab is running" in (dr.lab_problem() or "")
    monkeypatch.setattr(state, "lab_owner", lambda: "/elsewhere/.lab")
    assert "another checkout (/elsewhere)" in (dr.lab_problem() or "")
    monkeypatch.setattr(state, "lab_owner", lambda: str(state.LAB_DIR))
    assert dr.lab_problem() is None
    monkeypatch.setattr(testing, "lab_is_ready", lambda: False)
    assert "run `./billkit up` first" in (dr.lab_problem() or "")


@pytest.mark.control("CMP-07")
def test_a_name_runs_exactly_its_modules_drill_tests(drills: list[dr.Drill], tmp_path: Path) -> None:
    """card-sweep's module also holds a check that reads: the drill's selection leaves it out."""
    sweep = next(d for d in drills if d.name == "card-sweep")
    args = dr.run_args([sweep], tmp_path / "drill.xml")
    assert args[:3] == [sys.executable, "-m", "pytest"]
    assert args[args.index("-m", 3) + 1] == "lab and drill" and sweep.module in args
    assert f"--junitxml={tmp_path / 'drill.xml'}" in args and "junit_family=xunit2" in args
    collect = [*args[:3], "--collect-only", *(a for a in args[3:] if not a.startswith("--junitxml"))]
    proc = subprocess.run(collect, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    selected = {line for line in proc.stdout.splitlines() if "::" in line}
    assert selected == {t.name for t in sweep.tests} and len(selected) == 2
    assert not any("test_canary_numbers_are_valid_card_numbers" in s for s in selected)


@pytest.mark.control("CMP-07")
def test_a_run_says_what_it_disrupts_writes_junit_and_reports_by_control(
    out: dict[str, io.StringIO], drills: list[dr.Drill], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from billkit.lab import state

    monkeypatch.setattr(dr, "lab_problem", lambda: None)
    monkeypatch.setattr(state, "EVIDENCE_DIR", tmp_path)
    picked = [d for d in drills if d.name in ("idempotence", "rate-limits")]
    ran: list[list[str]] = []

    def fake_run(args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        ran.append(args)
        junit = Path(next(a for a in args if a.startswith("--junitxml=")).split("=", 1)[1])
        cases = "".join(
            f'<testcase classname="{t.name.split("::")[0].removesuffix(".py").replace("/", ".")}" '
            f'name="{t.name.split("::")[1]}" time="1"/>'
            for d in picked
            for t in d.tests
        )
        junit.write_text(f'<testsuites><testsuite name="pytest" tests="3">{cases}</testsuite></testsuites>')
        return subprocess.CompletedProcess(args, 1)

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert lab_cli.cmd_drill(["rate-limits", "idempotence"], every=False) == 1  # pytest's exit code
    (args,) = ran
    assert args == dr.run_args([picked[1], picked[0]], Path(args[-3].split("=", 1)[1]))
    assert [p.name for p in tmp_path.glob("drill-*.xml")] == [Path(args[-3].split("=", 1)[1]).name]
    err = out["err"].getvalue()
    assert "Disrupts the lab:" in err and all(d.disrupts in err for d in picked)
    table = out["out"].getvalue()
    assert "Drills by control" in table and all(cid in table for d in picked for cid in d.controls)


@pytest.mark.control("CMP-07")
def test_verify_says_it_only_reads_and_runs_no_drill(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from billkit.lab import state
    from billkit.patching import report

    buf = io.StringIO()
    monkeypatch.setattr(lab_cli, "err", Console(file=buf, width=300))
    monkeypatch.setattr(state, "EVIDENCE_DIR", tmp_path)
    monkeypatch.setattr(report, "verify_section", lambda *a: None)
    ran: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda args, **kw: ran.append(args) or subprocess.CompletedProcess(args, 0))
    assert lab_cli.cmd_verify() == 0
    assert "Read-only checks" in buf.getvalue() and "billkit drill" in buf.getvalue()
    assert ran[0][ran[0].index("-m", 3) + 1] == "lab and not drill"
