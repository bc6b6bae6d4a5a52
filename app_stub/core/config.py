"""Settings of the billing app: secure defaults, read from ``BILLKIT_APP_*`` environment variables.

Outside ``development`` the app refuses to start with a default or missing secret (CMP-03),
with personal-data encryption switched off, or with cookies that are not Secure.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

DEV_SECRET = "development-only-secret-change-me"  # noqa: S105 - the refused default, not a secret
ENVIRONMENTS = ("development", "test", "production")


class SettingsError(ValueError):
    """The settings are unsafe or incomplete; the message says which and what to set."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Settings:
    environment: str = "production"
    session_secret: str = DEV_SECRET
    database_url: str = ""  # the billing_app role (no user/password when the Vault roles below are set)
    tokenizer_database_url: str = ""  # the billing_tokenizer role (card vault)
    # RBAC-05: Vault database-engine roles giving short-lived logins for the two URLs above.
    database_vault_role: str = ""
    tokenizer_vault_role: str = ""
    database_vault_mount: str = "database"
    vault_url: str = "https://127.0.0.1:8200"
    vault_ca_file: str | None = None
    vault_role_id: str = ""
    vault_secret_id: str = ""
    vault_processor_role_id: str = ""
    vault_processor_secret_id: str = ""
    # The two secret IDs are response-wrapping tokens: unwrapped once at start (single use, short TTL),
    # so what the deployment leaves on disk is worthless after the app has started.
    vault_secret_ids_wrapped: bool = False
    transit_mount: str = "transit"
    pii_encryption: bool = True
    secure_cookies: bool = True
    idle_timeout: dt.timedelta = dt.timedelta(minutes=15)  # PCI DSS 8.2.8
    session_max_age: dt.timedelta = dt.timedelta(hours=8)  # absolute limit, however active the session
    max_failed_logins: int = 10  # PCI DSS 8.3.4
    lockout: dt.timedelta = dt.timedelta(minutes=30)
    # a failure counter starts over only after this long without failures (known and unknown names alike)
    failure_window: dt.timedelta = dt.timedelta(days=1)
    role_request_ttl: dt.timedelta = dt.timedelta(days=7)  # a two-person request left undecided expires
    password_min_length: int = 12  # PCI DSS 8.3.6
    password_history: int = 4  # PCI DSS 8.3.7
    password_max_age: dt.timedelta = dt.timedelta(days=90)  # PCI DSS 8.3.9
    argon2_time_cost: int = 3  # argon2id, RFC 9106 low-memory profile
    argon2_memory_kib: int = 65536
    argon2_lanes: int = 4
    argon2_concurrency: int = 4  # password hashes computed at once (each holds argon2_memory_kib)
    training_version: str = "2026.1"
    training_validity: dt.timedelta = dt.timedelta(days=365)
    issuer: str = "billkit"
    db_pool_size: int = 8
    # APP-03: payments left pending (a crash, a lost response) are finished at start and on this timer,
    # once older than the grace period, so a request still in flight is never raced.
    payment_recovery_interval: dt.timedelta = dt.timedelta(seconds=60)
    payment_recovery_grace: dt.timedelta = dt.timedelta(seconds=120)
    # LOG-07: audit records take the client address from X-Forwarded-For (and the request ID from
    # X-Request-Id) only when the peer is one of these addresses or networks, comma-separated: the
    # edge's address on the app tier. Empty: no peer is trusted, the peer's own address is recorded.
    trusted_proxies: str = ""
    # LOG-08: the app signs the audit chain's head this often and after every N-th record; the
    # verifier wants a signed head no older than three intervals.
    audit_head_interval: dt.timedelta = dt.timedelta(seconds=60)
    audit_head_every: int = 100
    # MON-03: the security counters (app_stub.metrics) on an internal port, over mutual TLS only: the
    # client must present a certificate of this CA (the monitoring host's). 0: not served.
    metrics_port: int = 0
    metrics_address: str = "127.0.0.1"
    metrics_cert_file: str = ""
    metrics_key_file: str = ""
    metrics_ca_file: str = ""
    # ENC-07: the kit's one TLS policy (billkit.tls_policy): in TLS 1.2, forward-secret AEAD suites only.
    metrics_tls_ciphers: str = "ECDHE+AESGCM:ECDHE+CHACHA20"
    clock: Callable[[], dt.datetime] = field(default=utcnow, repr=False)

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from ``BILLKIT_APP_<FIELD>`` variables, then ``overrides``."""
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            raw = os.environ.get(f"BILLKIT_APP_{f.name.upper()}")
            path = os.environ.get(f"BILLKIT_APP_{f.name.upper()}_FILE")  # e.g. from systemd's LoadCredential=
            if raw is None and path:
                try:
                    raw = Path(path).read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise SettingsError(f"BILLKIT_APP_{f.name.upper()}_FILE: cannot read {path}: {exc}") from None
            if raw is None or f.name == "clock":
                continue
            if f.type in ("bool", bool):
                values[f.name] = raw.strip().lower() in ("1", "true", "yes", "on")
            elif f.type in ("int", int):
                values[f.name] = int(raw)
            elif f.type in ("dt.timedelta",):
                values[f.name] = dt.timedelta(seconds=float(raw))
            else:
                values[f.name] = raw
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """``trusted_proxies`` parsed (ValueError on an entry that is no address or network)."""
        entries = [p.strip() for p in self.trusted_proxies.split(",")]
        return tuple(ipaddress.ip_network(p, strict=False) for p in entries if p)

    def validate(self) -> None:
        """Refuse unsafe settings outside development (CMP-03)."""
        if self.environment not in ENVIRONMENTS:
            raise SettingsError(f"environment must be one of {', '.join(ENVIRONMENTS)}, not {self.environment!r}")
        problems = []
        if self.payment_recovery_interval <= dt.timedelta(0) or self.payment_recovery_grace < dt.timedelta(0):
            problems.append("BILLKIT_APP_PAYMENT_RECOVERY_INTERVAL must be positive and the grace period not negative")
        if not self.database_url or not self.tokenizer_database_url:
            problems.append("set BILLKIT_APP_DATABASE_URL and BILLKIT_APP_TOKENIZER_DATABASE_URL")
        try:
            self.trusted_networks()
        except ValueError:
            problems.append("BILLKIT_APP_TRUSTED_PROXIES must list IP addresses or networks, comma-separated")
        if self.audit_head_interval <= dt.timedelta(0) or self.audit_head_every < 1:
            problems.append("BILLKIT_APP_AUDIT_HEAD_INTERVAL and BILLKIT_APP_AUDIT_HEAD_EVERY must be positive")
        if self.metrics_port and not (self.metrics_cert_file and self.metrics_key_file and self.metrics_ca_file):
            problems.append(
                "BILLKIT_APP_METRICS_PORT needs BILLKIT_APP_METRICS_CERT_FILE, _KEY_FILE and _CA_FILE: the counters "
                "are served over mutual TLS only"
            )
        if self.environment != "development":
            if self.session_secret == DEV_SECRET or len(self.session_secret) < 32:
                problems.append("BILLKIT_APP_SESSION_SECRET is the default or shorter than 32 characters")
            for name in ("vault_role_id", "vault_secret_id", "vault_processor_role_id", "vault_processor_secret_id"):
                if not getattr(self, name):
                    problems.append(f"BILLKIT_APP_{name.upper()} is not set")
            if not 1 <= self.max_failed_logins <= 10 or self.lockout < dt.timedelta(minutes=30):
                problems.append("lockout must follow at most 10 failures and last at least 30 minutes (PCI DSS 8.3.4)")
            if self.session_max_age > dt.timedelta(hours=12):
                problems.append("sessions must end after at most 12 hours, however active")
            if self.idle_timeout > dt.timedelta(minutes=15):
                problems.append("the idle timeout must be 15 minutes or less (PCI DSS 8.2.8)")
            if (
                self.password_min_length < 12
                or self.password_history < 4
                or self.password_max_age > dt.timedelta(days=90)
            ):
                problems.append("password policy weaker than PCI DSS 8.3.6/8.3.7/8.3.9 (12 chars, 4 history, 90 days)")
            if self.argon2_memory_kib < 19456 or self.argon2_time_cost < 2:
                problems.append("argon2id parameters below OWASP's minimum (19 MiB, 2 passes)")
            if not self.pii_encryption:
                problems.append("personal-data encryption may be switched off only in development")
            if not self.secure_cookies:
                problems.append("cookies must be Secure outside development")
            for url in (self.database_url, self.tokenizer_database_url):
                if "sslmode=disable" in url or "sslmode=verify-full" not in url:
                    problems.append("the database URLs must use sslmode=verify-full")
                    break
            if self.environment == "production" and not (self.database_vault_role and self.tokenizer_vault_role):
                problems.append(
                    "production logs in to PostgreSQL only with Vault dynamic credentials (RBAC-05): set "
                    "BILLKIT_APP_DATABASE_VAULT_ROLE and BILLKIT_APP_TOKENIZER_VAULT_ROLE"
                )
            if not self.vault_url.startswith("https://"):
                problems.append("the Vault URL must be https://")
        if problems:
            raise SettingsError(
                f"refusing to start in {self.environment}: " + "; ".join(problems) + " (see app_stub/core/config.py)"
            )
