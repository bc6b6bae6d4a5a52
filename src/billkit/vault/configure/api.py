"""Small helpers over the HTTP API.

The underscored helpers are internal to this package: its modules share them, callers outside do not.
"""

from __future__ import annotations

from typing import Any

import hvac
import hvac.exceptions


def _get(c: hvac.Client, path: str) -> dict[str, Any] | None:
    try:
        resp = c.adapter.get(f"/v1/{path}")
    except hvac.exceptions.InvalidPath:
        return None
    if not isinstance(resp, dict):
        return None
    return resp.get("data") or {}


def _post(c: hvac.Client, path: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    resp = c.adapter.post(f"/v1/{path}", json=data or {})
    return resp if isinstance(resp, dict) else {}


def _list(c: hvac.Client, path: str) -> list[str]:
    try:
        resp = c.adapter.list(f"/v1/{path}")
    except hvac.exceptions.InvalidPath:
        return []
    if not isinstance(resp, dict):
        return []
    return list(resp.get("data", {}).get("keys", []))


def _norm(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return sorted(str(v) for v in value)
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return int(value)
    return value


def _differs(current: dict[str, Any] | None, desired: dict[str, Any]) -> list[str]:
    if current is None:
        return list(desired)
    return [k for k, v in desired.items() if _norm(current.get(k)) != _norm(v)]


def converge(c: hvac.Client, path: str, desired: dict[str, Any], changes: list[str], read_path: str = "") -> None:
    """Write ``desired`` at ``path`` unless every field already has that value."""
    diff = _differs(_get(c, read_path or path), desired)
    if diff:
        _post(c, path, desired)
        changes.append(f"{path} ({', '.join(sorted(diff))})")


def ensure_mount(c: hvac.Client, path: str, type_: str, changes: list[str], options: dict | None = None,
                 description: str = "", max_lease_ttl: str | None = None) -> None:  # fmt: skip
    mounts = c.sys.list_mounted_secrets_engines()["data"]
    if f"{path}/" not in mounts:
        config = {"max_lease_ttl": max_lease_ttl} if max_lease_ttl else None
        c.sys.enable_secrets_engine(type_, path=path, options=options, description=description, config=config)
        changes.append(f"mounted {type_} at {path}/")


def ensure_auth(c: hvac.Client, path: str, type_: str, changes: list[str], description: str = "") -> str:
    """Enable an auth method (idempotent); return its accessor."""
    methods = c.sys.list_auth_methods()["data"]
    if f"{path}/" not in methods:
        c.sys.enable_auth_method(type_, path=path, description=description)
        changes.append(f"enabled auth {type_} at {path}/")
        methods = c.sys.list_auth_methods()["data"]
    return methods[f"{path}/"]["accessor"]
