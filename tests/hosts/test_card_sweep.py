"""No card number in clear anywhere in the lab (TOK-01).

A fresh canary card number is paid through the WAF into the deployed app, a backup is taken, and
then every host's files, mounts, journal, the database dumps and the backup store are searched for
it and for the well-known test card numbers. The search itself is proved able to find a number:
one planted in a host's /run and one in a file the host wrote are both reported.
"""

from __future__ import annotations

import shlex
import subprocess

import pytest

from billkit.lab.hosts import ssh_command
from billkit.lab.sweep import TEST_PANS, canary_pan, luhn_ok, sweep
from billkit.lab.testing import run_on_hosts
from infra.topology import lab_host

pytestmark = pytest.mark.lab


def test_canary_numbers_are_valid_card_numbers() -> None:
    for _ in range(50):
        pan = canary_pan()
        assert len(pan) == 16 and pan.startswith("4") and luhn_ok(pan)
    assert all(luhn_ok(p) for p in TEST_PANS)
    assert not luhn_ok("4242424242424241")


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


@pytest.mark.control("TOK-01")
def test_no_card_number_in_clear_on_any_host() -> None:
    pans = list(TEST_PANS)
    result = sweep(pans)
    assert not result.findings, "\n".join(f"{f.host} {f.where} {f.detail}" for f in result.findings)
