"""A throwaway PostgreSQL 15 on loopback whose TLS certificate comes from the Vault PKI.

Minimal on purpose (the app's local services provide a general one); it exists so the
database secrets engine is tested against a real server with verify-full TLS.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac
import psycopg
import pyotp
from psycopg import sql

from billkit.system import PrerequisiteError, ensure_packages
from billkit.vault import configure
from billkit.vault.bootstrap import Cluster
from billkit.vault.deploy import Result, StateLayout
from billkit.vault.local import LocalCluster
from billkit.vault.pki import RootCA

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class Postgres:
    host: str
    port: int
    password: str  # the superuser's (postgres)
    ca_file: Path
    root: Path = Path()  # owned by postgres: data/, server.crt, server.key, the socket

    def dsn(self, user: str = "postgres", password: str | None = None, dbname: str = "billing") -> str:
        pw = self.password if password is None else password
        return (
            f"host={self.host} port={self.port} dbname={dbname} user={user} password={pw} "
            f"sslmode=verify-full sslrootcert={self.ca_file} connect_timeout=5"
        )


@contextlib.contextmanager
def postgres(
    cert_chain: str, key: str, ca_file: Path, host: str = "127.0.0.1", extra: dict[str, str] | None = None
) -> Iterator[Postgres]:
    ensure_packages(["postgresql-15"], "the throwaway PostgreSQL of the Vault tests")
    try:
        pg = pwd.getpwnam("postgres")
    except KeyError:
        raise PrerequisiteError("no 'postgres' system user: install the Debian package postgresql-15") from None
    root = Path(tempfile.mkdtemp(prefix="billkit-vault-pg-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        os.chown(root, pg.pw_uid, pg.pw_gid)
        password = secrets.token_urlsafe(24)
        files = {"server.crt": cert_chain, "server.key": key, "pw": password}
        for name, text in files.items():
            p = root / name
            p.write_text(text)
            os.chown(p, pg.pw_uid, pg.pw_gid)
            p.chmod(0o600)
        data = root / "data"
        init = subprocess.run(
            [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={root / 'pw'}",
             "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"],
            user=pg.pw_uid, group=pg.pw_gid, capture_output=True, text=True, check=False, cwd=root,
        )  # fmt: skip
        (root / "pw").unlink()
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{init.stderr[-2000:]}")
        (data / "pg_hba.conf").write_text(f"local all postgres peer\nhostssl all all {host}/32 scram-sha-256\n")
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        opts = {
            "listen_addresses": host, "port": str(port), "unix_socket_directories": str(root), "ssl": "on",
            "ssl_cert_file": str(root / "server.crt"), "ssl_key_file": str(root / "server.key"),
            "ssl_min_protocol_version": "TLSv1.2", "password_encryption": "scram-sha-256", "fsync": "off",
            "shared_buffers": "32MB", "max_connections": "40", **(extra or {}),
        }  # fmt: skip
        args = [str(PG_BIN / "postgres"), "-D", str(data)]
        for k, v in opts.items():
            args += ["-c", f"{k}={v}"]
        with (root / "postgres.log").open("wb") as log:
            proc = subprocess.Popen(
                args, user=pg.pw_uid, group=pg.pw_gid, stdout=log, stderr=subprocess.STDOUT, cwd=root,
                start_new_session=True,
            )  # fmt: skip
        server = Postgres(host, port, password, ca_file, root)
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(server.dsn(dbname="postgres")).close()
                break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((root / "postgres.log").read_text(errors="replace")[-3000:]) from None
                time.sleep(0.1)
        yield server
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(root, ignore_errors=True)


SCHEMA = """
CREATE ROLE billing_app NOLOGIN;
CREATE ROLE billing_auditor NOLOGIN;
CREATE ROLE vault_admin LOGIN CREATEROLE PASSWORD {pw};
GRANT billing_app, billing_auditor TO vault_admin WITH ADMIN OPTION;
GRANT pg_signal_backend TO vault_admin;
CREATE TABLE invoices (id serial PRIMARY KEY, customer text NOT NULL, amount_cents bigint NOT NULL);
GRANT SELECT, INSERT, UPDATE ON invoices TO billing_app;
GRANT USAGE ON SEQUENCE invoices_id_seq TO billing_app;
GRANT SELECT ON invoices TO billing_auditor;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
"""


def prepare_billing(server: Postgres) -> str:
    """Create the billing database, its group roles and Vault's admin role; return that role's password."""
    with psycopg.connect(server.dsn(dbname="postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE billing")
    pw = secrets.token_urlsafe(24)
    with psycopg.connect(server.dsn()) as conn:
        conn.execute(sql.SQL(SCHEMA).format(pw=sql.Literal(pw)))
    return pw


@dataclass
class Operator:
    username: str
    password: str
    totp: pyotp.TOTP


@dataclass
class VaultEnv:
    local: LocalCluster
    cluster: Cluster
    root: RootCA
    state: StateLayout
    settings: configure.Settings
    first: Result
    pg: Postgres
    app_token: str
    processor_token: str
    auditor_token: str
    drill_token: str
    operator: Operator
    app_role_id: str
    probe_role_id: str
    probe_wrapped_secret: str
    db_admin_initial_password: str
    service_cert_token: str
    rotator_token: str
    backup_token: str
    operator_token: str = ""  # from a password + TOTP login, done once per session
    operator_code_used: str = ""

    def client(self, token: str | None = None) -> hvac.Client:
        return self.cluster.active_client(token)
