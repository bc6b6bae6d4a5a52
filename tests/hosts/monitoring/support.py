"""Reading mon-1 from the controller, as an operator does: Prometheus' and Alertmanager's APIs over TLS
with the operator's password, and the alert log and mailbox on mon-1 over SSH."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from billkit.lab.monitoring import MonitoringAccess, monitoring_access
from billkit.lab.testing import run_on_hosts

MON = "mon-1"
ALERT_LOG = "/var/log/billkit-alerts/alerts.jsonl"


@dataclass
class Prometheus:
    access: MonitoringAccess

    def client(self, auth: bool = True) -> httpx.Client:
        creds = (self.access.username, self.access.password) if auth else None
        return httpx.Client(verify=str(self.access.ca_file), auth=creds, timeout=15)

    def get(self, path: str, **params: Any) -> Any:
        with self.client() as c:
            r = c.get(self.access.prometheus_url + path, params=params)
        r.raise_for_status()
        body = r.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.get("/api/v1/query", query=expr)["result"]

    def firing(self) -> list[dict[str, Any]]:
        """Alerts Prometheus holds now (pending and firing)."""
        return [a for a in self.get("/api/v1/alerts")["alerts"] if a["state"] == "firing"]

    def wait(self, ready: Any, what: str, timeout: float, every: float = 2.0) -> Any:
        """Poll ``ready()`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = ready()
            if last:
                return last
            time.sleep(every)
        raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {last})")


def prometheus() -> Prometheus:
    return Prometheus(monitoring_access())


def matching(alerts: list[dict[str, Any]], name: str, **labels: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a["labels"].get("alertname") == name
            and all(a["labels"].get(k) == v for k, v in labels.items())]  # fmt: skip


def on_mon(*command: str, timeout: float = 60) -> str:
    proc = run_on_hosts([MON], ["sudo", *command], timeout=timeout)[MON]
    assert proc.returncode == 0, f"{' '.join(command)} on {MON}: {proc.stderr[-500:]}"
    return proc.stdout


def write_on_mon(path: str, text: str, mode: str = "0600") -> None:
    """A file on mon-1 whose content travels on SSH's stdin, never on a command line (sudo logs those)."""
    import subprocess

    from billkit.lab.hosts import ssh_command
    from infra.topology import lab_host

    folder = path.rsplit("/", 1)[0]  # made if absent (root only); an existing folder keeps its mode
    # written aside, then renamed: a reader watching the folder sees the whole file with its final mode
    cmd = (f"sudo sh -c '[ -d {folder} ] || install -d -m 0700 {folder}; umask 077; cat > {path}.part "
           f"&& chmod {mode} {path}.part && mv -f {path}.part {path}'")  # fmt: skip
    proc = subprocess.run(ssh_command(lab_host(MON), cmd), input=text, capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip
    assert proc.returncode == 0, f"writing {path} on {MON}: {proc.stderr[-500:]}"


def alert_log() -> list[dict[str, Any]]:
    """Every notification the alert log recorded, oldest first."""
    text = on_mon("sh", "-c", f"cat {ALERT_LOG} 2>/dev/null || true")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def mailbox() -> str:
    return on_mon("sh", "-c", "cat /var/mail/oncall 2>/dev/null || true")
