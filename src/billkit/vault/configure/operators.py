"""Operators: userpass with TOTP login MFA, enrolment and the two-phase login."""

from __future__ import annotations

from dataclasses import dataclass

import hvac
import hvac.exceptions

from billkit.vault.configure.api import _differs, _get, _list, _post, converge, ensure_auth
from billkit.vault.configure.settings import MFA_ENFORCEMENT, MFA_ISSUER, Settings


def ensure_operator_mfa(c: hvac.Client, settings: Settings, changes: list[str]) -> str:
    """userpass for operators with TOTP enforced at login; returns the TOTP method ID."""
    accessor = ensure_auth(c, "userpass", "userpass", changes, description="operators (password + TOTP)")
    # Lock a user out for 15 minutes after 5 failed logins (the tune endpoint reads back flattened).
    lockout = {"lockout_threshold": 5, "lockout_duration": "15m", "lockout_counter_reset_duration": "15m",
               "lockout_disable": False}  # fmt: skip
    tune = _get(c, "sys/auth/userpass/tune") or {}
    if _differs(tune, {"user_lockout_threshold": 5, "user_lockout_duration": 900, "user_lockout_disable": False}):
        _post(c, "sys/auth/userpass/tune", {"user_lockout_config": lockout})
        changes.append("userpass lockout after 5 failures")
    method_id = ""
    for mid in _list(c, "identity/mfa/method/totp"):
        m = _get(c, f"identity/mfa/method/totp/{mid}") or {}
        if m.get("issuer") == MFA_ISSUER:
            method_id = mid
            break
    desired = {"issuer": MFA_ISSUER, "period": 30, "digits": 6, "algorithm": "SHA1", "key_size": 20,
               "skew": 1, "max_validation_attempts": 5}  # fmt: skip
    if not method_id:
        method_id = _post(c, "identity/mfa/method/totp", desired)["data"]["method_id"]
        changes.append("TOTP MFA method")
    else:
        converge(c, f"identity/mfa/method/totp/{method_id}", desired, changes)
    converge(c, f"identity/mfa/login-enforcement/{MFA_ENFORCEMENT}", {
        "mfa_method_ids": [method_id], "auth_method_accessors": [accessor],
    }, changes)  # fmt: skip
    return method_id


@dataclass(frozen=True)
class Operator:
    username: str
    totp_secret: str  # base32; what an authenticator app enrols from the otpauth URL
    otpauth_url: str


def add_operator(c: hvac.Client, username: str, password: str, policies: tuple[str, ...] = ("operator",)) -> Operator:
    """Create (or update) an operator: userpass user, identity entity, TOTP secret (enrolled once)."""
    _post(c, f"auth/userpass/users/{username}", {
        "password": password, "token_policies": list(policies), "token_ttl": "1h", "token_max_ttl": "8h",
        "token_no_default_policy": False, "token_type": "service",
    })  # fmt: skip
    accessor = c.sys.list_auth_methods()["data"]["userpass/"]["accessor"]
    entity = _get(c, f"identity/entity/name/{username}")
    if entity is None:
        entity = _post(c, "identity/entity", {"name": username, "metadata": {"role": "operator"}})["data"]
    entity_id = entity["id"]
    aliases = entity.get("aliases") or []
    if not any(a.get("mount_accessor") == accessor for a in aliases):
        _post(c, "identity/entity-alias", {"name": username, "canonical_id": entity_id, "mount_accessor": accessor})
    method_id = next(
        mid for mid in _list(c, "identity/mfa/method/totp")
        if (_get(c, f"identity/mfa/method/totp/{mid}") or {}).get("issuer") == MFA_ISSUER
    )  # fmt: skip
    # Re-enrol: destroy an old secret first (admin-generate refuses to overwrite one).
    _post(c, "identity/mfa/method/totp/admin-destroy", {"method_id": method_id, "entity_id": entity_id})
    gen = _post(c, "identity/mfa/method/totp/admin-generate", {"method_id": method_id, "entity_id": entity_id})
    url = gen["data"]["url"]
    from urllib.parse import parse_qs, urlparse

    secret = parse_qs(urlparse(url).query)["secret"][0]
    return Operator(username, secret, url)


class MFAError(RuntimeError):
    """Login MFA failed (wrong or reused code)."""


def operator_login(c: hvac.Client, username: str, password: str, totp_code: str) -> str:
    """Password, then TOTP (login MFA, two phases); returns the operator's token."""
    first = c.adapter.post(f"/v1/auth/userpass/login/{username}", json={"password": password})
    auth = first["auth"] if isinstance(first, dict) else None
    if not auth:
        raise MFAError("login returned no auth block")
    req = auth.get("mfa_requirement")
    if not req:
        raise MFAError(f"login of {username} was not asked for MFA: the TOTP enforcement is missing")
    method_ids = [m["id"] for con in req["mfa_constraints"].values() for m in con["any"]]
    try:
        second = c.adapter.post(
            "/v1/sys/mfa/validate",
            json={"mfa_request_id": req["mfa_request_id"], "mfa_payload": {method_ids[0]: [totp_code]}},
        )
    except hvac.exceptions.VaultError as exc:
        raise MFAError(f"TOTP refused for {username}: {exc}") from None
    if not isinstance(second, dict) or not second.get("auth"):
        raise MFAError(f"TOTP validation for {username} returned no token")
    return str(second["auth"]["client_token"])
