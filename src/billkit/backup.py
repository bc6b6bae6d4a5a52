"""Encrypted database backups with pgBackRest to S3-compatible storage under object lock.

The same functions serve the lab (db-1 pushes to moto's S3 on backup-1), AWS (a real S3 bucket)
and the loopback tests. The repository is encrypted by pgBackRest (aes-256-cbc, passphrase from
Vault's KV), the bucket has versioning and a default COMPLIANCE retention, and a restore test
restores the latest backup into a scratch data directory, starts it, compares every table's
row count and checksum with the primary and records the evidence.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STANZA = "billing"


class BackupError(RuntimeError):
    """A backup or restore step failed; the message says which and why."""


@dataclass(frozen=True)
class S3Repo:
    endpoint: str  # host name or address of the S3 endpoint
    port: int
    bucket: str
    region: str
    key: str
    secret: str
    ca_file: str  # CA that signed the endpoint's certificate (path as seen by pgBackRest)
    path: str = "/pgbackrest"
    # boto3 only: connect to this address instead of resolving `endpoint`. pgBackRest always
    # connects to `endpoint` and verifies DNS names only (never IP SANs): give it a name.
    connect_host: str = ""

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3", endpoint_url=f"https://{self.connect_host or self.endpoint}:{self.port}", region_name=self.region,
            aws_access_key_id=self.key, aws_secret_access_key=self.secret, verify=self.ca_file,
        )  # fmt: skip


def ensure_locked_bucket(repo: S3Repo, retention_days: int) -> bool:
    """A bucket with versioning and default COMPLIANCE retention (BAK-03); True if created."""
    s3 = repo.client()
    names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    created = False
    if repo.bucket not in names:
        kwargs: dict[str, Any] = {"Bucket": repo.bucket, "ObjectLockEnabledForBucket": True}
        if repo.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": repo.region}
        s3.create_bucket(**kwargs)
        created = True
    s3.put_bucket_versioning(Bucket=repo.bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object_lock_configuration(
        Bucket=repo.bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": retention_days}},
        },
    )
    return created


@dataclass(frozen=True)
class PgTarget:
    data_dir: str
    port: int
    socket_dir: str
    user: str = "postgres"


def render_config(repo: S3Repo, pg: PgTarget, cipher_pass: str, log_dir: str, lock_dir: str,
                  retention_full: int = 2) -> str:  # fmt: skip
    """pgbackrest.conf: S3 repository, encrypted (BAK-02), and the stanza of the primary."""
    lines = [
        "[global]",
        "repo1-type=s3",
        f"repo1-path={repo.path}",
        f"repo1-s3-bucket={repo.bucket}",
        f"repo1-s3-endpoint={repo.endpoint}",
        f"repo1-s3-region={repo.region}",
        "repo1-s3-uri-style=path",
        f"repo1-s3-key={repo.key}",
        f"repo1-s3-key-secret={repo.secret}",
        f"repo1-storage-port={repo.port}",
        f"repo1-storage-ca-file={repo.ca_file}",
        "repo1-storage-verify-tls=y",
        "repo1-cipher-type=aes-256-cbc",
        f"repo1-cipher-pass={cipher_pass}",
        f"repo1-retention-full={retention_full}",
        "start-fast=y",
        "compress-type=zst",
        "log-level-console=warn",
        "log-level-file=info",
        f"log-path={log_dir}",
        f"lock-path={lock_dir}",
        "",
        f"[{STANZA}]",
        f"pg1-path={pg.data_dir}",
        f"pg1-port={pg.port}",
        f"pg1-socket-path={pg.socket_dir}",
        f"pg1-user={pg.user}",
        "",
    ]
    return "\n".join(lines)


Runner = Callable[[list[str]], subprocess.CompletedProcess[str]]


@dataclass
class PgBackRest:
    """pgBackRest commands, run through `runner` (as the postgres user, locally or on a host)."""

    config: str
    runner: Runner

    def run(self, *args: str) -> str:
        proc = self.runner(["pgbackrest", f"--config={self.config}", f"--stanza={STANZA}", *args])
        if proc.returncode != 0:
            raise BackupError(
                f"pgbackrest {args[0]} failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}"
            )
        return proc.stdout

    def stanza_create(self) -> None:
        self.run("stanza-create")

    def check(self) -> None:
        self.run("check")

    def backup(self, kind: str = "full") -> dict[str, Any]:
        started = time.monotonic()
        self.run("backup", f"--type={kind}")
        latest = self.info()["backup"][-1]
        latest["duration_s"] = round(time.monotonic() - started, 2)
        return latest

    def info(self) -> dict[str, Any]:
        data = json.loads(self.run("info", "--output=json"))
        if not data:
            raise BackupError(f"no stanza {STANZA} in the repository")
        return data[0]

    def restore(self, target_dir: str, *extra: str) -> None:
        self.run("restore", f"--pg1-path={target_dir}", *extra)


# --- restore test -------------------------------------------------------------------------------

# Per table of every user schema (public tables unqualified): the row count and the sum of a
# 60-bit hash of every row. Order-independent and
# streaming (constant memory, unlike hashing one aggregated string, which fails past 1 GB).
CHECKSUM_SQL = """
SELECT CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END,
       (xpath('/row/n/text()', x))[1]::text::bigint,
       (xpath('/row/h/text()', x))[1]::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
     LATERAL query_to_xml(format(
       'select count(*) as n, coalesce(sum((''x'' || substr(md5(t::text), 1, 15))::bit(60)::bigint), 0) as h '
       'from %I.%I t', n.nspname, c.relname), false, true, '') AS x
WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY 1
"""


def table_fingerprints(dsn: str) -> dict[str, tuple[int, str]]:
    """Row count and an order-independent content checksum of every table in schema public."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        rows = conn.execute(CHECKSUM_SQL).fetchall()
    return {r[0]: (int(r[1]), str(r[2])) for r in rows}


@dataclass
class RestoreEvidence:
    when: str
    backup_label: str
    backup_stop: str
    restore_point: str
    duration_s: float
    tables: dict[str, Any] = field(default_factory=dict)
    result: str = "fail"
    detail: str = ""

    def compare(self, expected: dict[str, Any], got: dict[str, Any]) -> None:
        """Record each table's (row count, checksum) on the primary and the restored copy, and the verdict."""
        self.tables = {t: {"primary": expected.get(t), "restored": got.get(t)} for t in sorted(expected | got)}
        if got == expected:
            self.result = "pass"
            self.detail = f"{len(got)} tables, {sum(v[0] for v in got.values())} rows identical"
        else:
            self.result = "fail"
            self.detail = "tables differ: " + ", ".join(t for t in self.tables if expected.get(t) != got.get(t))

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"restore-test-{self.when.replace(':', '')}.json"
        path.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        return path


def consistent_restore_point(primary_dsn: str, name: str, attempts: int = 10) -> tuple[str, str, dict]:
    """Fingerprint the primary and create a named restore point with no write in between.

    Fingerprints before and after the restore point must agree; otherwise a write slipped in
    and we try again. The restore point is then forced into the archive (pg_switch_wal).
    """
    import psycopg

    for attempt in range(1, attempts + 1):
        point = name if attempt == 1 else f"{name}-{attempt}"  # recovery stops at a name's first point
        before = table_fingerprints(primary_dsn)
        with psycopg.connect(primary_dsn, autocommit=True) as conn:
            lsn = conn.execute("SELECT pg_create_restore_point(%s)::text", (point,)).fetchone()
        after = table_fingerprints(primary_dsn)
        if before == after:
            with psycopg.connect(primary_dsn, autocommit=True) as conn:
                conn.execute("SELECT pg_switch_wal()")
            return point, str(lsn[0] if lsn else ""), before
        time.sleep(0.5)
    raise BackupError("the primary never stayed still long enough to fingerprint it; retry when quieter")


def restore_test(
    brest: PgBackRest, primary_dsn: str, scratch_dir: Path, start_scratch: Callable[[Path], Any],
    scratch_dsn: Callable[[Any], str], stop_scratch: Callable[[Any], None], evidence_dir: Path,
    owner: str = "postgres",
) -> RestoreEvidence:  # fmt: skip
    """Restore the latest backup up to a fresh restore point into scratch_dir, compare, record."""
    when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    latest = brest.info()["backup"][-1]
    name = f"billkit-restore-test-{int(time.time())}"
    started = time.monotonic()
    point, lsn, expected = consistent_restore_point(primary_dsn, name)
    evidence = RestoreEvidence(when, latest["label"], str(latest["timestamp"]["stop"]), f"{point} @ {lsn}", 0.0)
    if scratch_dir.exists():
        shutil.rmtree(scratch_dir)
    scratch_dir.mkdir(parents=True, mode=0o700)
    import pwd

    pw = pwd.getpwnam(owner)
    os.chown(scratch_dir, pw.pw_uid, pw.pw_gid)
    handle = None
    try:
        brest.restore(str(scratch_dir), f"--set={latest['label']}", "--type=name", f"--target={point}",
                      "--target-action=promote")  # fmt: skip
        handle = start_scratch(scratch_dir)
        evidence.compare(expected, table_fingerprints(scratch_dsn(handle)))
    except Exception as exc:
        evidence.detail = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        if handle is not None:
            stop_scratch(handle)
        evidence.duration_s = round(time.monotonic() - started, 2)
        evidence.save(evidence_dir)
    return evidence


def local_runner(user: str = "postgres") -> Runner:
    """Run pgBackRest on this machine as `user` (PostgreSQL's files belong to it)."""
    import pwd

    pw = pwd.getpwnam(user)

    def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": pw.pw_dir, "LANG": "C.UTF-8"}
        return subprocess.run(cmd, user=pw.pw_uid, group=pw.pw_gid, env=env, capture_output=True, text=True,
                              check=False, timeout=900)  # fmt: skip

    return run


# --- a local S3 store (moto behind uvicorn with TLS): tests, benchmarks ----------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_s3_store(cert: str, key: str, folder: Path) -> Iterator[int]:
    """moto's S3 behind uvicorn with TLS (a certificate from the Vault PKI)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "s3.pem").write_text(cert)
    (folder / "s3.key").write_text(key)
    os.chmod(folder / "s3.key", 0o600)
    port = free_port()
    log = open(folder / "moto.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "uvicorn"), "billkit.s3app:app", "--interface", "wsgi",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
         "--ssl-certfile", str(folder / "s3.pem"), "--ssl-keyfile", str(folder / "s3.key")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    log.close()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((folder / "moto.log").read_text(errors="replace")[-2000:]) from None
                time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
