"""The SSH user CA: short-lived operator certificates."""

from __future__ import annotations

from typing import Any

import hvac
import hvac.exceptions

from billkit.vault.configure.api import _get, _post, converge, ensure_mount
from billkit.vault.configure.settings import SSH, SSH_ROLE, Settings


def ensure_ssh_ca(c: hvac.Client, settings: Settings, changes: list[str]) -> str:
    """The SSH user CA; returns its public key (for the ssh_hardening role's TrustedUserCAKeys)."""
    ensure_mount(c, SSH, "ssh", changes, description="SSH user CA: short-lived operator certificates")
    try:
        current = _get(c, f"{SSH}/config/ca")
    except hvac.exceptions.InvalidRequest:  # "no default issuer currently configured"
        current = None
    if not current or not current.get("public_key"):
        _post(c, f"{SSH}/config/ca", {"generate_signing_key": True, "key_type": "ssh-ed25519"})
        changes.append("SSH user CA key generated")
        current = _get(c, f"{SSH}/config/ca") or {}
    converge(c, f"{SSH}/roles/{SSH_ROLE}", {
        "key_type": "ca", "allow_user_certificates": True, "allow_host_certificates": False,
        "allowed_users": ",".join(settings.ssh_users), "default_user": settings.ssh_users[0],
        "allowed_extensions": "permit-pty", "default_extensions": {"permit-pty": ""},
        "allow_user_key_ids": False, "ttl": settings.ssh_ttl, "max_ttl": settings.ssh_max_ttl,
    }, changes)  # fmt: skip
    return str(current["public_key"]).strip()


def sign_ssh_key(c: hvac.Client, public_key: str, user: str, ttl: int | None = None) -> str:
    body: dict[str, Any] = {"public_key": public_key, "valid_principals": user, "cert_type": "user"}
    if ttl:
        body["ttl"] = f"{ttl}s"
    return str(_post(c, f"{SSH}/sign/{SSH_ROLE}", body)["data"]["signed_key"]).strip()
