"""Audit records: committed whatever the outcome, journaled only once committed, each with its origin."""

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from apphelpers import PASSWORD, Env, Services, build_env, close_env
from fastapi.testclient import TestClient

from app_stub import audit
from app_stub.services import AppError

EDGE = "10.77.10.11"  # the trusted proxy of these tests (the lab's edge-1)


def journal(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    return [e for e in lines if e.get("type") == "audit"]


def chain(env: Env) -> list[tuple]:
    with env.owner() as conn:
        return conn.execute("SELECT seq, action, target, outcome, hash FROM audit.events ORDER BY seq").fetchall()


@pytest.mark.control("LOG-07", "LOG-08")
def test_failed_login_of_an_unknown_user_is_committed_and_journal_seqs_are_never_reused(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    http = env.client()
    r = http.post("/api/login", json={"username": "nobody", "password": "Not-the-password-1"})
    assert r.status_code == 401 and r.json()["detail"] == "invalid username or password"
    env.svc.staff.create_user("someone", PASSWORD)  # the next record takes the next sequence number
    r = http.post("/api/login", json={"username": "someone", "password": "Wrong-password-123"})
    assert r.status_code == 401 and r.json()["detail"] == "invalid username or password"  # same answer
    rows = chain(env)
    assert [(a, t, o) for _, a, t, o, _ in rows] == [
        ("auth.login", "user:unknown", "failure"),
        ("user.create", "user:1", "ok"),
        ("auth.login", "user:1", "failure"),
    ]
    lines = journal(capsys)
    seqs = [e["seq"] for e in lines]
    assert len(seqs) == len(set(seqs)), f"a sequence number was journaled twice: {seqs}"
    # the journal holds exactly the committed records, with their hashes
    assert [(e["seq"], e["hash"]) for e in lines] == [(r[0], r[4]) for r in rows]


@pytest.mark.control("LOG-08")
def test_a_rolled_back_record_never_reaches_the_journal(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    with pytest.raises(RuntimeError, match="fails after"), env.svc.auth.tx() as conn:
        audit.append(conn, env.svc.auth.now(), "system", "test.rolled_back")
        raise RuntimeError("the change fails after its audit record")
    env.svc.staff.create_user("someone", PASSWORD)
    lines = journal(capsys)
    assert [e["action"] for e in lines] == ["user.create"] and lines[0]["seq"] == 1
    assert [r[1] for r in chain(env)] == ["user.create"]


@pytest.mark.control("LOG-07", "HRD-03")
def test_concurrent_refused_logins_are_all_recorded_without_exhausting_the_pool(env: Env) -> None:
    env.svc.staff.create_user("locked", PASSWORD)
    with env.owner() as conn:
        conn.execute("UPDATE staff.users SET locked_until = now() + interval '1 year' WHERE username = 'locked'")

    def attempt(i: int) -> str:
        try:
            env.svc.auth.login("locked" if i % 2 else f"nobody{i}", "Not-the-password-1")
        except AppError as exc:
            return str(exc.status)
        except Exception as exc:  # noqa: BLE001 - a pool timeout is what this test looks for
            return type(exc).__name__
        return "logged in"

    n = 8 * env.settings.db_pool_size
    with ThreadPoolExecutor(n) as pool:
        out = list(pool.map(attempt, range(n)))
    assert sorted(out) == ["401"] * (n // 2) + ["423"] * (n // 2)
    outcomes = [(r[2], r[3]) for r in chain(env) if r[1] == "auth.login"]
    assert outcomes.count(("user:unknown", "failure")) == n // 2
    assert outcomes.count(("user:1", "refused-locked")) == n // 2


@pytest.fixture
def edge_env(services: Services) -> Iterator[Env]:
    e = build_env(services, trusted_proxies=f"{EDGE}, 10.77.11.0/24")
    yield e
    close_env(e)


def _client(env: Env, peer: str) -> TestClient:
    return TestClient(env.app, base_url="https://testserver", client=(peer, 40000))


@pytest.mark.control("LOG-07", "LOG-08")
def test_records_carry_the_client_address_and_request_id_and_spoofing_fails(edge_env: Env) -> None:
    env = edge_env
    env.svc.staff.create_user("someone", PASSWORD)  # outside any request: the process's own origin
    bad = {"username": "someone", "password": "Wrong-password-123"}
    nginx_id = "0123456789abcdef0123456789abcdef"  # nginx's $request_id: 32 hex digits
    # a client reaching the app directly claims another address and request ID: both ignored
    direct = _client(env, "192.0.2.7").post(
        "/api/login", json=bad, headers={"X-Forwarded-For": "203.0.113.9", "X-Request-Id": nginx_id}
    )
    # through the edge: the WAF's header names the client (the right-most entry is the edge's own)
    edge = _client(env, EDGE).post(
        "/api/login", json=bad, headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.4", "X-Request-Id": nginx_id}
    )
    # a request ID that could forge journal fields, and a forwarded value that is no address
    injected = _client(env, "10.77.11.5").post(
        "/api/login", json=bad, headers={"X-Forwarded-For": 'evil"}, {', "X-Request-Id": 'x", "actor": "user:1'}
    )
    too_long = _client(env, EDGE).post("/api/login", json=bad, headers={"X-Request-Id": "a" * 200})
    assert {r.status_code for r in (direct, edge, injected, too_long)} == {401}
    with env.owner() as conn:
        origins = [r[0] for r in conn.execute("SELECT origin FROM audit.events ORDER BY seq")]
    assert origins[0] == {"ip": None, "request_id": None}
    assert origins[1]["ip"] == "192.0.2.7" and origins[1]["request_id"] != nginx_id
    assert origins[2] == {"ip": "198.51.100.4", "request_id": nginx_id}
    assert origins[3]["ip"] == "10.77.11.5"  # the proxy itself, not the unparsable value
    for o in (origins[1], origins[3], origins[4]):
        assert re.fullmatch(r"[0-9a-f]{32}", o["request_id"]), o  # the app's own ID replaces a refused one
    assert len({o["request_id"] for o in origins[1:]}) == 4
    # the origin is part of each hashed record: changing it breaks the chain
    keys = audit.public_keys(env.services.bao.client(), env.settings.transit_mount)
    with env.owner() as conn:
        assert audit.verify(conn, keys).ok
        conn.execute("ALTER TABLE audit.events DISABLE TRIGGER USER")
        conn.execute("""UPDATE audit.events SET origin = '{"ip": "192.0.2.1", "request_id": null}' WHERE seq = 3""")
        result = audit.verify(conn, keys)
    assert result.problems == ["record 3: content does not match its hash (altered)"]


@pytest.mark.control("LOG-07")
def test_the_trusted_proxy_setting_is_validated() -> None:
    from app_stub.core.config import Settings, SettingsError

    base = {"environment": "development", "database_url": "postgresql://a", "tokenizer_database_url": "postgresql://b"}
    Settings(**base, trusted_proxies="10.77.10.11, 10.77.11.0/24").validate()  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match="TRUSTED_PROXIES"):
        Settings(**base, trusted_proxies="edge-1").validate()  # type: ignore[arg-type]


@pytest.mark.control("LOG-07")
def test_auditors_see_each_records_client_and_request(env: Env) -> None:
    """PCI DSS 10.2.2: the origin recorded with an event is shown where the log is reviewed (API and page)."""
    auditor = env.staff("reviewer", "auditor")
    r = _client(env, "192.0.2.7").post("/api/login", json={"username": "reviewer", "password": "Wrong-password-123"})
    assert r.status_code == 401
    events = auditor.get("/api/audit").json()
    failed = next(e for e in events if e["action"] == "auth.login" and e["outcome"] == "failure")
    assert failed["origin"]["ip"] == "192.0.2.7" and failed["origin"]["request_id"]
    page = auditor.get("/audit").text
    assert "<td>192.0.2.7</td>" in page and failed["origin"]["request_id"] in page
