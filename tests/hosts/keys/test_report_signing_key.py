"""The evidence bundle's signing key on a converged cluster: ed25519, non-exportable, usable only to sign/verify."""

from __future__ import annotations

import base64

import hvac.exceptions
import pytest

from billkit.report import manifest
from billkit.vault.bootstrap import root_session
from tests.hosts.keys.support import VaultEnv


@pytest.mark.control("CMP-07")
def test_report_token_signs_but_cannot_export_the_key(vault: VaultEnv) -> None:
    with root_session(vault.cluster) as root:
        token = root.auth.token.create_orphan(policies=["report-signing"], ttl="10m")["auth"]["client_token"]
    c = vault.client(token).secrets.transit
    data = base64.b64encode(b'{"files": {}}').decode()
    signature = c.sign_data(manifest.KEY, data)["data"]["signature"]
    assert c.verify_signed_data(manifest.KEY, data, signature=signature)["data"]["valid"] is True
    info = c.read_key(manifest.KEY)["data"]
    assert info["type"] == "ed25519" and info["exportable"] is False and info["deletion_allowed"] is False
    for attempt in (lambda: c.export_key(manifest.KEY, "signing-key"), lambda: c.backup_key(manifest.KEY),
                    lambda: c.update_key_configuration(manifest.KEY, exportable=True),
                    lambda: c.sign_data("audit-head", data)):  # fmt: skip
        with pytest.raises(hvac.exceptions.Forbidden):
            attempt()
