"""The staff UI in a real browser: Debian's chromium driven by Playwright (never a downloaded browser)."""

import asyncio
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
import uvicorn
from apphelpers import PASSWORD, VISA, Env

from billkit.localsvc import free_port, self_signed_cert
from billkit.system import ensure_packages

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


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


@pytest.mark.control("MFA-01", "TOK-06", "APP-01")
def test_staff_ui_login_enrol_invoice_and_pay_in_chromium(env: Env, https_app: str, tmp_path: Path) -> None:
    ensure_packages(["chromium"], "browser test of the staff UI")
    from playwright.sync_api import sync_playwright

    uid = env.svc.staff.create_user("clerk", PASSWORD, must_change=False)
    with env.owner() as conn:
        conn.execute(
            "INSERT INTO staff.user_roles (user_id, role, granted_at) VALUES (%s, 'billing_clerk', now())", (uid,)
        )
    profile = tempfile.mkdtemp(prefix="billkit-chromium-")
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                args=ARGS,
                headless=True,
                ignore_https_errors=True,
            )
            page = ctx.new_page()
            page.goto(f"{https_app}/")
            assert page.url.endswith("/login")
            page.fill("input[name=username]", "clerk")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            # mandatory TOTP enrolment
            assert page.url.endswith("/mfa/enrol")
            secret = page.inner_text("#totp-secret").strip()
            page.fill("input[name=code]", pyotp.TOTP(secret).at(env.clock()))
            page.click("button[type=submit]")
            assert len(page.locator("#recovery-codes li").all()) == 10
            page.click("text=Continue")
            # the training gate, then the clerk's role applies
            page.click("#training button")
            assert page.locator("#training").count() == 0
            page.goto(f"{https_app}/customers")
            page.fill("input[name=name]", "Grace Hopper")
            page.fill("input[name=email]", "grace@example.org")
            page.fill("input[name=address]", "1 Compiler Lane")
            page.click("text=Create customer")
            assert "Grace Hopper" in page.content()
            page.goto(f"{https_app}/invoices")
            page.fill("input[name=description]", "Annual licence")
            page.fill("input[name=unit_price_minor]", "10000")
            page.click("text=Create invoice")
            assert re.search(r"/invoices/\d+$", page.url)
            assert page.inner_text("#total") == "12000"
            page.click("text=Issue invoice")
            assert page.inner_text("#state") == "issued"
            page.fill("input[name=number]", VISA)
            page.fill("input[name=exp_month]", "12")
            page.fill("input[name=exp_year]", "2031")
            page.click("text=Pay 12000")
            assert page.inner_text("#state") == "paid"
            row = page.inner_text("#payments")
            assert "succeeded" in row and "•••• 4242" in row and re.search(r"tok_[a-z]{28}", row)
            assert VISA not in page.content()
            shot = tmp_path / "invoice-paid.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("BILLKIT_SCREENSHOT_DIR"):
                shutil.copy(shot, os.environ["BILLKIT_SCREENSHOT_DIR"])
            cookies = {c["name"]: c for c in ctx.cookies()}
            sess = cookies["__Host-billkit_session"]
            assert sess["secure"] and sess["httpOnly"] and sess["sameSite"] == "Strict"
            ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
