"""Encrypted pgBackRest backups to S3 under object lock, and a recorded restore test (loopback).

moto's S3 server stands in for the store (TLS with a certificate from the Vault PKI); the
repository passphrase comes from Vault's KV through the backup-agent policy.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from botocore.exceptions import ClientError

from billkit import backup
from billkit.system import ensure_packages
from billkit.vault import configure
from tests.hosts.keys.support import PG_BIN, Postgres, VaultEnv, postgres

MARKER = "PLAINTEXT-MARKER-4111111111111111"


@dataclass
class BackupEnv:
    pg: Postgres
    repo: backup.S3Repo
    brest: backup.PgBackRest
    first: dict
    cipher_pass: str
    evidence_dir: Path


@pytest.fixture(scope="module")
def backups(vault: VaultEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackupEnv]:
    ensure_packages(["pgbackrest"], "the backup checks")
    pgu = pwd.getpwnam("postgres")
    base = tmp_path_factory.mktemp("backup")
    issuer = vault.client(vault.service_cert_token)
    s3_cert = configure.issue_cert(issuer, "localhost", ips=("127.0.0.1",))
    pg_cert = configure.issue_cert(issuer, "localhost", ips=("127.0.0.1",))
    cipher_pass = vault.client(vault.backup_token).secrets.kv.v2.read_secret_version(
        configure.BACKUP_PASSPHRASE, mount_point=configure.KV, raise_on_deleted_version=True
    )["data"]["data"]["passphrase"]
    # pgBackRest runs as postgres: its config, logs and locks live in a folder postgres owns.
    br_dir = Path(tempfile.mkdtemp(prefix="billkit-pgbackrest-"))
    try:
        for sub in ("log", "lock"):
            (br_dir / sub).mkdir()
        shutil.copy(vault.root.cert_path, br_dir / "ca.pem")
        for p in [br_dir, *br_dir.iterdir()]:
            os.chown(p, pgu.pw_uid, pgu.pw_gid)
        conf = br_dir / "pgbackrest.conf"
        push = f"pgbackrest --config={conf} --stanza={backup.STANZA} archive-push %p"
        archive = {"wal_level": "replica", "archive_mode": "on", "archive_timeout": "60", "archive_command": push}
        with backup.local_s3_store(s3_cert.fullchain, s3_cert.private_key, base / "s3") as s3_port, postgres(
            pg_cert.fullchain, pg_cert.private_key, vault.root.cert_path, extra=archive
        ) as pg:  # fmt: skip
            repo = backup.S3Repo("localhost", s3_port, "billkit-backups", "us-east-1", "test", "test",
                                 str(br_dir / "ca.pem"), connect_host="127.0.0.1")  # fmt: skip
            backup.ensure_locked_bucket(repo, retention_days=1)
            target = backup.PgTarget(str(pg.root / "data"), pg.port, str(pg.root))
            conf.write_text(backup.render_config(repo, target, cipher_pass, str(br_dir / "log"), str(br_dir / "lock")))
            os.chown(conf, pgu.pw_uid, pgu.pw_gid)
            conf.chmod(0o600)
            with psycopg.connect(pg.dsn(dbname="postgres"), autocommit=True) as conn:
                conn.execute("CREATE DATABASE billing")
            with psycopg.connect(pg.dsn()) as conn:
                conn.execute("CREATE TABLE invoices (id serial PRIMARY KEY, customer text, amount_cents bigint)")
                conn.execute("CREATE TABLE customers (id serial PRIMARY KEY, note text)")
                conn.execute(
                    "INSERT INTO invoices (customer, amount_cents) SELECT 'c-' || g, g FROM generate_series(1, 2000) g"
                )
                conn.execute("INSERT INTO customers (note) VALUES (%s)", (MARKER,))
            brest = backup.PgBackRest(str(conf), backup.local_runner())
            brest.stanza_create()
            brest.check()
            first = brest.backup("full")
            yield BackupEnv(pg, repo, brest, first, cipher_pass, base / "evidence")
    finally:
        shutil.rmtree(br_dir, ignore_errors=True)


def _objects(env: BackupEnv) -> list[dict]:
    s3 = env.repo.client()
    return s3.list_object_versions(Bucket=env.repo.bucket).get("Versions", [])


@pytest.mark.control("BAK-02", "TOK-05")
def test_backup_files_in_the_store_are_encrypted(backups: BackupEnv) -> None:
    s3 = backups.repo.client()
    objs = _objects(backups)
    assert backups.first["type"] == "full" and len(objs) > 10
    seen = 0
    for o in objs[:60]:
        body = s3.get_object(Bucket=backups.repo.bucket, Key=o["Key"], VersionId=o["VersionId"])["Body"].read()
        assert MARKER.encode() not in body and b"c-1999" not in body, f"plaintext in {o['Key']}"
        if o["Key"].endswith(("backup.info", "archive.info")):
            continue
        seen += 1
        assert body[:8] == b"Salted__", f"{o['Key']} is not aes-256-cbc encrypted by pgBackRest"
    assert seen > 0
    cfg = Path(backups.brest.config)
    assert "repo1-cipher-type=aes-256-cbc" in cfg.read_text()


@pytest.mark.control("BAK-03")
def test_locked_versions_cannot_be_deleted(backups: BackupEnv) -> None:
    s3 = backups.repo.client()
    lock = s3.get_object_lock_configuration(Bucket=backups.repo.bucket)["ObjectLockConfiguration"]
    assert lock["Rule"]["DefaultRetention"]["Mode"] == "COMPLIANCE"
    victim = _objects(backups)[0]
    with pytest.raises(ClientError):
        s3.delete_object(Bucket=backups.repo.bucket, Key=victim["Key"], VersionId=victim["VersionId"])
    keys = {(o["Key"], o["VersionId"]) for o in _objects(backups)}
    assert (victim["Key"], victim["VersionId"]) in keys


@pytest.mark.control("BAK-05")
def test_restore_test_restores_the_latest_backup_and_records_evidence(backups: BackupEnv) -> None:
    pgu = pwd.getpwnam("postgres")
    with psycopg.connect(backups.pg.dsn()) as conn:  # writes after the backup come back through the WAL
        conn.execute("INSERT INTO invoices (customer, amount_cents) VALUES ('after-backup', 1)")
    scratch = backups.pg.root / "scratch"
    procs: list[subprocess.Popen[bytes]] = []

    def start(data: Path) -> int:
        os.chown(data, pgu.pw_uid, pgu.pw_gid)
        port = backup.free_port()
        args = [str(PG_BIN / "postgres"), "-D", str(data), "-c", f"port={port}", "-c", "listen_addresses=127.0.0.1",
                "-c", f"unix_socket_directories={backups.pg.root}", "-c", "archive_mode=off",
                "-c", f"ssl_cert_file={backups.pg.root / 'server.crt'}",
                "-c", f"ssl_key_file={backups.pg.root / 'server.key'}", "-c", "ssl=on"]  # fmt: skip
        log = open(backups.pg.root / "scratch.log", "wb")  # noqa: SIM115
        procs.append(subprocess.Popen(args, user=pgu.pw_uid, group=pgu.pw_gid, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))  # fmt: skip
        log.close()
        dsn = Postgres("127.0.0.1", port, backups.pg.password, backups.pg.ca_file).dsn()
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(dsn) as conn:
                    if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                        return port
            except psycopg.OperationalError:
                pass
            if procs[-1].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((backups.pg.root / "scratch.log").read_text(errors="replace")[-2000:])
            time.sleep(0.3)

    def stop(_: int) -> None:
        for p in procs:
            p.send_signal(signal.SIGINT)
            p.wait(30)

    ev = backup.restore_test(
        backups.brest, backups.pg.dsn(), scratch, start,
        lambda port: Postgres("127.0.0.1", port, backups.pg.password, backups.pg.ca_file).dsn(), stop,
        backups.evidence_dir,
    )  # fmt: skip
    assert ev.result == "pass", ev.detail
    assert ev.tables["invoices"]["restored"][0] == 2001  # the row written after the backup is there
    assert ev.backup_label == backups.first["label"]
    saved = list(backups.evidence_dir.glob("restore-test-*.json"))
    assert saved and '"result": "pass"' in saved[0].read_text()
    assert secrets.compare_digest(ev.tables["customers"]["primary"][1], ev.tables["customers"]["restored"][1])
