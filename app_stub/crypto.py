"""Vault transit access and the envelope encryption of personal data.

Personal fields are encrypted locally with AES-256-GCM under a per-customer data key. The
data key comes from transit's ``datakey`` endpoint (key ``pii``); only its wrapped form is
stored, beside the data. Plaintext data keys are cached in memory for a short time, so a
write costs no Vault round trip per field: creating a customer costs two (one datakey, one
batched HMAC for all blind indexes); writing more data for a known customer costs none.

Blind indexes (exact-match search) are HMACs by transit key ``lookup-hmac`` of the
normalised value.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app_stub import vault_setup as vs

FORMAT_V1 = b"\x01"  # version byte of our field ciphertexts: 0x01 | nonce(12) | ciphertext+tag
FORMAT_PLAIN = b"\x00"  # encryption switched off (development benchmarks only)


class VaultError(RuntimeError):
    """Vault refused or failed an operation."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Transit:
    """The transit operations the app uses, on one hvac client (batch endpoints where they exist)."""

    def __init__(self, client_factory: Callable[[], Any], mount: str = vs.TRANSIT_MOUNT) -> None:
        self._factory = client_factory
        self._client = client_factory()
        self.mount = mount
        self.calls = 0  # Vault round trips made (for tests and benchmarks)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import hvac.exceptions

        self.calls += 1
        try:
            return self._client.adapter.post(f"/v1/{self.mount}/{path}", json=body)["data"]
        except hvac.exceptions.Forbidden:
            # The token may have expired: log in again once, then give up.
            self._client = self._factory()
            try:
                return self._client.adapter.post(f"/v1/{self.mount}/{path}", json=body)["data"]
            except hvac.exceptions.VaultError as exc:
                raise VaultError(f"transit {path}: {exc}") from None
        except hvac.exceptions.VaultError as exc:
            raise VaultError(f"transit {path}: {exc}") from None

    # OpenBao refuses JSON bodies with too many strings: batches go in chunks.
    CHUNK = 200

    def _batch_post(self, path: str, items: list[dict[str, str]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i in range(0, len(items), self.CHUNK):
            out.extend(_batch(self._post(path, {"batch_input": items[i : i + self.CHUNK]})))
        return out

    def encrypt(self, key: str, plaintexts: Sequence[bytes]) -> list[str]:
        return [
            r["ciphertext"] for r in self._batch_post(f"encrypt/{key}", [{"plaintext": _b64(p)} for p in plaintexts])
        ]

    def decrypt(self, key: str, ciphertexts: Sequence[str]) -> list[bytes]:
        res = self._batch_post(f"decrypt/{key}", [{"ciphertext": c} for c in ciphertexts])
        return [base64.b64decode(r["plaintext"]) for r in res]

    def datakey(self, key: str) -> tuple[bytes, str]:
        data = self._post(f"datakey/plaintext/{key}", {"bits": 256})
        return base64.b64decode(data["plaintext"]), data["ciphertext"]

    def hmac(self, key: str, inputs: Sequence[bytes]) -> list[str]:
        return [r["hmac"] for r in self._batch_post(f"hmac/{key}/sha2-256", [{"input": _b64(i)} for i in inputs])]

    def sign(self, key: str, data: bytes) -> str:
        """A signature of ``data`` by an asymmetric key ("vault:vN:<base64>")."""
        return self._post(f"sign/{key}", {"input": _b64(data)})["signature"]

    def rewrap(self, key: str, ciphertexts: Sequence[str]) -> list[str]:
        return [r["ciphertext"] for r in self._batch_post(f"rewrap/{key}", [{"ciphertext": c} for c in ciphertexts])]


def _batch(data: dict[str, Any]) -> list[dict[str, Any]]:
    results = data["batch_results"]
    bad = [r.get("error") for r in results if r.get("error")]
    if bad:
        raise VaultError(f"transit refused {len(bad)} item(s): {bad[0]}")
    return results


class DataKeyCache:
    """Plaintext data keys by customer, in memory only, for ``ttl`` seconds (LRU bounded)."""

    def __init__(self, ttl: float = 300.0, size: int = 10_000) -> None:
        self.ttl, self.size = ttl, size
        self._d: OrderedDict[int, tuple[bytes, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, customer_id: int) -> bytes | None:
        with self._lock:
            hit = self._d.get(customer_id)
            if hit is None or hit[1] < time.monotonic():
                self._d.pop(customer_id, None)
                return None
            self._d.move_to_end(customer_id)
            return hit[0]

    def put(self, customer_id: int, key: bytes) -> None:
        with self._lock:
            self._d[customer_id] = (key, time.monotonic() + self.ttl)
            self._d.move_to_end(customer_id)
            while len(self._d) > self.size:
                self._d.popitem(last=False)

    def drop(self, customer_id: int) -> None:
        with self._lock:
            self._d.pop(customer_id, None)


class PersonalDataCipher:
    """Envelope encryption of a customer's personal fields (AES-256-GCM, key wrapped by transit ``pii``)."""

    def __init__(self, transit: Transit, enabled: bool = True, cache: DataKeyCache | None = None) -> None:
        self.transit = transit
        self.enabled = enabled
        self.cache = cache or DataKeyCache()

    def new_key(self) -> tuple[bytes, str]:
        """A fresh data key: (plaintext, wrapped). One Vault round trip."""
        if not self.enabled:
            return b"", "plain"
        return self.transit.datakey(vs.KEY_PII)

    def key_for(self, customer_id: int, wrapped: str | None) -> bytes:
        """The customer's plaintext data key (cache, else one unwrap). ``wrapped`` None means erased."""
        if not self.enabled:
            return b""
        cached = self.cache.get(customer_id)
        if cached is not None:
            return cached
        if wrapped is None:
            raise KeyError(f"customer {customer_id} has no data key (erased)")
        key = self.transit.decrypt(vs.KEY_PII, [wrapped])[0]
        self.cache.put(customer_id, key)
        return key

    def seal(self, key: bytes, customer_id: int, field: str, value: str) -> bytes:
        if not self.enabled:
            return FORMAT_PLAIN + value.encode()
        nonce = os.urandom(12)
        aad = f"customer:{customer_id}:{field}".encode()
        return FORMAT_V1 + nonce + AESGCM(key).encrypt(nonce, value.encode(), aad)

    def open(self, key: bytes, customer_id: int, field: str, blob: bytes) -> str:
        blob = bytes(blob)
        if blob[:1] == FORMAT_PLAIN:
            return blob[1:].decode()
        if blob[:1] != FORMAT_V1:
            raise ValueError("unknown ciphertext format")
        aad = f"customer:{customer_id}:{field}".encode()
        return AESGCM(key).decrypt(blob[1:13], blob[13:], aad).decode()

    def blind_indexes(self, values: Sequence[str]) -> list[str]:
        """HMAC blind indexes of normalised values, in one batched Vault call."""
        norm = [v.strip().lower().encode() for v in values]
        if not self.enabled:
            import hashlib

            return ["plain:" + hashlib.sha256(n).hexdigest() for n in norm]
        return self.transit.hmac(vs.KEY_HMAC, norm)
