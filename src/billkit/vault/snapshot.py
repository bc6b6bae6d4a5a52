"""Encrypted raft snapshots of the Vault cluster (BAK-08).

A raft snapshot is already sealed by Vault's barrier (useless without the unseal keys); the kit
adds AES-256-GCM under a snapshot key kept with the unseal material (never inside Vault: a
backup of the key service must not need the key service to be read). The encrypted file then
goes to the backup store with the database backups.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import hvac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from billkit.vault.pki import write_private

MAGIC = b"BILLKIT-VAULT-SNAPSHOT-1\n"


@dataclass(frozen=True)
class Snapshot:
    path: Path
    size: int
    plaintext_sha256: str


def snapshot_key(folder: Path) -> bytes:
    path = folder / "snapshot.key"
    if not path.exists():
        write_private(path, AESGCM.generate_key(bit_length=256))
    return path.read_bytes()


def take(c: hvac.Client, dest: Path, key: bytes) -> Snapshot:
    """Take a raft snapshot through the API (backup-agent policy) and write it encrypted."""
    resp = c.sys.take_raft_snapshot()
    raw = resp.content if hasattr(resp, "content") else bytes(resp)
    if not raw.startswith(b"\x1f\x8b"):
        raise RuntimeError("Vault returned something that is not a raft snapshot (expected gzip data)")
    nonce = os.urandom(12)
    blob = MAGIC + nonce + AESGCM(key).encrypt(nonce, raw, MAGIC)
    write_private(dest, blob)
    return Snapshot(dest, len(blob), hashlib.sha256(raw).hexdigest())


def decrypt(path: Path, key: bytes) -> bytes:
    blob = path.read_bytes()
    if not blob.startswith(MAGIC):
        raise ValueError(f"{path} is not an encrypted billkit Vault snapshot")
    nonce, body = blob[len(MAGIC) : len(MAGIC) + 12], blob[len(MAGIC) + 12 :]
    return AESGCM(key).decrypt(nonce, body, MAGIC)
