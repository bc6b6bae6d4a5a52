"""The staff UI over HTTP (no browser): navigation per role, money, the enrolment QR code, customer names,
readable errors and form validation, staff management pages."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pyotp
import pytest
import segno
from apphelpers import CUSTOMER, PASSWORD, Env, Services, StaffClient, build_env, close_env

from app_stub.rbac import ROLES
from app_stub.ui import format as fmt

# What each role's nav bar must offer (written out, not derived from the code under test)
EXPECTED_NAV = {
    "admin": {"/", "/customers", "/audit", "/staff"},
    "billing_clerk": {"/", "/customers", "/invoices"},
    "payment_processor": {"/", "/invoices"},
    "auditor": {"/", "/customers", "/invoices", "/audit", "/staff"},
}
SECTIONS = {"/", "/customers", "/invoices", "/audit", "/staff"}


def nav_links(html: str) -> list[str]:
    m = re.search(r"<nav\b[^>]*>(.*?)</nav>", html, re.S)
    assert m, "page has no nav bar"
    return re.findall(r'<a href="([^"]+)"', m.group(1))


def form(c: StaffClient, url: str, follow: bool = False, **fields: Any) -> Any:
    """A form post as the browser sends it (CSRF token as a form field)."""
    return c.http.post(url, data={"csrf_token": c.csrf, **fields}, follow_redirects=follow)


@pytest.fixture(scope="module")
def roles_env(services: Services) -> Iterator[tuple[Env, dict[str, StaffClient]]]:
    env = build_env(services)
    clients = {role: env.staff(role.replace("_", "-"), role) for role in ROLES}
    yield env, clients
    close_env(env)


# --- navigation --------------------------------------------------------------------------


@pytest.mark.control("RBAC-01")
@pytest.mark.parametrize("role", ROLES)
def test_nav_shows_exactly_the_sections_the_role_can_open(
    roles_env: tuple[Env, dict[str, StaffClient]], role: str
) -> None:
    _, clients = roles_env
    c = clients[role]
    r = c.get("/")
    assert r.status_code == 200
    links = nav_links(r.text)
    assert set(links) == EXPECTED_NAV[role], links
    for href in links:
        page = c.get(href)
        assert page.status_code == 200, f"{role}: nav link {href} answers {page.status_code}"
        assert set(nav_links(page.text)) == EXPECTED_NAV[role]
    for href in SECTIONS - set(links):
        refused = c.get(href)
        assert refused.status_code == 403, f"{role}: {href} is absent from the nav but answers {refused.status_code}"
        assert "Not allowed" in refused.text and "permission denied" in refused.text


@pytest.mark.control("RBAC-01", "EDU-01")
def test_nav_of_untrained_staff_offers_only_home(env: Env) -> None:
    c = env.staff("fresh", "billing_clerk", train=False)
    assert nav_links(c.get("/").text) == ["/"]
    c.post("/api/training/acknowledge").raise_for_status()
    assert set(nav_links(c.get("/").text)) == EXPECTED_NAV["billing_clerk"]


# --- money ---------------------------------------------------------------------------------


@pytest.mark.control("APP-02")
@pytest.mark.parametrize(
    ("minor", "currency", "shown"),
    [
        (12000, "EUR", "€120.00"),
        (12000, "JPY", "¥12,000"),
        (12345, "BHD", "BHD12.345"),
        (5, "USD", "$0.05"),
        (123456789, "GBP", "£1,234,567.89"),
        (0, "EUR", "€0.00"),
        (42, "XQQ", "42 XQQ (minor units)"),  # unknown code: no guessed decimal point
    ],
)
def test_money_uses_the_currency_minor_unit_digits(minor: int, currency: str, shown: str) -> None:
    assert fmt.money(minor, currency) == shown


@pytest.mark.control("APP-02")
@pytest.mark.parametrize(
    ("typed", "currency", "minor"),
    [("120", "EUR", 12000), ("1,234.5", "EUR", 123450), ("12000", "JPY", 12000), ("1.5", "BHD", 1500)],
)
def test_typed_amounts_become_minor_units(typed: str, currency: str, minor: int) -> None:
    assert fmt.to_minor(typed, currency) == minor


@pytest.mark.control("APP-02")
@pytest.mark.parametrize(
    ("typed", "currency", "message"),
    [
        ("1.234", "EUR", "at most 2 decimal places"),
        ("12.5", "JPY", "no decimal places"),
        ("-5", "EUR", "enter an amount"),
        ("1e3", "EUR", "enter an amount"),
        ("", "EUR", "enter an amount"),
        ("10", "EURO", "not an ISO 4217"),
        ("10", "XQQ", "not an ISO 4217"),
    ],
)
def test_typed_amounts_are_refused_rather_than_rounded(typed: str, currency: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fmt.to_minor(typed, currency)


# --- TOTP enrolment QR code ----------------------------------------------------------------


def qr_modules(svg: str) -> set[tuple[int, int]]:
    """The dark modules of a QR code drawn by segno as one stroked path (row, column), normalised to (0, 0)."""
    m = re.search(r'<path[^>]*\bstroke="[^"]+"[^>]*\bd="([^"]+)"', svg) or re.search(
        r'<path[^>]*\bd="([^"]+)"[^>]*\bstroke=', svg
    )
    assert m, "no stroked path in the SVG"
    x = y = 0.0
    dark: set[tuple[int, int]] = set()
    for op, args in re.findall(r"([MmHhVvZzLl])([^MmHhVvZzLl]*)", m.group(1)):
        nums = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", args)]
        if op == "M":
            x, y = nums
        elif op == "m":
            x, y = x + nums[0], y + nums[1]
        elif op == "h":
            for i in range(int(nums[0])):
                dark.add((int(y), int(x) + i))
            x += nums[0]
        else:
            raise AssertionError(f"unexpected path command {op}")
    r0, c0 = min(r for r, _ in dark), min(c for _, c in dark)
    return {(r - r0, c - c0) for r, c in dark}


@pytest.mark.control("MFA-01")
def test_enrolment_page_shows_the_secret_as_an_inline_svg_qr_code_and_as_text(env: Env) -> None:
    uid = env.svc.staff.create_user("qruser", PASSWORD)
    c = StaffClient(env, env.client(), uid, "qruser")
    assert c.login().json()["stage"] == "enrol"
    r = c.get("/mfa/enrol")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"  # the page carries the secret
    secret = re.search(r'id="totp-secret">([A-Z2-7]{16,})<', r.text)
    assert secret, "the key is offered as text for manual entry"
    svgs = re.findall(r"<svg\b.*?</svg>", r.text, re.S)
    assert len(svgs) == 1
    svg = svgs[0]
    # nothing external and nothing active: no links, no scripts, no text that could carry the secret
    assert not re.search(r"https?:|//|href|src=|url\(|<script|<text|<image|<foreignObject|on\w+=", svg, re.I)
    assert secret.group(1) not in svg
    # the code encodes exactly the otpauth URI of the key shown as text
    uri = pyotp.totp.TOTP(secret.group(1)).provisioning_uri(name="qruser", issuer_name=env.settings.issuer)
    expected = segno.make(uri, error="m", micro=False)
    want = {(r, col) for r, row in enumerate(expected.matrix) for col, v in enumerate(row) if v}
    assert qr_modules(svg) == want
    # and the key enrols: a code from it confirms through the form
    c.csrf = re.search(r'name="csrf_token" value="([^"]+)"', r.text).group(1)  # type: ignore[union-attr]
    done = form(c, "/mfa/enrol", code=pyotp.totp.TOTP(secret.group(1)).at(env.clock()))
    assert done.status_code == 200 and "recovery-codes" in done.text


@pytest.mark.control("MFA-01", "APP-02")
def test_a_wrong_enrolment_code_is_refused_on_the_enrolment_page(env: Env) -> None:
    uid = env.svc.staff.create_user("typo", PASSWORD)
    c = StaffClient(env, env.client(), uid, "typo")
    c.login()
    r = c.get("/mfa/enrol")
    c.csrf = re.search(r'name="csrf_token" value="([^"]+)"', r.text).group(1)  # type: ignore[union-attr]
    bad = form(c, "/mfa/enrol", code="000000")
    assert bad.status_code == 400
    assert "does not match" in bad.text and "<svg" in bad.text and 'name="code"' in bad.text
    assert c.get("/api/me").status_code == 401  # still not enrolled


# --- customer names on invoices ----------------------------------------------------------


@pytest.mark.control("EAR-04", "RBAC-01", "LOG-07")
def test_invoices_show_customer_names_with_one_key_service_call_per_page(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    clerk = env.staff("clerk", "billing_clerk")
    proc = env.staff("proc", "payment_processor")
    names = ["Ada Lovelace", "Grace Hopper", "Katherine Johnson"]
    iids = []
    for i, name in enumerate(names):
        cid = clerk.post("/api/customers", json={**CUSTOMER, "name": name, "email": f"c{i}@example.org"}).json()["id"]
        iids.append(
            clerk.post(
                "/api/invoices",
                json={
                    "customer_id": cid,
                    "currency": "EUR",
                    "lines": [{"description": "Work", "quantity": 1, "unit_price_minor": 1234, "tax_rate_bp": 0}],
                },
            ).json()["id"]
        )
        env.svc.ctx.cipher.cache.drop(cid)  # cold cache: every key must be unwrapped by the key service
    calls: list[int] = []
    decrypt = env.svc.ctx.transit.decrypt

    def counting(key: str, cts: Any) -> list[bytes]:
        calls.append(len(cts))
        return decrypt(key, cts)

    monkeypatch.setattr(env.svc.ctx.transit, "decrypt", counting)
    page = clerk.get("/invoices")
    assert page.status_code == 200
    table = re.search(r'<table id="invoices".*?</table>', page.text, re.S)
    assert table, "no invoice table"
    for name in names:
        assert name in table.group(0)
    assert "€12.34" in table.group(0)
    assert calls == [3], f"key service calls for the list page: {calls}"
    with env.owner() as conn:
        audited = conn.execute("SELECT count(*) FROM audit.events WHERE action = 'customer.names'").fetchone()
    assert audited is not None and audited[0] >= 1  # reading names is a read of personal data
    detail = clerk.get(f"/invoices/{iids[1]}")
    assert "Grace Hopper" in detail.text and "€12.34" in detail.text
    # the payment processor may read invoices but not customers' personal data
    for url in ("/invoices", f"/invoices/{iids[1]}"):
        text = proc.get(url).text
        assert not any(n in text for n in names), url
        assert "customer #" in text


# --- readable errors and form validation -------------------------------------------------


@pytest.mark.control("APP-02")
def test_error_pages_say_what_went_wrong_and_where_to_go(roles_env: tuple[Env, dict[str, StaffClient]]) -> None:
    _, clients = roles_env
    clerk = clients["billing_clerk"]
    r = clerk.get("/invoices/987654")
    assert r.status_code == 404
    assert "Not found" in r.text and "no invoice 987654" in r.text and 'href="/invoices"' in r.text
    assert set(nav_links(r.text)) == EXPECTED_NAV["billing_clerk"]  # still signed in: the nav stays
    r = clerk.get("/invoices/abc")
    assert r.status_code == 422 and "Invalid input" in r.text and "iid" in r.text and "{'" not in r.text
    r = clerk.http.post("/customers", data={"name": "x"}, follow_redirects=False)  # no CSRF token
    assert r.status_code == 403 and "reload the page" in r.text and 'href="/customers"' in r.text
    # the JSON API keeps its JSON errors
    api = clerk.get("/api/invoices/987654")
    assert api.status_code == 404 and api.json() == {"detail": "no invoice 987654"}


@pytest.mark.control("APP-02")
def test_customer_form_refuses_bad_input_on_the_form_and_writes_nothing(
    roles_env: tuple[Env, dict[str, StaffClient]],
) -> None:
    _, clients = roles_env
    clerk = clients["billing_clerk"]
    before = len(clerk.get("/api/customers").json())
    r = form(clerk, "/customers", name="Bad Email Ltd", email="not-an-address", address="1 Road", tax_id="")
    assert r.status_code == 422
    assert "email address such as" in r.text
    assert 'value="Bad Email Ltd"' in r.text  # what was typed is kept
    assert 'action="/customers"' in r.text
    assert len(clerk.get("/api/customers").json()) == before


@pytest.mark.control("APP-02")
def test_invoice_form_takes_major_units_per_currency(roles_env: tuple[Env, dict[str, StaffClient]]) -> None:
    _, clients = roles_env
    clerk = clients["billing_clerk"]
    cid = clerk.post("/api/customers", json={**CUSTOMER, "email": "yen@example.org"}).json()["id"]
    line: dict[str, Any] = {"customer_id": str(cid), "description": "Licence", "quantity": "2", "tax_rate": "20"}
    r = form(clerk, "/invoices", follow=True, currency="JPY", unit_price="1200", **line)
    assert r.status_code == 200 and re.search(r"/invoices/\d+$", str(r.url))
    assert re.search(r'id="total">¥2,880<', r.text)
    r = form(clerk, "/invoices", follow=True, currency="BHD", unit_price="1.5", **line)
    assert re.search(r'id="total">BHD3.600<', r.text)
    before = len(clerk.get("/api/invoices").json())
    r = form(clerk, "/invoices", currency="EUR", unit_price="12.345", **line)
    assert r.status_code == 422 and "EUR amounts have at most 2 decimal places" in r.text
    assert 'value="12.345"' in r.text and 'action="/invoices"' in r.text
    r = form(clerk, "/invoices", currency="EUR", unit_price="10", **{**line, "quantity": "lots"})
    assert r.status_code == 422 and "whole number" in r.text
    assert len(clerk.get("/api/invoices").json()) == before


@pytest.mark.control("APP-02", "TOK-06")
def test_refused_card_is_shown_on_the_invoice_and_never_echoed(
    roles_env: tuple[Env, dict[str, StaffClient]],
) -> None:
    _, clients = roles_env
    clerk = clients["billing_clerk"]
    cid = clerk.post("/api/customers", json={**CUSTOMER, "email": "card@example.org"}).json()["id"]
    iid = clerk.post(
        "/api/invoices",
        json={
            "customer_id": cid,
            "currency": "EUR",
            "lines": [{"description": "x", "quantity": 1, "unit_price_minor": 500, "tax_rate_bp": 0}],
        },
    ).json()["id"]
    clerk.post(f"/api/invoices/{iid}/issue").raise_for_status()
    bad = "4242424242424241"  # fails the Luhn check
    r = form(clerk, f"/invoices/{iid}/pay", number=bad, exp_month="12", exp_year="2031", idempotency_key="k" * 20)
    assert r.status_code == 422
    assert "card refused" in r.text and f'action="/invoices/{iid}/pay"' in r.text
    assert bad not in r.text
    r = form(clerk, f"/invoices/{iid}/pay", number="4242424242424242", exp_month="13", exp_year="2031",
             idempotency_key="k" * 20)  # fmt: skip
    assert r.status_code == 422 and "from 1 to 12" in r.text and "4242424242424242" not in r.text
    assert clerk.get(f"/api/invoices/{iid}").json()["state"] == "issued"


# --- staff management ---------------------------------------------------------------------


@pytest.mark.control("RBAC-01", "APP-01")
def test_admin_lists_and_creates_staff_through_the_pages(env: Env) -> None:
    admin = env.staff("alice", "admin")
    auditor = env.staff("audrey", "auditor")
    clerk = env.staff("carl", "billing_clerk")
    page = admin.get("/staff")
    assert page.status_code == 200
    assert "audrey" in page.text and "auditor" in page.text and 'action="/staff"' in page.text
    r = form(admin, "/staff", username="newhire", password=PASSWORD)
    assert r.status_code == 303
    listed = {u["username"]: u for u in admin.get("/api/users").json()}
    assert "newhire" in listed and listed["newhire"]["roles"] == []
    assert "newhire" in admin.get("/staff").text
    # refusals appear on the form, with what was typed (never the password)
    r = form(admin, "/staff", username="newhire", password=PASSWORD)
    assert r.status_code == 409 and "already exists" in r.text and 'value="newhire"' in r.text
    assert PASSWORD not in r.text
    r = form(admin, "/staff", username="weak", password="short")  # noqa: S106 - a refused password
    assert r.status_code == 400 and "at least 12" in r.text
    r = form(admin, "/staff", username="Bad Name!", password=PASSWORD)
    assert r.status_code == 422 and "lowercase letters" in r.text
    # no CSRF token, no account
    r = admin.http.post("/staff", data={"username": "csrfless", "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 403
    assert "csrfless" not in {u["username"] for u in admin.get("/api/users").json()}
    # the auditor reviews the list but cannot manage it; a clerk cannot open it
    view = auditor.get("/staff")
    assert view.status_code == 200 and "newhire" in view.text and 'action="/staff"' not in view.text
    assert form(auditor, "/staff", username="sneaky", password=PASSWORD).status_code == 403
    assert auditor.get(f"/staff/{clerk.uid}").status_code == 403
    assert clerk.get("/staff").status_code == 403
    assert "sneaky" not in {u["username"] for u in admin.get("/api/users").json()}


def roles_of(env: Env, uid: int) -> set[str]:
    with env.owner() as conn:
        return {r[0] for r in conn.execute("SELECT role FROM staff.user_roles WHERE user_id = %s", (uid,))}


@pytest.mark.control("RBAC-02", "MFA-04", "APP-01")
def test_roles_change_on_the_account_page_only_with_a_fresh_step_up_code(env: Env) -> None:
    a = env.staff("alice", "admin")
    c = env.staff("carol", "auditor")
    page = a.get(f"/staff/{c.uid}")
    assert page.status_code == 200 and f'action="/staff/{c.uid}/roles"' in page.text and 'name="code"' in page.text
    r = form(a, f"/staff/{c.uid}/roles", role="billing_clerk")
    assert r.status_code == 401 and "step-up MFA required" in r.text and 'id="grant"' in r.text
    r = form(a, f"/staff/{c.uid}/roles", role="billing_clerk", code="000000")
    assert r.status_code == 401 and "invalid or already used" in r.text
    assert roles_of(env, c.uid) == {"auditor"}
    r = form(a, f"/staff/{c.uid}/roles", role="billing_clerk", code=a.code())
    assert r.status_code == 303 and r.headers["location"] == f"/staff/{c.uid}?done=granted"
    assert "Role granted" in a.get(r.headers["location"]).text
    assert roles_of(env, c.uid) == {"auditor", "billing_clerk"}
    code = a.code()
    assert form(a, f"/staff/{c.uid}/roles/auditor/revoke", code=code).status_code == 303
    assert roles_of(env, c.uid) == {"billing_clerk"}
    r = form(a, f"/staff/{c.uid}/roles", role="auditor", code=code)  # the same code again
    assert r.status_code == 401 and roles_of(env, c.uid) == {"billing_clerk"}
    # the query string picks a fixed notice; it never reflects text
    assert "<b>" not in a.get(f"/staff/{c.uid}?done=<b>x</b>").text
    # no CSRF token, no change
    r = a.http.post(f"/staff/{c.uid}/roles", data={"role": "auditor", "code": a.code()}, follow_redirects=False)
    assert r.status_code == 403 and roles_of(env, c.uid) == {"billing_clerk"}


@pytest.mark.control("RBAC-02", "MFA-04", "LOG-07")
def test_two_person_roles_are_requested_on_one_page_and_approved_by_another_admin(env: Env) -> None:
    a = env.staff("alice", "admin")
    b = env.staff("bob", "admin")
    c = env.staff("carol", "billing_clerk")
    r = form(a, f"/staff/{c.uid}/roles", role="payment_processor", code=a.code())
    assert r.status_code == 303 and r.headers["location"].endswith("?done=pending")
    assert "another admin must approve" in a.get(r.headers["location"]).text
    assert roles_of(env, c.uid) == {"billing_clerk"}
    (req,) = a.get("/api/role-requests").json()
    listing = a.get("/staff").text
    assert f'id="request-{req["id"]}"' in listing and "waiting for another admin" in listing
    assert f'action="/staff/requests/{req["id"]}/approve"' not in listing  # not offered to the requester
    r = form(a, f"/staff/requests/{req['id']}/approve", code=a.code())  # forged anyway
    assert r.status_code == 403 and "a second admin must approve" in r.text and 'id="requests"' in r.text
    assert roles_of(env, c.uid) == {"billing_clerk"}
    assert f'action="/staff/requests/{req["id"]}/approve"' in b.get("/staff").text
    r = form(b, f"/staff/requests/{req['id']}/approve")
    assert r.status_code == 401 and roles_of(env, c.uid) == {"billing_clerk"}
    r = form(b, f"/staff/requests/{req['id']}/approve", code=b.code())
    assert r.status_code == 303 and r.headers["location"] == "/staff?done=approved"
    assert roles_of(env, c.uid) == {"billing_clerk", "payment_processor"}
    r = form(b, f"/staff/requests/{req['id']}/approve", code=b.code())
    assert r.status_code == 409 and "already approved" in r.text
    # a second request, rejected
    form(a, f"/staff/{c.uid}/roles", role="admin", code=a.code())
    (req,) = b.get("/api/role-requests").json()
    assert form(b, f"/staff/requests/{req['id']}/reject").headers["location"] == "/staff?done=rejected"
    assert b.get("/api/role-requests").json() == [] and roles_of(env, c.uid) == {"billing_clerk", "payment_processor"}


@pytest.mark.control("RBAC-02", "RBAC-01")
def test_own_account_offers_no_changes_and_forged_ones_are_refused_readably(env: Env) -> None:
    a = env.staff("alice", "admin")
    own = a.get(f"/staff/{a.uid}")
    assert own.status_code == 200 and "your own account" in own.text
    assert 'id="grant"' not in own.text and 'id="disable"' not in own.text
    r = form(a, f"/staff/{a.uid}/roles", role="payment_processor", code=a.code())
    assert r.status_code == 403 and "you cannot change the roles or state of your own account" in r.text
    assert 'href="/staff"' in r.text and roles_of(env, a.uid) == {"admin"}
    r = form(a, f"/staff/{a.uid}/disable")
    assert r.status_code == 403 and "own account" in r.text
    r = form(a, f"/staff/{a.uid}/roles/admin/revoke", code=a.code())
    assert r.status_code == 403 and roles_of(env, a.uid) == {"admin"}


@pytest.mark.control("RBAC-01", "LOG-07")
def test_accounts_are_disabled_and_enabled_from_their_page(env: Env) -> None:
    a = env.staff("alice", "admin")
    c = env.staff("carol", "billing_clerk")
    auditor = env.staff("audrey", "auditor")
    assert form(auditor, f"/staff/{c.uid}/disable").status_code == 403
    r = form(a, f"/staff/{c.uid}/disable")
    assert r.status_code == 303 and r.headers["location"] == f"/staff/{c.uid}?done=disabled"
    page = a.get(r.headers["location"]).text
    assert 'id="account-state">disabled<' in page and 'id="enable"' in page
    assert c.get("/api/me").status_code == 401 and c.login().status_code == 401
    assert "disabled" in auditor.get("/staff").text  # the access review shows it
    assert form(a, f"/staff/{c.uid}/enable").headers["location"] == f"/staff/{c.uid}?done=enabled"
    assert c.login().status_code == 200
    assert form(a, "/staff/999999/disable").status_code == 404


@pytest.mark.control("APP-02")
def test_unknown_pages_get_a_readable_page_and_the_api_keeps_json(
    roles_env: tuple[Env, dict[str, StaffClient]],
) -> None:
    _, clients = roles_env
    admin = clients["admin"]
    for url in ("/no-such-page", "/staff/not-a-number"):
        r = admin.get(url)
        assert r.status_code == 404 and "Not found" in r.text and "no page at this address" in r.text
        assert set(nav_links(r.text)) == EXPECTED_NAV["admin"]
    r = admin.get("/api/no-such-thing")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
