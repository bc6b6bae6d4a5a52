"""File integrity monitoring on every lab host (MON-05, PCI DSS 11.5.2), as playbooks/aide.yml leaves it: Debian's
aide with the kit's rules, a baseline that is the one stored on mon-1, a daily timer, a recent clean check.
Read only (commands run as root through the inventory's become): the metrics are those the last scheduled (or
first) check wrote."""

from __future__ import annotations

import time

import pytest
import testinfra

from billkit.lab.state import INVENTORY
from billkit.lab.testing import host_urls

pytestmark = [pytest.mark.lab, pytest.mark.control("MON-05")]
testinfra_hosts = host_urls()

RULES = "/etc/aide/billkit-aide.conf"
DATABASE = "/var/lib/aide/billkit-aide.db"
METRICS = "/var/lib/prometheus/node-exporter/aide.prom"
STORE_HOST, STORE_DIR = "mon-1", "/var/lib/billkit/aide-baselines"
# One file the kit installs on each role's hosts (from the roles' defaults), which the rules must take.
KIT_FILE = {
    "waf": "/etc/nginx/modsecurity/main.conf",
    "app": "/opt/billing-app/venv/bin/python",
    "vault": "/usr/local/bin/bao",
    "db": "/etc/postgresql/15/main/pg_hba.conf",
    "backup": "/etc/pgbackrest/ca.pem",
    "mon": "/etc/prometheus/prometheus.yml",
}


def name(host) -> str:
    return host.ansible.get_variables()["inventory_hostname"]


def role(host) -> str:
    return host.ansible.get_variables()["billkit_role"]


def metrics(host) -> dict[str, float]:
    out = {}
    for line in host.file(METRICS).content_string.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_aide_runs_on_the_kit_timer_only(host):
    assert host.package("aide").is_installed
    assert host.service("billkit-aide-check.timer").is_enabled
    assert host.service("billkit-aide-check.timer").is_running
    assert not host.service("dailyaidecheck.timer").is_enabled  # one schedule


def test_the_rules_are_root_only_valid_and_take_the_kit_files(host):
    rules = host.file(RULES)
    assert rules.user == "root" and rules.mode == 0o600
    assert host.run(f"aide --config-check --config {RULES}").rc == 0
    for path in ("/etc/ssh/sshd_config", "/usr/bin/sudo", KIT_FILE[role(host)]):
        assert host.run(f"aide --config {RULES} --path-check=f:{path}").rc == 0, f"{path} is not watched"
    for path in ("/var/log/syslog", METRICS, DATABASE):
        assert host.run(f"aide --config {RULES} --path-check=f:{path}").rc != 0, f"{path} is watched"


def test_the_baseline_is_the_one_stored_off_the_host(host):
    digest = host.check_output(f"sha256sum {DATABASE}").split()[0]
    assert host.file(f"{DATABASE}.sha256").content_string.split()[0] == digest
    if name(host) != STORE_HOST:  # mon-1's own baseline is kept on the controller only
        store = testinfra.get_host(f"ansible://{STORE_HOST}?ansible_inventory={INVENTORY}")
        stored = store.check_output(f"sha256sum {STORE_DIR}/{name(host)}/billkit-aide.db").split()[0]
        assert stored == digest


def test_the_last_check_is_recent_and_clean(host):
    m = metrics(host)
    now = int(host.check_output("date +%s"))
    assert now - m["billkit_aide_last_check_timestamp_seconds"] < 26 * 3600
    assert m["billkit_aide_baseline_match"] == 1
    assert m["billkit_aide_check_success"] == 1, host.run("journalctl -t billkit-aide -n 1 -o cat").stdout
    assert all(m[f'billkit_aide_changed_entries{{kind="{k}"}}'] == 0 for k in ("added", "removed", "changed"))
    assert m["billkit_aide_last_check_timestamp_seconds"] <= time.time() + 60
