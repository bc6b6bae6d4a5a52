"""`billkit alerts` against a real Prometheus (Debian's 2.42, as on mon-1) started on loopback with TLS and
basic auth from its web config file, evaluating every second: one alert that always fires, one that fired
for a few seconds and resolved, one that stays pending. Then the errors an operator can act on: the lab
down, the password refused, a certificate that does not verify, no monitoring host at all.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import yaml
from typer.testing import CliRunner

from billkit import cli
from billkit.cli import app
from billkit.lab import monitoring
from billkit.lab.monitoring import MonitoringAccess
from billkit.localsvc import LOOPBACK, free_port, self_signed_cert
from billkit.system import ensure_packages, require_command

FIRED_FOR = 4.0  # s: how long FiredOnce fires after the rules are written

pytestmark = pytest.mark.control("MON-01")
runner = CliRunner()


def _rules(start: float) -> dict[str, Any]:
    def alert(name: str, expr: str, labels: dict[str, str], **extra: Any) -> dict[str, Any]:
        summary = f"{labels.get('host', 'none')}: {name}"
        return {"alert": name, "expr": expr, "labels": labels, **extra,
                "annotations": {"summary": summary, "runbook": "look"}}  # fmt: skip

    return {"groups": [{"name": "drill", "interval": "1s", "rules": [
        alert("AlwaysFiring", "vector(1)", {"severity": "critical", "control": "MON-01", "pci": "10.4.1",
                                            "host": "app-1"}),
        alert("FiredOnce", f"vector(1) and on () vector(time()) < {start + FIRED_FOR:.3f}",
              {"severity": "warning", "control": "MON-02,BAK-01", "pci": "10.7.2,12.10.1", "host": "db-1"}),
        alert("StillPending", "vector(1)", {"severity": "info", "control": "MON-01", "pci": "10.4.1"}, **{"for": "1h"}),
    ]}]}  # fmt: skip


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitoringAccess]:
    ensure_packages(["prometheus"], "a real Prometheus for the `billkit alerts` tests")
    binary = require_command("prometheus", "prometheus")
    base = tmp_path_factory.mktemp("prometheus")
    cert, key = self_signed_cert(base / "tls", ("localhost", LOOPBACK))
    password = secrets.token_urlsafe(16)
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    web = {
        "tls_server_config": {"cert_file": str(cert), "key_file": str(key)},
        "basic_auth_users": {"operator": hashed},
    }
    (base / "web.yml").write_text(yaml.safe_dump(web), encoding="utf-8")
    (base / "rules.yml").write_text(yaml.safe_dump(_rules(time.time())), encoding="utf-8")
    config = {"global": {"evaluation_interval": "1s"}, "rule_files": [str(base / "rules.yml")]}
    (base / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    log = (base / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [binary, f"--config.file={base / 'prometheus.yml'}", f"--web.config.file={base / 'web.yml'}",
         f"--web.listen-address={LOOPBACK}:{port}", f"--storage.tsdb.path={base / 'data'}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    access = MonitoringAccess(f"https://{LOOPBACK}:{port}", f"https://{LOOPBACK}:1", cert, "operator", password)
    try:
        _wait_for_history(access, proc, base / "prometheus.log")
        yield access
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        log.close()


def _wait_for_history(access: MonitoringAccess, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until AlwaysFiring fires and FiredOnce has fired and resolved."""
    deadline = time.monotonic() + 20
    with httpx.Client(base_url=access.prometheus_url, auth=(access.username, access.password),
                      verify=ssl.create_default_context(cafile=str(access.ca_file)), timeout=2) as client:  # fmt: skip
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                alerts = client.get("/api/v1/alerts").json()["data"]["alerts"]
                past = client.get(
                    "/api/v1/query", params={"query": 'count_over_time(ALERTS{alertname="FiredOnce"}[1m])'}
                )
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            firing = {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}
            if firing == {"AlwaysFiring"} and past.json()["data"]["result"]:
                return
            time.sleep(0.3)
    raise AssertionError(f"Prometheus did not reach the expected alerts in 20 s; its log:\n{log.read_text()[-2000:]}")


def _run(monkeypatch: pytest.MonkeyPatch, access: MonitoringAccess, *args: str) -> Any:
    monkeypatch.setattr(monitoring, "monitoring_access", lambda: access)
    return runner.invoke(app, ["alerts", *args], catch_exceptions=False)


def _text(result: Any) -> str:
    """The output as one line (the console wraps long messages)."""
    return " ".join(result.output.split())


def _when(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_lists_the_firing_alerts_with_their_controls_severity_host_and_start(
    prometheus: MonitoringAccess, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _run(monkeypatch, prometheus, "--format", "json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert [a["alertname"] for a in listed] == ["AlwaysFiring"]  # not the resolved one, not the pending one
    [a] = listed
    assert (a["state"], a["severity"], a["controls"], a["pci"], a["host"]) == (
        "firing", "critical", ["MON-01"], ["10.4.1"], "app-1"
    )  # fmt: skip
    assert a["summary"] == "app-1: AlwaysFiring" and a["ended"] is None
    assert dt.timedelta(0) <= dt.datetime.now(dt.UTC) - _when(a["started"]) < dt.timedelta(seconds=60)


def test_all_adds_what_fired_and_resolved_in_the_last_day_with_its_end(
    prometheus: MonitoringAccess, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _run(monkeypatch, prometheus, "--all", "--format", "json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert [(a["alertname"], a["state"]) for a in listed] == [("AlwaysFiring", "firing"), ("FiredOnce", "resolved")]
    resolved = listed[1]
    assert (resolved["controls"], resolved["severity"], resolved["host"]) == (["MON-02", "BAK-01"], "warning", "db-1")
    took = (_when(resolved["ended"]) - _when(resolved["started"])).total_seconds()
    assert 1 <= took <= FIRED_FOR + 2, f"FiredOnce fired for {took} s, at most {FIRED_FOR} s expected"
    assert _when(resolved["ended"]) <= dt.datetime.now(dt.UTC) and not resolved["started_before_window"]


def test_the_table_shows_state_controls_and_host(prometheus: MonitoringAccess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.console, "width", 200)  # one row per alert, nothing folded
    result = _run(monkeypatch, prometheus, "--all")
    assert result.exit_code == 0, result.output
    for text in ("AlwaysFiring", "FiredOnce", "MON-02, BAK-01", "app-1", "db-1", "resolved", "firing"):
        assert text in result.output
    assert "StillPending" not in result.output


def test_a_lab_that_is_down_is_named_with_what_to_do(
    prometheus: MonitoringAccess, monkeypatch: pytest.MonkeyPatch
) -> None:
    down = replace(prometheus, prometheus_url=f"https://{LOOPBACK}:{free_port()}")
    result = _run(monkeypatch, down, "--all")
    assert result.exit_code == 2
    assert "cannot reach Prometheus" in _text(result) and "./billkit up" in _text(result)


def test_a_refused_password_says_so(prometheus: MonitoringAccess, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run(monkeypatch, replace(prometheus, password=prometheus.password + "x"))
    assert result.exit_code == 2
    assert "refused the credentials of 'operator' (HTTP 401)" in _text(result)


def test_a_certificate_that_does_not_verify_is_a_tls_failure_never_ignored(
    prometheus: MonitoringAccess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    other_ca, _ = self_signed_cert(tmp_path / "other", ("localhost", LOOPBACK))
    result = _run(monkeypatch, replace(prometheus, ca_file=other_ca))
    assert result.exit_code == 2
    assert "TLS verification of Prometheus" in _text(result) and "AlwaysFiring" not in result.output


def test_a_missing_ca_file_and_a_lab_without_monitoring_are_named(
    prometheus: MonitoringAccess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    result = _run(monkeypatch, replace(prometheus, ca_file=tmp_path / "gone.pem"))
    assert result.exit_code == 2 and "cannot read the monitoring CA" in _text(result)

    def no_monitoring() -> MonitoringAccess:
        raise FileNotFoundError("the lab has no monitoring host yet: run `./billkit up`")

    monkeypatch.setattr(monitoring, "monitoring_access", no_monitoring)
    result = runner.invoke(app, ["alerts"], catch_exceptions=False)
    assert result.exit_code == 2 and "no monitoring host yet" in _text(result)
