"""A second run of the edge and app playbooks changes nothing, and the apps need no new delivery."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from billkit.lab import app
from billkit.lab.ansible import run_playbook
from infra.topology import hosts_of

pytestmark = pytest.mark.lab


@pytest.mark.control("HRD-08")
def test_waf_and_app_playbooks_converge_and_change_nothing_on_a_second_run() -> None:
    assert app.prepare() == [], "certificates, role IDs or role variables changed on a converged lab"
    with ThreadPoolExecutor(max_workers=2) as pool:
        recaps = dict(zip(("waf.yml", "billing_app.yml"), pool.map(run_playbook, ("waf.yml", "billing_app.yml")),
                          strict=True))  # fmt: skip
    assert set(recaps["waf.yml"].hosts) == {h.name for h in hosts_of("waf")}
    assert set(recaps["billing_app.yml"].hosts) == {h.name for h in hosts_of("app")}
    for playbook, recap in recaps.items():
        changed = {name: r["changed"] for name, r in recap.hosts.items() if r["changed"]}
        assert not changed, f"{playbook} changed tasks on a converged lab: {changed}"
    # Nothing asks for a restart, so no new wrapped secret ID is handed out either.
    assert {h.name: app.needs_delivery(h) for h in hosts_of("app")} == {h.name: "" for h in hosts_of("app")}
