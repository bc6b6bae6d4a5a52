"""The thin data layer: connection pools, database roles and the SQL migrator.

Migrations are plain numbered ``.sql`` files in ``app_stub/migrations``, applied in order,
each in one transaction, recorded in ``public.schema_migrations``. Every query of the app
uses bound parameters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

MIGRATIONS = Path(__file__).parent / "migrations"
APP_ROLE = "billing_app"
TOKENIZER_ROLE = "billing_tokenizer"
_LOCK = 7_341_001


def ensure_roles(admin_dsn: str, app_password: str, tokenizer_password: str) -> None:
    """Create (or re-password) the app's two login roles. Needs a role with CREATEROLE."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for role, pw in ((APP_ROLE, app_password), (TOKENIZER_ROLE, tokenizer_password)):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                    sql.SQL(verb), sql.Identifier(role), sql.Literal(pw)
                )
            )


def migrate(owner_dsn: str) -> list[str]:
    """Apply the migrations not applied yet (idempotent, safe to run concurrently); return their names."""
    applied: list[str] = []
    with psycopg.connect(owner_dsn) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS public.schema_migrations (name text PRIMARY KEY, applied_at timestamptz "
            "NOT NULL DEFAULT now())"
        )
        done = {r[0] for r in conn.execute("SELECT name FROM public.schema_migrations")}
        for path in sorted(MIGRATIONS.glob("*.sql")):
            if path.name in done:
                continue
            conn.execute(path.read_text(encoding="utf-8"))  # type: ignore[arg-type]  # trusted, shipped SQL
            conn.execute("INSERT INTO public.schema_migrations (name) VALUES (%s)", (path.name,))
            applied.append(path.name)
        conn.commit()
    return applied


class VaultCredentials:
    """Short-lived PostgreSQL credentials from Vault's database secrets engine (RBAC-05).

    ``client_factory`` returns a freshly logged-in hvac client (the app's AppRole). A new pair is
    read when half of the current lease has passed, each time under a new login: a lease dies with
    the token that created it, so no credential outlives ``lease / 2`` of use plus the pool's
    connection lifetime (a quarter lease), well before Vault revokes it and drops the role.
    """

    def __init__(self, client_factory: Callable[[], Any], role: str, mount: str = "database",
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._factory, self.role, self.mount, self._clock = client_factory, role, mount, clock
        self._lock = threading.Lock()
        self._pair: dict[str, str] = {}
        self._issued = 0.0
        self.lease_seconds = 0
        self.issued = 0  # how many pairs were read (for tests)

    def __call__(self) -> dict[str, str]:
        with self._lock:
            if not self._pair or self._clock() - self._issued >= self.lease_seconds / 2:
                client = self._factory()
                resp = client.adapter.get(f"/v1/{self.mount}/creds/{self.role}")
                data = resp["data"]
                self._pair = {"user": data["username"], "password": data["password"]}
                self.lease_seconds = int(resp["lease_duration"])
                self._issued = self._clock()
                self.issued += 1
            return dict(self._pair)

    def invalidate(self) -> None:
        """Forget the current pair (Vault revoked it early): the next call reads a new one."""
        with self._lock:
            self._pair = {}


def _vault_connection_class(creds: VaultCredentials) -> type[psycopg.Connection[Any]]:
    class VaultConnection(psycopg.Connection[Any]):
        """Logs in once more with a fresh pair when the current one was revoked before its time."""

        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:  # type: ignore[override]
            try:
                return super().connect(conninfo, **kwargs)
            except psycopg.OperationalError as exc:
                if "authentication failed" not in str(exc):
                    raise
                creds.invalidate()
                return super().connect(conninfo, **{**kwargs, **creds()})

    return VaultConnection


def make_pool(
    dsn: str, name: str, max_size: int = 8, credentials: VaultCredentials | None = None
) -> ConnectionPool[Any]:
    """A pool on ``dsn``; with ``credentials``, each new connection logs in with the current dynamic pair."""
    if credentials is None:
        pool: ConnectionPool[Any] = ConnectionPool(
            dsn, min_size=1, max_size=max_size, name=name, open=False, kwargs={"autocommit": False}
        )
    else:
        creds = credentials

        def kwargs() -> dict[str, Any]:
            return {"autocommit": False, **creds()}

        creds()  # fail early (and learn the lease) if Vault refuses
        pool = ConnectionPool(
            dsn, min_size=1, max_size=max_size, name=name, open=False, kwargs=kwargs,
            max_lifetime=max(60.0, creds.lease_seconds / 4), check=ConnectionPool.check_connection,
            connection_class=_vault_connection_class(creds),
        )  # fmt: skip
    pool.open(wait=True, timeout=15)
    return pool
