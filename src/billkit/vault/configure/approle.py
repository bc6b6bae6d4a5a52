"""AppRole for the app and the payment processor: roles, wrapped secret IDs, login."""

from __future__ import annotations

from typing import Any

import hvac

from billkit.vault.configure.api import converge, ensure_auth
from billkit.vault.configure.settings import BILLING_APP, PAYMENT_PROCESSOR, Settings


def ensure_approles(c: hvac.Client, settings: Settings, changes: list[str]) -> None:
    ensure_auth(c, "approle", "approle", changes, description="machine identities (app hosts)")
    for role, policies in ((BILLING_APP, [BILLING_APP]), (PAYMENT_PROCESSOR, [PAYMENT_PROCESSOR])):
        converge(c, f"auth/approle/role/{role}", {
            "token_policies": policies, "token_ttl": settings.app_token_ttl,
            "token_max_ttl": settings.app_token_max_ttl, "secret_id_ttl": settings.secret_id_ttl,
            "secret_id_num_uses": settings.secret_id_num_uses, "bind_secret_id": True,
            "secret_id_bound_cidrs": list(settings.app_cidrs), "token_bound_cidrs": list(settings.app_cidrs),
            "token_no_default_policy": True, "token_type": "service",
        }, changes)  # fmt: skip


def role_id(c: hvac.Client, role: str) -> str:
    return str(c.auth.approle.read_role_id(role)["data"]["role_id"])


def wrapped_secret_id(c: hvac.Client, role: str, wrap_ttl: str = "5m") -> str:
    """A new secret ID, response-wrapped: the caller only ever sees a single-use wrapping token."""
    resp = c.adapter.post(f"/v1/auth/approle/role/{role}/secret-id", json={}, headers={"X-Vault-Wrap-TTL": wrap_ttl})
    if not isinstance(resp, dict) or not resp.get("wrap_info"):
        raise RuntimeError(f"Vault did not wrap the secret ID of {role}")
    return str(resp["wrap_info"]["token"])


def with_token(c: hvac.Client, token: str | None) -> hvac.Client:
    """A client for the same server and CA with another token (or none)."""
    return hvac.Client(url=c.url, token=token, verify=getattr(c.adapter, "_kwargs", {}).get("verify", True))


def unwrap(c: hvac.Client, wrapping_token: str) -> dict[str, Any]:
    """Unwrap a response-wrapped secret: the wrapping token authenticates itself, once."""
    return with_token(c, wrapping_token).sys.unwrap()["data"]


def approle_login(c: hvac.Client, role_id_: str, wrapping_token: str) -> str:
    """Unwrap a delivered secret ID and log in with it (what the app does at start)."""
    secret_id = unwrap(c, wrapping_token)["secret_id"]
    return str(with_token(c, None).auth.approle.login(role_id_, secret_id, use_token=False)["auth"]["client_token"])
