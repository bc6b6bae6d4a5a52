"""The app's security counters for Prometheus, read from the audit records that committed.

A counter moves only when its event is in the hash-chained audit log (``app_stub.audit.journaled``
hands every committed record here), so the metrics and the log cannot disagree. Labels are bounded:
actions, outcomes, roles and permissions come from the code; a staff actor is one of the staff
accounts. Served on the app host's internal metrics port, never through the WAF.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS = Counter("billkit_app_audit_events", "Committed audit events", ["action", "outcome"], registry=REGISTRY)
LOGIN_FAILURES = Counter(
    "billkit_app_login_failures",
    "Staff secrets refused (stage: login, mfa, password_change; outcome: failure, refused-locked, refused-disabled)",
    ["stage", "outcome"],
    registry=REGISTRY,
)
LOCKOUTS = Counter("billkit_app_lockouts", "Staff accounts locked after repeated failures", registry=REGISTRY)
STEP_UP_FAILURES = Counter(
    "billkit_app_step_up_failures", "Step-up codes refused (missing, wrong, or the account locked)", ["outcome"],
    registry=REGISTRY,
)  # fmt: skip
DETOKENIZATIONS = Counter(
    "billkit_app_detokenizations", "Card numbers revealed, by staff account", ["actor"], registry=REGISTRY
)
ROLE_CHANGES = Counter(
    "billkit_app_role_changes", "Role grants, revocations and requests", ["change", "role", "outcome"],
    registry=REGISTRY,
)  # fmt: skip
ACCESS_DENIED = Counter(
    "billkit_app_access_denied", "Requests refused for a missing permission", ["permission"], registry=REGISTRY
)
PAYMENTS = Counter("billkit_app_payments", "Payment events by outcome", ["outcome"], registry=REGISTRY)

# Every place a staff secret can be guessed: the password at login, the second factor, the old
# password when changing it.
_SIGN_IN = {"auth.login": "login", "auth.mfa": "mfa", "auth.password_change": "password_change"}
_ROLE = {"role.grant": "grant", "role.revoke": "revoke", "role.request": "request"}


def observe(records: Iterable[dict[str, Any]]) -> None:
    """Count committed audit records (the dicts ``app_stub.audit.append`` journals)."""
    for r in records:
        action, outcome = str(r.get("action", "")), str(r.get("outcome", "ok"))
        detail = r.get("detail") or {}
        EVENTS.labels(action, outcome).inc()
        if action in _SIGN_IN and outcome != "ok":
            LOGIN_FAILURES.labels(_SIGN_IN[action], outcome).inc()
        elif action == "auth.lockout":
            LOCKOUTS.inc()
        elif action == "auth.step_up" and outcome != "ok":
            STEP_UP_FAILURES.labels(outcome).inc()
        elif action == "card.detokenize" and outcome == "ok":
            DETOKENIZATIONS.labels(str(r.get("actor", "-"))).inc()
        elif action in _ROLE:
            ROLE_CHANGES.labels(_ROLE[action], str(detail.get("role", "-")), outcome).inc()
        elif action == "access.denied":
            ACCESS_DENIED.labels(str(r.get("target", "-"))).inc()
        elif action.startswith("payment."):
            PAYMENTS.labels(action.removeprefix("payment.") if outcome == "ok" else outcome).inc()


def serve(port: int, address: str, certfile: str, keyfile: str, cafile: str, ciphers: str) -> Callable[[], None]:
    """Serve the counters over TLS 1.2+ with ``ciphers`` (OpenSSL notation) to clients holding a certificate of
    ``cafile`` only; return the stop.

    One server per process: the counters live in the process that counts them, so the app runs one
    worker per host (the billing_app role refuses more while the port is set).
    """
    httpd, _ = start_http_server(
        port, address, REGISTRY, certfile=certfile, keyfile=keyfile, client_cafile=cafile,
        client_auth_required=True, tls_min_version=ssl.TLSVersion.TLSv1_2,
    )  # fmt: skip
    # The client library takes no cipher list: its listening socket's context sets every later handshake's.
    listener = httpd.socket
    if not isinstance(listener, ssl.SSLSocket):
        raise TypeError("the metrics listener is not TLS")
    listener.context.set_ciphers(ciphers)
    return httpd.shutdown
