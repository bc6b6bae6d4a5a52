"""Helpers and fixtures of the app tests: one real PostgreSQL and one real OpenBao per session (loopback, TLS),
a fresh database per test (CREATE DATABASE from a migrated template), the app from its factory."""

from __future__ import annotations

import datetime as dt
import itertools
import secrets
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import psycopg
import pyotp
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from app_stub import db
from app_stub import vault_setup as vs
from app_stub.core.config import Settings
from app_stub.gateway import FakeGateway
from app_stub.main import create_app
from app_stub.services import Services as AppServices
from billkit.localsvc import BaoServer, PostgresServer, openbao, postgres

TEMPLATE = "billkit_app_template"
PASSWORD = "Correct-horse-42-battery"  # noqa: S105 - test account password
_counter = itertools.count(1)


@dataclass
class Services:
    pg: PostgresServer
    bao: BaoServer
    app_pw: str
    tok_pw: str
    roles: dict[str, vs.AppRoleIds]  # transit mount -> AppRole ids

    def owner_dsn(self, dbname: str) -> str:
        return self.pg.dsn(dbname)


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    with ExitStack() as stack:
        pg = stack.enter_context(postgres())
        bao = stack.enter_context(openbao())
        client = bao.client()
        roles = {vs.TRANSIT_MOUNT: vs.ensure_vault(client)}
        app_pw, tok_pw = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
        db.ensure_roles(pg.dsn(), app_pw, tok_pw)
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
        db.migrate(pg.dsn(TEMPLATE))
        yield Services(pg, bao, app_pw, tok_pw, roles)


class FakeClock:
    """The app's clock in tests: real time, moved forward on demand (lockout, idle timeout, TOTP steps)."""

    def __init__(self) -> None:
        self.t = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.t

    def advance(self, **kw: float) -> None:
        self.t += dt.timedelta(**kw)


def new_database(services: Services) -> str:
    name = f"t_app_{next(_counter)}_{secrets.token_hex(3)}"
    with psycopg.connect(services.pg.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(TEMPLATE)))
    return name


def drop_database(services: Services, name: str) -> None:
    with psycopg.connect(services.pg.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def make_settings(
    services: Services, dbname: str, clock: FakeClock, mount: str = vs.TRANSIT_MOUNT, suffix: str = "", **over: Any
) -> Settings:
    client = services.bao.client()
    ids = services.roles[mount]
    values: dict[str, Any] = {
        "environment": "test",
        "session_secret": secrets.token_urlsafe(48),
        "database_url": services.pg.dsn(dbname, db.APP_ROLE, services.app_pw),
        "tokenizer_database_url": services.pg.dsn(dbname, db.TOKENIZER_ROLE, services.tok_pw),
        "vault_url": services.bao.url,
        "vault_ca_file": str(services.bao.ca_file),
        "vault_role_id": ids.app_role_id,
        "vault_secret_id": vs.new_secret_id(client, vs.POLICY_APP, suffix),
        "vault_processor_role_id": ids.processor_role_id,
        "vault_processor_secret_id": vs.new_secret_id(client, vs.POLICY_PROCESSOR, suffix),
        "transit_mount": mount,
        "db_pool_size": 4,
        # OWASP's argon2id minimum: cheaper than the production profile, same algorithm
        "argon2_time_cost": 2,
        "argon2_memory_kib": 19456,
        "argon2_lanes": 1,
        "clock": clock,
    }
    values.update(over)
    return Settings(**values)


@dataclass
class Env:
    """One app on its own fresh database."""

    services: Services
    dbname: str
    clock: FakeClock
    settings: Settings
    app: Any
    svc: AppServices
    gateway: FakeGateway

    def owner(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.services.owner_dsn(self.dbname), autocommit=True)

    def client(self) -> TestClient:
        return TestClient(self.app, base_url="https://testserver")

    def staff(self, username: str, *roles: str, train: bool = True) -> StaffClient:
        """A staff account with ``roles`` (granted at bootstrap), logged in with TOTP enrolled."""
        uid = self.svc.staff.create_user(username, PASSWORD, must_change=False)
        with self.owner() as conn:
            for r in roles:
                conn.execute(
                    "INSERT INTO staff.user_roles (user_id, role, granted_at) VALUES (%s, %s, now())", (uid, r)
                )
        sc = StaffClient(self, self.client(), uid, username)
        sc.login_and_enrol()
        if train:
            sc.post("/api/training/acknowledge").raise_for_status()
        return sc


class StaffClient:
    def __init__(self, env: Env, client: TestClient, uid: int, username: str) -> None:
        self.env, self.http, self.uid, self.username = env, client, uid, username
        self.csrf = ""
        self.secret = ""
        self.recovery: list[str] = []

    def code(self) -> str:
        """A TOTP code of a fresh time step (the app refuses a step twice)."""
        self.env.clock.advance(seconds=30)
        return pyotp.TOTP(self.secret).at(self.env.clock())

    def login_and_enrol(self) -> None:
        r = self.http.post("/api/login", json={"username": self.username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        self.csrf = r.json()["csrf_token"]
        assert r.json()["stage"] == "enrol"
        r = self.post("/api/mfa/enrol")
        assert r.status_code == 200, r.text
        uri = r.json()["otpauth_uri"]
        self.secret = urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)["secret"][0]
        r = self.post("/api/mfa/enrol/confirm", json={"code": self.code()})
        assert r.status_code == 200, r.text
        self.csrf = r.json()["csrf_token"]
        self.recovery = r.json()["recovery_codes"]

    def login(self, password: str = PASSWORD) -> Any:
        r = self.http.post("/api/login", json={"username": self.username, "password": password})
        if r.status_code == 200:
            self.csrf = r.json()["csrf_token"]
        return r

    def mfa(self, code: str) -> Any:
        r = self.post("/api/login/mfa", json={"code": code})
        if r.status_code == 200:
            self.csrf = r.json()["csrf_token"]
        return r

    def get(self, url: str, **kw: Any) -> Any:
        return self.http.get(url, **kw)

    def post(self, url: str, **kw: Any) -> Any:
        headers = {"X-CSRF-Token": self.csrf, **kw.pop("headers", {})}
        return self.http.post(url, headers=headers, **kw)

    def delete(self, url: str, **kw: Any) -> Any:
        headers = {"X-CSRF-Token": self.csrf, **kw.pop("headers", {})}
        return self.http.delete(url, headers=headers, **kw)


def build_env(services: Services, mount: str = vs.TRANSIT_MOUNT, suffix: str = "", **over: Any) -> Env:
    dbname = new_database(services)
    clock = FakeClock()
    settings = make_settings(services, dbname, clock, mount, suffix, **over)
    gateway = FakeGateway()
    app = create_app(settings, gateway=gateway)
    return Env(services, dbname, clock, settings, app, app.state.services, gateway)


def close_env(env: Env) -> None:
    env.svc.close()
    drop_database(env.services, env.dbname)


@pytest.fixture
def env(services: Services) -> Iterator[Env]:
    e = build_env(services)
    yield e
    close_env(e)


@pytest.fixture
def clerk(env: Env) -> StaffClient:
    return env.staff("clerk", "billing_clerk")


CUSTOMER = {
    "name": "Ada Lovelace",
    "email": "ada@example.org",
    "address": "12 Analytical Row, London",
    "tax_id": "GB123456789",
}
VISA = "4242424242424242"


def issued_invoice(c: StaffClient, total: int = 1000) -> int:
    cid = c.post("/api/customers", json=CUSTOMER).json()["id"]
    iid = c.post(
        "/api/invoices",
        json={
            "customer_id": cid,
            "currency": "EUR",
            "lines": [{"description": "Service", "quantity": 1, "unit_price_minor": total, "tax_rate_bp": 0}],
        },
    ).json()["id"]
    c.post(f"/api/invoices/{iid}/issue").raise_for_status()
    return iid
