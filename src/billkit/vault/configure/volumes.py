"""A host's encrypted volume (its key in KV, read by the host itself over cert auth) and the KV mount."""

from __future__ import annotations

import base64
import secrets
import time

import hvac
import hvac.exceptions

from billkit.vault.configure.api import _get, _post, converge, ensure_auth, ensure_mount
from billkit.vault.configure.settings import BACKUP_PASSPHRASE, KV

CERT_AUTH = "cert"
VOLUME_KEYS = "volumes"  # KV v2 folder: secret/data/volumes/<host>


def volume_key_path(host: str) -> str:
    return f"{KV}/data/{VOLUME_KEYS}/{host}"


def ensure_volume_identity(c: hvac.Client, host: str, address: str, ca_pem: str, changes: list[str],
                           token_ttl: int = 5 * 60) -> None:  # fmt: skip
    """The volume key of one host (32 random bytes, made once, never re-made) and the host's login.

    The host logs in with its own PKI certificate (cert auth: common name = host name, chain to
    ``ca_pem``, only from its address) and gets a 5-minute token whose only right is reading that key.
    """
    ensure_kv(c, changes)
    path = volume_key_path(host)
    if _get(c, path) is None:
        # cas=0: written only if absent, so a race never replaces a key that encrypts data.
        _post(c, path, {"options": {"cas": 0}, "data": {"key": base64.b64encode(secrets.token_bytes(32)).decode()}})
        changes.append(f"volume key of {host}")
    policy = f"volume-{host}"
    text = f'# {host} reads its data volume key (EAR-01).\npath "{path}" {{\n  capabilities = ["read"]\n}}\n'
    current = _get(c, f"sys/policies/acl/{policy}")
    if current is None or current.get("policy", "").strip() != text.strip():
        c.sys.create_or_update_acl_policy(policy, text)
        changes.append(f"policy {policy}")
    ensure_auth(c, CERT_AUTH, "cert", changes, description="host identities (PKI certificates)")
    converge(c, f"auth/{CERT_AUTH}/certs/{host}", {
        "certificate": ca_pem, "allowed_common_names": [host], "token_policies": [policy],
        "token_bound_cidrs": [address], "token_ttl": token_ttl, "token_max_ttl": token_ttl,
        "token_no_default_policy": True, "token_type": "service",
    }, changes)  # fmt: skip


# --- KV: secrets the platform itself needs ----------------------------------------------------


def ensure_kv(c: hvac.Client, changes: list[str]) -> None:
    ensure_mount(c, KV, "kv", changes, options={"version": "2"}, description="platform secrets")
    deadline = time.monotonic() + 30
    while True:  # a fresh KV v2 mount answers 400 "upgrading" for a moment
        try:
            current = _get(c, f"{KV}/data/{BACKUP_PASSPHRASE}")
            break
        except hvac.exceptions.InvalidRequest:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    if current is None:
        _post(c, f"{KV}/data/{BACKUP_PASSPHRASE}", {"data": {"passphrase": secrets.token_urlsafe(48)}})
        changes.append("backup repository passphrase")
