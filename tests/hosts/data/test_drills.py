"""Fault drills on db-1: restarts during a write loop lose no committed row; the volume locks and
unlocks from Vault the way it does at boot. Each drill stops PostgreSQL for a few seconds."""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field

import psycopg
import pytest
from psycopg import sql

from billkit.lab.hosts import ssh_command
from billkit.lab.testing import host_urls
from billkit.vault import configure
from tests.hosts.data.conftest import Creds, DataEnv

pytestmark = pytest.mark.lab
testinfra_hosts = host_urls("db")

SERVICE = "postgresql@15-main"


def on_db(db: DataEnv, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ssh_command(db.host, command), capture_output=True, text=True, timeout=timeout, check=False)


@dataclass
class WriteLoop:
    """Inserts ids 1, 2, 3… one transaction each; records which commits the server acknowledged."""

    db: DataEnv
    creds: Creds
    table: str
    committed: list[int] = field(default_factory=list)
    unknown: list[int] = field(default_factory=list)  # the connection broke during the commit
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        conn: psycopg.Connection | None = None
        n = 0
        insert = sql.SQL("INSERT INTO public.{} (id) VALUES (%s)").format(sql.Identifier(self.table))
        while not self.stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.db.dsn(self.creds, connect_timeout="3"), autocommit=True)
                    conn.execute("SET ROLE billing_owner")
                n += 1
                try:
                    conn.execute(insert, (n,))
                except psycopg.OperationalError:
                    self.unknown.append(n)
                    raise
                self.committed.append(n)
            except psycopg.Error as exc:
                self.errors.append(type(exc).__name__)
                conn = None
                time.sleep(0.2)
        if conn is not None:
            conn.close()


@pytest.mark.control("BAK-06")
@pytest.mark.parametrize("how", ["restart", "crash"])
def test_restart_during_a_write_loop_loses_no_committed_row(db: DataEnv, how: str):
    """`restart`: systemd restart (fast shutdown); `crash`: SIGKILL of every server process, then start
    (crash recovery from the WAL). Every commit the server acknowledged must be there afterwards."""
    table = f"billkit_drill_{how}"
    creds = db.creds(configure.DB_MIGRATE)
    with db.connect(creds) as conn:
        conn.execute("SET ROLE billing_owner")
        conn.execute(sql.SQL("DROP TABLE IF EXISTS public.{}").format(sql.Identifier(table)))
        conn.execute(sql.SQL("CREATE TABLE public.{} (id int PRIMARY KEY)").format(sql.Identifier(table)))
    loop = WriteLoop(db, creds, table)
    writer = threading.Thread(target=loop.run, daemon=True)
    writer.start()
    try:
        time.sleep(2)
        before = len(loop.committed)
        if how == "restart":
            proc = on_db(db, f"sudo systemctl restart {SERVICE}")
        else:
            proc = on_db(
                db, f"sudo systemctl kill --signal=SIGKILL {SERVICE} && sleep 1 && sudo systemctl start {SERVICE}"
            )
        assert proc.returncode == 0, proc.stderr
        deadline = time.monotonic() + 60
        while len(loop.committed) < before + 50 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        loop.stop.set()
        writer.join(30)
    print(f"\n{how}: {len(loop.committed)} commits acknowledged, {len(loop.unknown)} in flight at the fault, "
          f"{len(loop.errors)} failed attempts while the server was down")  # fmt: skip
    assert loop.errors, "the write loop never saw the server go away: the drill did not happen"
    assert len(loop.committed) >= before + 50, "writes did not resume after the restart"
    with db.connect(creds) as conn:
        conn.execute("SET ROLE billing_owner")
        stored = {r[0] for r in conn.execute(sql.SQL("SELECT id FROM public.{}").format(sql.Identifier(table)))}
        conn.execute(sql.SQL("DROP TABLE public.{}").format(sql.Identifier(table)))
    lost = sorted(set(loop.committed) - stored)
    assert not lost, f"{len(lost)} acknowledged commits are missing: {lost[:20]}"
    phantom = sorted(stored - set(loop.committed) - set(loop.unknown))
    assert not phantom, f"rows that were never acknowledged nor in flight: {phantom[:20]}"


@pytest.mark.control("EAR-01")
def test_locked_volume_is_unreadable_and_unlocks_from_vault(host, db: DataEnv):
    """Stop the volume unit (PostgreSQL stops with it): the folder is locked and the volume unmounted;
    mounted again without the key, names and contents are ciphertext. Starting PostgreSQL starts the
    unit, which fetches the key from Vault (cert auth) as at boot, and the data is back."""
    creds = db.creds(configure.DB_AUDITOR)
    probe = "/run/billkit-ear01-probe"
    try:
        proc = on_db(db, "sudo systemctl stop billkit-volume")
        assert proc.returncode == 0, proc.stderr
        assert not host.service(SERVICE).is_running, "PostgreSQL kept running without its volume"
        assert host.run("findmnt /srv/pgvol").rc == 1
        host.check_output(f"mkdir -p {probe} && mount -o loop,ro,noexec,nodev,nosuid /srv/pgvol.img {probe}")
        try:
            names = host.check_output(f"ls {probe}/data").split()
            assert names and "15" not in names, f"plaintext names on the locked volume: {names}"
            status = host.check_output(f"fscrypt status {probe}/data")
            assert "Unlocked: No" in status
            files = host.check_output(f"find {probe}/data -type f").split()
            assert len(files) > 100, "the locked volume should hold the cluster's files"
            read = host.run(f"head -c 16 {files[0]}")
            assert read.rc != 0 and "Required key not available" in read.stderr, read
        finally:
            host.run(f"umount {probe} && rmdir {probe}")
    finally:
        proc = on_db(db, f"sudo systemctl start {SERVICE}", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert host.service("billkit-volume").is_running and host.service(SERVICE).is_running
    assert "Unlocked: Yes" in host.check_output("fscrypt status /srv/pgvol/data")
    deadline = time.monotonic() + 30
    while True:
        try:
            with db.connect(creds) as conn:
                assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = 'billing'").fetchone() == (1,)
            break
        except psycopg.OperationalError:
            assert time.monotonic() < deadline, "PostgreSQL did not come back after the unlock"
            time.sleep(0.5)
    journal = host.check_output("journalctl -u billkit-volume -n 20 --no-pager")
    assert "unlocked /srv/pgvol/data" in journal
