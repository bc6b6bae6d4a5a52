"""Pure parts of billkit.vault: key store, root CA, rendered server config, lab node model."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography import x509

from billkit.vault.keystore import Keystore, KeystoreError, UnsealMaterial
from billkit.vault.pki import cert_lifetime, ensure_root_ca, issuer_cn, needs_renewal
from billkit.vault.server import NodePaths, lab_nodes
from infra.topology import VAULT_API, VAULT_CLUSTER, hosts_of


def test_keystore_round_trip_is_encrypted_and_private(tmp_path: Path) -> None:
    ks = Keystore(tmp_path / "vault")
    token = "s." + os.urandom(8).hex()
    ks.save(UnsealMaterial(keys_b64=["a2V5MQ==", "a2V5Mg=="], threshold=3, shares=5, root_token=token))
    assert stat.S_IMODE(ks.data_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(ks.key_file.stat().st_mode) == 0o600
    assert b"a2V5MQ" not in ks.data_file.read_bytes() and token.encode() not in ks.data_file.read_bytes()
    assert ks.load().keys_b64 == ["a2V5MQ==", "a2V5Mg=="]


def test_keystore_refuses_loose_permissions_and_wrong_key(tmp_path: Path) -> None:
    ks = Keystore(tmp_path / "vault")
    ks.save(UnsealMaterial(keys_b64=["x"], threshold=1, shares=1))
    os.chmod(ks.data_file, 0o644)
    with pytest.raises(KeystoreError, match="chmod 600"):
        ks.load()
    os.chmod(ks.data_file, 0o600)
    ks.key_file.write_bytes(os.urandom(32))
    with pytest.raises(KeystoreError, match="wrong key file"):
        ks.load()


def test_root_ca_is_made_once_and_signs_short_bootstrap_certs(tmp_path: Path) -> None:
    ca = ensure_root_ca(tmp_path / "pki")
    first = ca.cert_path.read_bytes()
    assert ensure_root_ca(tmp_path / "pki").cert_path.read_bytes() == first
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600
    cert, _key = ca.issue_bootstrap("vault-1", ["vault-1.billkit.internal"], ["10.77.30.11"])
    assert issuer_cn(cert) == "billkit lab root CA"
    assert cert_lifetime(cert).total_seconds() <= 24 * 3600 + 600
    x509.load_pem_x509_certificate(cert.encode()).verify_directly_issued_by(ca.cert)
    (tmp_path / "c.pem").write_text(cert)
    assert not needs_renewal(tmp_path / "c.pem") and needs_renewal(tmp_path / "missing.pem")


def test_lab_nodes_follow_the_topology_and_render_tls_and_audit() -> None:
    nodes = lab_nodes()
    assert [n.name for n in nodes] == [h.name for h in hosts_of("vault")]
    for node, host in zip(nodes, hosts_of("vault"), strict=True):
        assert node.api_addr == f"https://{host.address}:{VAULT_API}"
        text = node.render_config()
        assert f'address                  = "{host.address}:{VAULT_API}"' in text
        assert f'cluster_address          = "{host.address}:{VAULT_CLUSTER}"' in text
        assert "tls_disable              = false" in text and 'tls_min_version          = "tls12"' in text
        assert 'file_path = "/var/log/openbao/audit.log"' in text
    # Identical audit options on every node: OpenBao refuses to activate a node whose declared device differs.
    audits = {line for n in nodes for line in n.render_config().splitlines() if "file_path" in line}
    assert len(audits) == 1


def test_loopback_nodes_share_the_audit_option_but_not_the_file(tmp_path: Path) -> None:
    a, b = NodePaths.under(tmp_path / "a"), NodePaths.under(tmp_path / "b")
    assert a.audit_log == b.audit_log and a.audit_file != b.audit_file
