"""Backup and restore time for a PostgreSQL database of a given size (default 1 GB), on loopback.

Run: .venv/bin/python bench/backup.py [--mb 1024]
pgBackRest (zst, aes-256-cbc) to moto's S3 behind TLS under COMPLIANCE object lock; the restore
is the kit's restore test (restore point, scratch instance, per-table count and checksum).
Prints figures; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' throwaway PostgreSQL helper

from billkit import backup  # noqa: E402
from billkit.system import ensure_packages  # noqa: E402
from billkit.vault.pki import ensure_root_ca  # noqa: E402
from tests.hosts.keys.support import PG_BIN, Postgres, postgres  # noqa: E402

# About 230 characters of hex per row: compresses like real data, not like a repeated letter.
INSERT = (
    "INSERT INTO invoices SELECT g, 'c-' || g, md5(g::text) || md5((g * 3)::text) || md5((g * 5)::text)"
    " || md5((g * 7)::text) || md5((g * 11)::text) || md5((g * 13)::text) || md5((g * 17)::text)"
    " FROM generate_series(%s, %s) g"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mb", type=int, default=1024, help="approximate database size in MB")
    args = ap.parse_args()
    ensure_packages(["pgbackrest", "postgresql-15"], "the backup benchmark")
    pgu = pwd.getpwnam("postgres")
    with tempfile.TemporaryDirectory(prefix="billkit-bench-backup-") as tmp:
        base = Path(tmp)
        ca = ensure_root_ca(base / "pki")
        s3_cert, s3_key = ca.issue_bootstrap("localhost", ["localhost"], ["127.0.0.1"])
        pg_cert, pg_key = ca.issue_bootstrap("localhost", ["localhost"], ["127.0.0.1"])
        br = Path(tempfile.mkdtemp(prefix="billkit-bench-pgbr-"))
        try:
            for sub in ("log", "lock"):
                (br / sub).mkdir()
            shutil.copy(ca.cert_path, br / "ca.pem")
            for p in [br, *br.iterdir()]:
                os.chown(p, pgu.pw_uid, pgu.pw_gid)
            conf = br / "pgbackrest.conf"
            push = f"pgbackrest --config={conf} --stanza={backup.STANZA} archive-push %p"
            extra = {"wal_level": "replica", "archive_mode": "on", "archive_command": push, "max_wal_size": "2GB",
                     "shared_buffers": "128MB"}  # fmt: skip
            with backup.local_s3_store(s3_cert + ca.pem, s3_key, base / "s3") as port, postgres(
                pg_cert + ca.pem, pg_key, ca.cert_path, extra=extra
            ) as pg:  # fmt: skip
                repo = backup.S3Repo("localhost", port, "billkit-bench", "us-east-1", "k", "s", str(br / "ca.pem"),
                                     connect_host="127.0.0.1")  # fmt: skip
                backup.ensure_locked_bucket(repo, retention_days=1)
                target = backup.PgTarget(str(pg.root / "data"), pg.port, str(pg.root))
                conf.write_text(backup.render_config(repo, target, secrets.token_urlsafe(32), str(br / "log"),
                                                     str(br / "lock")))  # fmt: skip
                os.chown(conf, pgu.pw_uid, pgu.pw_gid)
                conf.chmod(0o600)
                brest = backup.PgBackRest(str(conf), backup.local_runner())
                brest.stanza_create()
                with psycopg.connect(pg.dsn(dbname="postgres"), autocommit=True) as conn:
                    conn.execute("CREATE DATABASE billing")
                rows = args.mb * 1024 * 1024 // 330
                t = time.monotonic()
                with psycopg.connect(pg.dsn(), autocommit=True) as conn:
                    conn.execute("CREATE TABLE invoices (id bigint PRIMARY KEY, customer text, note text)")
                    step = 200_000
                    for lo in range(1, rows + 1, step):
                        conn.execute(
                            INSERT, (lo, min(rows, lo + step - 1)),
                        )  # fmt: skip
                    size = conn.execute("SELECT pg_database_size('billing')").fetchone()
                load = time.monotonic() - t
                db_mb = (size[0] if size else 0) / 2**20
                t = time.monotonic()
                info = brest.backup("full")
                full = time.monotonic() - t
                repo_mb = info["info"]["repository"]["delta"] / 2**20
                with psycopg.connect(pg.dsn(), autocommit=True) as conn:
                    conn.execute("UPDATE invoices SET note = 'changed' WHERE id % 100 = 0")
                t = time.monotonic()
                brest.backup("incr")
                incr = time.monotonic() - t
                procs: list[subprocess.Popen[bytes]] = []

                def start(data: Path) -> int:
                    os.chown(data, pgu.pw_uid, pgu.pw_gid)
                    p = backup.free_port()
                    cmd = [str(PG_BIN / "postgres"), "-D", str(data), "-c", f"port={p}",
                           "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={pg.root}",
                           "-c", "archive_mode=off", "-c", "ssl=on", "-c", f"ssl_cert_file={pg.root / 'server.crt'}",
                           "-c", f"ssl_key_file={pg.root / 'server.key'}"]  # fmt: skip
                    procs.append(subprocess.Popen(cmd, user=pgu.pw_uid, group=pgu.pw_gid, stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.DEVNULL, start_new_session=True))  # fmt: skip
                    dsn = Postgres("127.0.0.1", p, pg.password, pg.ca_file).dsn()
                    while True:
                        try:
                            with psycopg.connect(dsn) as c:
                                if not c.execute("SELECT pg_is_in_recovery()").fetchone()[0]:  # type: ignore[index]
                                    return p
                        except psycopg.OperationalError:
                            time.sleep(0.5)

                def stop(_: int) -> None:
                    for p in procs:
                        p.send_signal(signal.SIGINT)
                        p.wait(60)

                ev = backup.restore_test(
                    brest, pg.dsn(), pg.root / "scratch", start,
                    lambda p: Postgres("127.0.0.1", p, pg.password, pg.ca_file).dsn(), stop, base / "evidence",
                )  # fmt: skip
            print(f"database: {db_mb:.0f} MB ({rows} rows), loaded in {load:.0f} s (WAL archived as it went)")
            print(f"full backup: {full:.1f} s; repository delta {repo_mb:.0f} MB (zst + aes-256-cbc)")
            print(f"incremental backup after touching 1% of rows: {incr:.1f} s")
            print(f"restore test ({ev.result}): {ev.duration_s:.1f} s for restore + recovery to a restore point + "
                  f"start + count/checksum of every table ({ev.detail})")  # fmt: skip
        finally:
            shutil.rmtree(br, ignore_errors=True)


if __name__ == "__main__":
    main()
