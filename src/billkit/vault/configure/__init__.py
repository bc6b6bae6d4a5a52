"""Vault configuration as code: the desired state of every engine, key, role and policy.

Each ``ensure_*`` function reads what is there, writes only what differs and returns the
list of changes, so a second run reports nothing (idempotence is tested). The names are
a contract with the app: mount ``transit``, keys ``pan``, ``pii``, ``lookup-hmac``,
``backup``; policies ``billing-app`` and ``payment-processor``.

One module per section (api, settings, policies, transit, pki, ssh, approle, operators,
database, volumes, whole); callers use the names re-exported here.
"""

from __future__ import annotations

from pathlib import Path

from billkit.vault.configure.api import converge, ensure_auth, ensure_mount
from billkit.vault.configure.approle import (
    approle_login,
    ensure_approles,
    role_id,
    unwrap,
    with_token,
    wrapped_secret_id,
)
from billkit.vault.configure.database import (
    DB_APP,
    DB_AUDITOR,
    DB_MIGRATE,
    DB_TOKENIZER,
    MIGRATE_TTL,
    REVOCATION,
    USERNAME_TEMPLATE,
    Database,
    creation_statements,
    ensure_database,
)
from billkit.vault.configure.operators import MFAError, Operator, add_operator, ensure_operator_mfa, operator_login
from billkit.vault.configure.pki import IssuedCert, ensure_host_cert, ensure_pki, issue_cert
from billkit.vault.configure.policies import POLICY_DIR, ensure_policies, policy_texts
from billkit.vault.configure.settings import (
    BACKUP_PASSPHRASE,
    BILLING_APP,
    DATABASE,
    DAY,
    DB_CONNECTION,
    HOUR,
    KV,
    MFA_ENFORCEMENT,
    MFA_ISSUER,
    PAYMENT_PROCESSOR,
    PKI,
    PKI_ROLE,
    SSH,
    SSH_ROLE,
    TRANSIT,
    TRANSIT_KEYS,
    Settings,
    TransitKey,
    lab_settings,
)
from billkit.vault.configure.ssh import ensure_ssh_ca, sign_ssh_key
from billkit.vault.configure.transit import ensure_transit, retire_old_versions, rewrap
from billkit.vault.configure.volumes import CERT_AUTH, VOLUME_KEYS, ensure_kv, ensure_volume_identity, volume_key_path
from billkit.vault.configure.whole import Applied, apply


def source() -> bytes:
    """The code of every module here: fingerprints that must change whenever the configuration code does."""
    return b"".join(p.name.encode() + b"\0" + p.read_bytes() for p in sorted(Path(__file__).parent.glob("*.py")))


__all__ = [
    "BACKUP_PASSPHRASE",
    "BILLING_APP",
    "CERT_AUTH",
    "DATABASE",
    "DAY",
    "DB_APP",
    "DB_AUDITOR",
    "DB_CONNECTION",
    "DB_MIGRATE",
    "DB_TOKENIZER",
    "HOUR",
    "KV",
    "MFA_ENFORCEMENT",
    "MFA_ISSUER",
    "MIGRATE_TTL",
    "PAYMENT_PROCESSOR",
    "PKI",
    "PKI_ROLE",
    "POLICY_DIR",
    "REVOCATION",
    "SSH",
    "SSH_ROLE",
    "TRANSIT",
    "TRANSIT_KEYS",
    "USERNAME_TEMPLATE",
    "VOLUME_KEYS",
    "Applied",
    "Database",
    "IssuedCert",
    "MFAError",
    "Operator",
    "Settings",
    "TransitKey",
    "add_operator",
    "apply",
    "approle_login",
    "converge",
    "creation_statements",
    "ensure_approles",
    "ensure_auth",
    "ensure_database",
    "ensure_host_cert",
    "ensure_kv",
    "ensure_mount",
    "ensure_operator_mfa",
    "ensure_pki",
    "ensure_policies",
    "ensure_ssh_ca",
    "ensure_transit",
    "ensure_volume_identity",
    "issue_cert",
    "lab_settings",
    "operator_login",
    "policy_texts",
    "retire_old_versions",
    "rewrap",
    "role_id",
    "sign_ssh_key",
    "source",
    "unwrap",
    "volume_key_path",
    "with_token",
    "wrapped_secret_id",
]
