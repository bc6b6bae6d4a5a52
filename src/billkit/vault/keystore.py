"""The unseal keys of the lab's Vault cluster, encrypted at rest in the state folder.

AES-256-GCM (``cryptography``) under a key file; both files are 0600 in a 0700 folder. This
protects the shares from casual reading and from backups of the state folder that leave the key
file behind. It is the lab's stand-in: in AWS the cluster auto-unseals with KMS and no share is
ever written to disk. A real operator would hand the 5 shares to 5 custodians instead.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from billkit.vault.pki import write_private

AAD = b"billkit-vault-unseal-v1"


class KeystoreError(RuntimeError):
    """The unseal key store is missing, unreadable or has unsafe permissions."""


@dataclass
class UnsealMaterial:
    keys_b64: list[str]
    threshold: int
    shares: int
    # Held only between initialisation and the end of bootstrap; None afterwards.
    root_token: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


class Keystore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.key_file = folder / "unseal.key"
        self.data_file = folder / "unseal.json.enc"

    def exists(self) -> bool:
        return self.data_file.exists()

    def _check_perms(self, path: Path) -> None:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise KeystoreError(
                f"{path} has permissions {mode:o}; it holds key material and must be 0600: chmod 600 {path}"
            )

    def _aead(self, create: bool) -> AESGCM:
        if not self.key_file.exists():
            if not create:
                raise KeystoreError(
                    f"the unseal key store's key file {self.key_file} is missing: restore it from where you keep it"
                )
            write_private(self.key_file, AESGCM.generate_key(bit_length=256))
        self._check_perms(self.key_file)
        key = self.key_file.read_bytes()
        if len(key) != 32:
            raise KeystoreError(f"{self.key_file} is not a 256-bit key")
        return AESGCM(key)

    def save(self, material: UnsealMaterial) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.folder, 0o700)
        aead = self._aead(create=True)
        nonce = os.urandom(12)
        plaintext = json.dumps(material.__dict__).encode()
        blob = {
            "version": 1,
            "cipher": "AES-256-GCM",
            "nonce": base64.b64encode(nonce).decode(),
            "ciphertext": base64.b64encode(aead.encrypt(nonce, plaintext, AAD)).decode(),
        }
        write_private(self.data_file, json.dumps(blob).encode())

    def load(self) -> UnsealMaterial:
        if not self.data_file.exists():
            raise KeystoreError(
                f"no unseal keys at {self.data_file}: the cluster was initialised elsewhere, or the state folder "
                "was lost; restore it, or re-create the cluster"
            )
        self._check_perms(self.data_file)
        blob = json.loads(self.data_file.read_text(encoding="utf-8"))
        try:
            plaintext = self._aead(create=False).decrypt(
                base64.b64decode(blob["nonce"]), base64.b64decode(blob["ciphertext"]), AAD
            )
        except InvalidTag:
            raise KeystoreError(f"{self.data_file} does not decrypt with {self.key_file}: wrong key file?") from None
        return UnsealMaterial(**json.loads(plaintext))
