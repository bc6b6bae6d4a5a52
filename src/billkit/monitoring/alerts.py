"""`billkit alerts`: what fires on mon-1's Prometheus, and with ``recent``, what fired in the last 24 hours.

Prometheus is read, not Alertmanager: it holds every alert even when notifications fail
(PrometheusNotificationsFailing). Firing alerts come from ``/api/v1/rules`` (their rule's ``for`` turns the
time they became active into the time they started firing); the last day's come from the raw samples of
the ``ALERTS`` series (``ALERTS{alertstate="firing"}[24h]``: one sample per evaluation while an alert fires),
cut into episodes where the evaluations stop.
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from billkit.lab.monitoring import MonitoringAccess

WINDOW = dt.timedelta(hours=24)
DEFAULT_INTERVAL = 15.0  # s: the contract's rule evaluation interval
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
_HIDDEN = {"__name__", "alertstate"}


class AlertsError(RuntimeError):
    """The monitoring host cannot be read; the message says why and what to do."""


@dataclass(frozen=True)
class Alert:
    name: str
    state: str  # firing | resolved
    severity: str
    controls: tuple[str, ...]
    pci: tuple[str, ...]
    host: str
    started: dt.datetime
    ended: dt.datetime | None = None
    summary: str = ""
    # the episode began before the 24-hour window: `started` is the window's start
    started_before_window: bool = False
    labels: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def from_labels(cls, labels: dict[str, str], **kw: Any) -> Alert:
        return cls(
            name=labels.get("alertname", "?"), severity=labels.get("severity", ""),
            controls=_split(labels.get("control", "")), pci=_split(labels.get("pci", "")),
            host=labels.get("host", ""), labels={k: v for k, v in labels.items() if k not in _HIDDEN}, **kw,
        )  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        return {
            "alertname": self.name, "state": self.state, "severity": self.severity,
            "controls": list(self.controls), "pci": list(self.pci), "host": self.host or None,
            "started": _iso(self.started), "ended": _iso(self.ended) if self.ended else None,
            "started_before_window": self.started_before_window, "summary": self.summary, "labels": self.labels,
        }  # fmt: skip


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if k not in _HIDDEN))


# --- the HTTP side ---------------------------------------------------------------------------------------


class Prometheus:
    """The Prometheus HTTP API over TLS (the lab CA) with basic auth; every failure becomes an AlertsError."""

    def __init__(self, access: MonitoringAccess, timeout: float = 10.0) -> None:
        self.url = access.prometheus_url.rstrip("/")
        self.access = access
        try:
            context = ssl.create_default_context(cafile=str(access.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise AlertsError(
                f"cannot read the monitoring CA {access.ca_file} ({exc}): run ./billkit up to write it again"
            ) from None
        self.client = httpx.Client(base_url=self.url, auth=(access.username, access.password), verify=context,
                                   timeout=timeout)  # fmt: skip

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *_: object) -> None:
        self.client.close()

    def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        try:
            response = self.client.get(path, params=params)
        except httpx.TimeoutException:
            raise AlertsError(
                f"Prometheus at {self.url} did not answer within {self.client.timeout.read:.0f} s: check mon-1 "
                "(`billkit status`, `billkit ssh mon-1 systemctl status prometheus`)"
            ) from None
        except httpx.TransportError as exc:
            if _tls_failure(exc):
                raise AlertsError(
                    f"TLS verification of Prometheus at {self.url} failed against {self.access.ca_file} ({exc}): "
                    "the lab's CA or mon-1's certificate changed; run ./billkit up to renew them"
                ) from None
            raise AlertsError(
                f"cannot reach Prometheus at {self.url} ({exc}): is the lab running? `billkit status` shows it, "
                "./billkit up starts it"
            ) from None
        if response.status_code == 401:
            raise AlertsError(
                f"Prometheus at {self.url} refused the credentials of {self.access.username!r} (HTTP 401): the "
                "password kept for the lab no longer matches mon-1's; run ./billkit up to apply it again"
            )
        if response.status_code >= 400:
            raise AlertsError(f"Prometheus at {self.url} answered HTTP {response.status_code} to {path}: "
                              f"{response.text[:300]}")  # fmt: skip
        try:
            body = response.json()
        except ValueError:
            raise AlertsError(f"Prometheus at {self.url} answered {path} with something other than JSON") from None
        if body.get("status") != "success":
            raise AlertsError(f"Prometheus refused {path}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]


def _tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# --- firing now and the last day -------------------------------------------------------------------------


@dataclass
class _Rules:
    firing: list[Alert]
    interval: dict[str, float]  # alert name -> its group's evaluation interval (s)


def _parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _rules(prom: Prometheus) -> _Rules:
    data = prom.get("/api/v1/rules", {"type": "alert"})
    firing: list[Alert] = []
    interval: dict[str, float] = {}
    for group in data.get("groups", []):
        for rule in group.get("rules", []):
            interval[rule["name"]] = min(float(group.get("interval") or DEFAULT_INTERVAL),
                                         interval.get(rule["name"], float("inf")))  # fmt: skip
            for a in rule.get("alerts", []):
                if a.get("state") != "firing":
                    continue
                started = _parse_time(a["activeAt"]) + dt.timedelta(seconds=float(rule.get("duration") or 0))
                firing.append(Alert.from_labels(a["labels"], state="firing", started=started,
                                                summary=a.get("annotations", {}).get("summary", "")))  # fmt: skip
    return _Rules(firing, interval)


def _episodes(times: list[float], interval: float) -> list[tuple[float, float]]:
    """Runs of consecutive evaluations (a missed one or two is still the same episode): (first, last)."""
    runs: list[tuple[float, float]] = []
    for t in sorted(times):
        if runs and t - runs[-1][1] <= 2.5 * interval:
            runs[-1] = (runs[-1][0], t)
        else:
            runs.append((t, t))
    return runs


def _recent(prom: Prometheus, now: dt.datetime, rules: _Rules) -> list[Alert]:
    """Episodes of the last 24 hours that are over (the firing ones come from the rules themselves)."""
    seconds = int(WINDOW.total_seconds())
    query = f'ALERTS{{alertstate="firing"}}[{seconds}s]'
    data = prom.get("/api/v1/query", {"query": query, "time": f"{now.timestamp():.3f}"})
    window_start = now.timestamp() - seconds
    still = {_key(a.labels) for a in rules.firing}
    out: list[Alert] = []
    for series in data.get("result", []):
        labels: dict[str, str] = series["metric"]
        interval = rules.interval.get(labels.get("alertname", ""), DEFAULT_INTERVAL)
        ongoing = _key(labels) in still
        for first, last in _episodes([float(t) for t, _ in series.get("values", [])], interval):
            if ongoing and last >= now.timestamp() - 2.5 * interval:
                continue  # the episode going on: listed from the rules, with its summary
            out.append(Alert.from_labels(
                labels, state="resolved", started=dt.datetime.fromtimestamp(first, dt.UTC),
                ended=dt.datetime.fromtimestamp(last + interval, dt.UTC),
                started_before_window=first - window_start <= 1.5 * interval,
            ))  # fmt: skip
    return out


def list_alerts(access: MonitoringAccess, recent: bool = False, now: dt.datetime | None = None) -> list[Alert]:
    """The firing alerts, and with ``recent`` those resolved within the last 24 hours: firing first, the most
    severe and the newest first."""
    with Prometheus(access) as prom:
        rules = _rules(prom)
        alerts = list(rules.firing)
        if recent:
            alerts += _recent(prom, now or dt.datetime.now(dt.UTC), rules)
    return sorted(alerts, key=lambda a: (a.state != "firing", SEVERITY_ORDER.get(a.severity, 9),
                                         -(a.ended or a.started).timestamp(), a.name, a.host))  # fmt: skip


# --- output ----------------------------------------------------------------------------------------------


def _when(t: dt.datetime | None) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def print_table(alerts: list[Alert], console: Console, recent: bool) -> None:
    title = "alerts firing, and resolved in the last 24 h" if recent else "alerts firing"
    table = Table(title=f"{title} ({len(alerts)}), times in UTC")
    for col in ("State", "Alert", "Severity", "Controls", "Host", "Started", "Ended", "Summary"):
        table.add_column(col, overflow="fold")
    colours = {"critical": "red", "warning": "yellow"}
    for a in alerts:
        started = ("≤ " if a.started_before_window else "") + _when(a.started)
        severity = f"[{colours[a.severity]}]{a.severity}[/]" if a.severity in colours else a.severity
        table.add_row(a.state, a.name, severity, ", ".join(a.controls) or "-", a.host or "-", started,
                      _when(a.ended), a.summary or "-")  # fmt: skip
    console.print(table)
    if not alerts:
        console.print("nothing fires" + (" and nothing resolved in the last 24 hours" if recent else "") + ".")
