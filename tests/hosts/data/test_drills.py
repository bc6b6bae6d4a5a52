"""Fault drills on db-1: restarts during a write loop lose no committed row; the volume locks and
unlocks from Vault the way it does at boot. Each drill stops PostgreSQL for a few seconds."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import threading
import time

import psycopg
import pytest
from psycopg import sql

from billkit.lab.hosts import ssh_command
from billkit.lab.testing import host_urls, python_command
from billkit.vault import configure
from infra.topology import lab_host
from tests.hosts.data.conftest import Creds, DataEnv

pytestmark = [
    pytest.mark.lab,
    pytest.mark.drill("data", disrupts="restarts and kills PostgreSQL on db-1 during a write loop, stops its volume"),
]
testinfra_hosts = host_urls("db")

SERVICE = "postgresql@15-main"


def on_db(db: DataEnv, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ssh_command(db.host, command), capture_output=True, text=True, timeout=timeout, check=False)


# The write loop: inserts ids 1, 2, 3… one transaction each for `seconds` (longer while the server is
# still coming back), and reports which commits the server acknowledged, which were in flight when the
# connection broke, and how many attempts failed.
WRITE_LOOP = """
import json, os, sys, tempfile, time
import psycopg
from psycopg import sql
cfg = json.loads(sys.stdin.read())
with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as f:
    f.write(cfg["ca"])
insert = sql.SQL("INSERT INTO public.{} (id) VALUES (%s)").format(sql.Identifier(cfg["table"]))
committed, unknown, errors, at_fault = [], [], 0, None
conn, n = None, 0
start = time.monotonic()


def more():
    # At least `seconds`; then on until 200 commits went through after the fault (60 s at most).
    t = time.monotonic() - start
    resumed = at_fault is None or len(committed) >= at_fault + 200
    return t < cfg["seconds"] or (not resumed and t < 60)


try:
    while more():
        try:
            if conn is None:
                conn = psycopg.connect(cfg["dsn"] + " sslrootcert=" + f.name, autocommit=True, connect_timeout=3)
                conn.execute("SET ROLE billing_owner")
            n += 1
            try:
                conn.execute(insert, (n,))
            except psycopg.OperationalError:
                unknown.append(n)
                raise
            committed.append(n)
        except psycopg.Error:
            errors += 1
            at_fault = len(committed) if at_fault is None else at_fault
            conn = None
            time.sleep(0.2)
finally:
    os.unlink(f.name)
print(json.dumps({"committed": committed, "unknown": unknown, "errors": errors, "at_fault": at_fault}))
"""
APP_PYTHON = "/opt/billing-app/venv/bin/python"  # the app's environment on app-1 (psycopg)
LOOP_SECONDS = 10


def start_write_loop(db: DataEnv, creds: Creds, table: str) -> tuple[subprocess.Popen[str], str, str]:
    """Run the loop on app-1 (the app's own network path) when the app is installed there, else here."""
    app = lab_host("app-1")
    probe = subprocess.run(ssh_command(app, f"test -x {APP_PYTHON}"), capture_output=True, timeout=60, check=False)
    dsn = db.dsn(creds).replace(f" sslrootcert={db.ca_file}", "")
    payload = json.dumps({"dsn": dsn, "ca": db.ca_file.read_text(), "table": table, "seconds": LOOP_SECONDS})
    if probe.returncode == 0:
        remote = [APP_PYTHON, *python_command(WRITE_LOOP)[1:]]
        cmd, where = ssh_command(app, shlex.join(remote)), "app-1"
    else:
        cmd, where = [sys.executable, "-c", WRITE_LOOP], "the controller (no app on app-1)"
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, payload, where


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
    proc, payload, where = start_write_loop(db, creds, table)
    outputs: list[str] = []
    reader = threading.Thread(target=lambda: outputs.extend(proc.communicate(payload, timeout=120)), daemon=True)
    reader.start()
    time.sleep(3)
    if how == "restart":
        fault = on_db(db, f"sudo systemctl restart {SERVICE}")
    else:
        fault = on_db(
            db, f"sudo systemctl kill --signal=SIGKILL {SERVICE} && sleep 1 && sudo systemctl start {SERVICE}"
        )
    reader.join(130)
    out, err = outputs if outputs else ("", "the write loop did not finish")
    assert fault.returncode == 0, fault.stderr
    assert proc.returncode == 0, err[-2000:]
    result = json.loads(out)
    committed, unknown = result["committed"], result["unknown"]
    print(f"\n{how} from {where}: {len(committed)} commits acknowledged, {len(unknown)} in flight at the fault, "
          f"{result['errors']} failed attempts while the server was down")  # fmt: skip
    assert result["at_fault"] is not None, "the write loop never saw the server go away: the drill did not happen"
    assert len(committed) >= result["at_fault"] + 50, "writes did not resume after the restart"
    with db.connect(creds) as conn:
        conn.execute("SET ROLE billing_owner")
        stored = {r[0] for r in conn.execute(sql.SQL("SELECT id FROM public.{}").format(sql.Identifier(table)))}
        conn.execute(sql.SQL("DROP TABLE public.{}").format(sql.Identifier(table)))
    lost = sorted(set(committed) - stored)
    assert not lost, f"{len(lost)} acknowledged commits are missing: {lost[:20]}"
    phantom = sorted(stored - set(committed) - set(unknown))
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
