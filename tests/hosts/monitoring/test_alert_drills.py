"""Alert drills: each triggers the real event on the lab and waits, bounded, for its alert to fire, to
reach the operators (alert log and mailbox), and to resolve once the event is undone (MON-01, MON-02).

The drills run at once, on different hosts, so the module costs the slowest drill, not their sum:
wrong passwords through the WAF; a Vault standby restarted (it comes back sealed); the node exporter of
the backup host stopped; a program planted in a folder AIDE watches on an edge host; a certificate valid
for one hour served on mon-1 and added to the probes; a role created, granted and dropped in PostgreSQL
(pgaudit, the central journal, mtail); an app host's journal upload stopped.
Each records the time from its event to the alert firing and to the alert log (bench/FIGURES.md).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from billkit.lab.state import EVIDENCE_DIR
from billkit.lab.testing import run_on_hosts
from infra.topology import LAB_PUBLISHED_HTTPS, hosts_of
from tests.hosts.lynis_support import start_lynis_if_selected
from tests.hosts.monitoring.log_drill_support import (
    DB_HOST,
    ROLE_CHANGE_ALERT,
    ROLE_CHANGE_METRIC,
    trigger_role_change,
)
from tests.hosts.monitoring.support import (
    MON,
    Prometheus,
    alert_log,
    mailbox,
    matching,
    on_mon,
    prometheus,
    write_on_mon,
)

# First of the session, on a quiet lab: a host's entries reach the central journal in order, and in the
# suite a role change made after the data drills' write loops (34,000 pgaudit entries from db-1 in a minute)
# reached mtail 8 minutes late. The drills time the alert path itself, not a backlog.
pytestmark = [
    pytest.mark.lab,
    pytest.mark.drill(
        "alerts",
        disrupts="wrong passwords, a Vault standby restarted, an exporter and a journal upload stopped, a planted "
        "program, a short-lived certificate, a PostgreSQL role change",
    ),
    pytest.mark.lab_first,
]

FIRE_WITHIN = 240  # s: scrape (15 s) + evaluation (15 s) + the rule's `for` + the slowest window
RESOLVE_WITHIN = 420
SILENT_HOST = hosts_of("backup")[0].name
FIM_HOST = hosts_of("waf")[-1].name
JOURNAL_HOST = hosts_of("app")[-1].name
IMPLANT = "/usr/local/sbin/billkit-drill-implant"
DRILL_PROBE_PORT = 9444
PROBE_FILE = "/etc/prometheus/probes/drill.yml"
DRILL_DIR = "/run/billkit-drill"


@dataclass
class Drill:
    alert: str
    labels: dict[str, str]
    trigger: Callable[[], object]
    undo: Callable[[], None]
    # An event alert ends when its window has passed. The sign-in burst's 5 minutes have mostly passed by the
    # time the slowest drill fires, so its end is awaited; a role change's 10 would double the module's time
    # (the rules' unit tests prove that end, with promtool).
    must_resolve: bool = True
    # An event alert may still be firing from an earlier event in its window (a role change made by `up`'s
    # migrations): then the drill's own event is proven by its counter rising, and the alert log by the
    # notification Alertmanager sent when the alert began (it sends no second one for the same alert).
    arrived: Callable[[], bool] | None = None
    already_firing: bool = False
    started: float = 0.0
    fired: float | None = None
    logged: float | None = None
    resolved: float | None = None
    alert_labels: dict[str, str] = field(default_factory=dict)


def _wrong_passwords() -> None:
    # Under the WAF's login rate limit (burst 10, then 30 a minute): every attempt reaches the app.
    user = f"drill-{secrets.token_hex(4)}"
    with httpx.Client(base_url=f"https://127.0.0.1:{LAB_PUBLISHED_HTTPS}", verify=False, timeout=30) as web:  # noqa: S501
        for i in range(12):
            r = web.post("/api/login", json={"username": user, "password": f"guess-{i}-{secrets.token_hex(4)}"})
            assert r.status_code in (400, 401, 403, 423), r.text[:200]  # 423: locked after 10, still counted
            time.sleep(2.1 if i >= 8 else 0)


def _vault_standby() -> str:
    from billkit.lab.app import vault_root

    with vault_root() as c:
        leader = c.sys.read_leader_status()["leader_address"]
    return next(h.name for h in hosts_of("vault") if h.address not in leader)


def _unseal() -> None:
    from billkit.vault import lab as vault_lab
    from billkit.vault.bootstrap import unseal_all
    from billkit.vault.deploy import open_cluster
    from billkit.vault.server import lab_nodes

    cluster, _ = open_cluster(lab_nodes(), vault_lab.state())
    unseal_all(cluster)


def _serve(hours: int) -> None:
    """A certificate of the lab's CA valid for ``hours``, served on mon-1's loopback."""
    from billkit.vault import lab as vault_lab
    from billkit.vault.pki import ensure_root_ca

    cert, key = ensure_root_ca(vault_lab.state().pki).issue_bootstrap(MON, [MON], ["127.0.0.1"], hours=hours)
    write_on_mon(f"{DRILL_DIR}/cert.pem", cert)
    write_on_mon(f"{DRILL_DIR}/key.pem", key)
    on_mon("sh", "-c", "systemctl stop billkit-drill-tls 2>/dev/null; systemctl reset-failed billkit-drill-tls "
           "2>/dev/null; true")  # fmt: skip
    on_mon("systemd-run", "--unit=billkit-drill-tls", "--property=Type=exec", "openssl", "s_server", "-quiet",
           "-accept", f"127.0.0.1:{DRILL_PROBE_PORT}", "-cert", f"{DRILL_DIR}/cert.pem", "-key",
           f"{DRILL_DIR}/key.pem", "-www")  # fmt: skip


def _serve_short_lived_cert() -> None:
    """A service whose certificate is not renewed: probed with a day's certificate first (the history the
    rule compares with), then the certificate swapped for one that expires within the hour."""
    _serve(24)
    target = f'- targets: ["127.0.0.1:{DRILL_PROBE_PORT}"]\n  labels: {{host: {MON}, role: mon, service: drill}}\n'
    write_on_mon(PROBE_FILE, target, mode="0644")
    prom = prometheus()
    prom.wait(lambda: prom.query('probe_ssl_earliest_cert_expiry{service="drill"}'), "the drill's probe read", 90)
    _serve(1)


def _aide_check(host: str) -> None:
    """AIDE's scheduled check, now (it exits non-zero when it finds a change: the unit then fails)."""
    run_on_hosts([host], ["sudo", "sh", "-c", "systemctl start billkit-aide-check.service; "
                                              "systemctl reset-failed billkit-aide-check.service; true"])  # fmt: skip


def _implant() -> None:
    run_on_hosts([FIM_HOST], ["sudo", "sh", "-c", f"printf '#!/bin/sh\\nexit 0\\n' > {IMPLANT}; chmod 0755 {IMPLANT}"])
    _aide_check(FIM_HOST)


def _remove_implant() -> None:
    run_on_hosts([FIM_HOST], ["sudo", "rm", "-f", IMPLANT])
    _aide_check(FIM_HOST)


def _stop_short_lived_cert() -> None:
    on_mon("sh", "-c", f"rm -f {PROBE_FILE}; systemctl stop billkit-drill-tls || true; rm -rf {DRILL_DIR}")
    # the probe file sits in a watched folder: a scheduled AIDE check may have run meanwhile and seen it
    _aide_check(MON)


@pytest.fixture(scope="module")
def drills(lab_up: None, request: pytest.FixtureRequest) -> Iterator[dict[str, Drill]]:
    prom = prometheus()
    prom.firing()  # Prometheus answers before any event
    standby = _vault_standby()
    drills = {
        "brute_force": Drill("AppSignInFailureBurst", {}, _wrong_passwords, lambda: None),
        "vault_sealed": Drill(
            "VaultNodeSealed",
            {"host": standby},
            lambda: run_on_hosts([standby], ["sudo", "systemctl", "restart", "openbao"]),
            _unseal,
        ),  # fmt: skip
        "host_silent": Drill(
            "HostNotReporting",
            {"host": SILENT_HOST},
            lambda: run_on_hosts([SILENT_HOST], ["sudo", "systemctl", "stop", "prometheus-node-exporter"]),
            lambda: run_on_hosts([SILENT_HOST], ["sudo", "systemctl", "start", "prometheus-node-exporter"]),
        ),  # fmt: skip
        "fim": Drill("FileIntegrityChanged", {"host": FIM_HOST}, _implant, _remove_implant),
        "cert_expiry": Drill(
            "TLSCertificateExpiringSoon", {"service": "drill"}, _serve_short_lived_cert, _stop_short_lived_cert
        ),  # fmt: skip
        "pg_role_change": Drill(
            ROLE_CHANGE_ALERT,
            {"host": DB_HOST},
            trigger_role_change,
            lambda: None,
            must_resolve=False,
            arrived=_counted_since(prom, f'sum({ROLE_CHANGE_METRIC}{{job="mtail", host="{DB_HOST}"}})'),
        ),  # fmt: skip
        "journal_stopped": Drill(
            "JournalUploadStopped",
            {"host": JOURNAL_HOST},
            lambda: run_on_hosts([JOURNAL_HOST], ["sudo", "systemctl", "stop", "systemd-journal-upload"]),
            lambda: run_on_hosts([JOURNAL_HOST], ["sudo", "systemctl", "start", "systemd-journal-upload"]),
        ),  # fmt: skip
    }
    log_before = len(alert_log())
    firing_before = prom.firing()
    for d in drills.values():
        d.already_firing = bool(matching(firing_before, d.alert, **d.labels))
    try:
        for d in drills.values():
            d.started = time.monotonic()
            d.trigger()
        # Lynis's CPU minutes beside the waiting, not the triggers: in a run where it started with them, the
        # drills' setup failed within a minute of the first trigger.
        start_lynis_if_selected(request)
        _wait_all(prom, drills, log_before)
    finally:
        for d in drills.values():
            d.undo()
    _wait_resolved(prom, drills)
    _record(drills)
    yield drills


def _counted_since(prom: Prometheus, expr: str) -> Callable[[], bool]:
    """True once ``expr`` (a counter's sum) is above its value now: the drill's own event was counted."""

    def value() -> float:
        return sum(float(r["value"][1]) for r in prom.query(expr))

    before = value()
    return lambda: value() > before


def _wait_all(prom: Prometheus, drills: dict[str, Drill], log_before: int) -> None:
    deadline = time.monotonic() + FIRE_WITHIN
    while time.monotonic() < deadline and any(d.fired is None or d.logged is None for d in drills.values()):
        firing = prom.firing()
        whole_log = alert_log()
        now = time.monotonic()
        for d in drills.values():
            hits = matching(firing, d.alert, **d.labels)
            logged = whole_log if d.already_firing else whole_log[log_before:]
            if hits and d.fired is None and (not d.already_firing or (d.arrived is not None and d.arrived())):
                d.fired, d.alert_labels = now, hits[0]["labels"]
            if d.logged is None and (d.fired is not None or not d.already_firing) and any(
                e["status"] == "firing" and e["labels"].get("alertname") == d.alert
                and all(e["labels"].get(k) == v for k, v in d.labels.items()) for e in logged
            ):  # fmt: skip
                d.logged = now
        time.sleep(3)


def _wait_resolved(prom: Prometheus, drills: dict[str, Drill]) -> None:
    deadline = time.monotonic() + RESOLVE_WITHIN
    undone = time.monotonic()
    waited = [d for d in drills.values() if d.must_resolve]
    while time.monotonic() < deadline and any(d.fired and d.resolved is None for d in waited):
        firing = prom.firing()
        for d in waited:
            if d.fired and d.resolved is None and not matching(firing, d.alert, **d.labels):
                d.resolved = time.monotonic() - undone
        time.sleep(3)


def _record(drills: dict[str, Drill]) -> None:
    """Event-to-alert times as evidence (and for bench/FIGURES.md)."""
    EVIDENCE_DIR.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    body = {
        name: {
            "alert": d.alert, "labels": d.alert_labels,
            "event_to_firing_s": round(d.fired - d.started, 1) if d.fired else None,
            "event_to_alert_log_s": round(d.logged - d.started, 1) if d.logged else None,
            "undo_to_resolved_s": round(d.resolved, 1) if d.resolved else None,
            "already_firing": d.already_firing,
        }
        for name, d in drills.items()
    }  # fmt: skip
    (EVIDENCE_DIR / f"alert-drills-{stamp}.json").write_text(json.dumps(body, indent=2), encoding="utf-8")


def _assert_drill(d: Drill) -> None:
    assert d.fired is not None, f"{d.alert} {d.labels} did not fire within {FIRE_WITHIN}s of its event"
    assert d.logged is not None, f"{d.alert} fired but did not reach the alert log within {FIRE_WITHIN}s"
    assert d.alert_labels.get("control") and d.alert_labels.get("severity"), d.alert_labels
    if d.must_resolve:
        assert d.resolved is not None, f"{d.alert} {d.labels} did not resolve within {RESOLVE_WITHIN}s of the undo"


@pytest.mark.control("MON-01", "MON-03")
def test_wrong_passwords_through_the_waf_raise_the_brute_force_alert(drills: dict[str, Drill]) -> None:
    _assert_drill(drills["brute_force"])


@pytest.mark.control("MON-01", "MON-02")
def test_a_sealed_vault_node_raises_its_alert_and_resolves_once_unsealed(drills: dict[str, Drill]) -> None:
    _assert_drill(drills["vault_sealed"])


@pytest.mark.control("MON-02")
def test_a_host_whose_exporter_stops_raises_the_control_failure_alert(drills: dict[str, Drill]) -> None:
    _assert_drill(drills["host_silent"])


@pytest.mark.control("MON-05", "MON-01")
def test_a_file_planted_in_a_watched_folder_raises_the_file_integrity_alert(drills: dict[str, Drill]) -> None:
    _assert_drill(drills["fim"])


@pytest.mark.control("MON-01", "LOG-10", "RBAC-05")
def test_a_role_change_in_postgresql_raises_its_alert_through_the_central_journal(drills: dict[str, Drill]) -> None:
    _assert_drill(drills["pg_role_change"])


@pytest.mark.control("MON-02", "MON-04")
def test_a_stopped_journal_upload_raises_the_control_failure_alert(drills: dict[str, Drill]) -> None:
    _assert_drill(drills["journal_stopped"])


@pytest.mark.control("MON-01", "ENC-05")
def test_a_short_lived_certificate_raises_the_expiry_alert(drills: dict[str, Drill]) -> None:
    _assert_drill(drills["cert_expiry"])


@pytest.mark.control("MON-01")
def test_the_operators_mailbox_received_the_drills_alerts(drills: dict[str, Drill]) -> None:
    mail = mailbox()
    for d in drills.values():
        if d.alert_labels.get("severity") in ("critical", "warning"):
            assert f"] {d.alert} on" in mail, f"no mail for {d.alert} in oncall's mailbox on {MON}"


@pytest.mark.control("MON-01")
def test_billkit_alerts_lists_the_drills_alerts_with_their_controls(drills: dict[str, Drill]) -> None:
    import subprocess
    import sys

    from billkit.controls import ROOT

    proc = subprocess.run([sys.executable, "-m", "billkit", "alerts", "--all", "--format", "json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    listed = json.loads(proc.stdout)
    names = {a.get("alertname") or a.get("labels", {}).get("alertname") for a in listed}
    for d in drills.values():
        assert d.alert in names, f"`billkit alerts --all` does not list {d.alert}: {sorted(n for n in names if n)}"
