"""A database restart (a patch rollout restarts PostgreSQL) makes requests wait, never fail or half-write.

The restart is real as far as the app can tell: every connection of the app's pool is terminated by
the server ("terminating connection due to administrator command"), as PostgreSQL's fast shutdown does.
"""

from __future__ import annotations

import pytest
from apphelpers import CUSTOMER, Env, StaffClient

from app_stub import db


def _terminate_app_connections(env: Env) -> int:
    with env.owner() as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND usename = %s"
            " AND pid <> pg_backend_pid()",
            (env.dbname, db.APP_ROLE),
        ).fetchall()
    return len(rows)


def _customers(env: Env) -> int:
    with env.owner() as conn:
        return conn.execute("SELECT count(*) FROM billing.customers").fetchone()[0]  # type: ignore[index]


@pytest.mark.control("PAT-04")
def test_reads_wait_out_a_database_restart(env: Env, clerk: StaffClient) -> None:
    clerk.post("/api/customers", json=CUSTOMER).raise_for_status()
    for _ in range(3):  # the pool now holds idle connections, all about to be cut
        clerk.get("/api/customers").raise_for_status()
    assert _terminate_app_connections(env) >= 1
    for path in ("/api/customers", "/healthz", "/invoices"):
        r = clerk.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text[:200])


@pytest.mark.control("PAT-04")
def test_a_write_cut_by_a_restart_changes_nothing_and_says_to_retry(env: Env, clerk: StaffClient) -> None:
    clerk.get("/api/customers").raise_for_status()
    before = _customers(env)
    assert _terminate_app_connections(env) >= 1
    r = clerk.post("/api/customers", json=CUSTOMER)
    assert r.status_code == 503 and r.headers["retry-after"] and "nothing was changed" in r.json()["detail"]
    assert _customers(env) == before  # never half-written
    clerk.post("/api/customers", json=CUSTOMER).raise_for_status()  # the retry a client makes works
    assert _customers(env) == before + 1
