"""Transit: the encryption keys (never exportable, never deletable), rewrap and retiring old versions."""

from __future__ import annotations

from typing import Any

import hvac

from billkit.vault.configure.api import _differs, _get, _post, ensure_mount
from billkit.vault.configure.settings import HOUR, TRANSIT, Settings


def _hours(seconds: int) -> str:
    return f"{seconds // HOUR}h" if seconds % HOUR == 0 else f"{seconds}s"


def ensure_transit(c: hvac.Client, settings: Settings, changes: list[str]) -> None:
    ensure_mount(c, TRANSIT, "transit", changes, description="encryption as a service (card and personal data)")
    for key in settings.transit_keys:
        path = f"{TRANSIT}/keys/{key.name}"
        current = _get(c, path)
        if current is None:
            body: dict[str, Any] = {"type": key.type, "exportable": False, "allow_plaintext_backup": False}
            if key.key_size:
                body["key_size"] = key.key_size
            if key.auto_rotate_period:
                body["auto_rotate_period"] = _hours(key.auto_rotate_period)
            _post(c, path, body)
            changes.append(f"transit key {key.name} ({key.type})")
            current = _get(c, path) or {}
        elif current.get("type") != key.type:
            raise RuntimeError(
                f"transit key {key.name} exists with type {current.get('type')}, expected {key.type}: "
                "keys are never re-created automatically (that would destroy data); fix by hand"
            )
        desired = {"deletion_allowed": False, "exportable": False, "auto_rotate_period": key.auto_rotate_period}
        if _differs(current, desired):
            _post(c, f"{path}/config", {**desired, "auto_rotate_period": _hours(key.auto_rotate_period)})
            changes.append(f"transit key {key.name} config")


def rewrap(c: hvac.Client, key: str, ciphertexts: list[str]) -> list[str]:
    """Re-encrypt ciphertexts under the key's newest version without exposing the plaintext."""
    if not ciphertexts:
        return []
    resp = _post(c, f"{TRANSIT}/rewrap/{key}", {"batch_input": [{"ciphertext": ct} for ct in ciphertexts]})
    out = [item.get("ciphertext", "") for item in resp["data"]["batch_results"]]
    errors = [item["error"] for item in resp["data"]["batch_results"] if item.get("error")]
    if errors:
        raise RuntimeError(f"rewrap with {key} failed for {len(errors)} item(s): {errors[0]}")
    return out


def retire_old_versions(c: hvac.Client, key: str) -> int:
    """After every stored ciphertext was re-wrapped: older key versions can no longer decrypt (EAR-05)."""
    latest = int((_get(c, f"{TRANSIT}/keys/{key}") or {})["latest_version"])
    _post(c, f"{TRANSIT}/keys/{key}/config", {"min_decryption_version": latest})
    return latest
