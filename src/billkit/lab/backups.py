"""The backup layer of the local lab: what `billkit up`, `billkit backup` and `billkit restore-test` do.

``prepare()`` runs on the controller before the ``backup.yml`` playbook:

- builds the backup store's Python bundle (moto's S3, flask, uvicorn) from the versions pinned
  in ``uv.lock``, for the hosts' Python 3.11, into one archive the role ships (hosts never fetch
  from PyPI);
- has the Vault PKI (``pki_int``) issue backup-1's certificate, and mints the backup agent's
  token (policy ``backup-agent``: raft snapshots and the repository passphrase), both only when
  missing or due, in a root session revoked at once;
- makes the age key pair of the raft snapshots (the private half stays with the unseal material
  on the controller; hosts get only the recipient);
- writes ``backup.vars.yml`` next to the inventory for the playbook.

The playbook fetches the repository passphrase from Vault's KV at run time (never stored on the
controller). ``take_backup()`` and ``restore_test()`` drive pgBackRest on db-1 and backup-1 over SSH.
"""

# SQL below runs through psql over SSH; it is built only from constants and names this module makes.
# ruff: noqa: S608

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from billkit.backup import CHECKSUM_SQL, STANZA, BackupError, RestoreEvidence
from billkit.controls import ROOT
from billkit.lab.state import LAB_DIR
from infra.topology import HTTPS, POSTGRES, VAULT_API, hosts_of, lab_host

Progress = Callable[[str], None]

BUNDLE_REQUIREMENTS = ("moto[s3]", "flask", "flask-cors", "uvicorn")
BUCKET = "billkit-backups"
REGION = "us-east-1"
# BAK-01: daily backups kept 35 days; object lock (COMPLIANCE) holds every version as long.
RETENTION_DAYS = 35
AGENT_TOKEN_PERIOD = "768h"  # noqa: S105 - a duration, not a secret; renewed by every `up` and by every snapshot run
DATABASE = "billing"
RESTORE_ROOT = "/var/lib/billkit-restore"
SNAPSHOT_PREFIX = "vault-snapshots/"


def _quiet(_: str) -> None:
    pass


def folder() -> Path:
    return LAB_DIR / "backup"


def vars_file() -> Path:
    return LAB_DIR / "backup.vars.yml"


def evidence_dir() -> Path:
    return LAB_DIR / "evidence"


def store_host() -> str:
    return hosts_of("backup")[0].name


def db_host() -> str:
    return hosts_of("db")[0].name


# --- the store's Python bundle -----------------------------------------------------------------


def _uv() -> str:
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    if not Path(found).exists():
        raise BackupError("uv not found: run ./billkit once (it installs uv) and retry")
    return found


def build_bundle(progress: Progress = _quiet) -> Path:
    """The store's packages at the versions of uv.lock, for CPython 3.11 on Linux (cached by content)."""
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never")
    cons = subprocess.run(
        [_uv(), "export", "--frozen", "--no-hashes", "--no-emit-project", "--no-header", "--format",
         "requirements-txt"], cwd=ROOT, capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip
    if cons.returncode != 0:
        raise BackupError(f"uv export failed: {cons.stderr.strip()[-500:]}")
    app_src = (ROOT / "src" / "billkit" / "s3app.py").read_bytes()
    digest = hashlib.sha256(cons.stdout.encode() + b"\0" + app_src).hexdigest()[:16]
    out = folder() / f"s3store-{digest}.tar.gz"
    if out.exists():
        return out
    progress("building the backup store's Python bundle from uv.lock")
    folder().mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(prefix="billkit-bundle-") as tmp:
        (Path(tmp) / "constraints.txt").write_text(cons.stdout)
        target = Path(tmp) / "lib"
        proc = subprocess.run(
            [_uv(), "pip", "install", "--quiet", "--target", str(target), "--python-version", "3.11",
             "--python-platform", "x86_64-manylinux_2_28", "--only-binary", ":all:", "-c",
             str(Path(tmp) / "constraints.txt"), *BUNDLE_REQUIREMENTS],
            cwd=tmp, capture_output=True, text=True, check=False, env=env,
        )  # fmt: skip
        if proc.returncode != 0:
            raise BackupError(f"could not build the store bundle: {proc.stderr.strip()[-800:]}")
        shutil.rmtree(target / "bin", ignore_errors=True)
        (target / "billkit_s3app.py").write_bytes(app_src)
        partial = out.with_suffix(".part")
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(target, arcname="lib")
        partial.rename(out)
    for old in folder().glob("s3store-*.tar.gz"):
        if old != out:
            old.unlink()
    return out


# --- Vault: certificate, agent token, snapshot key --------------------------------------------


def _vault_nodes() -> list[str]:
    return [f"https://{h.address}:{VAULT_API}" for h in hosts_of("vault")]


def root_ca_pem() -> str:
    from billkit.vault import lab as vault_lab
    from billkit.vault.pki import ensure_root_ca

    return ensure_root_ca(vault_lab.state().pki).pem


def _token_valid(token_file: Path) -> bool:
    import hvac
    import hvac.exceptions
    import requests

    if not token_file.exists():
        return False
    ca = folder() / "ca.pem"
    for url in _vault_nodes():
        try:
            c = hvac.Client(url=url, token=token_file.read_text().strip(), verify=str(ca), timeout=10)
            data = c.auth.token.renew_self()["auth"]
            return "backup-agent" in data.get("policies", []) and int(data.get("lease_duration", 0)) > 86400
        except hvac.exceptions.Forbidden:
            return False
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException):
            continue
    return False


def _ensure_vault_material(progress: Progress) -> list[str]:
    from billkit.vault import configure
    from billkit.vault import lab as vault_lab
    from billkit.vault.bootstrap import root_session
    from billkit.vault.deploy import open_cluster
    from billkit.vault.pki import needs_renewal, write_private
    from billkit.vault.server import lab_nodes

    changes: list[str] = []
    (folder() / "ca.pem").write_text(root_ca_pem(), encoding="ascii")
    tls = folder() / "tls"
    token_file = folder() / "agent.token"
    host = lab_host(store_host())
    cert_due = needs_renewal(tls / "server.pem")
    token_ok = _token_valid(token_file)
    if not cert_due and token_ok:
        return changes
    cluster, _ = open_cluster(lab_nodes(), vault_lab.state())
    with root_session(cluster, progress) as c:
        if cert_due and configure.ensure_host_cert(c, host.name, tls / "server.pem", tls / "server.key",
                                                   (host.name,), (host.address, "127.0.0.1")):  # fmt: skip
            changes.append(f"certificate of {host.name} (pki_int)")
        if not token_ok:
            token = c.auth.token.create_orphan(
                policies=["backup-agent"], period=AGENT_TOKEN_PERIOD, renewable=True,
                meta={"purpose": "backup agent (raft snapshots, repository passphrase)"},
            )["auth"]["client_token"]  # fmt: skip
            write_private(token_file, token.encode())
            changes.append("backup agent token (policy backup-agent, periodic)")
    return changes


def age_identity() -> Path:
    """The snapshot key pair (age X25519): private half on the controller, recipient on hosts."""
    from billkit.system import ensure_packages, require_command
    from billkit.vault import lab as vault_lab

    path = vault_lab.state().vault / "snapshot-age.key"
    if not path.exists():
        ensure_packages(["age"], "encrypting Vault raft snapshots")
        require_command("age-keygen", "age")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        proc = subprocess.run(["age-keygen", "-o", str(path)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BackupError(f"age-keygen failed: {proc.stderr.strip()}")
        path.chmod(0o600)
    return path


def age_recipient() -> str:
    for line in age_identity().read_text().splitlines():
        if line.startswith("# public key: "):
            return line.removeprefix("# public key: ").strip()
    raise BackupError(f"{age_identity()} has no public key line; delete it and run `billkit up` again")


def _s3_credentials() -> dict[str, str]:
    path = folder() / "s3-credentials.json"
    if not path.exists():
        from billkit.vault.pki import write_private

        body = {"key": "billkit" + secrets.token_hex(6), "secret": secrets.token_urlsafe(30)}
        write_private(path, json.dumps(body).encode())
    return json.loads(path.read_text())


def prepare(progress: Progress = _quiet) -> list[str]:
    """Everything backup.yml needs from the controller; returns what changed."""
    folder().mkdir(parents=True, exist_ok=True, mode=0o700)
    changes = _ensure_vault_material(progress)
    bundle = build_bundle(progress)
    creds = _s3_credentials()
    store = lab_host(store_host())
    body: dict[str, Any] = {
        "backup_store_host": store.name,
        "backup_store_address": store.address,
        "backup_store_port": HTTPS,
        "backup_pg_port": POSTGRES,
        "backup_store_bundle_src": str(bundle),
        "backup_store_tls_src_dir": str(folder() / "tls"),
        "backup_ca_src": str(folder() / "ca.pem"),
        "backup_s3_bucket": BUCKET,
        "backup_s3_region": REGION,
        "backup_s3_key": creds["key"],
        "backup_s3_secret": creds["secret"],
        "backup_retention_days": RETENTION_DAYS,
        "backup_vault_addrs": _vault_nodes(),
        "backup_vault_token_src": str(folder() / "agent.token"),
        "backup_snapshot_recipient": age_recipient(),
    }
    text = "# Generated by `billkit up` (billkit.lab.backups): do not edit.\n" + yaml.safe_dump(body, sort_keys=True)
    target = vars_file()
    if not target.exists() or target.read_text() != text:
        target.write_text(text, encoding="utf-8")
        target.chmod(0o600)
        changes.append(target.name)
    return changes


# --- running things on the hosts --------------------------------------------------------------


def ssh(host: str, command: list[str], timeout: float = 900, check: bool = True,
        user: str = "root") -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run a command as `user` (root by default) on a lab host, through the admin account's sudo."""
    from billkit.lab.hosts import ssh_command

    proc = subprocess.CompletedProcess[str]([], 255, "", "")
    for _ in range(3):  # 255: SSH itself failed on a busy machine; retry
        remote = shlex.join(["sudo", "-n", "-u", user, "env", "-C", "/", *command])
        proc = subprocess.run(ssh_command(lab_host(host), remote), capture_output=True, text=True, timeout=timeout,
                              check=False)  # fmt: skip
        if proc.returncode != 255:
            break
    if check and proc.returncode != 0:
        raise BackupError(
            f"{host}: `{shlex.join(command)[:200]}` failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-1500:]}"
        )
    return proc


# PostgreSQL restarting (a maintenance restart, a drill): its clients retry for a while.
NOT_READY = ("the database system is", "Connection refused", "No such file or directory", "unable to find primary")
READY_WAIT_S = 90.0


def _retrying(host: str, command: list[str], timeout: float, user: str) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + READY_WAIT_S
    while True:
        proc = ssh(host, command, timeout=timeout, user=user, check=False)
        if proc.returncode == 0 or not any(m in proc.stderr for m in NOT_READY) or time.monotonic() > deadline:
            break
        time.sleep(2)
    if proc.returncode != 0:
        raise BackupError(
            f"{host}: `{shlex.join(command)[:200]}` failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-1500:]}"
        )
    return proc


def pgbackrest(host: str, *args: str, timeout: float = 3600) -> str:
    return _retrying(host, ["pgbackrest", f"--stanza={STANZA}", *args], timeout, "postgres").stdout


def psql(host: str, sql: str, dbname: str = DATABASE, port: int | None = None, socket_dir: str = "") -> list[list[str]]:
    """Rows of one statement run by psql as postgres on a host (tab-separated, unaligned)."""
    cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-F", "\t", "-d", dbname]
    if port:
        cmd += ["-p", str(port)]
    if socket_dir:
        cmd += ["-h", socket_dir]
    out = _retrying(host, [*cmd, "-c", sql], 1800, "postgres").stdout
    return [line.split("\t") for line in out.splitlines() if line]


def fingerprints(host: str, **where: Any) -> dict[str, tuple[int, str]]:
    rows = psql(host, CHECKSUM_SQL, **where)
    return {r[0]: (int(r[1]), r[2]) for r in rows}


PROBE_DB = "billkit_restore_probe"


def databases() -> list[str]:
    """The primary's databases worth comparing (every connectable one but templates)."""
    return [r[0] for r in psql(db_host(), "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate "
                                          "ORDER BY 1", dbname="postgres")]  # fmt: skip


def all_fingerprints(host: str, dbs: list[str], **where: Any) -> dict[str, tuple[int, str]]:
    return {f"{db}:{t}": v for db in dbs for t, v in fingerprints(host, dbname=db, **where).items()}


def write_probe(name: str) -> None:
    """A row the restore must bring back: written just before the restore point, in its own database."""
    if not psql(db_host(), f"SELECT 1 FROM pg_database WHERE datname = '{PROBE_DB}'", dbname="postgres"):
        psql(db_host(), f"CREATE DATABASE {PROBE_DB}", dbname="postgres")
    psql(db_host(), "CREATE TABLE IF NOT EXISTS restore_probe (name text PRIMARY KEY, at timestamptz NOT NULL); "
                    f"INSERT INTO restore_probe VALUES ('{name}', clock_timestamp()) "
                    "ON CONFLICT (name) DO UPDATE SET at = excluded.at", dbname=PROBE_DB)  # fmt: skip


def backup_info() -> dict[str, Any]:
    data = json.loads(pgbackrest(db_host(), "info", "--output=json"))
    if not data or not data[0].get("backup"):
        raise BackupError("the repository holds no backup yet: run `billkit backup`")
    return data[0]


@dataclass
class BackupResult:
    label: str
    kind: str
    duration_s: float
    size: int
    repo_size: int
    snapshot: str


def take_backup(kind: str = "incr", progress: Progress = _quiet, snapshot: bool = True) -> BackupResult:
    """A pgBackRest backup of db-1 now (and a raft snapshot of Vault), both into the store."""
    if kind not in ("full", "diff", "incr"):
        raise BackupError(f"unknown backup type {kind!r}: use full, diff or incr")
    progress(f"pgBackRest {kind} backup of {db_host()}")
    start = time.monotonic()
    pgbackrest(db_host(), "backup", "--repo=1", f"--type={kind}")
    duration = round(time.monotonic() - start, 2)
    latest = backup_info()["backup"][-1]
    snap = ""
    if snapshot:
        progress("encrypted raft snapshot of Vault")
        snap = take_snapshot()
    return BackupResult(latest["label"], latest["type"], duration, int(latest["info"]["size"]),
                        int(latest["info"]["repository"]["delta"]), snap)  # fmt: skip


def take_snapshot() -> str:
    """Run the snapshot service on the store host now; returns the key of the stored snapshot."""
    ssh(store_host(), ["systemctl", "start", "billkit-vault-snapshot.service"], timeout=300)
    out = ssh(store_host(), ["journalctl", "-u", "billkit-vault-snapshot.service", "-n", "20", "-o", "cat"],
              check=False).stdout  # fmt: skip
    keys = [ln.split("stored ", 1)[1].split()[0] for ln in out.splitlines() if "stored " in ln]
    return keys[-1] if keys else ""


# --- restore onto a scratch PostgreSQL on backup-1 --------------------------------------------


def _scratch_dir(name: str) -> str:
    return f"{RESTORE_ROOT}/{name}"


# Recovery refuses to run with lower values than the primary's: the scratch copies them.
PRIMARY_SETTINGS = ("max_connections", "max_worker_processes", "max_wal_senders", "max_prepared_transactions",
                    "max_locks_per_transaction")  # fmt: skip


def primary_settings() -> dict[str, str]:
    names = ", ".join(f"'{n}'" for n in PRIMARY_SETTINGS)
    rows = psql(db_host(), f"SELECT name, setting FROM pg_settings WHERE name IN ({names})")
    return {r[0]: r[1] for r in rows}


def _start_scratch(data: str, settings: dict[str, str]) -> None:
    """A throw-away PostgreSQL on the restored directory: no TCP at all (its own socket folder), no archiving."""
    h = store_host()
    conf = (
        f"listen_addresses = ''\nunix_socket_directories = '{data}'\n"
        "archive_mode = off\nssl = off\nshared_buffers = 64MB\n"
        f"hba_file = '{data}/pg_hba.conf'\nident_file = '{data}/pg_ident.conf'\nlog_destination = 'stderr'\n"
        "logging_collector = off\n" + "".join(f"{k} = {int(v)}\n" for k, v in settings.items())
    )
    script = (
        f"set -e; cd {shlex.quote(data)}; printf %s {shlex.quote(conf)} > postgresql.conf; "
        "printf 'local all postgres peer\\n' > pg_hba.conf; : > pg_ident.conf; "
        "rm -f postmaster.pid; chown postgres:postgres postgresql.conf pg_hba.conf pg_ident.conf; "
        f"runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D {shlex.quote(data)} -l {shlex.quote(data)}.log "
        "-w -t 600 start"
    )
    ssh(h, ["sh", "-c", script], timeout=900)
    deadline = time.monotonic() + 600
    while True:  # pg_ctl returns once connections are accepted; promotion may still be running
        rows = psql(h, "SELECT pg_is_in_recovery()", dbname="postgres", socket_dir=data)
        if rows and rows[0][0] == "f":
            return
        if time.monotonic() > deadline:
            raise BackupError(f"the restored PostgreSQL on {h} never left recovery; see {data}.log there")
        time.sleep(1)


def _stop_scratch(data: str) -> None:
    ssh(store_host(), ["sh", "-c", f"if [ -f {data}/postmaster.pid ]; then runuser -u postgres -- "
                       f"/usr/lib/postgresql/15/bin/pg_ctl -D {data} -m fast -w stop; fi; rm -rf {data} {data}.log"],
        check=False)  # fmt: skip


def restore_on_scratch(data: str, *target: str) -> None:
    """Restore the repository into a fresh scratch directory on the store host and start it there."""
    settings = primary_settings()
    ssh(store_host(), ["sh", "-c", f"rm -rf {data} {data}.log && install -d -o postgres -g postgres -m 0700 {data}"])
    pgbackrest(store_host(), "restore", f"--pg1-path={data}", "--archive-mode=off", *target)
    _start_scratch(data, settings)


def consistent_restore_point(name: str, attempts: int = 10) -> tuple[str, str, dict[str, tuple[int, str]]]:
    """Fingerprint the primary around a named restore point; retry if a write slipped in between.

    Each attempt gets its own name (recovery stops at the first point of a name): returns the
    name used, its LSN and the fingerprints.
    """
    dbs = databases()
    for attempt in range(1, attempts + 1):
        point = f"{name}-{attempt}"
        before = all_fingerprints(db_host(), dbs)
        lsn = psql(db_host(), f"SELECT pg_create_restore_point('{point}')::text")[0][0]
        after = all_fingerprints(db_host(), dbs)
        if before == after:
            return point, lsn, before
        time.sleep(0.5)
    raise BackupError("the primary never stayed still long enough to fingerprint it; retry when quieter")


def wait_archived(timeout: float = 120) -> str:
    """Switch to a new WAL segment and wait until the one just closed is in the repository."""
    seg = psql(db_host(), "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
    deadline = time.monotonic() + timeout
    while True:
        last = psql(db_host(), "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")[0][0]
        if last and last >= seg:
            return seg
        if time.monotonic() > deadline:
            raise BackupError(f"WAL segment {seg} was not archived within {timeout:.0f}s (last: {last or 'none'})")
        time.sleep(0.5)


def restore_test(progress: Progress = _quiet) -> RestoreEvidence:
    """Restore the latest backup (plus WAL up to a fresh restore point) on backup-1, compare, record."""
    when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    latest = backup_info()["backup"][-1]
    name = f"billkit-restore-test-{int(time.time())}"
    started = time.monotonic()
    stop = dt.datetime.fromtimestamp(int(latest["timestamp"]["stop"]), dt.UTC).isoformat(timespec="seconds")
    evidence = RestoreEvidence(when, latest["label"], stop, name, 0.0)
    data = _scratch_dir("restore-test")
    try:
        progress("fingerprinting the primary around a restore point")
        write_probe(name)
        point, lsn, expected = consistent_restore_point(name)
        evidence.restore_point = f"{point} @ {lsn}"
        wait_archived()
        progress(f"restoring {latest['label']} up to {point} on {store_host()}")
        restore_on_scratch(data, f"--set={latest['label']}", "--type=name", f"--target={point}",
                           "--target-action=promote")  # fmt: skip
        progress("comparing every table")
        got = all_fingerprints(store_host(), sorted({k.split(":", 1)[0] for k in expected}), socket_dir=data)
        evidence.compare(expected, got)
    except Exception as exc:
        evidence.detail = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        _stop_scratch(data)
        evidence.duration_s = round(time.monotonic() - started, 2)
        evidence.save(evidence_dir())
    return evidence


@dataclass
class DrillResult:
    table: str
    rows_before: int
    rows_restored: int
    target_time: str
    restore_s: float
    total_s: float

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"pitr-drill-{self.target_time.replace(' ', 'T').replace(':', '')}.json"
        path.write_text(json.dumps(self.__dict__, indent=2), encoding="utf-8")
        return path


def pitr_drill(rows: int = 1000, progress: Progress = _quiet) -> DrillResult:
    """Drill: create a table, note the time, drop the table, restore to that time on backup-1: rows back."""
    started = time.monotonic()
    table = f"drill_{int(time.time())}"
    name = f"drill-{table}"
    write_probe(name)  # the probe database exists from here on
    progress(f"creating {table} with {rows} rows on the primary")
    create = f"CREATE TABLE {table} AS SELECT g AS id, md5(g::text) AS payload FROM generate_series(1, {rows}) g"
    psql(db_host(), create, dbname=PROBE_DB)
    now = "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'"
    target = psql(db_host(), now, dbname=PROBE_DB)[0][0]
    time.sleep(1.0)
    progress(f"dropping {table}")
    psql(db_host(), f"DROP TABLE {table}", dbname=PROBE_DB)
    wait_archived()
    data = _scratch_dir("pitr-drill")
    try:
        progress(f"restoring to {target} on {store_host()}")
        t0 = time.monotonic()
        restore_on_scratch(data, "--type=time", f"--target={target}", "--target-action=promote")
        restore_s = round(time.monotonic() - t0, 2)
        got = psql(store_host(), f"SELECT count(*) FROM {table}", dbname=PROBE_DB, socket_dir=data)[0][0]
    finally:
        _stop_scratch(data)
    result = DrillResult(table, rows, int(got), target, restore_s, round(time.monotonic() - started, 2))
    result.save(evidence_dir())
    return result


# --- reading the store from the controller (operator -> backup over HTTPS) ---------------------


def s3_client() -> Any:
    import boto3

    creds = _s3_credentials()
    store = lab_host(store_host())
    return boto3.client(
        "s3", endpoint_url=f"https://{store.address}:{HTTPS}", region_name=REGION, aws_access_key_id=creds["key"],
        aws_secret_access_key=creds["secret"], verify=str(folder() / "ca.pem"),
    )  # fmt: skip


# --- the CLI ------------------------------------------------------------------------------------


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def cmd_backup(kind: str, snapshot: bool) -> int:
    console = _console()
    try:
        with console.status("backup") as status:
            result = take_backup(kind, lambda m: status.update(m), snapshot=snapshot)
    except BackupError as exc:
        console.print(f"[red]backup failed:[/red] {exc}", highlight=False)
        return 1
    console.print(f"backup {result.label} ({result.kind}) in {result.duration_s}s: {result.size / 1e6:.1f} MB of "
                  f"data, {result.repo_size / 1e3:.0f} kB new in the store, encrypted")  # fmt: skip
    if result.snapshot:
        console.print(f"Vault raft snapshot: {result.snapshot} (age-encrypted)")
    print(result.label)
    return 0


def cmd_restore_test() -> int:
    console = _console()
    try:
        with console.status("restore test") as status:
            ev = restore_test(lambda m: status.update(m))
    except BackupError as exc:
        console.print(f"[red]restore test failed:[/red] {exc} (evidence in {evidence_dir()})", highlight=False)
        return 1
    colour = "green" if ev.result == "pass" else "red"
    console.print(f"[{colour}]{ev.result}[/{colour}]: {ev.detail}; backup {ev.backup_label}, restore point "
                  f"{ev.restore_point}, {ev.duration_s}s; evidence in {evidence_dir()}", highlight=False)  # fmt: skip
    return 0 if ev.result == "pass" else 1
