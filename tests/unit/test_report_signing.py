"""The manifest's signature against a real OpenBao: the report's key signs, verifies, and never leaves Vault.

The transit key and the ``report-signing`` policy are created by the same code that configures the lab
(billkit.vault.configure). The attacker holds the report's token and tries to take the key with it.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import hvac
import hvac.exceptions
import pytest

from billkit.report import manifest
from billkit.vault import configure
from tests.unit.baodev import BaoDev, bao_dev
from tests.unit.reporthelpers import quick


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BaoDev, str]]:
    with bao_dev(tmp_path_factory.mktemp("bao")) as dev:
        root = dev.client()
        changes: list[str] = []
        configure.ensure_policies(root, changes)
        configure.ensure_transit(root, configure.Settings(), changes)
        assert "transit key report-signing (ed25519)" in changes
        token = root.auth.token.create_orphan(policies=["report-signing"], ttl="10m")["auth"]["client_token"]
        yield dev, token


@pytest.mark.control("CMP-07")
def test_the_bundle_is_signed_by_vault_and_a_changed_byte_in_the_manifest_is_named(bao, tmp_path: Path) -> None:
    dev, token = bao
    client = dev.client(token)
    report = quick(tmp_path, "signed", vault=client)
    out = tmp_path / "signed"
    sig = json.loads((out / manifest.SIGNATURE).read_text())
    assert sig["signed"] is True and sig["signature"].startswith("vault:v1:") and sig["key"] == "report-signing"
    assert not any("UNSIGNED" in n for n in report.notes)
    ok = manifest.verify(out, client)
    assert ok.ok, ok.problems
    assert any("Vault confirms" in n for n in ok.notes)
    assert manifest.verify(out).ok  # offline: the public key in the bundle suffices
    tampered = tmp_path / "tampered"
    shutil.copytree(out, tampered)
    data = bytearray((tampered / manifest.MANIFEST).read_bytes())
    data[data.index(b'"generated"') + 16] ^= 0x01  # one byte of the timestamp: no listed hash changes
    (tampered / manifest.MANIFEST).write_bytes(bytes(data))
    problems = manifest.verify(tampered, client).problems
    assert any(p.startswith("manifest.json: the signature does not verify") for p in problems), problems
    assert any(p.startswith("manifest.json: Vault's key report-signing did not sign") for p in problems), problems


@pytest.mark.control("CMP-07", "RBAC-04")
def test_a_swapped_public_key_and_signature_do_not_pass_vault(bao, tmp_path: Path) -> None:
    """An attacker re-signs an altered manifest with their own key and puts that key in the bundle."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    dev, token = bao
    quick(tmp_path, "forged", vault=dev.client(token))
    out = tmp_path / "forged"
    (out / "summary.json").write_text("{}")
    data = manifest.write_manifest(out, "2026-01-01T00:00:00+00:00")
    mine = Ed25519PrivateKey.generate()
    sig = json.loads((out / manifest.SIGNATURE).read_text())
    sig["signature"] = "vault:v1:" + base64.b64encode(mine.sign(data)).decode()
    sig["public_key"] = base64.b64encode(mine.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    (out / manifest.SIGNATURE).write_text(json.dumps(sig))
    assert manifest.verify(out).ok  # offline, a self-consistent forgery passes: the reason to ask Vault
    problems = manifest.verify(out, dev.client(token)).problems
    assert problems == ["manifest.json: Vault's key report-signing did not sign this manifest"]


@pytest.mark.control("CMP-07", "RBAC-04")
def test_the_signing_key_cannot_be_exported_or_reconfigured(bao) -> None:
    dev, token = bao
    mine = dev.client(token)
    info = mine.secrets.transit.read_key(manifest.KEY)["data"]
    assert info["exportable"] is False and info["allow_plaintext_backup"] is False and info["type"] == "ed25519"
    assert set(info["keys"]["1"]) <= {"public_key", "name", "creation_time", "certificate_chain"}
    attempts = {
        "export signing key": lambda c: c.secrets.transit.export_key(manifest.KEY, "signing-key"),
        "backup": lambda c: c.secrets.transit.backup_key(manifest.KEY),
        "make exportable": lambda c: c.secrets.transit.update_key_configuration(manifest.KEY, exportable=True),
        "sign with another key": lambda c: c.secrets.transit.sign_data("audit-head", "aGk="),
        "create a key": lambda c: c.secrets.transit.create_key("mine", key_type="ed25519", exportable=True),
        "read another key": lambda c: c.secrets.transit.read_key("pan"),
    }
    for what, attempt in attempts.items():
        with pytest.raises(hvac.exceptions.Forbidden):
            attempt(mine)
            pytest.fail(f"the report's token could {what}")
    root = dev.client()  # even root cannot take the key out: it was created non-exportable
    with pytest.raises((hvac.exceptions.InvalidRequest, hvac.exceptions.InternalServerError)):
        root.secrets.transit.export_key(manifest.KEY, "signing-key")
    with pytest.raises((hvac.exceptions.InvalidRequest, hvac.exceptions.InternalServerError)):
        root.secrets.transit.backup_key(manifest.KEY)


def test_an_unreachable_vault_leaves_the_bundle_unsigned_and_says_so(tmp_path: Path) -> None:
    report = quick(tmp_path, "offline", vault=hvac.Client(url="http://127.0.0.1:9", timeout=2))
    assert any("UNSIGNED" in n for n in report.notes)
    assert "UNSIGNED" in (tmp_path / "offline" / "index.html").read_text()
    assert not manifest.verify(tmp_path / "offline").ok
