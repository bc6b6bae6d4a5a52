"""The app logs in to PostgreSQL only with short-lived credentials from Vault's database engine (RBAC-05),
and starts from response-wrapped AppRole secret IDs that are worthless once it has started."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterator
from typing import Any

import hvac.exceptions
import psycopg
import pytest
from apphelpers import VISA, Env, FakeClock, Services, close_env, issued_invoice, make_settings, new_database
from psycopg import sql

from app_stub import db
from app_stub import vault_setup as vs
from app_stub.core.config import SettingsError
from app_stub.gateway import FakeGateway
from app_stub.main import create_app
from billkit.vault.configure import REVOCATION, creation_statements

CONNECTION = "billing-test"


@pytest.fixture(scope="module")
def engine(services: Services) -> Services:
    """Vault's database engine on the test PostgreSQL: an admin with CREATEROLE, two roles granting the groups."""
    client = services.bao.client()
    admin_pw = secrets.token_urlsafe(18)
    with psycopg.connect(services.pg.dsn(), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'vault_admin'").fetchone():
            conn.execute(sql.SQL("CREATE ROLE vault_admin LOGIN CREATEROLE PASSWORD {}").format(sql.Literal(admin_pw)))
        else:
            conn.execute(sql.SQL("ALTER ROLE vault_admin PASSWORD {}").format(sql.Literal(admin_pw)))
        # revocation ends the login's sessions before dropping it: pg_terminate_backend needs this
        conn.execute("GRANT pg_signal_backend TO vault_admin")
    if f"{vs.DATABASE_MOUNT}/" not in client.sys.list_mounted_secrets_engines()["data"]:
        client.sys.enable_secrets_engine("database", path=vs.DATABASE_MOUNT)
    pg = services.pg
    client.adapter.post(f"/v1/{vs.DATABASE_MOUNT}/config/{CONNECTION}", json={
        "plugin_name": "postgresql-database-plugin", "username": "vault_admin", "password": admin_pw,
        "connection_url": f"postgresql://{{{{username}}}}:{{{{password}}}}@{pg.host}:{pg.port}/postgres"
                          f"?sslmode=verify-full&sslrootcert={pg.ca_file}",
        "allowed_roles": [vs.DB_ROLE_APP, vs.DB_ROLE_TOKENIZER], "password_authentication": "scram-sha-256",
    })  # fmt: skip
    for role, group in ((vs.DB_ROLE_APP, db.APP_ROLE), (vs.DB_ROLE_TOKENIZER, db.TOKENIZER_ROLE)):
        client.adapter.post(f"/v1/{vs.DATABASE_MOUNT}/roles/{role}", json={
            "db_name": CONNECTION, "creation_statements": creation_statements(group),
            "revocation_statements": REVOCATION, "default_ttl": "1h", "max_ttl": "2h",
        })  # fmt: skip
    return services


def _no_login(services: Services, dbname: str) -> str:
    pg = services.pg
    return f"host={pg.host} port={pg.port} dbname={dbname} sslmode=verify-full sslrootcert={pg.ca_file}"


def _wrapped(services: Services, role: str) -> str:
    resp = services.bao.client().adapter.post(
        f"/v1/auth/{vs.APPROLE_MOUNT}/role/{role}/secret-id", json={}, headers={"X-Vault-Wrap-TTL": "120s"}
    )
    return resp["wrap_info"]["token"]


@pytest.fixture
def dyn(engine: Services) -> Iterator[Env]:
    """The app with dynamic database logins and wrapped secret IDs, on a fresh database."""
    dbname = new_database(engine)
    clock = FakeClock()
    settings = dataclasses.replace(
        make_settings(engine, dbname, clock),
        database_url=_no_login(engine, dbname),
        tokenizer_database_url=_no_login(engine, dbname),
        database_vault_role=vs.DB_ROLE_APP,
        tokenizer_vault_role=vs.DB_ROLE_TOKENIZER,
        vault_secret_id=_wrapped(engine, vs.POLICY_APP),
        vault_processor_secret_id=_wrapped(engine, vs.POLICY_PROCESSOR),
        vault_secret_ids_wrapped=True,
    )
    gateway = FakeGateway()
    app = create_app(settings, gateway=gateway)
    env = Env(engine, dbname, clock, settings, app, app.state.services, gateway)
    yield env
    close_env(env)


def _app_logins(env: Env) -> set[str]:
    with env.owner() as conn:
        rows = conn.execute(
            "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = %s AND usename <> %s",
            (env.dbname, env.services.pg.superuser),
        ).fetchall()
    return {r[0] for r in rows}


@pytest.mark.control("RBAC-05")
def test_app_uses_only_short_lived_vault_logins(dyn: Env) -> None:
    clerk = dyn.staff("clerk", "billing_clerk")
    iid = issued_invoice(clerk)
    r = clerk.post(
        f"/api/invoices/{iid}/payments",
        json={"card": {"number": VISA, "exp_month": 1, "exp_year": 2031}},
        headers={"Idempotency-Key": "pay-dynamic-1xxxxx"},
    )
    assert r.status_code == 200, r.text
    logins = _app_logins(dyn)
    assert logins, "the app holds no connection"
    assert not logins & {db.APP_ROLE, db.TOKENIZER_ROLE}, f"a static login is used: {logins}"
    assert all(u.startswith("v-") for u in logins), logins  # Vault's generated user names
    with dyn.owner() as conn:
        expiry = conn.execute(
            "SELECT rolname, rolvaliduntil FROM pg_roles WHERE rolname = ANY(%s)", (list(logins),)
        ).fetchall()
        groups = {
            r[0]
            for r in conn.execute(
                "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
                "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = ANY(%s)",
                (list(logins),),
            )
        }
    assert all(valid is not None for _, valid in expiry), "a dynamic login without an expiry"
    assert groups == {db.APP_ROLE, db.TOKENIZER_ROLE}, groups


@pytest.mark.control("RBAC-05")
def test_a_revoked_login_is_replaced_without_failing_requests(dyn: Env) -> None:
    clerk = dyn.staff("clerk", "billing_clerk")
    before = _app_logins(dyn)
    # an operator revokes every app login early (Vault drops the roles and ends their sessions)
    dyn.services.bao.client().adapter.put(f"/v1/sys/leases/revoke-prefix/{vs.DATABASE_MOUNT}/creds/{vs.DB_ROLE_APP}")
    for _ in range(3):
        assert clerk.get("/api/customers").status_code == 200
    after = _app_logins(dyn)
    assert after and not (before & after - _tokenizer_logins(dyn)), (before, after)


def _tokenizer_logins(env: Env) -> set[str]:
    with env.owner() as conn:
        rows = conn.execute(
            "SELECT u.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "JOIN pg_roles u ON u.oid = m.member WHERE g.rolname = %s",
            (db.TOKENIZER_ROLE,),
        ).fetchall()
    return {r[0] for r in rows}


@pytest.mark.control("RBAC-05")
def test_credentials_are_renewed_at_half_their_lease(engine: Services) -> None:
    now = [0.0]

    def login() -> Any:
        return engine.bao.client()

    creds = db.VaultCredentials(login, vs.DB_ROLE_APP, clock=lambda: now[0])
    first = creds()
    assert creds() == first and creds.issued == 1
    now[0] = creds.lease_seconds / 2 - 1
    assert creds() == first
    now[0] = creds.lease_seconds / 2
    second = creds()
    assert second["user"] != first["user"] and creds.issued == 2


@pytest.mark.control("RBAC-05", "CMP-03")
def test_wrapped_secret_id_works_once(dyn: Env) -> None:
    used = dyn.settings.vault_secret_id  # unwrapped by the app at start: a second unwrap must fail
    with pytest.raises(hvac.exceptions.VaultError):
        dyn.services.bao.client(token=used).adapter.post("/v1/sys/wrapping/unwrap")
    with pytest.raises(SettingsError, match="cannot unwrap"):
        create_app(dyn.settings)


@pytest.mark.control("RBAC-05", "CMP-03")
def test_production_refuses_static_database_logins(services: Services) -> None:
    settings = dataclasses.replace(
        make_settings(services, "billing", FakeClock()), environment="production", secure_cookies=True
    )
    with pytest.raises(SettingsError, match="dynamic credentials"):
        settings.validate()
