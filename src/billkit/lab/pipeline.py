"""`billkit up`, `down` and `status`: the lab's lifecycle as an ordered list of steps.

``up`` runs ``up_steps()`` in order. Every step is idempotent: it checks what exists, repairs
what a dead session left behind (stale mounts, bridges, nft tables, state files) and does only
what is missing, so re-running ``up`` converges. A failing step raises ``StepError`` naming
itself and the cause; the next ``up`` resumes from what is there.

To add a role to the lab (openbao, postgresql, backup, billing_app, waf…), write
``playbooks/<name>.yml`` targeting the inventory groups (``role_<role>``, ``tier_<tier>``),
then append ``Playbook("<name>.yml", "what it does")`` to ``PLAYBOOKS`` below (order matters:
hardening first, then services in dependency order). A step that is not a playbook (say,
shipping a wheelhouse) is a ``Step(name, function)`` added to ``up_steps()``; the function
takes the ``LabState`` and the progress callback.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from billkit.lab import base, helpers, hosts, net
from billkit.lab.ansible import Recap, run_playbook
from billkit.lab.inventory import write_inventory
from billkit.lab.procs import StepError
from billkit.lab.state import (
    LAB_DIR,
    LOG_DIR,
    STATE_FILE,
    LabState,
    claim_machine,
    lab_owner,
    load_state,
    release_machine,
)
from billkit.system import ensure_packages
from infra.topology import lab_hosts

console = Console(stderr=True)
Progress = Callable[[str], None]

PREREQUISITES = ["systemd-container", "debootstrap", "nftables", "iproute2", "apt-cacher-ng", "openssh-client",
                 "util-linux", "mount"]  # fmt: skip


@dataclass(frozen=True)
class Playbook:
    file: str  # under playbooks/
    what: str
    roles: tuple[str, ...] = ()  # the roles it applies (shown by `billkit status`)


# The playbooks `billkit up` applies, in order.
PLAYBOOKS: list[Playbook] = [
    Playbook(
        "harden.yml", "harden every host (os, ssh, host firewall)", ("os_hardening", "ssh_hardening", "host_firewall")
    ),  # fmt: skip
]


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[LabState, Progress], object]


def _prerequisites(state: LabState, progress: Progress) -> None:
    installed = ensure_packages(PREREQUISITES, "the local lab")
    if installed:
        console.print(f"    installed {' '.join(installed)}")


def _claim(state: LabState, progress: Progress) -> None:
    try:
        adopted = claim_machine(state)
    except RuntimeError as exc:
        raise StepError(str(exc)) from None
    if adopted:
        console.print(f"    took over a dead lab's claim: {', '.join(adopted)} (undone by `billkit down`)")


def _base(state: LabState, progress: Progress) -> None:
    progress("debootstrap bookworm (first run only, about a minute)")
    if base.build():
        console.print(f"    built the base image in {base.ROOTFS}")


def _networks(state: LabState, progress: Progress) -> None:
    net.ensure_sysctls(state)
    net.ensure_bridges(state)
    net.ensure_nft(state, LAB_DIR)


def _proxy(state: LabState, progress: Progress) -> None:
    helpers.ensure_proxy(state)


def _hosts(state: LabState, progress: Progress) -> None:
    hosts.ensure_ssh_key()
    for h in lab_hosts():
        progress(f"disk of {h.name}")
        if hosts.ensure_disk(h):
            state.roles_applied.clear()  # a new disk has no role applied yet
            state.save()
    hosts.write_known_hosts()
    for h in lab_hosts():
        hosts.start(state, h)
    progress("waiting for SSH on every host")
    with ThreadPoolExecutor(max_workers=len(lab_hosts())) as pool:
        list(pool.map(lambda h: hosts.wait_ssh(state, h), lab_hosts()))
        list(pool.map(hosts.require_ready, lab_hosts()))


def _publish(state: LabState, progress: Progress) -> None:
    helpers.ensure_publish(state)


def _inventory(state: LabState, progress: Progress) -> None:
    write_inventory()


LAST_RECAPS: dict[str, Recap] = {}


def _playbook_step(pb: Playbook) -> Step:
    def run(state: LabState, progress: Progress) -> None:
        recap = run_playbook(pb.file, on_task=progress)
        LAST_RECAPS[pb.file] = recap
        (LOG_DIR / f"recap-{pb.file.removesuffix('.yml')}.json").write_text(json.dumps(recap.hosts, indent=2))
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        for role in pb.roles:
            state.roles_applied[role] = now
        state.save()
        console.print(f"    {pb.file}: {len(recap.hosts)} hosts, {recap.changed} changed tasks")

    return Step(f"playbook {pb.file}: {pb.what}", run)


def up_steps() -> list[Step]:
    return [
        Step("this machine's lab is ours", _claim),
        Step("prerequisites (apt)", _prerequisites),
        Step("base image", _base),
        Step("networks (bridges, routing, nftables)", _networks),
        Step("apt caching proxy", _proxy),
        Step("hosts (overlay disks, nspawn, SSH)", _hosts),
        Step("published HTTPS port", _publish),
        Step("inventory", _inventory),
        *(_playbook_step(pb) for pb in PLAYBOOKS),
        *_keys_steps(),
        *_data_steps(),
        *_backup_steps(),
        *_app_steps(),
        *_monitoring_steps(),
    ]


# --- keys: the OpenBao cluster (billkit.vault.lab) -------------------------------------------

OPENBAO = Playbook("openbao.yml", "OpenBao raft nodes (vault-1..3)", ("openbao",))


def _vault_prepare(state: LabState, progress: Progress) -> None:
    from billkit.vault import lab as vault_lab

    for change in vault_lab.prepare():
        console.print(f"    {change}")


def _vault_converge(state: LabState, progress: Progress) -> None:
    from billkit.vault import lab as vault_lab

    result = vault_lab.converge(progress)
    for change in result.changes:
        console.print(f"    {change}")
    if any(c.startswith("certificate of ") for c in result.changes):
        progress("installing the nodes' certificates from the PKI engine")
        run_playbook(OPENBAO.file, on_task=progress)
    if result.ssh_ca_public_key and vault_lab.write_ssh_ca_vars(result.ssh_ca_public_key):
        progress("trusting the SSH user CA on every host")
        run_playbook("ssh_ca.yml", on_task=progress)


def _keys_steps() -> list[Step]:
    return [
        Step("vault: root CA, bootstrap certificates, role variables", _vault_prepare),
        _playbook_step(OPENBAO),
        Step("vault: initialise, unseal, join, configure (root revoked after)", _vault_converge),
    ]


def run_steps(steps: list[Step], state: LabState) -> dict[str, float]:
    """Run ``steps`` in order with live progress; return each step's duration in seconds."""
    timings: dict[str, float] = {}
    for step in steps:
        start = time.monotonic()
        with console.status(f"[bold]{step.name}[/bold]") as status:

            def progress(msg: str, _name: str = step.name) -> None:
                status.update(f"[bold]{_name}[/bold]: {msg}")

            try:
                step.run(state, progress)
            except StepError:
                raise
            except Exception as exc:  # an unexpected failure still names its step
                raise StepError(f"{step.name}: {type(exc).__name__}: {exc}") from exc
        timings[step.name] = round(time.monotonic() - start, 1)
        console.print(f"[green]✓[/green] {step.name} [dim]({timings[step.name]:.1f}s)[/dim]")
    return timings


def up() -> LabState:
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    # One `up` at a time per lab: a second one waits instead of racing on the same hosts.
    with (LAB_DIR / "up.lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            console.print("another `billkit up` is running on this lab: waiting for it to finish")
            fcntl.flock(lock, fcntl.LOCK_EX)
        state = load_state()
        timings = run_steps(up_steps(), state)
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        (LOG_DIR / "up-timings.json").write_text(json.dumps(timings, indent=2), encoding="utf-8")  # for bench/lab.py
        return state


def down(purge: bool = False) -> None:
    """Stop what the lab started and undo what it changed, in reverse order."""
    state = load_state()
    owner = lab_owner()
    if owner and owner != str(LAB_DIR) and state.bridges:
        raise StepError(
            f"down: the machine's lab belongs to another checkout ({owner}); its bridges and nft table are not "
            "this checkout's to remove: run `billkit down` there"
        )
    steps = [
        Step("stop hosts", lambda s, p: _stop_hosts(s)),
        Step("stop helper processes", lambda s, p: helpers.stop_helpers(s)),
        Step("remove nft table", lambda s, p: net.remove_nft(s)),
        Step("remove bridges", lambda s, p: net.remove_bridges(s)),
        Step("restore sysctls", lambda s, p: net.restore_sysctls(s)),
        Step("unmount leftovers of an interrupted base build", lambda s, p: base.unmount_under(base.BASE_DIR)),
    ]
    if purge:
        steps.append(Step("delete the hosts' disks and what only they could use", lambda s, p: purge_state()))
    run_steps(steps, state)
    release_machine()
    state.roles_applied.clear() if purge else None
    state.save()
    if purge:
        STATE_FILE.unlink(missing_ok=True)


# What `down --purge` keeps: the base image and the apt cache (slow to make again), the release-date
# cache, and the records (evidence, logs). The rest belongs to the hosts' disks: a Vault key store or
# a database certificate without the cluster or database it was made for would stop the next `up`.
PURGE_KEEPS = frozenset({"base", "apt-proxy", "cache", "evidence", "log", "state.json", "up.lock"})


def purge_state(lab_dir: Path = LAB_DIR) -> list[str]:
    """Delete the hosts' disks and the state made for them; return the names deleted."""
    gone = []
    for entry in sorted(lab_dir.iterdir()) if lab_dir.is_dir() else ():
        if entry.name in PURGE_KEEPS:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        gone.append(entry.name)
    return gone


def _stop_hosts(state: LabState) -> None:
    names = {h.name for h in lab_hosts()} | set(state.nspawn)
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        list(pool.map(lambda n: hosts.stop(state, n), sorted(names)))


def status_rows() -> list[dict[str, str]]:
    state = load_state()
    rows = []
    for h in lab_hosts():
        running = hosts.is_running(state, h.name)
        rows.append({
            "host": h.name, "role": h.role, "tier": h.tier, "address": h.address,
            "state": "running" if running else ("stopped" if hosts.merged(h.name).exists() else "absent"),
            "pid": str(state.nspawn.get(h.name, "")) if running else "",
        })  # fmt: skip
    return rows


# --- data: PostgreSQL on db-1 (billkit.lab.data) --------------------------------------------

POSTGRESQL = Playbook("postgresql.yml", "PostgreSQL 15 on db-1 (TLS, pgaudit, encrypted volume)", ("postgresql",))


def _data_prepare(state: LabState, progress: Progress) -> None:
    from billkit.lab import data

    for change in data.prepare(progress):
        console.print(f"    {change}")


def _data_engine(state: LabState, progress: Progress) -> None:
    from billkit.lab import data

    for change in data.configure_engine(progress):
        console.print(f"    {change}")


def _data_steps() -> list[Step]:
    return [
        Step("data: db-1 certificate, volume key and Vault login, role variables", _data_prepare),
        _playbook_step(POSTGRESQL),
        Step("data: Vault database secrets engine on db-1", _data_engine),
    ]


# --- backup: encrypted pgBackRest backups and Vault raft snapshots (billkit.lab.backups) ---------

BACKUP = Playbook("backup.yml", "backup store, pgBackRest with WAL archiving, raft snapshots", ("backup",))


def _backup_prepare(state: LabState, progress: Progress) -> None:
    from billkit.lab import backups

    for change in backups.prepare(progress):
        console.print(f"    {change}")


def _backup_steps() -> list[Step]:
    return [
        Step("backup: store bundle, certificate, agent token, snapshot key", _backup_prepare),
        _playbook_step(BACKUP),
    ]


# --- app and edge: the billing app on app-1/app-2 behind the WAF on edge-1 (billkit.lab.app) ---------

BILLING_APP = Playbook("billing_app.yml", "the billing app on the app hosts (venv, sandboxed unit, AppRole)",
                       ("billing_app",))  # fmt: skip
WAF = Playbook(
    "waf.yml", "nginx + ModSecurity CRS and the floating address on the edge hosts (TLS, HSTS, rate limit)", ("waf",)
)


def _app_wheelhouse(state: LabState, progress: Progress) -> None:
    from billkit.lab import app

    for change in app.build_wheelhouse(progress):
        console.print(f"    {change}")


def _app_prepare(state: LabState, progress: Progress) -> None:
    from billkit.lab import app

    for change in app.prepare(progress) + app.migrate_and_bootstrap(progress):
        console.print(f"    {change}")


def _app_deliver(state: LabState, progress: Progress) -> None:
    from billkit.lab import app

    for change in app.deliver(progress):
        console.print(f"    {change}")


def _app_steps() -> list[Step]:
    return [
        Step("app: wheelhouse from uv.lock (the app's runtime dependencies only)", _app_wheelhouse),
        Step("app: certificates, AppRole role IDs, migrations, first admin", _app_prepare),
        _playbook_step(BILLING_APP),
        Step("app: response-wrapped secret IDs delivered, services (re)started", _app_deliver),
        _playbook_step(WAF),
    ]


# --- monitoring: mon-1 and every host's exporter (billkit.lab.monitoring) ---------------------------

MONITORING = Playbook("monitoring.yml", "mon-1 (Prometheus, Alertmanager, probes) and every host's exporter",
                      ("host_monitoring", "monitoring"))  # fmt: skip


def _monitoring_prepare(state: LabState, progress: Progress) -> None:
    from billkit.lab import monitoring

    for change in monitoring.prepare(progress):
        console.print(f"    {change}")


def _monitoring_steps() -> list[Step]:
    return [
        Step("monitoring: identity certificates, web passwords, role variables", _monitoring_prepare),
        _playbook_step(MONITORING),
    ]
