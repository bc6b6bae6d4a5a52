"""A throwaway PostgreSQL 15 on loopback whose TLS certificate comes from the Vault PKI.

``billkit.localsvc.postgres`` with a PKI-issued certificate, so the database secrets engine is
tested against a real server with verify-full TLS; WAL archiving options come through ``extra``.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac
import psycopg
import pyotp
from psycopg import sql

from billkit import localsvc
from billkit.vault import configure
from billkit.vault.bootstrap import Cluster
from billkit.vault.deploy import Result, StateLayout
from billkit.vault.local import LocalCluster
from billkit.vault.pki import RootCA

PG_BIN = localsvc.PG_BIN


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
    """billkit.localsvc's PostgreSQL with a PKI certificate, peer for the superuser and durable settings."""
    if host != localsvc.LOOPBACK:
        raise ValueError(f"the throwaway PostgreSQL listens on {localsvc.LOOPBACK} only, not {host}")
    settings = {"synchronous_commit": "on", "full_page_writes": "on", "shared_buffers": "32MB",
                "max_connections": "40", **(extra or {})}  # fmt: skip
    tls = localsvc.ServerTLS(cert_chain, key, ca_file)
    with localsvc.postgres(fast=True, tls=tls, settings=settings, peer_superuser=True) as server:
        yield Postgres(server.host, server.port, server.password, server.ca_file, server.root)


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
    patching_token: str  # what `billkit patch` carries (billkit.patching.rollout.step_down_token)
    operator_token: str = ""  # from a password + TOTP login, done once per session
    operator_code_used: str = ""

    def client(self, token: str | None = None) -> hvac.Client:
        return self.cluster.active_client(token)
