"""The Vault cluster itself: unsealed, highly available, TLS everywhere, audited, root revoked."""

from __future__ import annotations

import json
import socket
import ssl
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path

import hvac.exceptions
import pytest
import requests
from cryptography import x509

from billkit.vault import configure
from billkit.vault.bootstrap import root_session
from billkit.vault.deploy import ServiceCert, converge
from billkit.vault.local import cert_installer
from billkit.vault.pki import cert_lifetime, issuer_cn
from tests.hosts.keys.support import VaultEnv


@pytest.mark.control("BAK-08", "EAR-07")
def test_every_node_is_unsealed_and_one_is_active(vault: VaultEnv) -> None:
    roles = []
    for node in vault.local.nodes:
        health = vault.cluster.client(node).sys.read_health_status(method="GET", standby_ok=True)
        assert health["initialized"] and not health["sealed"], f"{node.name} is sealed or uninitialised"
        roles.append("standby" if health["standby"] else "active")
    assert sorted(roles) == ["active", "standby", "standby"]


@pytest.mark.control("BAK-08")
def test_three_raft_voters_with_failure_tolerance(vault: VaultEnv) -> None:
    state = vault.client(vault.operator_token).adapter.get("/v1/sys/storage/raft/autopilot/state")["data"]
    assert sorted(state["voters"]) == sorted(n.name for n in vault.local.nodes)
    assert state["healthy"] and state["failure_tolerance"] >= 1


@pytest.mark.control("ENC-03")
@pytest.mark.parametrize("index", [0, 1, 2])
def test_api_listener_speaks_only_tls12_or_later(vault: VaultEnv, index: int) -> None:
    node = vault.local.nodes[index]
    # Plain HTTP gets no Vault answer.
    with pytest.raises(requests.exceptions.RequestException):
        r = requests.get(f"http://{node.host}:{node.api_port}/v1/sys/health", timeout=3)
        assert "initialized" not in r.text  # a TLS server answers plain HTTP with a 400 of its own
        raise requests.exceptions.ConnectionError("plain HTTP answered without Vault data")
    # TLS 1.1 is refused; TLS 1.2+ verifies against the lab's root CA.
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(vault.root.cert_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deliberately asking for an old protocol
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection((node.host, node.api_port), timeout=3) as raw, pytest.raises(ssl.SSLError):
        old.wrap_socket(raw, server_hostname=node.name)
    good = ssl.create_default_context(cafile=str(vault.root.cert_path))
    with (
        socket.create_connection((node.host, node.api_port), timeout=3) as raw,
        good.wrap_socket(raw, server_hostname=node.name) as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


@pytest.mark.control("ENC-03")
@pytest.mark.parametrize("index", [0, 1, 2])
def test_cluster_port_requires_mutual_tls(vault: VaultEnv, index: int) -> None:
    """Raft replication and request forwarding: TLS with a client certificate only Vault holds."""
    node = vault.local.nodes[index]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["raft_storage_v1", "req_fw_sb-act_v1"])
    with (
        socket.create_connection((node.host, node.cluster_port), timeout=3) as raw,
        pytest.raises((ssl.SSLError, ConnectionResetError, OSError)),
        ctx.wrap_socket(raw) as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\n\r\n")
        if not tls.recv(1):
            raise ConnectionResetError("closed without an answer")
    with socket.create_connection((node.host, node.cluster_port), timeout=3) as raw:
        raw.sendall(b"GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\n")
        raw.settimeout(3)
        try:
            answer = raw.recv(200)
        except (TimeoutError, ConnectionResetError):
            answer = b""
        assert b"HTTP/1.1 200" not in answer and b"initialized" not in answer


@pytest.mark.control("ENC-05", "ENC-03")
@pytest.mark.parametrize("index", [0, 1, 2])
def test_node_certificates_come_from_the_intermediate(vault: VaultEnv, index: int) -> None:
    node = vault.local.nodes[index]
    pem = ssl.get_server_certificate((node.host, node.api_port))
    assert issuer_cn(pem) == "billkit lab intermediate CA"
    assert cert_lifetime(pem).total_seconds() <= vault.settings.cert_max_ttl


@pytest.mark.control("ENC-05")
def test_service_certificate_issue_is_short_lived_and_name_bound(vault: VaultEnv) -> None:
    operator = vault.client(vault.operator_token)  # operators cannot issue; the service-certs policy can
    with pytest.raises(hvac.exceptions.Forbidden):
        configure.issue_cert(operator, "vault-1")
    c = vault.client(vault.service_cert_token)
    cert = configure.issue_cert(c, "db-1.billkit.internal", dns=("localhost",), ips=("127.0.0.1",))
    leaf = x509.load_pem_x509_certificate(cert.certificate.encode())
    assert cert_lifetime(cert.certificate).total_seconds() <= vault.settings.cert_ttl + 60
    assert issuer_cn(cert.certificate) == "billkit lab intermediate CA"
    chain = [x509.load_pem_x509_certificate(p.encode()) for p in cert.ca_chain.split("\n\n") if p.strip()]
    leaf.verify_directly_issued_by(chain[0])
    chain[0].verify_directly_issued_by(vault.root.cert)
    with pytest.raises(hvac.exceptions.InvalidRequest):
        configure.issue_cert(c, "www.example.com")  # a name outside the environment
    with pytest.raises(hvac.exceptions.InvalidRequest):
        configure.issue_cert(c, "*.billkit.internal")  # no wildcards
    long = configure.issue_cert(c, "app-1.billkit.internal", ttl=30 * 24 * 3600)  # capped at max_ttl
    assert cert_lifetime(long.certificate).total_seconds() <= vault.settings.cert_max_ttl + 60


@pytest.mark.control("LOG-09")
def test_audit_device_declared_on_every_node_and_log_grows(vault: VaultEnv) -> None:
    for node in vault.local.nodes:
        text = node.paths.config.read_text()
        assert 'audit "file"' in text and str(node.paths.audit_log) in text, f"{node.name}: no audit stanza"
    devices = vault.client(vault.auditor_token).sys.list_enabled_audit_devices()["data"]
    assert any(d["type"] == "file" for d in devices.values())
    active = vault.cluster.active()
    log = active.paths.audit_file
    before = log.stat().st_size
    vault.client(vault.app_token).secrets.transit.encrypt_data("pan", "NDExMTExMTExMTExMTExMQ==")
    assert log.stat().st_size > before
    entries = [json.loads(line) for line in log.read_text().splitlines()[-20:]]
    assert any(e.get("request", {}).get("path") == "transit/encrypt/pan" for e in entries)
    # Tokens and plaintext are HMAC-ed in the trail, never written in clear.
    text = log.read_text()
    assert vault.app_token not in text and "NDExMTExMTExMTExMTExMQ==" not in text
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


@pytest.mark.control("EAR-07")
def test_unseal_keys_are_encrypted_and_private(vault: VaultEnv) -> None:
    ks = vault.cluster.keystore
    for path in (ks.data_file, ks.key_file, vault.root.key_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path} is not 0600"
    assert stat.S_IMODE(ks.folder.stat().st_mode) == 0o700
    material = ks.load()
    assert (material.shares, material.threshold, len(material.keys_b64)) == (5, 3, 5)
    blob = ks.data_file.read_text()
    assert all(k not in blob for k in material.keys_b64)
    assert material.root_token is None, "the initial root token must not be kept"


@pytest.fixture(scope="module")
def root(vault: VaultEnv) -> Iterator[hvac.Client]:
    """One short-lived root session for the checks below (generating root costs a TOTP code)."""
    with root_session(vault.cluster) as c:
        yield c
    with pytest.raises(hvac.exceptions.Forbidden):
        c.auth.token.lookup_self()  # revoked when the session ended


@pytest.mark.control("LOG-09")
def test_audit_device_cannot_be_created_through_the_api(root: hvac.Client, tmp_path: Path) -> None:
    with pytest.raises(hvac.exceptions.VaultError):
        root.sys.enable_audit_device("file", path="sneaky", options={"file_path": str(tmp_path / "sneaky.log")})
    assert not (tmp_path / "sneaky.log").exists()


@pytest.mark.control("EAR-07")
def test_no_root_token_survives_bootstrap(vault: VaultEnv, root: hvac.Client) -> None:
    """Only the short-lived root token of this check exists; the unauthenticated generate-root is off."""
    with pytest.raises(hvac.exceptions.VaultError):
        vault.client().adapter.put("/v1/sys/generate-root/attempt", json={})
    me = root.auth.token.lookup_self()["data"]
    roots = []
    for accessor in root.adapter.list("/v1/auth/token/accessors")["data"]["keys"]:
        info = root.auth.token.lookup_accessor(accessor)["data"]
        if "root" in info["policies"]:
            roots.append(accessor)
    assert roots == [me["accessor"]]
    assert 0 < me["ttl"] <= 15 * 60


@pytest.mark.control("EAR-07", "RBAC-04")
def test_configuration_as_code_is_idempotent(vault: VaultEnv, root: hvac.Client) -> None:
    again = configure.apply(root, vault.root, vault.settings)
    assert again.changes == []


@pytest.mark.control("EAR-07")
def test_rerun_changes_nothing_and_needs_no_root(vault: VaultEnv) -> None:
    said: list[str] = []
    again = converge(vault.local.nodes, vault.state, vault.settings, cert_installer(vault.local), progress=said.append)
    assert again.changes == []
    assert any("no root token needed" in s for s in said)
    assert vault.cluster.keystore.load().root_token is None


@pytest.mark.control("ENC-05")
def test_converge_issues_and_renews_other_hosts_service_certificates(vault: VaultEnv, tmp_path: Path) -> None:
    sc = ServiceCert("db-1.billkit.internal", (), ("10.77.30.14",), tmp_path / "db-1")
    first = converge(vault.local.nodes, vault.state, vault.settings, cert_installer(vault.local), service_certs=(sc,))
    assert "service certificate of db-1.billkit.internal" in first.changes
    pem = (sc.folder / "server.pem").read_text()
    assert issuer_cn(pem) == "billkit lab intermediate CA" and cert_lifetime(pem).total_seconds() <= 72 * 3600
    assert stat.S_IMODE((sc.folder / "server.key").stat().st_mode) == 0o600
    again = converge(vault.local.nodes, vault.state, vault.settings, cert_installer(vault.local), service_certs=(sc,))
    assert again.changes == []
