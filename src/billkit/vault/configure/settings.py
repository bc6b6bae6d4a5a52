"""Names the app relies on, the transit keys and the settings that differ between environments."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from billkit.vault.server import DOMAIN

TRANSIT = "transit"
PKI = "pki_int"
SSH = "ssh-client-signer"
DATABASE = "database"
KV = "secret"
PKI_ROLE = "service"
SSH_ROLE = "operator"
DB_CONNECTION = "billing"
MFA_ISSUER = "billkit"
MFA_ENFORCEMENT = "operators-totp"
BILLING_APP = "billing-app"
PAYMENT_PROCESSOR = "payment-processor"
BACKUP_PASSPHRASE = "backup/pgbackrest"  # noqa: S105 - a KV path, not a secret

HOUR = 3600
DAY = 24 * HOUR


@dataclass(frozen=True)
class TransitKey:
    name: str
    type: str
    auto_rotate_period: int = 0  # seconds; 0 = never (HMAC keys: rotation changes every lookup value)
    key_size: int = 0  # HMAC keys only


# EAR-05: AES-256-GCM with automatic rotation for card data (30 days) and personal data (90 days).
TRANSIT_KEYS: tuple[TransitKey, ...] = (
    TransitKey("pan", "aes256-gcm96", 30 * DAY),
    TransitKey("pii", "aes256-gcm96", 90 * DAY),
    TransitKey("lookup-hmac", "hmac", key_size=32),
    TransitKey("backup", "aes256-gcm96", 365 * DAY),
    # LOG-08: signs the app's audit chain head; its public keys are what auditors verify heads with.
    TransitKey("audit-head", "ed25519"),
    # CMP-07: signs the evidence bundle's manifest (billkit report); only its public key ever leaves Vault.
    TransitKey("report-signing", "ed25519"),
)


@dataclass(frozen=True)
class Settings:
    """What differs between environments (lab, AWS, loopback tests)."""

    domain: str = DOMAIN
    # Bare names allowed in service certificates besides *.domain (the lab's host names).
    service_names: tuple[str, ...] = ()
    allow_localhost: bool = False
    # Where the app runs: AppRole secret IDs and tokens only work from there.
    app_cidrs: tuple[str, ...] = ()
    cert_ttl: int = 24 * HOUR
    cert_max_ttl: int = 72 * HOUR
    ssh_users: tuple[str, ...] = ("ops",)  # the lab's admin account (billkit.lab.state.ADMIN_USER)
    ssh_ttl: int = 30 * 60
    ssh_max_ttl: int = HOUR
    secret_id_ttl: int = 24 * HOUR
    secret_id_num_uses: int = 0
    app_token_ttl: int = HOUR
    app_token_max_ttl: int = 24 * HOUR
    db_default_ttl: int = HOUR
    db_max_ttl: int = 4 * HOUR
    operator_token_ttl: int = HOUR
    operator_token_max_ttl: int = 8 * HOUR
    transit_keys: tuple[TransitKey, ...] = TRANSIT_KEYS
    extra: dict[str, Any] = field(default_factory=dict)


def lab_settings() -> Settings:
    from infra.topology import lab_hosts, tier

    return Settings(
        service_names=tuple(h.name for h in lab_hosts()),
        app_cidrs=(tier("app").lab_cidr,),
    )
