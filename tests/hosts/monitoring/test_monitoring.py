"""Checks of mon-1 and the exporters (read only): every target read over TLS, the kit's rules loaded,
nobody reads without credentials, receivers local, the app's and OpenBao's metrics arrive."""

from __future__ import annotations

import httpx
import pytest

from billkit.lab.testing import host_urls, python_command, run_on_hosts
from infra.topology import APP_METRICS, NODE_EXPORTER, hosts_of, lab_hosts
from tests.hosts.monitoring.support import MON, prometheus

pytestmark = pytest.mark.lab
testinfra_hosts = host_urls("mon")

SERVICES = (
    "prometheus",
    "prometheus-alertmanager",
    "prometheus-blackbox-exporter",
    "exim4",
    "billkit-alert-log",
    "billkit-mtail",
    "billkit-journal-tls",
)


@pytest.mark.control("MON-01")
@pytest.mark.parametrize("unit", SERVICES)
def test_monitoring_services_run_and_start_at_boot(host, unit: str) -> None:
    svc = host.service(unit)
    assert svc.is_running and svc.is_enabled, unit


@pytest.mark.control("MON-01", "MON-04")
def test_mtail_reads_every_sending_hosts_receiver_through_a_reader_of_its_own(host) -> None:
    """One reader per host: a single one merging every host's files in time order skipped late entries."""
    with host.sudo():
        for sender in sorted(h.name for h in lab_hosts() if h.name != MON):
            machine_id = host.file(f"/etc/billkit/journal/senders/{sender}/machine-id").content_string.strip()
            reader = host.service(f"billkit-mtail-journal@{machine_id}")
            assert reader.is_running and reader.is_enabled, sender


@pytest.mark.control("MON-01")
def test_keys_and_passwords_are_root_only_on_disk(host) -> None:
    for path in ("/etc/billkit/monitoring/host.key", "/etc/billkit/monitoring/prometheus.password"):
        f = host.file(path)
        assert f.user == "root" and f.mode == 0o600, (path, f.user, oct(f.mode))


@pytest.mark.control("MON-01")
def test_alert_mail_is_delivered_locally_and_never_relayed(host) -> None:
    listening = host.check_output("ss -Hltn 'sport = :25'")
    assert listening and all(" 127.0.0.1:25 " in f" {line.split()[3]} " for line in listening.splitlines()), listening
    conf = host.file("/etc/exim4/update-exim4.conf.conf").content_string
    assert "dc_eximconfig_configtype='local'" in conf and "dc_relay_nets=''" in conf


@pytest.mark.control("MON-01", "MON-02")
def test_every_target_is_read(lab_up: None) -> None:
    targets = prometheus().get("/api/v1/targets", state="active")["activeTargets"]
    by_job: dict[str, set[str]] = {}
    down = []
    for t in targets:
        by_job.setdefault(t["labels"]["job"], set()).add(t["labels"].get("host", ""))
        if t["health"] != "up" and t["labels"].get("service") != "drill":
            down.append((t["labels"]["job"], t["labels"].get("host"), t.get("lastError")))
    assert not down, f"targets down: {down}"
    assert by_job["node"] == {h.name for h in lab_hosts()}
    assert by_job["app"] == {h.name for h in hosts_of("app")}
    assert by_job["vault"] == by_job["vault_health"] == {h.name for h in hosts_of("vault")}
    assert by_job["postgres"] == {h.name for h in hosts_of("db")}
    assert by_job["mtail"] == {MON}
    assert {"edge", "app", "vault", "backup-store", "prometheus", "alertmanager"} <= {
        t["labels"].get("service") for t in targets if t["labels"]["job"] == "tls"
    }


@pytest.mark.control("MON-01")
def test_the_kits_rules_are_loaded_and_each_names_its_control(lab_up: None) -> None:
    groups = prometheus().get("/api/v1/rules", type="alert")["groups"]
    assert groups, "no alert rule is loaded"
    for g in groups:
        for rule in g["rules"]:
            assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
            labels = rule.get("labels", {})
            assert labels.get("control") and labels.get("severity") and labels.get("pci"), (rule["name"], labels)
            assert rule.get("annotations", {}).get("runbook"), rule["name"]


@pytest.mark.control("MON-01")
def test_retention_and_intervals_are_set(lab_up: None) -> None:
    p = prometheus()
    flags = p.get("/api/v1/status/flags")
    assert flags["storage.tsdb.retention.time"] == "90d"
    config = p.get("/api/v1/status/config")["yaml"]
    assert "scrape_interval: 15s" in config and "evaluation_interval: 15s" in config


@pytest.mark.control("MON-01")
@pytest.mark.parametrize("who", ["anonymous", "wrong password"])
def test_prometheus_and_alertmanager_refuse_who_cannot_sign_in(lab_up: None, who: str) -> None:
    p = prometheus()
    auth = None if who == "anonymous" else (p.access.username, p.access.password + "x")
    for base in (p.access.prometheus_url, p.access.alertmanager_url):
        with httpx.Client(verify=str(p.access.ca_file), auth=auth, timeout=15) as c:
            assert c.get(f"{base}/api/v1/status/buildinfo").status_code == 401, base
    with pytest.raises(httpx.HTTPError):  # plain HTTP to a TLS port: no answer a client could read
        httpx.get(p.access.prometheus_url.replace("https://", "http://") + "/-/healthy", timeout=10).raise_for_status()


# Run on mon-1 (the only host the topology lets reach the exporters): the HTTP status, or the TLS error.
FETCH = """
import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile="/etc/billkit/monitoring/ca.pem")
if sys.argv[2] == "identity":
    ctx.load_cert_chain("/etc/billkit/monitoring/host.pem", "/etc/billkit/monitoring/host.key")
try:
    print(urllib.request.urlopen(sys.argv[1], context=ctx, timeout=10).status)
except Exception as exc:
    print(type(exc).__name__, exc)
"""


@pytest.mark.control("MON-01", "MON-03")
@pytest.mark.parametrize(("role", "port"), [("app", APP_METRICS), ("vault", NODE_EXPORTER), ("db", NODE_EXPORTER)])
def test_exporters_answer_only_the_monitoring_hosts_certificate(lab_up: None, role: str, port: int) -> None:
    target = f"https://{hosts_of(role)[0].address}:{port}/metrics"
    with_identity = run_on_hosts([MON], ["sudo", *python_command(FETCH, target, "identity")])[MON]
    assert with_identity.stdout.strip() == "200", with_identity.stdout + with_identity.stderr
    anonymous = run_on_hosts([MON], ["sudo", *python_command(FETCH, target, "none")])[MON]
    assert anonymous.stdout.strip() != "200", "an exporter answered a client without a certificate"
    assert "ssl" in anonymous.stdout.lower() or "Connection" in anonymous.stdout, anonymous.stdout


@pytest.mark.control("MON-03")
def test_the_apps_security_counters_reach_prometheus(lab_up: None) -> None:
    series = prometheus().query('count by (host) ({__name__=~"billkit_app_.*_total", job="app"})')
    assert {s["metric"]["host"] for s in series} == {h.name for h in hosts_of("app")}


@pytest.mark.control("MON-01")
def test_openbao_telemetry_and_health_reach_prometheus(lab_up: None) -> None:
    p = prometheus()
    unsealed = p.query("vault_core_unsealed")
    assert {s["metric"]["host"] for s in unsealed} == {h.name for h in hosts_of("vault")}
    assert p.query('min(probe_success{job="vault_health"})')[0]["value"][1] == "1"


@pytest.mark.control("MON-01", "ENC-05")
def test_every_tls_endpoint_passes_its_probe(lab_up: None) -> None:
    failing = prometheus().query('probe_success{job="tls", service!="drill"} == 0')
    assert not failing, [(s["metric"]["host"], s["metric"]["service"]) for s in failing]


@pytest.mark.control("MON-01", "PAT-05")
def test_every_host_reports_its_patch_state(lab_up: None) -> None:
    series = prometheus().query("billkit_patch_metrics_timestamp_seconds")
    assert {s["metric"]["host"] for s in series} == {h.name for h in lab_hosts()}
