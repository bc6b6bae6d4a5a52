"""The CLI: the catalogue views, and honest stubs for work that belongs to open issues."""

from __future__ import annotations

import json
import subprocess

from typer.testing import CliRunner

from billkit.cli import app
from billkit.controls import ROOT, load_catalog

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_controls_prints_the_whole_catalogue_as_a_table() -> None:
    result = run("controls")
    assert result.exit_code == 0
    total = len(load_catalog().controls)
    assert f"billkit controls ({total} of {total})" in result.output
    assert "ENC-01" in result.output and "EDU-01" in result.output


def test_controls_json_is_machine_readable_and_complete() -> None:
    rows = json.loads(run("controls", "--format", "json").output)
    assert [r["id"] for r in rows] == [c.id for c in load_catalog().controls]
    assert set(rows[0]) >= {"id", "title", "practice", "practice_name", "pci_dss", "severity", "layers"}


def test_controls_filters_by_practice_pci_requirement_and_layer() -> None:
    by_practice = json.loads(run("controls", "--practice", "4", "--format", "json").output)
    assert by_practice and all(r["practice"] == 4 for r in by_practice)
    by_pci = json.loads(run("controls", "--pci", "8.3", "--format", "json").output)
    assert by_pci and all(any(p == "8.3" or p.startswith("8.3.") for p in r["pci_dss"]) for r in by_pci)
    assert "HRD-03" in {r["id"] for r in by_pci}  # 8.3.4 lockout
    assert "MFA-01" not in {r["id"] for r in by_pci}  # 8.4.2 is not under 8.3
    by_layer = json.loads(run("controls", "--layer", "app", "--format", "json").output)
    assert by_layer and all("app" in r["layers"] for r in by_layer)


def test_controls_refuses_unknown_filters_with_a_clear_message() -> None:
    result = runner.invoke(app, ["controls", "--practice", "42"])
    assert result.exit_code == 2
    assert "unknown practice 42; choose 1–10" in result.output
    result = runner.invoke(app, ["controls", "--layer", "network"])
    assert result.exit_code == 2
    assert "unknown layer 'network'" in result.output


def test_the_bootstrap_script_runs_the_cli() -> None:
    proc = subprocess.run([str(ROOT / "billkit"), "controls", "--practice", "9", "--format", "json"],
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    staff_education = {c.id for c in load_catalog().controls if c.practice == 9 and c.active}
    assert "EDU-01" in staff_education
    assert {r["id"] for r in json.loads(proc.stdout)} == staff_education
