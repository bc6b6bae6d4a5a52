"""The audit log: append-only, hash-chained, verified by `billkit audit-log verify`."""

import psycopg
import pytest
from apphelpers import CUSTOMER, Env
from typer.testing import CliRunner

from app_stub import audit, db
from billkit.cli import app as cli


def verify_cli(env: Env, *extra: str) -> tuple[int, str]:
    dsn = env.services.pg.dsn(env.dbname, db.APP_ROLE, env.services.app_pw)
    r = CliRunner().invoke(cli, ["audit-log", "verify", "--dsn", dsn, *extra])
    return r.exit_code, r.output


@pytest.mark.control("LOG-08")
def test_audit_log_is_append_only_and_tampering_is_detected(env: Env) -> None:
    clerk = env.staff("clerk", "billing_clerk")
    for i in range(3):
        clerk.post("/api/customers", json={**CUSTOMER, "email": f"x{i}@example.org"}).raise_for_status()
    code, out = verify_cli(env)
    assert code == 0 and "intact" in out
    with env.owner() as conn:
        n, head = conn.execute(
            "SELECT count(*), max(hash) FILTER (WHERE seq = (SELECT max(seq) FROM audit.events)) FROM audit.events"
        ).fetchone()
    assert n >= 7
    assert verify_cli(env, "--head", head)[0] == 0
    s = env.services
    # the app's role can neither change nor delete records
    with psycopg.connect(s.pg.dsn(env.dbname, db.APP_ROLE, s.app_pw), autocommit=True) as conn:
        for stmt in (
            "UPDATE audit.events SET actor = 'x' WHERE seq = 2",
            "DELETE FROM audit.events WHERE seq = 2",
            "TRUNCATE audit.events",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt)
    # even the owner is stopped by the trigger
    with env.owner() as conn, pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        conn.execute("UPDATE audit.events SET actor = 'x' WHERE seq = 2")
    # a superuser bypassing the trigger: an altered record is detected...
    with env.owner() as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE audit.events SET outcome = 'ok', actor = 'user:999' WHERE seq = 3")
    code, out = verify_cli(env)
    assert code == 1 and "record 3: content does not match" in out
    with env.owner() as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE audit.events SET actor = 'user:1' WHERE seq = 3")
        conn.execute("DELETE FROM audit.events WHERE seq = 5")
    code, out = verify_cli(env)
    assert code == 1 and "record 5..5 missing" in out
    # ...and so is a record removed from the end, given the head from the journal
    with env.owner() as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("DELETE FROM audit.events WHERE seq = (SELECT max(seq) FROM audit.events)")
    with env.owner() as conn:
        result = audit.verify(conn, expected_head=head)
    assert not result.ok and any("head differs" in p for p in result.problems)


@pytest.mark.control("LOG-08", "LOG-07")
def test_events_go_to_stdout_as_json_with_their_hash(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    env.staff("clerk", "billing_clerk")
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [e["action"] for e in lines][:3] == ["user.create", "auth.password", "auth.mfa_enrol"]
    with env.owner() as conn:
        hashes = [r[0] for r in conn.execute("SELECT hash FROM audit.events ORDER BY seq")]
    assert [e["hash"] for e in lines] == hashes


@pytest.mark.control("LOG-07", "RBAC-01")
def test_audit_log_page_for_auditors_only(env: Env) -> None:
    auditor = env.staff("auditor", "auditor")
    clerk = env.staff("clerk", "billing_clerk")
    page = auditor.get("/audit")
    assert page.status_code == 200 and "auth.mfa_enrol" in page.text and "user:" in page.text
    refused = clerk.get("/audit")
    assert refused.status_code == 403 and "permission denied: needs audit.read" in refused.text
    assert "<h1>Not allowed</h1>" in refused.text and "HTTP status 403" in refused.text
