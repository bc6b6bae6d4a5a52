"""The PAT-05 gate and its reports: ``billkit patch --check`` and the patch part of ``billkit verify``.

The gate fails (exit 1) when any pending security update is older than the limit, and fails closed:
an update whose release date cannot be read counts as overdue, and so does a host whose view of the
security suite is missing or older than the limit (an update published after its index was fetched
is invisible to it). An operational error (a host unreachable, its status unreadable) exits 2: the
check is incomplete, whatever the other hosts show.
"""

from __future__ import annotations

import json
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from billkit.patching.age import Dated, release_dates
from billkit.patching.status import Collection, HostStatus, Pending, StatusError, collect

CONTROL = "PAT-05"
PCI_DSS = "6.3.3"
DEFAULT_MAX_AGE_DAYS = 30
FIX_VIOLATIONS = (
    "run `billkit patch` (it refreshes each host's package lists and installs its security updates, one host at a "
    "time; on EC2 the same playbooks/patch.yml), then run `billkit patch --check` again"
)


@dataclass(frozen=True)
class Violation:
    host: str
    package: str | None  # None: the host as a whole (its view of the security suite)
    reason: str


@dataclass(frozen=True)
class Row:
    """One pending update of one host, with its release date and verdict."""

    host: str
    pkg: Pending
    released: datetime | None
    age_days: float | None
    age_error: str | None
    overdue: bool


@dataclass
class CheckResult:
    checked_at: datetime
    max_age_days: int
    mode: str  # "security": security updates only (what `billkit patch` installs by default); "all"
    hosts: list[HostStatus]
    rows: dict[str, list[Row]]
    violations: list[Violation] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 2 if self.errors else 1 if self.violations else 0

    @property
    def result(self) -> str:
        return {0: "pass", 1: "fail", 2: "error"}[self.exit_code]

    def security_rows(self, host: str) -> list[Row]:
        return [r for r in self.rows.get(host, []) if r.pkg.security]


def _index_violations(host: HostStatus, max_age_days: int, now: datetime) -> list[Violation]:
    """A host whose index of the security suite is absent or older than the limit proves nothing."""
    security = [i for i in host.indexes if i.security]
    if not security:
        return [Violation(host.host, None, "no security suite in its apt sources, so security updates never reach "
                          "it: add the distribution's <codename>-security suite to its sources")]  # fmt: skip
    out = []
    for ix in security:
        where = f"{ix.uri} {ix.dist}"
        if not ix.fetched or ix.date is None:
            reason = (
                f"its index of {where} was never fetched, so its pending security updates are unknown: update its "
                "package lists (`billkit patch` does; so does the host's daily apt timer), then re-check"
            )
            out.append(Violation(host.host, None, reason))
            continue
        age = (now - ix.date).total_seconds() / 86400
        if age > max_age_days:
            reason = (
                f"its index of {where} dates from {ix.date:%Y-%m-%d} ({age:.0f} days, over the {max_age_days}-day "
                "limit): updates published since are invisible to it; update its package lists, then re-check"
            )
            out.append(Violation(host.host, None, reason))
    return out


def evaluate(
    collection: Collection,
    dates: dict[str, Dated],
    *,
    max_age_days: int = DEFAULT_MAX_AGE_DAYS,
    security_only: bool = True,
    now: datetime | None = None,
) -> CheckResult:
    """Date every listed update and apply the gate (older than the limit: more than max_age_days days)."""
    now = now or datetime.now(UTC)
    hosts = [collection.hosts[h] for h in sorted(collection.hosts)]
    result = CheckResult(checked_at=now, max_age_days=max_age_days, mode="security" if security_only else "all",
                         hosts=hosts, rows={}, errors=dict(collection.errors))  # fmt: skip
    for host in hosts:
        result.violations += _index_violations(host, max_age_days, now)
        rows = []
        for pkg in host.pending:
            if security_only and not pkg.security:
                continue
            dated = dates.get(pkg.uri or "") or Dated(None, "apt gave no download URI for the candidate")
            age = (now - dated.released).total_seconds() / 86400 if dated.released else None
            overdue = pkg.security and (age is None or age > max_age_days)
            rows.append(Row(host.host, pkg, dated.released, age, dated.error, overdue))
            if not overdue:
                continue
            what = f"{pkg.name} {pkg.installed} -> {pkg.candidate}"
            if age is None or dated.released is None:
                reason = (f"security update {what}: release date unknown, so it counts as overdue "
                          f"({dated.error})")  # fmt: skip
            else:
                reason = (f"security update {what} released {dated.released:%Y-%m-%d}, {age:.0f} days ago: "
                          f"over the {max_age_days}-day limit")  # fmt: skip
            result.violations.append(Violation(host.host, pkg.name, reason))
        result.rows[host.host] = rows
    return result


# --- formats -------------------------------------------------------------------------------


def _reboot_reasons(host: HostStatus) -> list[str]:
    reasons = []
    if host.reboot_required:
        pkgs = f" ({', '.join(host.reboot_packages)})" if host.reboot_packages else ""
        reasons.append(f"/run/reboot-required{pkgs}")
    if (host.kernel_status or 0) >= 2:
        reasons.append("a newer kernel is installed")
    return reasons


def as_json(result: CheckResult) -> dict[str, Any]:
    """Machine-readable, stable keys (CI archives it next to the JUnit report)."""
    hosts = []
    for host in result.hosts:
        pending = [
            {"name": r.pkg.name, "installed": r.pkg.installed, "candidate": r.pkg.candidate,
             "security": r.pkg.security, "origin": r.pkg.origin, "label": r.pkg.label, "codename": r.pkg.codename,
             "archive": r.pkg.archive, "uri": r.pkg.uri,
             "released": r.released.isoformat() if r.released else None,
             "age_days": round(r.age_days, 2) if r.age_days is not None else None,
             "age_error": r.age_error, "overdue": r.overdue}
            for r in result.rows.get(host.host, [])
        ]  # fmt: skip
        hosts.append({
            "host": host.host,
            "boot_id": host.boot_id,
            "collected_at": host.collected_at,
            "indexes": [{"uri": i.uri, "dist": i.dist, "fetched": i.fetched, "security": i.security,
                         "date": i.date.isoformat() if i.date else None} for i in host.indexes],
            "pending_total": len(host.pending),
            "pending_security": sum(p.security for p in host.pending),
            "pending": pending,
            "reboot_required": host.needs_reboot,
            "reboot_reasons": _reboot_reasons(host),
            "restart_services": host.services,
            "needrestart_error": host.needrestart_error,
        })  # fmt: skip
    return {
        "kind": "patch-check",
        "control": CONTROL,
        "checked_at": result.checked_at.isoformat(timespec="seconds"),
        "max_age_days": result.max_age_days,
        "mode": result.mode,
        "result": result.result,
        "exit_code": result.exit_code,
        "hosts": hosts,
        "violations": [{"host": v.host, "package": v.package, "reason": v.reason} for v in result.violations],
        "errors": [{"host": h, "message": m} for h, m in sorted(result.errors.items())],
    }


def _properties(parent: ET.Element, **props: object) -> None:
    el = ET.SubElement(parent, "properties")
    for name, value in props.items():
        ET.SubElement(el, "property", name=name, value=str(value))


def as_junit(result: CheckResult) -> str:
    """One testsuite per host, one testcase per pending security update (a failure when overdue)."""
    stamp = result.checked_at.isoformat(timespec="seconds")
    root = ET.Element("testsuites", name="billkit patch --check")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for host in result.hosts:
        suite = ET.SubElement(root, "testsuite", name=host.host, hostname=host.host, timestamp=stamp)
        _properties(suite, control=CONTROL, pci_dss=PCI_DSS, max_age_days=result.max_age_days, boot_id=host.boot_id)
        index_problems = [v for v in result.violations if v.host == host.host and v.package is None]
        case = ET.SubElement(suite, "testcase", classname=f"{host.host}.apt", time="0",
                             name=f"security suite index fetched within {result.max_age_days} days")  # fmt: skip
        _properties(case, control=CONTROL)
        if index_problems:
            ET.SubElement(case, "failure", type=CONTROL, message=index_problems[0].reason).text = "\n".join(
                v.reason for v in index_problems
            )
        failures = 1 if index_problems else 0
        rows = result.security_rows(host.host)
        for row in rows:
            case = ET.SubElement(suite, "testcase", classname=f"{host.host}.security", time="0",
                                 name=f"{row.pkg.name} {row.pkg.installed} -> {row.pkg.candidate}")  # fmt: skip
            released = row.released.isoformat() if row.released else "unknown"
            age = f"{row.age_days:.1f}" if row.age_days is not None else "unknown"
            _properties(case, control=CONTROL, released=released, age_days=age, uri=row.pkg.uri)
            if row.overdue:
                failures += 1
                reason = next(v.reason for v in result.violations if v.host == host.host and v.package == row.pkg.name)
                ET.SubElement(case, "failure", type=CONTROL, message=reason).text = reason
        suite.set("tests", str(len(rows) + 1))
        suite.set("failures", str(failures))
        suite.set("errors", "0")
        totals["tests"] += len(rows) + 1
        totals["failures"] += failures
    for host, message in sorted(result.errors.items()):
        suite = ET.SubElement(root, "testsuite", name=host, hostname=host, timestamp=stamp, tests="1", failures="0",
                              errors="1")  # fmt: skip
        _properties(suite, control=CONTROL, pci_dss=PCI_DSS)
        case = ET.SubElement(suite, "testcase", classname=f"{host}.status", name="patch status read", time="0")
        ET.SubElement(case, "error", type="unreachable", message=message).text = message
        totals["tests"] += 1
        totals["errors"] += 1
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _age_cell(row: Row) -> str:
    if row.age_days is None:
        return "[red]unknown[/red]" if row.pkg.security else "?"
    days = f"{int(row.age_days)}"
    return f"[red]{days}[/red]" if row.overdue else days


# Wide enough for a pending update's row when the output is a CI log rather than a terminal.
LOG_WIDTH = 200


def print_table(result: CheckResult, console: Console) -> None:
    which = "security updates" if result.mode == "security" else "updates"
    console.print(f"[bold]Pending {which}[/bold] ({CONTROL}: no security update older than {result.max_age_days} days)")
    table = Table()
    for col in ("host", "package", "installed → candidate", "security", "age (days)"):
        table.add_column(col, no_wrap=True)
    for col in ("reboot required", "services to restart"):
        table.add_column(col, overflow="fold")
    for host in result.hosts:
        reboot = "yes: " + "; ".join(_reboot_reasons(host)) if host.needs_reboot else "no"
        services = escape(", ".join(host.services) or "-")
        if host.needrestart_error:
            services = escape(f"unknown ({host.needrestart_error})")
        rows = result.rows.get(host.host, [])
        if not rows:
            table.add_row(host.host, "[dim]none pending[/dim]", "", "", "", reboot, services)
        for i, row in enumerate(rows):
            table.add_row(
                host.host if i == 0 else "", row.pkg.name, f"{row.pkg.installed} → {row.pkg.candidate}",
                "[bold]yes[/bold]" if row.pkg.security else "-", _age_cell(row),
                reboot if i == 0 else "", services if i == 0 else "",
            )  # fmt: skip
    for host in sorted(result.errors):
        table.add_row(escape(host), "[red]status unreadable[/red]", "", "", "", "", "")
    console.print(table)


def summary(result: CheckResult) -> str:
    security = [r for h in result.hosts for r in result.security_rows(h.host)]
    ages = [r.age_days for r in security if r.age_days is not None]
    oldest = f"; oldest {max(ages):.0f} days" if ages else ""
    return (f"{len(result.hosts)} host(s), {len(security)} pending security update(s){oldest}; "
            f"limit {result.max_age_days} days")  # fmt: skip


def explain(result: CheckResult, err: Console) -> None:
    """What failed and what to do, on stderr (the formats stay clean on stdout)."""
    if result.violations:
        failed = f"[red]{CONTROL} gate failed: {len(result.violations)} violation(s)[/red]"
        err.print(f"{failed} ({summary(result)})", soft_wrap=True)
        by_reason: dict[str, list[str]] = {}  # the same finding on many hosts is printed once
        for v in result.violations:
            by_reason.setdefault(v.reason, []).append(v.host)
        for reason, hosts in by_reason.items():
            err.print(f"  {', '.join(hosts)}: {reason}", markup=False, highlight=False, soft_wrap=True)
        err.print(f"To fix: {FIX_VIOLATIONS}.", markup=False, highlight=False, soft_wrap=True)
    for host, message in sorted(result.errors.items()):
        err.print(f"[red]error:[/red] {escape(host)}: {escape(message)}", highlight=False, soft_wrap=True)
    if result.errors:
        err.print("The check is incomplete (exit 2): fix the hosts above and run it again.")
    if not result.violations and not result.errors:
        err.print(f"[green]{CONTROL} gate passed[/green]: {summary(result)}")


def run_check(
    inventory: Path | None, hosts: list[str] | None, *, max_age_days: int, security_only: bool
) -> CheckResult:
    """Read every host's status, date its updates from the mirror, apply the gate (raises StatusError)."""
    collection = collect(inventory, hosts)
    uris = {p.uri for h in collection.hosts.values() for p in h.pending if p.uri and (p.security or not security_only)}
    dates = release_dates(uris)
    return evaluate(collection, dates, max_age_days=max_age_days, security_only=security_only)


def cmd_check(
    *,
    inventory: Path | None,
    hosts: list[str] | None,
    output: str,
    max_age_days: int,
    security_only: bool,
    console: Console,
    err: Console,
) -> int:
    if max_age_days < 0:
        err.print(f"[red]error:[/red] --max-age-days must be 0 or more, not {max_age_days}")
        return 2
    start = time.monotonic()
    try:
        with err.status("reading each host's patch status, then dating its updates from the mirror…"):
            result = run_check(inventory, hosts, max_age_days=max_age_days, security_only=security_only)
    except StatusError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    if output == "json":
        sys.stdout.write(json.dumps(as_json(result), indent=2, sort_keys=True) + "\n")
    elif output == "junit":
        sys.stdout.write(as_junit(result))
    else:
        if not console.is_terminal and console.width < LOG_WIDTH:
            console = Console(width=LOG_WIDTH)  # a CI log: one line per update rather than folded cells
        print_table(result, console)
    explain(result, err)
    err.print(f"[dim]checked in {time.monotonic() - start:.1f}s[/dim]")
    return result.exit_code


# --- billkit verify ------------------------------------------------------------------------


def latest_evidence(evidence_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest ``patch-<time>.json`` by its start time; None when no rollout was recorded.

    A file that cannot be read as a patch record is passed over (the next newest is shown).
    """
    found: list[tuple[str, str, Path, dict[str, Any]]] = []
    for path in evidence_dir.glob("patch-*.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("kind", "patch") == "patch":
            found.append((str(data.get("started", "")), path.name, path, data))
    if not found:
        return None
    _, _, path, data = max(found, key=lambda f: (f[0], f[1]))
    return path, data


def print_evidence(evidence_dir: Path, console: Console) -> None:
    """The latest patch run (PAT-07): when, result, each host's packages, restarts, reboot and health."""
    found = latest_evidence(evidence_dir)
    if found is None:
        console.print("Patch runs (PAT-07): none recorded yet in .lab/evidence/ (`billkit patch` records one)")
        return
    path, ev = found
    result = ev.get("result", "?")
    colour = "green" if result == "ok" else "red"
    when = f"{ev.get('started', '?')} → {ev.get('finished', '?')}"
    mode = ev.get("mode", "?")
    console.print(
        f"[bold]Latest patch run[/bold] (PAT-07; {path.name}): {when}, {mode} updates, [{colour}]{result}[/{colour}]"
    )
    table = Table()
    for col in ("host", "role", "duration", "packages", "rebooted", "restarted services", "health"):
        table.add_column(col, overflow="fold")
    for h in ev.get("hosts") or []:
        health = h.get("health") or {}
        ok = health.get("ok")
        verdict = "[green]ok[/green]" if ok else "[red]failed[/red]" if ok is False else "?"
        detail = f" {escape(str(health['detail']))}" if health.get("detail") and not ok else ""
        duration = h.get("duration_s")
        table.add_row(
            h.get("host", "?"), h.get("role", ""), f"{duration:.0f}s" if isinstance(duration, int | float) else "?",
            str(len(h.get("packages") or [])), "yes" if h.get("rebooted") else "no",
            ", ".join(h.get("restarted_services") or []) or "-", verdict + detail,
        )  # fmt: skip
    console.print(table)
    if ev.get("stopped_at"):
        stopped = escape(f"stopped at {ev['stopped_at']}")
        console.print(f"[red]{stopped}[/red]: {escape(str(ev.get('message', '')))}", highlight=False)
    elif ev.get("message"):
        console.print(ev["message"], markup=False, highlight=False)
    load = ev.get("load")
    if isinstance(load, dict):
        console.print(
            f"under load: {load.get('sent', '?')} requests sent, {load.get('failed', '?')} failed; "
            f"p50 {load.get('p50_ms', '?')} ms (before: {load.get('baseline_p50_ms', '?')} ms), "
            f"p99 {load.get('p99_ms', '?')} ms (before: {load.get('baseline_p99_ms', '?')} ms)",
            highlight=False,
        )


def print_status_summary(result: CheckResult, console: Console) -> None:
    """Per host: pending security updates, the oldest one's age, the gate's verdict."""
    limit = result.max_age_days
    console.print(f"[bold]Patch status now[/bold] ({CONTROL}: no security update older than {limit} days; "
                  "`billkit patch --check` for details)")  # fmt: skip
    table = Table()
    for col in ("host", "pending security updates", "oldest (days)", "reboot required", "gate"):
        table.add_column(col)
    for host in result.hosts:
        rows = result.security_rows(host.host)
        ages = [r.age_days for r in rows if r.age_days is not None]
        oldest = f"{max(ages):.0f}" if ages else "-"
        if len(ages) < len(rows):
            oldest += " (some unknown)"
        failed = any(v.host == host.host for v in result.violations)
        table.add_row(host.host, str(len(rows)), oldest, "yes" if host.needs_reboot else "no",
                      "[red]fail[/red]" if failed else "[green]pass[/green]")  # fmt: skip
    for host in sorted(result.errors):
        table.add_row(escape(host), "?", "?", "?", "[red]error[/red]")
    console.print(table)
    verdict = {"pass": "[green]pass[/green]", "fail": "[red]fail[/red]", "error": "[red]incomplete[/red]"}
    console.print(f"{CONTROL} gate: {verdict[result.result]} ({summary(result)})")


def verify_section(evidence_dir: Path, console: Console, err: Console) -> None:
    """What `billkit verify` adds for patching: the latest evidence and the gate's status now."""
    print_evidence(evidence_dir, console)
    try:
        with err.status("patch status: reading every host, dating pending updates from the mirror…"):
            result = run_check(None, None, max_age_days=DEFAULT_MAX_AGE_DAYS, security_only=True)
    except StatusError as exc:
        err.print(f"[red]patch status unavailable:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return
    print_status_summary(result, console)
    if result.violations or result.errors:
        explain(result, err)
