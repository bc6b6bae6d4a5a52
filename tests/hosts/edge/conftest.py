"""Fixtures of the edge checks: the published HTTPS entry, the lab CA, SSH to lab hosts, a staff account."""

from __future__ import annotations

import json
import secrets
import ssl
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyotp
import pytest

from infra.topology import LAB_PUBLISHED_HTTPS, hosts_of, lab_floating_address

BASE_URL = f"https://127.0.0.1:{LAB_PUBLISHED_HTTPS}"
AUDIT_LOG = "/var/log/nginx/modsec_audit.log"


def ssh(host: str, command: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    from billkit.lab.hosts import ssh_command
    from infra.topology import lab_host

    proc = subprocess.CompletedProcess([], 255)
    for _ in range(3):  # 255: SSH itself failed (a busy machine can miss the banner timeout)
        proc = subprocess.run(ssh_command(lab_host(host), command), input=stdin, capture_output=True, text=True,
                              timeout=timeout, check=False)  # fmt: skip
        if proc.returncode != 255:
            break
    return proc


def active_edge() -> str:
    """The edge host holding the floating address: the one the published port reaches now."""
    vip = f" {lab_floating_address('waf')}/"
    holders = [h.name for h in hosts_of("waf") if vip in ssh(h.name, "ip -4 -o addr show").stdout]
    assert len(holders) == 1, f"the floating address must be on exactly one edge host, it is on {holders}"
    return holders[0]


@pytest.fixture(scope="session")
def lab_ca(lab_up: None) -> Path:
    from billkit.lab import app

    ca = app.tls_staging() / "ca.pem"
    assert ca.exists(), f"{ca} is missing: run `billkit up`"
    return ca


@pytest.fixture(scope="session")
def tls_context(lab_ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(lab_ca))


@pytest.fixture()
def web(tls_context: ssl.SSLContext) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=BASE_URL, verify=tls_context, timeout=30, follow_redirects=False) as client:
        yield client


class AuditLog:
    """The WAF's ModSecurity audit log on the active edge host (JSON, one transaction per line), read by offset."""

    def __init__(self) -> None:
        self.host = active_edge()

    def size(self) -> int:
        proc = ssh(self.host, f"sudo stat -c %s {AUDIT_LOG}")
        assert proc.returncode == 0, proc.stderr
        return int(proc.stdout.strip())

    def since(self, offset: int) -> list[dict]:
        proc = ssh(self.host, f"sudo tail -c +{offset + 1} {AUDIT_LOG}")
        assert proc.returncode == 0, proc.stderr
        return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


@pytest.fixture()
def audit_log(lab_up: None) -> AuditLog:
    return AuditLog()


def rule_ids(entry: dict) -> list[str]:
    return [m.get("details", {}).get("ruleId", "") for m in entry.get("transaction", {}).get("messages", [])]


def crs_matches(entries: list[dict]) -> str:
    """The audit-log entries as "uri: [rule IDs]" (for assertion messages)."""
    return "; ".join(f"{e.get('transaction', {}).get('request', {}).get('uri', '?')}: {rule_ids(e)}" for e in entries)


def answered_by_the_edge(r: httpx.Response) -> bool:
    """nginx's own error page (the WAF's 403, a rate limit's 429, a body refused with 400 or 413), not the app."""
    return "<center>nginx</center>" in r.text


@dataclass
class Clerk:
    username: str
    password: str


def make_clerk(expired: bool = False) -> Clerk:
    """A billing clerk made for these checks directly in the lab database (as the schema owner).

    ``expired``: the password must be changed at first login, as the first admin's one-time password.
    """
    import psycopg
    from argon2 import PasswordHasher

    from app_stub.core.config import Settings
    from billkit.lab import app

    s = Settings()
    username = f"edge-check-{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(18) + "7a"
    ph = PasswordHasher(time_cost=s.argon2_time_cost, memory_cost=s.argon2_memory_kib, parallelism=s.argon2_lanes)
    changed = "now() - interval '1 year'" if expired else "now()"
    with app.owner_dsn() as dsn, psycopg.connect(dsn) as conn:
        (uid,) = conn.execute(
            "INSERT INTO staff.users (username, password_hash, password_changed_at, created_at) "  # noqa: S608
            f"VALUES (%s, %s, {changed}, now() - interval '1 year') RETURNING id",
            (username, ph.hash(password)),
        ).fetchone()  # type: ignore[misc]
        conn.execute("INSERT INTO staff.user_roles (user_id, role, granted_at) VALUES (%s, 'billing_clerk', now())",
                     (uid,))  # fmt: skip
    return Clerk(username, password)


@pytest.fixture(scope="session")
def clerk(lab_up: None) -> Clerk:
    return make_clerk()


def log_in(web: httpx.Client, user: Clerk) -> str:
    """Log a new member of staff in through the WAF (password, TOTP enrolment, training), as the JSON
    API's clients do; returns the session's CSRF token (the client keeps the session cookie)."""
    r = web.post("/api/login", json={"username": user.username, "password": user.password})
    assert r.status_code == 200 and r.json()["stage"] == "enrol", r.text[:200]
    csrf = r.json()["csrf_token"]
    r = web.post("/api/mfa/enrol", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text[:200]
    secret = urllib.parse.parse_qs(urllib.parse.urlparse(r.json()["otpauth_uri"]).query)["secret"][0]
    r = web.post("/api/mfa/enrol/confirm", json={"code": pyotp.totp.TOTP(secret).now()}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and len(r.json()["recovery_codes"]) >= 5, r.text[:200]
    csrf = r.json()["csrf_token"]
    r = web.post("/api/training/acknowledge", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text[:200]
    return csrf
