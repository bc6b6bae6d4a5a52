"""The audit log: append-only, hash-chained, signed heads, verified by `billkit audit-log verify`."""

import base64
import datetime as dt
import time

import psycopg
import pytest
from apphelpers import CUSTOMER, Env, Services, build_env, close_env
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app_stub import audit, db
from app_stub import vault_setup as vs
from billkit.cli import app as cli


def auditor_vault(env: Env) -> dict[str, str | None]:
    """What the verifier needs to fetch the heads' public key: Vault's address and an auditor's token."""
    root = env.services.bao.client()
    token = root.auth.token.create(policies=[vs.POLICY_AUDITOR], ttl="10m")["auth"]["client_token"]
    return {
        "BILLKIT_APP_VAULT_URL": env.services.bao.url,
        "BILLKIT_APP_VAULT_CA_FILE": str(env.services.bao.ca_file),
        "VAULT_TOKEN": token,
    }


def verify_cli(env: Env, *extra: str, vault: bool = True) -> tuple[int, str]:
    dsn = env.services.pg.dsn(env.dbname, db.APP_ROLE, env.services.app_pw)
    environ = auditor_vault(env) if vault else {"BILLKIT_APP_VAULT_URL": None, "VAULT_TOKEN": None}
    r = CliRunner().invoke(cli, ["audit-log", "verify", "--dsn", dsn, *extra], env=environ)
    return r.exit_code, r.output


def public_keys(env: Env) -> dict:
    return audit.public_keys(env.services.bao.client(), env.settings.transit_mount)


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
        result = audit.verify(conn, public_keys(env), expected_head=head)
    assert not result.ok and any("head differs" in p for p in result.problems)


@pytest.mark.control("LOG-08", "LOG-07")
def test_events_go_to_stdout_as_json_with_their_hash(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    env.staff("clerk", "billing_clerk")
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    lines = [e for e in lines if e.get("type") == "audit"]
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


def _customers(env: Env, n: int = 3) -> None:
    clerk = env.staff("clerk", "billing_clerk")
    for i in range(n):
        clerk.post("/api/customers", json={**CUSTOMER, "email": f"x{i}@example.org"}).raise_for_status()


def _last_seq(env: Env) -> int:
    with env.owner() as conn:
        return conn.execute("SELECT coalesce(max(seq), 0) FROM audit.events").fetchone()[0]


@pytest.mark.control("LOG-08")
def test_removing_the_last_records_is_detected_without_a_given_head(env: Env) -> None:
    _customers(env)
    head = env.svc.ctx.heads.write()  # what the app does every audit_head_interval and every audit_head_every records
    assert head is not None and head.seq == _last_seq(env) >= 7
    code, out = verify_cli(env)
    assert code == 0 and "intact" in out and f"signed head at record {head.seq}" in out, out
    # an attacker with the owner's rights switches the trigger off and removes the last two records
    with env.owner() as conn:
        conn.execute("ALTER TABLE audit.events DISABLE TRIGGER USER")
        conn.execute("DELETE FROM audit.events WHERE seq > %s", (head.seq - 2,))
        conn.execute("ALTER TABLE audit.events ENABLE TRIGGER USER")
    code, out = verify_cli(env)  # no --head: the signed head is the anchor
    assert code == 1 and f"covers record {head.seq}" in out and "truncated" in out, out
    # the app notices too: it refuses to sign a chain that lost what it signed before
    assert env.svc.ctx.heads.write() is None
    # removing the heads that cover the tail as well leaves older heads only: they go stale
    with env.owner() as conn:
        conn.execute("ALTER TABLE audit.heads DISABLE TRIGGER USER")
        conn.execute("DELETE FROM audit.heads WHERE seq > %s", (head.seq - 2,))
        later = env.clock() + 3 * env.settings.audit_head_interval + dt.timedelta(seconds=1)
        result = audit.verify(conn, public_keys(env), now=later)
    assert not result.ok and any("signed head" in p for p in result.problems), result.problems
    assert not any("covers record" in p for p in result.problems)


@pytest.mark.control("LOG-08")
def test_a_forged_or_stale_signed_head_is_reported(env: Env) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    _customers(env, 1)
    head = env.svc.ctx.heads.write()
    assert head is not None
    assert verify_cli(env)[0] == 0  # untouched: intact
    # a head signed with the attacker's own key, claiming to be fresh
    at = env.clock() + dt.timedelta(days=1)
    forged = Ed25519PrivateKey.generate().sign(audit.head_message(head.seq, head.hash, at))
    with env.owner() as conn:
        conn.execute(
            "INSERT INTO audit.heads (seq, hash, at, signature) VALUES (%s, %s, %s, %s)",
            (head.seq, head.hash, at, "vault:v1:" + base64.b64encode(forged).decode()),
        )
    code, out = verify_cli(env)
    assert code == 1 and "signature does not verify" in out, out
    # the heads' age is bounded: once the newest genuine head is older than allowed, the log is reported
    with env.owner() as conn:
        conn.execute("ALTER TABLE audit.heads DISABLE TRIGGER USER")
        conn.execute("DELETE FROM audit.heads WHERE at > %s", (env.clock() + dt.timedelta(hours=1),))
        assert audit.verify(conn, public_keys(env), now=env.clock()).ok
        later = env.clock() + 3 * env.settings.audit_head_interval + dt.timedelta(seconds=1)
        result = audit.verify(conn, public_keys(env), now=later)
    assert not result.ok and any("older than" in p for p in result.problems), result.problems
    # without the key service the heads cannot be checked: that is said, never passed over
    code, out = verify_cli(env, vault=False)
    assert code == 2 and "VAULT_TOKEN" in out, out


@pytest.mark.control("LOG-08")
def test_the_app_signs_heads_every_nth_record_and_at_shutdown(services: Services) -> None:
    e = build_env(services, audit_head_every=4)
    try:
        e.staff("clerk", "billing_clerk")  # at least four records
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with e.owner() as conn:
                signed = conn.execute("SELECT max(seq) FROM audit.heads").fetchone()[0]
            if signed is not None and signed >= 4:
                break
            time.sleep(0.1)
        assert signed is not None and signed >= 4
        with TestClient(e.app):
            pass  # the app's lifespan ends: a last head is signed
        with e.owner() as conn:
            assert conn.execute("SELECT max(seq) FROM audit.heads").fetchone()[0] == _last_seq(e)
            assert audit.verify(conn, public_keys(e)).ok
    finally:
        close_env(e)
