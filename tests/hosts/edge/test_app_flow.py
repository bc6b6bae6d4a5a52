"""The app's own traffic through the WAF (APP-04) and the load balancing over both app hosts."""

from __future__ import annotations

import re
import secrets
import time

import httpx
import pyotp
import pytest
from conftest import AuditLog, active_edge, answered_by_the_edge, crs_matches, log_in, make_clerk, ssh

from billkit.lab.openapi_probe import probe_requests
from infra.topology import APP_PORT, hosts_of

pytestmark = [
    pytest.mark.lab,
    pytest.mark.drill(
        "app-flow",
        disrupts="creates staff accounts and customers, counts failed logins through the WAF, stops an app host",
    ),
]

CUSTOMER = {
    "name": "Seán O'Brien-Müller & Co. (test)",
    "email": "sean.obrien+billing@example.org",
    "address": '12 Analytical Row; Flat 3/B — "rear entrance"',
    "tax_id": "GB 123-456.78",
}


def _ok(r: httpx.Response, *codes: int) -> httpx.Response:
    what = f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:200]}"
    assert r.status_code in (codes or (200,)), what
    return r


@pytest.mark.control("APP-04", "NET-06")
def test_every_operation_of_the_apps_openapi_passes_the_waf(web: httpx.Client, audit_log: AuditLog) -> None:
    """One valid request per operation of the app's published OpenAPI document (billkit.lab.openapi_probe:
    every declared parameter and header, a body generated from the operation's schema), sent through the
    WAF in a logged-in staff session with its CSRF token. The app may refuse one (unknown IDs, missing
    permission, a wrong step-up code); the WAF must answer none, and match no CRS rule on any."""
    before = audit_log.size()
    doc = _ok(web.get("/openapi.json")).json()
    requests = probe_requests(doc)
    csrf = log_in(web, make_clerk())
    by_edge, invalid = [], []
    for p in requests:
        r = web.request(p.method, p.path, params=p.params, headers={**p.headers, "X-CSRF-Token": csrf},
                        content=p.content)  # fmt: skip
        if answered_by_the_edge(r):
            by_edge.append(f"{p.line()}: {r.status_code}")
        elif r.status_code == 422 and "invalid input" in r.text:  # the app's validation: the generator erred
            invalid.append(f"{p.line()}: {r.text[:200]}")
    time.sleep(1)  # the audit log is written when the transaction ends
    new = audit_log.since(before)
    assert not by_edge and not new, (
        f"the WAF answered {len(by_edge)} of the app's {len(requests)} operations itself: {by_edge}; "
        f"CRS matches: {crs_matches(new)}"
    )
    assert not invalid, f"the app found generated requests invalid: {invalid}"
    assert {p.operation.method for p in requests} >= {"GET", "POST", "DELETE"}


def _form_value(html: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]*)"', html) or re.search(rf'id="{name}">([^<]*)<', html)
    assert m, f"no {name} in the page"
    return m.group(1)


@pytest.mark.control("APP-04")
def test_the_first_login_through_the_staff_ui_passes_the_waf_without_a_crs_match(
    web: httpx.Client, audit_log: AuditLog, lab_up: None
) -> None:
    """What the first admin does with the one-time password: the HTML forms, not the JSON API."""
    user = make_clerk(expired=True)
    before = audit_log.size()
    csrf = _form_value(_ok(web.get("/login")).text, "csrf_token")
    r = _ok(web.post("/login", data={"username": user.username, "password": user.password, "csrf_token": csrf}), 303)
    assert r.headers["location"] == "/mfa/enrol"
    page = _ok(web.get("/mfa/enrol")).text
    secret, csrf = _form_value(page, "totp-secret"), _form_value(page, "csrf_token")
    _ok(web.post("/mfa/enrol", data={"code": pyotp.totp.TOTP(secret).now(), "csrf_token": csrf}))  # recovery codes
    csrf = _form_value(_ok(web.get("/password")).text, "csrf_token")
    new_password = "It's 7" + secrets.token_urlsafe(9) + "' OR 'x'='x <b>"  # trips the CRS outside password fields
    r = web.post("/password", data={"old_password": user.password, "new_password": new_password, "csrf_token": csrf})
    _ok(r, 303)
    csrf = _form_value(_ok(web.get("/")).text, "csrf_token")
    _ok(web.post("/training", data={"csrf_token": csrf}), 303, 200)
    customer = {**CUSTOMER, "email": f"ui-{secrets.token_hex(3)}@example.org", "csrf_token": csrf}
    _ok(web.post("/customers", data=customer), 303, 200, 201)
    _ok(web.get("/customers"))
    _ok(web.get("/invoices"))
    time.sleep(1)
    new = audit_log.since(before)
    assert not new, "the WAF matched CRS rules on the staff UI's traffic: " + crs_matches(new)


ODD_PASSWORDS = ["a' or 1=1--", "Correct' OR 'horse'='horse", "pa55word<script>x", "my;cat /etc/passwd pw"]


@pytest.mark.control("APP-04", "NET-06")
@pytest.mark.parametrize("password", ODD_PASSWORDS)
def test_password_fields_alone_skip_the_crs(password: str, web: httpx.Client, audit_log: AuditLog) -> None:
    """Staff may choose any password: it reaches the app (which refuses a wrong one with 401). The same
    text in any other field is still blocked: the exclusion is that narrow."""
    before = audit_log.size()
    r = web.post("/api/login", json={"username": f"nobody-{secrets.token_hex(3)}", "password": password})
    assert r.status_code == 401, r.text[:200]
    assert audit_log.since(before) == []
    assert web.post("/api/login", json={"username": password, "password": "x"}).status_code == 403
    time.sleep(2.5)  # stay under the login rate limit (NET-07) across the cases


def _upstreams_in_access_log(lines: int = 200) -> set[str]:
    proc = ssh(active_edge(), f"sudo tail -n {lines} /var/log/nginx/access.log")
    assert proc.returncode == 0, proc.stderr
    return {word.strip('"').split(":")[0] for line in proc.stdout.splitlines() for word in line.split()
            if word.strip('"').endswith(f":{APP_PORT}")}  # fmt: skip


@pytest.mark.control("NET-06")
def test_both_app_hosts_serve_and_the_site_survives_one_stopping(web: httpx.Client) -> None:
    from billkit.lab import app

    apps = hosts_of("app")
    for _ in range(12):
        _ok(web.get("/healthz"))
    assert {h.address for h in apps} <= _upstreams_in_access_log(), "the WAF did not spread requests over both"
    first = apps[0]
    assert ssh(first.name, "sudo systemctl stop billing-app").returncode == 0
    try:
        for _ in range(12):  # passive health checks: a refused connection moves the request to the other host
            _ok(web.get("/healthz"))
        _ok(web.get("/login"))
    finally:
        # A stopped app used its wrapped secret ID: starting it again takes a new delivery (what `up` does).
        changed = app.deliver()
    assert any(first.name in c for c in changed), changed
    assert ssh(first.name, "systemctl is-active billing-app").stdout.strip() == "active"
