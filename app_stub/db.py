"""The thin data layer: connection pools, database roles and the SQL migrator.

Migrations are plain numbered ``.sql`` files in ``app_stub/migrations``, applied in order,
each in one transaction, recorded in ``public.schema_migrations``. Every query of the app
uses bound parameters.
"""

from __future__ import annotations

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


def make_pool(dsn: str, name: str, max_size: int = 8) -> ConnectionPool[Any]:
    pool: ConnectionPool[Any] = ConnectionPool(
        dsn, min_size=1, max_size=max_size, name=name, open=False, kwargs={"autocommit": False}
    )
    pool.open(wait=True, timeout=15)
    return pool
