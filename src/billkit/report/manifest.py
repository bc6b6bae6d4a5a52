"""manifest.json (every file of the bundle and its SHA-256) and its Ed25519 signature by Vault's transit engine.

The signing key is non-exportable (src/billkit/vault/configure/settings.py, key ``report-signing``); the report's token
may only sign and verify with it (policy ``report-signing``). The bundle carries the signature and the public
key; ``verify`` checks both the signature (locally with that key and, when reachable, with Vault) and every hash.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from billkit.report.bundle import sha256_file

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig.json"
KEY = "report-signing"
MOUNT = "transit"


def files_of(folder: Path) -> list[str]:
    skip = {MANIFEST, SIGNATURE}
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name not in skip)


def write_manifest(folder: Path, generated: str) -> bytes:
    body = {
        "generated": generated,
        "algorithm": "sha256",
        "files": {name: sha256_file(folder / name) for name in files_of(folder)},
    }
    data = json.dumps(body, indent=2, sort_keys=True).encode()
    (folder / MANIFEST).write_bytes(data)
    return data


def sign(client: Any, data: bytes, folder: Path, mount: str = MOUNT, key: str = KEY) -> dict[str, Any]:
    """Sign with transit (ed25519) and store the signature with the public key of the version used."""
    resp = client.secrets.transit.sign_data(key, base64.b64encode(data).decode(), mount_point=mount)
    signature = resp["data"]["signature"]
    version = re.fullmatch(r"vault:v(\d+):.+", signature)
    assert version is not None, signature  # noqa: S101 - transit's own format
    keys = client.secrets.transit.read_key(key, mount_point=mount)["data"]["keys"]
    body = {
        "signed": True,
        "algorithm": "ed25519",
        "mount": mount,
        "key": key,
        "signature": signature,
        "public_key": keys[version.group(1)]["public_key"],
    }
    (folder / SIGNATURE).write_text(json.dumps(body, indent=2), encoding="utf-8")
    return body


def mark_unsigned(folder: Path, reason: str) -> None:
    body = {"signed": False, "reason": reason}
    (folder / SIGNATURE).write_text(json.dumps(body, indent=2), encoding="utf-8")


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _local_signature_ok(data: bytes, sig: dict[str, Any]) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    m = re.fullmatch(r"vault:v\d+:([A-Za-z0-9+/=]+)", str(sig.get("signature", "")))
    if not m:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(sig["public_key"])).verify(
            base64.b64decode(m.group(1)), data
        )
    except (InvalidSignature, ValueError, KeyError, TypeError):
        return False
    return True


def verify(folder: Path, client: Any | None = None, allow_unsigned: bool = False) -> Verdict:
    """Check the signature, then every hash; name each altered, missing or extra file."""
    v = Verdict()
    manifest, sigfile = folder / MANIFEST, folder / SIGNATURE
    if not manifest.is_file():
        v.problems.append(f"{MANIFEST}: missing; this is not a billkit report bundle, or it was truncated")
        return v
    data = manifest.read_bytes()
    sig: dict[str, Any] = {}
    try:
        sig = json.loads(sigfile.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        v.problems.append(f"{SIGNATURE}: missing or unreadable; the manifest cannot be trusted")
    if sig and not sig.get("signed"):
        msg = f"{MANIFEST}: UNSIGNED ({sig.get('reason', 'no reason given')})"
        (v.notes if allow_unsigned else v.problems).append(msg + ("" if allow_unsigned else "; --allow-unsigned"))
    elif sig:
        if not _local_signature_ok(data, sig):
            v.problems.append(f"{MANIFEST}: the signature does not verify with the bundle's public key (altered)")
        if client is not None:
            try:
                ok = client.secrets.transit.verify_signed_data(
                    sig["key"], base64.b64encode(data).decode(), signature=sig["signature"], mount_point=sig["mount"]
                )["data"]["valid"]
            except Exception as exc:  # noqa: BLE001 - Vault unreachable or refusing: said, not hidden
                v.notes.append(f"Vault could not confirm the signature: {exc}")
            else:
                if ok:
                    v.notes.append(f"Vault confirms the signature with {sig['mount']}/{sig['key']}")
                else:
                    v.problems.append(f"{MANIFEST}: Vault's key {sig['key']} did not sign this manifest")
    try:
        listed: dict[str, str] = json.loads(data)["files"]
    except (ValueError, KeyError, TypeError):
        v.problems.append(f"{MANIFEST}: not a manifest (no 'files' mapping)")
        return v
    present = set(files_of(folder))
    for name, digest in sorted(listed.items()):
        if name not in present:
            v.problems.append(f"{name}: missing")
        elif sha256_file(folder / name) != digest:
            v.problems.append(f"{name}: altered (SHA-256 differs from the manifest)")
    v.problems += [f"{name}: extra (not in the manifest)" for name in sorted(present - set(listed))]
    return v
