"""The WAF on edge-1, through the machine's published port: TLS, HSTS, redirect, attacks, rate limit."""

from __future__ import annotations

import secrets
import socket
import ssl
import time
from collections.abc import Callable

import httpx
import pytest
import yaml
from conftest import AuditLog, rule_ids

from billkit.controls import ROOT
from billkit.lab.app import EDGE_TLS_NAME
from billkit.lab.openapi_probe import probe_requests
from infra.topology import HTTP, LAB_PUBLISHED_HTTPS, hosts_of

pytestmark = pytest.mark.lab
DRILL = pytest.mark.drill(
    "rate-limits", disrupts="floods login, password change and step-up through the WAF until it answers 429"
)


def _handshake(ctx: ssl.SSLContext) -> tuple[str, str]:
    with (
        socket.create_connection(("127.0.0.1", LAB_PUBLISHED_HTTPS), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=EDGE_TLS_NAME) as s,
    ):
        cipher = s.cipher()
        assert cipher is not None
        return str(s.version()), cipher[0]


@pytest.mark.control("ENC-01")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["TLSv1.0", "TLSv1.1"])
def test_old_tls_versions_are_refused_by_the_server(version: ssl.TLSVersion) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer the old versions at all
    ctx.minimum_version = ctx.maximum_version = version
    with pytest.raises(ssl.SSLError) as err:
        _handshake(ctx)
    # The server answered with a protocol_version alert: it is the WAF that refuses, not this client.
    assert "ALERT_PROTOCOL_VERSION" in str(err.value), err.value


@pytest.mark.control("ENC-01", "ENC-05")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["TLSv1.2", "TLSv1.3"])
def test_tls_12_and_13_with_strong_suites_and_a_pki_certificate(version: ssl.TLSVersion, lab_ca) -> None:
    from billkit.vault.pki import cert_lifetime, issuer_cn

    ctx = ssl.create_default_context(cafile=str(lab_ca))  # verifies the chain and the edge's shared name
    ctx.minimum_version = ctx.maximum_version = version
    got, cipher = _handshake(ctx)
    assert got == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    assert "GCM" in cipher or "CHACHA20" in cipher, cipher
    if version == ssl.TLSVersion.TLSv1_2:
        assert cipher.startswith("ECDHE-"), cipher  # forward secrecy
    pem = ssl.get_server_certificate(("127.0.0.1", LAB_PUBLISHED_HTTPS))
    assert issuer_cn(pem) == "billkit lab intermediate CA"
    assert cert_lifetime(pem).total_seconds() <= 72 * 3600  # short-lived, renewed by `billkit up`


@pytest.mark.control("ENC-01")
def test_weak_tls12_suites_are_refused() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("AES128-SHA:AES256-SHA:ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):
        _handshake(ctx)


@pytest.mark.control("ENC-04")
def test_hsts_and_security_headers_on_every_response(web: httpx.Client) -> None:
    for path in ("/login", "/healthz", "/no-such-page"):
        r = web.get(path)
        assert r.headers["strict-transport-security"].startswith("max-age="), path
        assert int(r.headers["strict-transport-security"].split("=")[1].split(";")[0]) >= 31536000
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers.get_list("strict-transport-security") == [r.headers["strict-transport-security"]]


@pytest.mark.control("ENC-04")
def test_plain_http_redirects_to_https() -> None:
    edge = hosts_of("waf")[0].address
    r = httpx.get(f"http://{edge}:{HTTP}/login?next=1", follow_redirects=False, timeout=10)
    assert r.status_code == 301
    assert r.headers["location"].startswith("https://") and r.headers["location"].endswith("/login?next=1")


ATTACKS = {
    "sql-injection-query": ("GET", "/customers?q=1' UNION SELECT username, password_hash FROM staff.users--", None),
    "sql-injection-json": ("POST", "/api/login", {"username": "admin' OR '1'='1' --", "password": "x"}),
    "xss-query": ("GET", "/customers?q=<script>alert(document.cookie)</script>", None),
    "xss-json": ("POST", "/api/customers", {"name": "<img src=x onerror=alert(1)>", "email": "a@b.cd", "address": "x"}),
    "path-traversal-query": ("GET", "/invoices?file=../../../../etc/passwd", None),
    "path-traversal-encoded": ("GET", "/invoices?path=..%2f..%2f..%2f..%2fetc%2fshadow", None),
    "method-the-api-does-not-use": ("PUT", "/api/users/1/roles/admin", {"role": "admin"}),
}


@pytest.mark.control("NET-06")
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attacks_are_blocked_before_the_app(name: str, web: httpx.Client, audit_log: AuditLog) -> None:
    method, path, body = ATTACKS[name]
    before = audit_log.size()
    r = web.request(method, path, json=body)
    assert r.status_code == 403, f"{name}: {r.status_code} {r.text[:200]}"
    assert "nginx" in r.text.lower() or r.headers.get("content-type", "").startswith("text/html")
    entries = audit_log.since(before)
    assert any("949110" in rule_ids(e) for e in entries), f"{name}: no CRS blocking entry in the audit log"


@pytest.mark.control("NET-06", "TOK-05")
def test_audit_log_keeps_no_request_headers_or_bodies(web: httpx.Client, audit_log: AuditLog) -> None:
    marker = secrets.token_hex(8)
    test_card = "4111111111111111"  # a public test number: it must not reach the WAF's log either
    before = audit_log.size()
    r = web.post(
        "/api/invoices/1/payments",
        json={"card": {"number": test_card, "exp_month": 1, "exp_year": 2031}, "note": "1' UNION SELECT 1,2--"},
    )
    assert r.status_code == 403
    r = web.post("/api/login", json={"username": "x' OR 1=1 --", "password": f"pw-{marker}"},
                 headers={"Cookie": f"__Host-billkit_session=ck-{marker}"})  # fmt: skip
    assert r.status_code == 403
    entries = audit_log.since(before)
    assert entries
    text = "".join(str(e) for e in entries)
    assert f"pw-{marker}" not in text and f"ck-{marker}" not in text and test_card not in text


# The role's own limits (the lab does not override them).
ROLE_DEFAULTS = yaml.safe_load((ROOT / "playbooks/roles/waf/defaults/main.yml").read_text())


def _wait_until_not_limited(send: Callable[[], httpx.Response], what: str) -> None:
    """A rate limit recovers by itself, and later checks must not be refused: wait for it, then for one
    more request's worth (the request that got through used the slot it found)."""
    deadline = time.monotonic() + 60
    while send().status_code == 429:
        assert time.monotonic() < deadline, f"the {what} rate limit did not recover within a minute"
        time.sleep(3)
    time.sleep(60 / ROLE_DEFAULTS[f"waf_{what.replace('-', '_')}_rate_per_minute"])


@DRILL
@pytest.mark.control("NET-07", "HRD-03")
def test_password_changes_are_rate_limited_with_login(web: httpx.Client) -> None:
    """Guessing the current password through the password change (API and form) counts against the
    login limit: a flood on either gets 429, and so does a login from the same address right after."""
    body = {"old_password": "not-the-password", "new_password": "Another-passw0rd-here"}
    statuses: dict[str, list[int]] = {"/api/password": [], "/password": []}
    for _ in range(20):
        statuses["/api/password"].append(web.post("/api/password", json=body).status_code)
        statuses["/password"].append(web.post("/password", data=body).status_code)
    assert all(429 in s for s in statuses.values()), statuses
    assert {401, 303} <= {c for s in statuses.values() for c in s}, statuses  # some reached the app
    assert web.post("/api/login", json={"username": "x", "password": "x"}).status_code == 429  # one budget
    assert web.get("/healthz").status_code == 200
    _wait_until_not_limited(lambda: web.post("/api/login", json={"username": "x", "password": "x"}), "login")


@DRILL
@pytest.mark.control("NET-07")
def test_login_is_rate_limited(web: httpx.Client) -> None:
    user = f"nobody-{secrets.token_hex(4)}"
    statuses = [web.post("/api/login", json={"username": user, "password": "not-the-password"}).status_code
                for _ in range(40)]  # fmt: skip
    assert 429 in statuses, statuses
    assert statuses[0] != 429  # the first attempts pass: a burst is allowed, a flood is not
    assert web.get("/healthz").status_code == 200  # other paths are not limited
    _wait_until_not_limited(lambda: web.post("/api/login", json={"username": user, "password": "x"}), "login")


@DRILL
@pytest.mark.control("MFA-04", "HRD-03", "NET-07")
def test_step_up_attempts_are_rate_limited(web: httpx.Client) -> None:
    """Guessing step-up codes (MFA-04) is slowed at the edge, on every operation that takes one (read
    from the app's OpenAPI document), per client address: a burst passes, a flood gets 429."""
    step_up = [p for p in probe_requests(web.get("/openapi.json").json()) if p.operation.step_up]
    assert {p.line().split(" ")[0] for p in step_up} == {"POST", "DELETE"}, [p.line() for p in step_up]

    def send(i: int) -> httpx.Response:
        p = step_up[i % len(step_up)]
        headers = {k: v for k, v in p.headers.items() if k.lower() != "x-step-up-code"}
        return web.request(p.method, p.path, headers={**headers, "X-Step-Up-Code": f"{i:06d}"}, content=p.content)

    statuses = [send(i).status_code for i in range(30)]
    assert statuses[0] != 429 and 429 in statuses, statuses  # a burst passes, a flood does not
    assert statuses[:3] == [401, 401, 401], statuses  # below the limit the app answers (no session: 401)
    assert {send(i).status_code for i in range(len(step_up))} == {429}  # every step-up operation shares it
    # The key is the connection's address, and nginx matches the decoded path: neither a forwarded-for
    # header nor percent-encoding gets a guesser a fresh budget.
    p = step_up[0]
    assert web.request(p.method, p.path, headers={**p.headers, "X-Forwarded-For": "198.51.100.7"},
                       content=p.content).status_code == 429  # fmt: skip
    encoded = p.path[:-1] + f"%{ord(p.path[-1]):02X}"
    assert web.request(p.method, encoded, headers=p.headers, content=p.content).status_code == 429, encoded
    assert web.post("/api/cards", json={}).status_code != 429  # other operations are not limited
    assert web.get("/api/users").status_code != 429
    _wait_until_not_limited(lambda: send(0), "step-up")
