"""The lab's commands, called by billkit.cli (kept here so the CLI module stays thin)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from billkit.lab.procs import StepError
from billkit.system import PrerequisiteError

if TYPE_CHECKING:
    from billkit.checks import Check
    from billkit.lab.drills import Drill

console = Console()
err = Console(stderr=True)


def _root_required(what: str) -> int | None:
    if os.geteuid() != 0:
        err.print(f"[red]error:[/red] `billkit {what}` manages bridges, mounts and containers: run it as root")
        return 2
    return None


def cmd_up() -> int:
    from billkit.lab import pipeline

    if (rc := _root_required("up")) is not None:
        return rc
    start = time.monotonic()
    try:
        pipeline.up()
    except (StepError, PrerequisiteError) as exc:
        err.print(f"[red]billkit up failed[/red] in step {exc}")
        err.print("Fix the cause above, then run `billkit up` again: it resumes from what is there.")
        return 1
    err.print(f"[green]lab up[/green] in {time.monotonic() - start:.0f}s; `billkit status`, `billkit verify`")
    _print_app_access()
    return 0


def _print_app_access() -> None:
    """Where the app answers (through the WAF on the published port) and how its first admin starts."""
    from billkit.lab import app

    console.print(f"\n[bold]The billing app:[/bold] {app.published_url()}  (through the WAF on edge-1)")
    for line in app.first_admin_instructions():
        console.print(f"  {line}", markup=False, highlight=False)


def cmd_down(purge: bool) -> int:
    from billkit.lab import pipeline

    if (rc := _root_required("down")) is not None:
        return rc
    start = time.monotonic()
    try:
        pipeline.down(purge=purge)
    except StepError as exc:
        err.print(f"[red]billkit down failed[/red] in step {exc}")
        return 1
    err.print(f"[green]lab down[/green] in {time.monotonic() - start:.0f}s; the machine is as the lab found it")
    return 0


def cmd_status() -> int:
    from billkit.lab import pipeline
    from billkit.lab.state import load_state

    state = load_state()
    table = Table(title="billkit lab")
    for col in ("host", "role", "tier", "address", "state", "pid"):
        table.add_column(col)
    rows = pipeline.status_rows()
    for r in rows:
        colour = {"running": "green", "stopped": "yellow"}.get(r["state"], "dim")
        table.add_row(r["host"], r["role"], r["tier"], r["address"], f"[{colour}]{r['state']}[/{colour}]", r["pid"])
    console.print(table)
    if state.roles_applied:
        console.print("roles applied: " + ", ".join(f"{k} ({v})" for k, v in sorted(state.roles_applied.items())))
    else:
        console.print("roles applied: none yet")
    helpers = dict(state.helpers.items())
    if helpers:
        console.print("helper processes: " + ", ".join(f"{k} (pid {v})" for k, v in helpers.items()))
    return 0 if all(r["state"] == "running" for r in rows) else 3


def cmd_ssh(host: str, command: list[str]) -> int:
    from billkit.lab import hosts
    from infra.topology import lab_host

    try:
        h = lab_host(host)
    except KeyError as exc:
        err.print(f"[red]error:[/red] {exc.args[0]}")
        return 2
    cmd = hosts.ssh_command(h, *command)
    if sys.stdin.isatty() and not command:
        cmd.insert(1, "-t")
    os.execvp(cmd[0], cmd)  # noqa: S606 - an argument list, no shell: replaces this process with ssh


def _print_by_control(junit: Path, checks: list[Check] | None = None, what: str = "Host checks") -> None:
    """The host checks' outcomes grouped by control (the catalogue's IDs from each test's marker)."""
    from billkit.checks import collect_test_checks
    from billkit.report.collect import junit_results
    from infra.topology import lab_hosts

    checks = collect_test_checks() if checks is None else checks
    results = junit_results(junit, junit.name, checks, tuple(h.name for h in lab_hosts()))
    by_control: dict[str, list[tuple[str, str]]] = {}
    for r in results:
        for cid in r.controls:
            by_control.setdefault(cid, []).append((r.outcome, r.check.rsplit("::", 1)[-1]))
    table = Table(title=f"{what} by control ({junit.name})")
    for col in ("control", "passed", "failed", "skipped", "failed checks"):
        table.add_column(col, overflow="fold")
    for cid, items in sorted(by_control.items()):
        n = {o: sum(1 for out, _ in items if out == o) for o in ("passed", "failed", "skipped")}
        failed = ", ".join(name for out, name in items if out == "failed")
        colour = "red" if n["failed"] else "green"
        table.add_row(f"[{colour}]{cid}[/{colour}]", str(n["passed"]), str(n["failed"]), str(n["skipped"]), failed)
    console.print(table)


def cmd_verify() -> int:
    import subprocess

    from billkit.controls import ROOT
    from billkit.lab.state import EVIDENCE_DIR, junit_evidence, junit_options

    # checks read; drills act (`billkit drill`, and the test suite), never here. One JUnit file per run:
    # `billkit report` takes the newest as the host layer's evidence.
    junit = junit_evidence("verify")
    args = [sys.executable, "-m", "pytest", "-q", "-m", "lab and not drill", "tests/hosts", "-p", "no:cacheprovider",
            *junit_options(junit)]  # fmt: skip
    err.print("Read-only checks: nothing on the hosts is stopped or changed; the drills, which disrupt or write, "
              "run with `billkit drill`.")  # fmt: skip
    err.print(f"[bold]==> host checks[/bold] {' '.join(args[3:])} (read only)")
    rc = subprocess.run(args, cwd=ROOT, check=False).returncode
    if junit.exists():
        _print_by_control(junit)
    lynis = EVIDENCE_DIR / "lynis.json"
    if lynis.exists():
        table = Table(title="Lynis hardening index (HRD-07)")
        table.add_column("host")
        table.add_column("index", justify="right")
        for host, data in sorted(json.loads(lynis.read_text()).items()):
            table.add_row(host, str(data["hardening_index"]))
        console.print(table)
    restores = sorted(EVIDENCE_DIR.glob("restore-test-*.json"))[-5:]
    if restores:
        table = Table(title="Restore tests, latest last (BAK-05; `billkit restore-test`)")
        for col in ("when", "backup", "restore point", "duration", "result"):
            table.add_column(col, overflow="fold")
        for path in restores:
            ev = json.loads(path.read_text())
            result = ev["result"] if ev["result"] == "pass" else f"{ev['result']}: {ev.get('detail', '')[:120]}"
            table.add_row(ev["when"], ev["backup_label"], ev.get("restore_point", ""), f"{ev['duration_s']}s", result)
        console.print(table)
    waivers = EVIDENCE_DIR / "waivers.json"
    if waivers.exists():
        table = Table(title="Waivers recorded by the roles")
        for col in ("control", "hosts", "item", "reason"):
            table.add_column(col, overflow="fold")
        grouped: dict[tuple[str, str, str], list[str]] = {}
        for host, items in json.loads(waivers.read_text()).items():
            for w in items:
                grouped.setdefault((w["control"], w["item"], w["reason"]), []).append(host)
        for (control, item, reason), hs in sorted(grouped.items()):
            table.add_row(control, ", ".join(sorted(hs)), item, reason)
        console.print(table)
    from billkit.patching.report import verify_section

    verify_section(EVIDENCE_DIR, console, err)  # the latest patch run (PAT-07) and the PAT-05 gate now
    return rc


def cmd_drill(names: list[str], every: bool) -> int:
    """No name: list the drills. Names (or every): run them on this checkout's lab and report by control.

    Exits with pytest's code; 2 for an unknown name or a drill list that cannot be read; 3 without a lab.
    """
    import subprocess

    from billkit.controls import ROOT
    from billkit.lab import drills as dr
    from billkit.lab.state import junit_evidence

    try:
        with err.status("collecting the drills (pytest --collect-only)…"):
            found = dr.collect_drills()
        selected = dr.select(found, names, every) if names or every else []
    except dr.DrillError as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        return 2
    if not selected:
        _print_drills(found)
        return 0
    problem = dr.lab_problem()
    if problem:
        err.print(f"[red]error:[/red] {problem}", markup=True, highlight=False)
        return 3
    junit = junit_evidence("drill")
    args = dr.run_args(selected, junit)
    err.print("[bold]Disrupts the lab:[/bold] " + "; ".join(f"{d.name}: {d.disrupts}" for d in selected),
              highlight=False)  # fmt: skip
    err.print(f"[bold]==> drills[/bold] {' '.join(args[3:])}", highlight=False)
    rc = subprocess.run(args, cwd=ROOT, check=False).returncode
    if junit.exists():
        _print_by_control(junit, [t for d in selected for t in d.tests], "Drills")
    return rc


def _print_drills(found: list[Drill]) -> None:
    table = Table(title="Drills (they disrupt or write: lab only; `billkit verify` runs the checks that read)")
    for col in ("drill", "disrupts", "controls", "tests"):
        table.add_column(col, overflow="fold")
    for d in found:
        table.add_row(d.name, d.disrupts, ", ".join(d.controls), str(len(d.tests)))
    console.print(table)
    console.print("Run one or more with `billkit drill NAME [NAME...]`, or every one with `billkit drill --all`.")
