"""`billkit patch`: the rolling patch run (playbooks/patch.yml), its progress, and its evidence (PAT-04..07).

The playbook does the work one host at a time; this module prepares what the run needs on the
controller, shows progress (host, phase, time), and joins the hosts' records into one evidence file
``.lab/evidence/patch-<time>.json``. On the lab it also stands in for what AWS provides: KMS
auto-unseal (a restarted Vault node is unsealed from the lab's key store) and the step-down token.
With ``--under-load`` a bounded load loop runs through the published port for the whole rollout.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import re
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from billkit.lab.ansible import run_playbook
from billkit.lab.procs import StepError
from billkit.lab.state import EVIDENCE_DIR, INVENTORY, LAB_DIR
from billkit.patching.load import LoadLoop, measure
from infra.topology import APP_PORT, HTTPS, LAB_PUBLISHED_HTTPS, POSTGRES, PROMETHEUS, VAULT_API, lab_hosts

if TYPE_CHECKING:
    import hvac

console = Console(stderr=True)
STEP_DOWN_POLICY = "patching"  # src/billkit/vault/policies/patching.hcl: sys/step-down and revoke-self only
TASK = re.compile(r"^TASK \[patching : (PAT-\d+) \| (\w+) \|")
HOST_RESULT = re.compile(r"^(ok|changed|fatal|failed|skipping): \[([^\]\s]+)")


def playbook_vars(mode: str, evidence_dir: Path, vault_token: str, health_timeout: int = 60) -> dict[str, Any]:
    """What the playbook takes from the controller: ports from the topology, the mode, where records go."""
    from billkit.lab.app import SERVICE

    return {
        "patching_mode": mode,
        "patching_health_timeout": health_timeout,
        "patching_https_port": HTTPS,
        "patching_app_port": APP_PORT,
        "patching_vault_port": VAULT_API,
        "patching_db_port": POSTGRES,
        "patching_prometheus_port": PROMETHEUS,
        "patching_evidence_dir": str(evidence_dir),
        "patching_vault_token": vault_token,
        # The lab's app logs in with response-wrapped secret IDs that only the controller can make.
        "patching_controller_restarts": {
            f"{SERVICE}.service": [sys.executable, "-m", "billkit.patching.labhooks", "restart-app"],
        },
    }


class Progress:
    """A live table of the rollout: each host's phase and time."""

    def __init__(self, hosts: list[str]) -> None:
        self.rows: dict[str, dict[str, Any]] = {h: {"phase": "waiting", "start": None, "end": None} for h in hosts}
        self.task_phase = ""

    def line(self, text: str) -> None:
        if m := TASK.match(text):
            self.task_phase = m.group(2)
            return
        m = HOST_RESULT.match(text)
        if not m or m.group(2) not in self.rows or not self.task_phase or m.group(1) == "skipping":
            return
        row = self.rows[m.group(2)]
        row["start"] = row["start"] or time.monotonic()
        if row["phase"].startswith("failed") or row["phase"] == "done":
            return
        if m.group(1) in ("fatal", "failed"):
            row["phase"], row["end"] = f"failed in {self.task_phase}", time.monotonic()
        elif self.task_phase == "evidence":  # the record is written once the host is through
            row["phase"], row["end"] = "done", time.monotonic()
        elif self.task_phase not in ("start", "failed"):
            row["phase"] = self.task_phase

    def table(self) -> Table:
        t = Table(title="billkit patch", show_lines=False)
        for col in ("host", "phase", "time"):
            t.add_column(col)
        now = time.monotonic()
        for host, row in self.rows.items():
            took = "" if row["start"] is None else f"{(row['end'] or now) - row['start']:.0f}s"
            style = "red" if row["phase"].startswith("failed") else "green" if row["phase"] == "done" else ""
            t.add_row(host, f"[{style}]{row['phase']}[/{style}]" if style else row["phase"], took)
        return t


def step_down_token(c: hvac.Client) -> str:
    """The run's only Vault credential: an orphan that may make the active node step down, then revoke
    itself; it expires by itself within 2 h should the run die."""
    return c.auth.token.create(
        policies=[STEP_DOWN_POLICY],
        no_parent=True,
        ttl="2h",
        renewable=False,
        no_default_policy=True,
        meta={"purpose": "billkit patch"},
    )["auth"]["client_token"]


@contextlib.contextmanager
def lab_stand_ins() -> Iterator[str]:
    """The lab's stand-ins for AWS during a run: a step-down token, and an unsealer for restarted nodes."""
    from billkit.lab.app import vault_root
    from billkit.vault import lab as vault_lab
    from billkit.vault.bootstrap import VaultError, revoke_token, unseal_all
    from billkit.vault.deploy import open_cluster
    from billkit.vault.server import lab_nodes

    with vault_root() as c:
        token = step_down_token(c)
    cluster, _ = open_cluster(lab_nodes(), vault_lab.state())
    stop = threading.Event()

    def unseal_loop() -> None:  # a rebooted or restarted node comes back sealed; KMS unseals it in AWS
        while not stop.wait(2):
            with contextlib.suppress(Exception):
                unseal_all(cluster)

    t = threading.Thread(target=unseal_loop, name="unsealer", daemon=True)
    t.start()
    try:
        yield token
    finally:
        stop.set()
        t.join(timeout=10)
        try:
            revoke_token(cluster, token)  # the policy allows revoke-self: no root session for this
        except VaultError as exc:
            console.print(f"[yellow]the step-down token was not revoked (it expires within 2 h): {exc}[/yellow]")


def packages_changed(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not before or not after:
        return []
    origins = {p["name"]: p.get("label") or p.get("origin") for p in before.get("pending", [])}
    return [
        {"name": name, "before": before["installed"].get(name), "after": version, "origin": origins.get(name)}
        for name, version in sorted(after["installed"].items())
        if before["installed"].get(name) != version
    ]


def host_record(raw: dict[str, Any]) -> dict[str, Any]:
    phases = {k: float(v) for k, v in (raw.get("phases") or {}).items()}
    start, end = phases.get("start"), phases.get("done") or max(phases.values(), default=None)
    before, after = raw.get("before"), raw.get("after")
    ok = raw.get("phase") == "done" and not raw.get("failure")
    return {
        "host": raw["host"],
        "role": raw.get("kind"),
        "started": dt.datetime.fromtimestamp(start, dt.UTC).isoformat(timespec="seconds") if start else None,
        "duration_s": round(end - start, 1) if start and end else None,
        "phases_s": {k: round(v - start, 1) for k, v in phases.items() if start},
        "boot_id_before": (before or {}).get("boot_id"),
        "boot_id_after": raw.get("boot_id_after") or (after or {}).get("boot_id"),
        "rebooted": bool(raw.get("rebooted")),
        "packages": packages_changed(before, after),
        "security_pending_after": sum(1 for p in (after or {}).get("pending", []) if p.get("security")),
        "restarted_services": raw.get("restarted_services") or [],
        "election_seconds": raw.get("election_seconds"),
        "health": {"ok": ok, "detail": raw.get("failure") or f"passed its health check ({raw.get('kind')})"},
        "drained_now": bool(raw.get("drained")),
        "installed": bool(raw.get("installed")),
    }


def rollout(*, hosts: list[str] | None, security_only: bool, under_load: bool, inventory: Path | None,
            health_timeout: int = 60) -> int:  # fmt: skip
    """Patch the hosts one at a time; write the evidence; return the exit code (0 ok, 1 stopped)."""
    lab = inventory is None
    names = hosts or [h.name for h in lab_hosts()]
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    EVIDENCE_DIR.mkdir(parents=True, exist_ok=True)
    work = EVIDENCE_DIR / f"patch-{stamp}.d"
    work.mkdir(mode=0o700)
    mode = "security" if security_only else "all"
    loop: LoadLoop | None = None
    baseline = None
    message, code = "every host patched and healthy", 0
    with _lab_lock() if lab else contextlib.nullcontext(), lab_stand_ins() if lab else _no_token() as token:
        if under_load:
            ca, port = str(_lab_ca()), LAB_PUBLISHED_HTTPS
            console.print("measuring the request path before the rollout (10 s)")
            baseline = measure("127.0.0.1", port, ca, 10)
            loop = LoadLoop("127.0.0.1", port, ca).start()
        variables = work / "vars.json"
        variables.write_text(json.dumps(playbook_vars(mode, work, token, health_timeout)))
        variables.chmod(0o600)
        progress = Progress(names)
        t0 = time.monotonic()
        try:
            with Live(progress.table(), console=console, refresh_per_second=2) as live:
                run_playbook(
                    "patch.yml",
                    inventory=inventory or INVENTORY,
                    limit=",".join(hosts) if hosts else None,
                    extra=("-e", f"@{variables}"),
                    on_line=lambda ln: (progress.line(ln), live.update(progress.table())),
                )
        except StepError as exc:
            message, code = str(exc), 1
        finally:
            variables.unlink(missing_ok=True)  # it holds the step-down token
        load = loop.stop() if loop else None
    records = [host_record(json.loads(p.read_text())) for p in sorted(work.glob("*.json"))]
    records.sort(key=lambda r: r["started"] or "")  # the order the rollout took
    failed = next((r for r in records if not r["health"]["ok"]), None)
    if code and failed:
        host = failed["host"]
        if failed["installed"]:
            out_of_service = " and it stays drained (out of service)" if failed["drained_now"] else ""
            then = f"Its updates are installed{out_of_service}: fix it, then run `billkit patch --hosts {host}` again"
        else:
            then = "Nothing was installed on it and it is back in service"
        message = f"{host}: {failed['health']['detail']}. {then}; the hosts after it were not touched."
    evidence = {
        "kind": "patch",
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - t0, 1),
        "mode": mode,
        "hosts_requested": names,
        "result": "ok" if code == 0 else "failed",
        "stopped_at": failed["host"] if code and failed else None,
        "message": message,
        "hosts": records,
        "load": None
        if load is None
        else {
            **load.summary(),
            "baseline_p50_ms": baseline.percentile(50) if baseline else None,
            "baseline_p99_ms": baseline.percentile(99) if baseline else None,
        },
    }
    out = EVIDENCE_DIR / f"patch-{stamp}.json"
    out.write_text(json.dumps(evidence, indent=2), encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)
    _print_summary(evidence, out)
    return code


def _print_summary(evidence: dict[str, Any], path: Path) -> None:
    for r in evidence["hosts"]:
        what = "rebooted" if r["rebooted"] else f"restarted {', '.join(r['restarted_services']) or 'nothing'}"
        console.print(
            f"  {r['host']}: {len(r['packages'])} packages, {what}, "
            f"{r['duration_s']}s, {'healthy' if r['health']['ok'] else 'FAILED'}"
        )
    if evidence["load"]:
        ld = evidence["load"]
        console.print(
            f"  load through the edge: {ld['sent']} requests, {ld['failed']} failed; p50 {ld['p50_ms']} ms, "
            f"p99 {ld['p99_ms']} ms (before: {ld['baseline_p50_ms']} / {ld['baseline_p99_ms']} ms)"
        )
    colour = "green" if evidence["result"] == "ok" else "red"
    console.print(f"[{colour}]{evidence['message']}[/{colour}]\nevidence: {path}")


@contextlib.contextmanager
def _lab_lock() -> Iterator[None]:
    """`billkit up` and a rollout never run at once on one lab (up would undrain what the rollout drained)."""
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    with (LAB_DIR / "up.lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StepError("`billkit up` is running on this lab: run `billkit patch` when it has finished") from None
        yield


@contextlib.contextmanager
def _no_token() -> Iterator[str]:
    yield ""  # elsewhere the hosts' own identity (or an operator's token in the variables) makes the step-down


def _lab_ca() -> Path:
    from billkit.lab.app import tls_staging

    return tls_staging() / "ca.pem"
