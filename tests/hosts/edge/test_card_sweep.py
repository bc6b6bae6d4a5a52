"""No card number in clear anywhere in the lab (TOK-01).

A fresh canary card number is paid through the WAF into the deployed app and a backup is taken
(so the number has crossed the edge, the app hosts, the database, WAL archiving and the backup
store); then every host's files, mounts and journal, the database dumps and the backup store are
searched for it and for the well-known test card numbers. The search is first proved able to find
a number: one planted in a host's /run and one in a file a host wrote are both reported.
"""

from __future__ import annotations

import secrets
import shlex
import subprocess

import httpx
import pytest
from conftest import log_in, make_clerk

from billkit.lab.hosts import ssh_command
from billkit.lab.sweep import TEST_PANS, canary_pan, luhn_ok, sweep
from billkit.lab.testing import run_on_hosts
from infra.topology import lab_host

pytestmark = pytest.mark.lab
DRILL = pytest.mark.drill(
    "card-sweep", disrupts="plants card numbers on two hosts, pays a canary card into the database, takes a backup"
)


def test_canary_numbers_are_valid_card_numbers() -> None:
    for _ in range(50):
        pan = canary_pan()
        assert len(pan) == 16 and pan.startswith("4") and luhn_ok(pan)
    assert all(luhn_ok(p) for p in TEST_PANS)
    assert not luhn_ok("4242424242424241")


@DRILL
@pytest.mark.control("TOK-01")
def test_the_sweep_finds_a_planted_number() -> None:
    pan = canary_pan()
    planted = {"app-1": "/run/billkit-sweep-check", "backup-1": "/root/billkit-sweep-check"}
    for host, path in planted.items():  # through stdin: a command line with the number would be logged
        cmd = ssh_command(lab_host(host), shlex.join(["sudo", "tee", path]))
        subprocess.run(cmd, input=f"x {pan} y\n", capture_output=True, text=True, check=True, timeout=60)
    try:
        found = {(f.host, f.where) for f in sweep([pan]).findings}
    finally:
        for host, path in planted.items():
            run_on_hosts([host], ["sudo", "rm", "-f", path])
    assert ("app-1", "mount") in found, found  # /run is a tmpfs inside the host
    assert ("backup-1", "file") in found, found  # /root is in the host's own layer


def _pay_through_the_waf(web: httpx.Client, pan: str) -> str:
    """Log a new clerk in (TOTP enrolment, training), issue an invoice and pay it with ``pan``."""
    h = {"X-CSRF-Token": log_in(web, make_clerk())}
    customer = {"name": "Canary Test", "email": f"canary-{secrets.token_hex(4)}@example.org",
                "address": "1 Sweep Lane", "tax_id": "XX000"}  # fmt: skip
    cid = web.post("/api/customers", json=customer, headers=h).json()["id"]
    lines = [{"description": "Sweep", "quantity": 1, "unit_price_minor": 100, "tax_rate_bp": 0}]
    invoice = {"customer_id": cid, "currency": "EUR", "lines": lines}
    iid = web.post("/api/invoices", json=invoice, headers=h).json()["id"]
    assert web.post(f"/api/invoices/{iid}/issue", headers=h).status_code == 200
    pay = web.post(f"/api/invoices/{iid}/payments", json={"card": {"number": pan, "exp_month": 12, "exp_year": 2031}},
                   headers={**h, "Idempotency-Key": f"sweep-{secrets.token_hex(6)}"})  # fmt: skip
    assert pay.status_code == 200, pay.text
    token = pay.json()["card"]["token"]
    assert pan not in pay.text and pan[-4:] == pay.json()["card"]["last4"]
    return token


@DRILL
@pytest.mark.control("TOK-01", "TOK-05")
def test_no_card_number_in_clear_on_any_host(web: httpx.Client) -> None:
    from billkit.lab.backups import take_backup

    pan = canary_pan()
    token = _pay_through_the_waf(web, pan)
    assert token.startswith("tok_")
    take_backup("incr")  # the payment's rows in the backup store and the archived WAL
    result = sweep([pan, *TEST_PANS])
    assert not result.findings, "\n".join(f"{f.host} {f.where} {f.detail}" for f in result.findings)
