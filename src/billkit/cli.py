"""The billkit command line: one entry point for platform engineers, auditors and CI."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from billkit.controls import LAYERS, PRACTICES, CatalogError, load_catalog

app = typer.Typer(
    name="billkit",
    help="Deploy billing software securely: AWS stack, policy pack, hardened hosts, local lab, evidence.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err = Console(stderr=True)


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


class PatchFormat(StrEnum):
    table = "table"
    json = "json"
    junit = "junit"


@app.command()
def up() -> None:
    """Bring up the local lab (hosts, networks, hardening, services) and verify it."""
    from billkit.lab.cli import cmd_up

    raise typer.Exit(cmd_up())


@app.command()
def down(
    purge: Annotated[
        bool,
        typer.Option(
            "--purge",
            help="Also delete the hosts' disks and the state made for them (base image, apt cache, records stay).",
        ),
    ] = False,
) -> None:
    """Tear the local lab down and leave the machine as it was found."""
    from billkit.lab.cli import cmd_down

    raise typer.Exit(cmd_down(purge))


@app.command()
def status() -> None:
    """Show the lab's hosts, addresses, state and applied roles."""
    from billkit.lab.cli import cmd_status

    raise typer.Exit(cmd_status())


@app.command()
def verify() -> None:
    """Run the host checks against the running lab and report by control: checks that only read (the drills,
    which disrupt or write, run with `billkit drill`)."""
    from billkit.lab.cli import cmd_verify

    raise typer.Exit(cmd_verify())


@app.command()
def drill(
    names: Annotated[
        list[str] | None, typer.Argument(help="Drills to run (without a name: the list of drills).", show_default=False)
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Run every drill.")] = False,
) -> None:
    """List the drills, or run them on the lab: unlike `billkit verify`, they disrupt or write (stop services,
    write rows, take backups), and report by control.

    Exits with pytest's code; 2 for an unknown drill, 3 when this checkout's lab is not up.
    """
    from billkit.lab.cli import cmd_drill

    raise typer.Exit(cmd_drill(names or [], every))


@app.command()
def plan(
    stack: Annotated[str, typer.Option(help="The stack whose Pulumi.<stack>.yaml is used (dev or prod).")] = "prod",
    output: Annotated[str, typer.Option("--format", help="Output format: table, json or sarif.")] = "table",
) -> None:
    """Run the Pulumi program under mocks and evaluate the policy pack offline."""
    from billkit import plan as planner

    if output not in ("table", "json", "sarif"):
        err.print(f"[red]error:[/red] unknown format {output!r}; choose table, json or sarif")
        raise typer.Exit(2)
    try:
        with err.status(f"running the program for stack {stack} under the mock runtime…"):
            result = planner.plan(stack)
    except planner.PlanError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if output == "json":
        sys.stdout.write(json.dumps(planner.as_json(result), indent=2) + "\n")
    elif output == "sarif":
        sys.stdout.write(json.dumps(planner.as_sarif(result), indent=2) + "\n")
    else:
        planner.print_table(result, console)
    if result.exit_code:
        err.print(f"[red]{len(result.mandatory)} mandatory policy violation(s): the stack would be refused[/red]")
    raise typer.Exit(result.exit_code)


@app.command()
def controls(
    practice: Annotated[int | None, typer.Option(help="Only this seed practice (1–10).")] = None,
    pci: Annotated[
        str | None, typer.Option(help="Only controls citing this PCI DSS requirement or a sub-requirement of it.")
    ] = None,
    layer: Annotated[
        str | None, typer.Option(help=f"Only controls checked in this layer ({', '.join(LAYERS)}).")
    ] = None,
    coverage: Annotated[bool, typer.Option("--coverage", help="Show which checks prove each control.")] = False,
    output: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] = OutputFormat.table,
) -> None:
    """Print the control catalogue, filtered, optionally with its check coverage."""
    try:
        catalog = load_catalog()
    except CatalogError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if practice is not None and practice not in PRACTICES:
        err.print(f"[red]error:[/red] unknown practice {practice}; choose 1–10")
        raise typer.Exit(2)
    if layer is not None and layer not in LAYERS:
        err.print(f"[red]error:[/red] unknown layer {layer!r}; choose one of {', '.join(LAYERS)}")
        raise typer.Exit(2)
    selected = [
        c
        for c in catalog.controls
        if (practice is None or c.practice == practice)
        and (layer is None or layer in c.layers)
        and (pci is None or any(p == pci or p.startswith(pci + ".") for p in c.pci_dss))
    ]
    cov = None
    if coverage:
        from billkit.checks import coverage_report

        with console.status("collecting checks…"):
            _, cov = coverage_report(catalog)
    if output is OutputFormat.json:
        rows = []
        for c in selected:
            row = {
                "id": c.id, "title": c.title, "practice": c.practice, "practice_name": c.practice_name,
                "pci_dss": list(c.pci_dss), "gdpr": list(c.gdpr), "hipaa": list(c.hipaa),
                "severity": c.severity, "layers": list(c.layers), "retired": c.retired,
            }  # fmt: skip
            if cov is not None and c.id in cov.table:
                row["checks"] = cov.table[c.id]
            rows.append(row)
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(title=f"billkit controls ({len(selected)} of {len(catalog.controls)})", show_lines=False)
    for col in ("ID", "Practice", "Title", "PCI DSS", "Severity", "Layers"):
        table.add_column(col, overflow="fold")
    if cov is not None:
        table.add_column("Checks per layer", overflow="fold")
    for c in selected:
        cells = [c.id, f"{c.practice} {c.practice_name}", c.title, ", ".join(c.pci_dss) or "-", c.severity,
                 ", ".join(c.layers)]  # fmt: skip
        if cov is not None:
            per = cov.table.get(c.id, {})
            cells.append("  ".join(_layer_cell(lay, names) for lay, names in per.items()))
        table.add_row(*cells)
    console.print(table)
    if cov is not None:
        missing = cov.missing(catalog)
        console.print(f"{len(missing)} (control, layer) pairs have no check yet.")
        for line in cov.unknown + cov.off_layer:
            console.print(f"[red]{line}[/red]")
        from billkit.checks import STRICT_COVERAGE

        if missing and STRICT_COVERAGE:
            err.print("every control must have a check in each of its layers (billkit.checks.STRICT_COVERAGE)")
            raise typer.Exit(1)


def _layer_cell(layer: str, names: list[str]) -> str:
    return f"{layer}: {len(names)}" if names else f"[yellow]{layer}: no check yet[/yellow]"


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def test(
    ctx: typer.Context,
    fast: Annotated[bool, typer.Option("--fast", help="Skip the tests that need the lab.")] = False,
    lint: Annotated[bool, typer.Option(help="Run ruff, pyright, yamllint and ansible-lint first.")] = True,
) -> None:
    """Run the whole test suite: linters and type checks, then pytest (extra arguments go to pytest)."""
    from billkit.tooling import run_suite

    raise typer.Exit(run_suite(list(ctx.args), fast=fast, lint=lint))


@app.command(context_settings={"ignore_unknown_options": True})
def ssh(
    host: Annotated[str, typer.Argument(help="A lab host (see `billkit status`).")],
    command: Annotated[list[str] | None, typer.Argument(help="A command to run instead of a shell.")] = None,
) -> None:
    """Open an SSH session (or run a command) on a lab host with the lab's own key."""
    from billkit.lab.cli import cmd_ssh

    raise typer.Exit(cmd_ssh(host, command or []))


audit_log = typer.Typer(help="The billing app's hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_log, name="audit-log")


@audit_log.command("verify")
def audit_log_verify(
    dsn: Annotated[
        str, typer.Option(envvar="BILLKIT_APP_DATABASE_URL", help="libpq DSN of the app database (read access).")
    ],
    head: Annotated[
        str | None, typer.Option(help="Expected head hash (from the journal): checked besides the signed heads.")
    ] = None,
    mount: Annotated[str, typer.Option(help="Vault transit mount holding the audit-head key.")] = "transit",
    max_head_age: Annotated[
        float | None, typer.Option(help="Seconds the newest signed head may be old (default: 180, three intervals).")
    ] = None,
) -> None:
    """Recompute the audit log's hash chain and check its signed heads; exit 1 if any record was altered,
    inserted or deleted (the last ones included), 2 if the heads cannot be checked.

    The heads' public key is read from Vault: set BILLKIT_APP_VAULT_URL, BILLKIT_APP_VAULT_CA_FILE and
    VAULT_TOKEN (a token with the auditor policy).
    """
    from app_stub.audit_cli import verify_dsn

    raise typer.Exit(verify_dsn(dsn, head, mount, max_head_age))


@app.command()
def backup(
    kind: Annotated[str, typer.Option("--type", help="pgBackRest backup type: full, diff or incr.")] = "incr",
    snapshot: Annotated[bool, typer.Option(help="Also store an encrypted raft snapshot of Vault.")] = True,
) -> None:
    """Back the lab's database up now (encrypted, into the object-locked store) and print its label."""
    from billkit.lab.backups import cmd_backup

    raise typer.Exit(cmd_backup(kind, snapshot))


@app.command("restore-test")
def restore_test() -> None:
    """Restore the latest backup on a scratch PostgreSQL, compare every table with the primary, record evidence."""
    from billkit.lab.backups import cmd_restore_test

    raise typer.Exit(cmd_restore_test())


@app.command()
def patch(
    check: Annotated[
        bool,
        typer.Option("--check", help="Only report (read only): pending updates, their age, reboots and restarts."),
    ] = False,
    output: Annotated[PatchFormat, typer.Option("--format", help="--check output format.")] = PatchFormat.table,
    max_age_days: Annotated[
        int, typer.Option(help="--check fails (exit 1) when a security update is older than this many days.")
    ] = 30,
    inventory: Annotated[
        Path | None, typer.Option(help="Ansible inventory (default: the lab's; any EC2 inventory works).")
    ] = None,
    hosts: Annotated[str | None, typer.Option(help="Only these hosts, comma-separated (default: all).")] = None,
    security_only: Annotated[
        bool, typer.Option("--security-only/--all", help="Security updates only, or every pending update.")
    ] = True,
    under_load: Annotated[
        bool, typer.Option("--under-load", help="Send requests through the WAF during the rollout and count failures.")
    ] = False,
    health_timeout: Annotated[
        int, typer.Option(min=10, help="Seconds a host may take to pass its health check before the rollout stops.")
    ] = 60,
) -> None:
    """Patch the hosts one at a time (drained, restarted or rebooted, health-checked), recording evidence;
    with --check, report pending updates and fail when a security update is older than the limit (PAT-05).

    --check exits 0 when the gate passes, 1 when it fails, 2 when a host could not be read.
    """
    host_list = [h.strip() for h in hosts.split(",") if h.strip()] if hosts else None
    if check:
        from billkit.patching.report import cmd_check

        raise typer.Exit(cmd_check(inventory=inventory, hosts=host_list, output=output.value,
                                   max_age_days=max_age_days, security_only=security_only, console=console,
                                   err=err))  # fmt: skip
    from billkit.lab.procs import StepError
    from billkit.patching.rollout import rollout

    try:
        rc = rollout(hosts=host_list, security_only=security_only, under_load=under_load, inventory=inventory,
                     health_timeout=health_timeout)  # fmt: skip
    except StepError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    raise typer.Exit(rc)


@app.command()
def alerts(
    recent: Annotated[
        bool, typer.Option("--all", help="Also the alerts that fired and resolved in the last 24 hours.")
    ] = False,
    output: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] = OutputFormat.table,
) -> None:
    """List the alerts firing on the monitoring host, each with its control IDs, severity, host and start;
    with --all, those resolved in the last 24 hours too, with their end (MON-01).

    Exits 0 when the alerts could be read (firing or not), 2 when the monitoring host cannot be read.
    """
    from billkit.lab.monitoring import monitoring_access
    from billkit.monitoring.alerts import AlertsError, list_alerts, print_table

    try:
        found = list_alerts(monitoring_access(), recent=recent)
    except (AlertsError, FileNotFoundError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if output is OutputFormat.json:
        sys.stdout.write(json.dumps([a.as_json() for a in found], indent=2) + "\n")
    else:
        print_table(found, console, recent)


report_app = typer.Typer(help="The evidence bundle for an assessor: `billkit report`, `billkit report verify DIR`.")
app.add_typer(report_app, name="report")


@report_app.callback(invoke_without_command=True)
def report(
    ctx: typer.Context,
    out: Annotated[
        Path, typer.Option(help="Directory of the bundle (created; an earlier report there is replaced).")
    ] = Path("report"),
    stack: Annotated[str, typer.Option(help="The stack whose policy results are reported (dev or prod).")] = "prod",
    baseline: Annotated[
        Path | None, typer.Option(help="An earlier bundle: exit 1 when a control it had satisfied no longer is.")
    ] = None,
    stale_days: Annotated[int, typer.Option(min=1, help="Evidence older than this many days is flagged stale.")] = 30,
    junit: Annotated[
        list[Path] | None, typer.Option(help="JUnit XML of app/cloud checks to include (repeatable).")
    ] = None,
) -> None:
    """Collect the evidence and write the signed bundle (HTML, OSCAL, SARIF, JUnit, summary, manifest)."""
    if ctx.invoked_subcommand is not None:
        return
    from billkit.report.run import Options, build, gate
    from billkit.report.waivers import WaiverError

    if baseline is not None and not (baseline / "summary.json").is_file():
        err.print(f"[red]error:[/red] {baseline}: no summary.json; --baseline takes an earlier report's directory")
        raise typer.Exit(2)
    try:
        with err.status("building the report…") as status:

            def progress(msg: str) -> None:
                status.update(msg)
                err.print(f"  {msg}")

            report = build(Options(out=out, stack=stack, stale_days=stale_days, junit=list(junit or [])), progress)
    except (CatalogError, WaiverError, FileExistsError, FileNotFoundError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    counts = report.counts()
    console.print(f"report in {out}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for note in report.notes:
        err.print(f"[yellow]{note}[/yellow]")
    rc = 1 if counts["not satisfied"] else 0
    if baseline is not None:
        regressed = gate(report, baseline)
        for line in regressed:
            err.print(f"[red]regressed:[/red] {line}")
        if regressed:
            err.print(f"[red]{len(regressed)} control(s) satisfied in {baseline} are not satisfied now[/red]")
            rc = 1
    raise typer.Exit(rc)


@report_app.command("verify")
def report_verify(
    folder: Annotated[Path, typer.Argument(help="The bundle's directory.")],
    allow_unsigned: Annotated[bool, typer.Option(help="Accept a bundle whose manifest is unsigned.")] = False,
) -> None:
    """Check the manifest's signature (bundle key, and Vault when reachable), every hash and the OSCAL documents."""
    from billkit.report import manifest, oscal
    from billkit.report.run import vault_client

    with vault_client() as client:
        verdict = manifest.verify(folder, client, allow_unsigned)
    if verdict.ok:
        try:
            oscal.validate(folder)
        except oscal.OscalError as exc:
            verdict.problems.append(str(exc))
    for note in verdict.notes:
        err.print(f"[yellow]{note}[/yellow]")
    for problem in verdict.problems:
        console.print(f"[red]FAIL[/red] {problem}", markup=True, highlight=False)
    if verdict.ok:
        signed = (
            "every hash verifies, the manifest is UNSIGNED"
            if verdict.notes and "UNSIGNED" in verdict.notes[0]
            else ("signature and every hash verify")
        )
        console.print(f"[green]OK[/green] {folder}: {signed}; OSCAL documents validate")
    raise typer.Exit(0 if verdict.ok else 1)


def main() -> None:  # pragma: no cover - exercised through ./billkit
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
