"""A converged lab hands the app hosts nothing new: no certificate, role ID or variable changes, and no
host asks for a new wrapped secret ID. (That a second run of every playbook, waf.yml and
billing_app.yml included, changes nothing is proven once, by tests/lab/test_lifecycle.py.)"""

from __future__ import annotations

import pytest

from billkit.lab import app
from infra.topology import hosts_of

pytestmark = [
    pytest.mark.lab,
    pytest.mark.drill(
        "idempotence", disrupts="re-issues the edge and app certificates, role IDs or the app's variables when due"
    ),
]


@pytest.mark.control("HRD-08")
def test_a_converged_lab_hands_the_app_hosts_nothing_new() -> None:
    assert app.prepare() == [], "certificates, role IDs or role variables changed on a converged lab"
    # Nothing asks for a restart, so no new wrapped secret ID is handed out either.
    assert {h.name: app.needs_delivery(h) for h in hosts_of("app")} == {h.name: "" for h in hosts_of("app")}
