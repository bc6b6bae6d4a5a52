"""The staff UI in a real browser: Debian's chromium driven by Playwright (never a downloaded browser).

One test per role walks that role's main path through the forms (password, TOTP, training). Any
console error or uncaught page error fails the test, so a CSP violation (an inline script, a
resource from elsewhere) or a broken page is caught; a refusal the path provokes on purpose is
expected by name.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyotp
import pytest
import uvicorn
from apphelpers import PASSWORD, VISA, Env, issued_invoice

from billkit.localsvc import free_port, self_signed_cert
from billkit.system import ensure_packages

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    ensure_packages(["chromium", "zbar-tools"], "browser test of the staff UI")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def https_app(env: Env, tmp_path: Path) -> Iterator[str]:
    cert, key = self_signed_cert(tmp_path / "tls")
    port = free_port()
    config = uvicorn.Config(
        env.app,
        host="127.0.0.1",
        port=port,
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"https://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


class Tab:
    """One staff member's browser context: its page, the TOTP key it enrolled, and every console error."""

    def __init__(self, browser: Any, base: str, env: Env) -> None:
        self.env = env
        self.ctx = browser.new_context(ignore_https_errors=True, base_url=base)
        self.page = self.ctx.new_page()
        self.page.set_default_timeout(10_000)
        self.secret = ""
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))

    def _console(self, msg: Any) -> None:
        if msg.type == "error":
            self.errors.append(f"console error: {msg.text} ({msg.location.get('url', '')})")

    @contextmanager
    def refused(self, status: int) -> Iterator[None]:
        """Expect the browser's one report of a page answered with ``status`` (a refusal the test provokes)."""
        before = len(self.errors)
        yield
        self.page.wait_for_load_state()
        new = self.errors[before:]
        del self.errors[before:]
        expected = [e for e in new if f"status of {status}" in e]
        assert len(expected) <= 1 and len(new) == len(expected), new
        assert self.page.locator("h1").count() == 1

    def code(self) -> str:
        self.env.clock.advance(seconds=30)  # a fresh time step: the app refuses a step twice
        return pyotp.totp.TOTP(self.secret).at(self.env.clock())

    def nav(self) -> list[str]:
        return [a.get_attribute("href") or "" for a in self.page.locator("header nav a").all()]

    def submit(self, form: str = "main form") -> None:
        with self.page.expect_navigation():
            self.page.locator(f"{form} button[type=submit]").click()

    def close(self) -> None:
        self.ctx.close()
        assert self.errors == [], "\n".join(self.errors)


@pytest.fixture
def tabs(browser: Any, https_app: str, env: Env) -> Iterator[Any]:
    opened: list[Tab] = []

    def open_tab() -> Tab:
        opened.append(Tab(browser, https_app, env))
        return opened[-1]

    yield open_tab
    for t in opened:
        t.close()


def staff_account(env: Env, username: str, role: str) -> int:
    uid = env.svc.staff.create_user(username, PASSWORD, must_change=False)
    with env.owner() as conn:
        conn.execute("INSERT INTO staff.user_roles (user_id, role, granted_at) VALUES (%s, %s, now())", (uid, role))
    return uid


def log_in(t: Tab, username: str, password: str = PASSWORD, decode_qr: Path | None = None) -> None:
    """Password, then TOTP (enrolling at first login), a new password when required, then the training."""
    p = t.page
    p.goto("/")
    assert p.url.endswith("/login")
    p.fill("input[name=username]", username)
    p.fill("input[name=password]", password)
    t.submit()
    if p.url.endswith("/mfa/enrol"):
        t.secret = p.inner_text("#totp-secret").strip()
        assert p.locator("#totp-qr svg").count() == 1
        if decode_qr is not None:
            p.locator("#totp-qr svg").screenshot(path=str(decode_qr))
            uri = subprocess.run(
                ["zbarimg", "--raw", "-q", str(decode_qr)], capture_output=True, text=True, check=True, timeout=30
            ).stdout.strip()
            parsed = urllib.parse.urlparse(uri)
            assert parsed.scheme == "otpauth" and parsed.netloc == "totp", uri
            assert urllib.parse.parse_qs(parsed.query)["secret"] == [t.secret]
            assert username in urllib.parse.unquote(parsed.path)
        p.fill("input[name=code]", t.code())
        t.submit()
        assert len(p.locator("#recovery-codes li").all()) == 10
        with p.expect_navigation():
            p.click("text=Continue")
    else:
        assert p.url.endswith("/login/mfa")
        p.fill("input[name=code]", t.code())
        t.submit()
    if p.url.endswith("/password"):
        p.fill("input[name=old_password]", password)
        p.fill("input[name=new_password]", password + "-own-9")
        t.submit()
    if p.locator("#training").count():
        t.submit("#training")
        assert p.locator("#training").count() == 0
    assert p.inner_text("#whoami") == username


@pytest.mark.control("MFA-01", "TOK-06", "APP-01", "RBAC-01", "EDU-01", "EAR-04")
def test_clerk_creates_a_customer_invoices_and_takes_a_card_payment(env: Env, tabs: Any, tmp_path: Path) -> None:
    staff_account(env, "clerk", "billing_clerk")
    t = tabs()
    p = t.page
    log_in(t, "clerk", decode_qr=tmp_path / "qr.png")
    assert t.nav() == ["/", "/customers", "/invoices"]
    p.click("header nav >> text=Customers")
    p.fill("input[name=name]", "Grace Hopper")
    p.fill("input[name=email]", "grace@example.org")
    p.fill("input[name=address]", "1 Compiler Lane")
    t.submit()
    assert "Grace Hopper" in p.inner_text("#customers")
    p.click("header nav >> text=Invoices")
    grace = p.locator("select[name=customer_id] option", has_text="Grace Hopper").get_attribute("value")
    p.select_option("select[name=customer_id]", grace)
    p.select_option("select[name=currency]", "EUR")
    p.fill("input[name=description]", "Annual licence")
    p.fill("input[name=unit_price]", "100")
    t.submit()
    assert re.search(r"/invoices/\d+$", p.url)
    assert p.inner_text("#customer") == "Grace Hopper"
    assert p.inner_text("#total") == "€120.00"
    p.click("text=Issue invoice")
    p.wait_for_load_state()
    assert p.inner_text("#state") == "issued"
    p.fill("input[name=number]", VISA)
    p.fill("input[name=exp_month]", "12")
    p.fill("input[name=exp_year]", "2031")
    assert p.inner_text("#pay") == "Pay €120.00"
    t.submit()
    assert p.inner_text("#state") == "paid"
    row = p.inner_text("#payments")
    assert "succeeded" in row and "€120.00" in row and "•••• 4242" in row and re.search(r"tok_[a-z]{28}", row)
    assert VISA not in p.content()
    shot = tmp_path / "invoice-paid.png"
    p.screenshot(path=str(shot), full_page=True)
    if os.environ.get("BILLKIT_SCREENSHOT_DIR"):
        shutil.copy(shot, os.environ["BILLKIT_SCREENSHOT_DIR"])
    p.click("text=All invoices")
    listed = p.inner_text("#invoices")
    assert "Grace Hopper" in listed and "paid" in listed and "€120.00" in listed
    sess = {c["name"]: c for c in t.ctx.cookies()}["__Host-billkit_session"]
    assert sess["secure"] and sess["httpOnly"] and sess["sameSite"] == "Strict"


@pytest.mark.control("MFA-01", "RBAC-01", "TOK-06", "APP-01")
def test_payment_processor_opens_an_invoice_and_takes_the_payment(env: Env, tabs: Any) -> None:
    iid = issued_invoice(env.staff("clerk", "billing_clerk"), total=4550)
    staff_account(env, "proc", "payment_processor")
    t = tabs()
    p = t.page
    log_in(t, "proc")
    assert t.nav() == ["/", "/invoices"]  # no customers' personal data, no audit log, no staff
    p.click("header nav >> text=Invoices")
    listed = p.inner_text("#invoices")
    assert "€45.50" in listed and "customer #" in listed and "Ada Lovelace" not in listed
    p.click(f"#invoices >> a[href='/invoices/{iid}']")
    p.wait_for_load_state()
    assert p.inner_text("#state") == "issued" and p.inner_text("#balance") == "€45.50"
    p.fill("input[name=number]", "5555555555554444")
    p.fill("input[name=exp_month]", "3")
    p.fill("input[name=exp_year]", "2030")
    t.submit()
    assert p.inner_text("#state") == "paid" and p.inner_text("#balance") == "€0.00"
    assert "•••• 4444" in p.inner_text("#payments")
    assert "5555555555554444" not in p.content()
    assert env.gateway.charges == 1
    assert [(last4, amount, cur) for _, last4, amount, cur in env.gateway.ledger.values()] == [("4444", 4550, "EUR")]


@pytest.mark.control("RBAC-01", "LOG-07", "MFA-01")
def test_auditor_reads_the_audit_log_and_cannot_manage_staff(env: Env, tabs: Any) -> None:
    clerk = env.staff("clerk", "billing_clerk")
    staff_account(env, "audrey", "auditor")
    t = tabs()
    p = t.page
    log_in(t, "audrey")
    assert t.nav() == ["/", "/customers", "/invoices", "/audit", "/staff"]
    p.click("header nav >> text=Audit log")
    log = p.inner_text("table")
    assert "auth.mfa_enrol" in log and "training.acknowledge" in log and "auth.password" in log
    p.click("header nav >> text=Staff")
    users = p.inner_text("#users")
    assert "clerk" in users and "billing_clerk" in users and "audrey" in users
    assert p.locator("form[action='/staff']").count() == 0  # read-only: an access review
    assert p.locator("#users a").count() == 0
    with t.refused(403):
        p.goto(f"/staff/{clerk.uid}")
    assert p.inner_text("h1") == "Not allowed"
    assert "needs users.manage" in p.inner_text("#error-message")
    with p.expect_navigation():
        p.click("#back")
    assert p.url.endswith("/staff")


@pytest.mark.control("RBAC-02", "MFA-04", "RBAC-01", "MFA-01", "HRD-02", "APP-01")
def test_admins_manage_staff_under_the_two_person_rule(env: Env, tabs: Any) -> None:
    alice = staff_account(env, "alice", "admin")
    staff_account(env, "bob", "admin")
    first = "Carol-first-pass-1"  # noqa: S105 - the test account's first password
    a = tabs()
    p = a.page
    log_in(a, "alice")
    assert a.nav() == ["/", "/customers", "/audit", "/staff"]
    p.click("header nav >> text=Staff")
    # a new account: a refused password is shown on the form, the username kept
    p.fill("#username", "carol")
    p.fill("#password", "short")
    with a.refused(400):
        a.submit("#create-user")
    assert "at least 12" in p.inner_text("#password-error")
    assert p.input_value("#username") == "carol"
    p.fill("#password", first)
    a.submit("#create-user")
    assert re.search(r"/staff/\d+\?done=created$", p.url) and p.inner_text("#username") == "carol"
    carol_page = p.url.split("?")[0]
    # billing_clerk: one admin with a step-up code
    p.select_option("#role", "billing_clerk")
    p.fill("#grant-code", a.code())
    a.submit("#grant")
    assert "Role granted" in p.inner_text("#notice") and p.inner_text("#roles") == "billing_clerk"
    # payment_processor: a request that waits for a second admin
    p.select_option("#role", "payment_processor")
    p.fill("#grant-code", a.code())
    a.submit("#grant")
    assert "another admin must approve" in p.inner_text("#notice")
    assert p.inner_text("#roles") == "billing_clerk" and "payment_processor" in p.inner_text("#user-requests")
    # disable, then enable
    a.submit("#disable")
    assert p.inner_text("#account-state") == "disabled"
    a.submit("#enable")
    assert p.inner_text("#account-state") == "active"
    # one's own account offers no change; a forged self-grant is refused with a readable message
    p.goto(f"/staff/{alice}")
    assert p.locator("#own-account").count() == 1 and p.locator("#grant").count() == 0
    p.goto(carol_page)
    p.eval_on_selector("#grant", "(form, uid) => { form.action = `/staff/${uid}/roles`; }", alice)
    p.select_option("#role", "auditor")
    p.fill("#grant-code", a.code())
    with a.refused(403):
        a.submit("#grant")
    assert "cannot change the roles or state of your own account" in p.inner_text("main [role=alert]")
    # the second admin approves the request
    b = tabs()
    log_in(b, "bob")
    b.page.click("header nav >> text=Staff")
    row = b.page.locator("#requests tr", has_text="carol")
    assert "payment_processor" in row.inner_text() and "alice" in row.inner_text()
    row.locator("input[name=code]").fill(b.code())
    with b.page.expect_navigation():
        row.locator("form.approve button").click()
    assert "Request approved" in b.page.inner_text("#notice")
    assert b.page.inner_text("#users tr:has-text('carol') .roles") == "billing_clerk, payment_processor"
    # carol's first login: authenticator, then her own password, then the training; both roles apply
    c = tabs()
    log_in(c, "carol", first)
    assert c.nav() == ["/", "/customers", "/invoices"]
