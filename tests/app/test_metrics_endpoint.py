"""The app's metrics port (MON-03): the counters reach a client holding a certificate of the monitoring
CA, and nobody else: no certificate, another CA's certificate, plain HTTP and old TLS are refused."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator

import httpx
import pytest

from app_stub import metrics
from app_stub.core.config import Settings, SettingsError
from billkit.localsvc import free_port
from billkit.tls_policy import CBC_ONLY_OPENSSL, OPENSSL_CIPHERS
from billkit.vault.pki import RootCA, ensure_root_ca


def _issue(ca: RootCA, name: str) -> tuple[str, str]:
    cert, key = ca.issue_bootstrap(name, [name], ["127.0.0.1"], hours=1)
    (ca.cert_path.parent / f"{name}.pem").write_text(cert)
    (ca.cert_path.parent / f"{name}.key").write_text(key)
    return str(ca.cert_path.parent / f"{name}.pem"), str(ca.cert_path.parent / f"{name}.key")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    d = tmp_path_factory.mktemp("metrics-tls")
    ca = ensure_root_ca(d / "ca", "monitoring test CA")
    other = ensure_root_ca(d / "other", "an attacker's CA")
    server = _issue(ca, "app-1")
    port = free_port()
    stop = metrics.serve(port, "127.0.0.1", *server, str(ca.cert_path), OPENSSL_CIPHERS)
    metrics.LOCKOUTS.inc()  # something to read
    yield {"port": port, "ca": str(ca.cert_path), "mon": _issue(ca, "mon-1"), "intruder": _issue(other, "mon-1")}
    stop()


def _get(served: dict[str, object], cert: tuple[str, str] | None) -> httpx.Response:
    ctx = ssl.create_default_context(cafile=str(served["ca"]))
    if cert:
        ctx.load_cert_chain(*cert)
    with httpx.Client(verify=ctx, timeout=5) as client:
        return client.get(f"https://127.0.0.1:{served['port']}/metrics")


@pytest.mark.control("MON-03")
def test_the_monitoring_host_reads_the_counters_over_mutual_tls(served: dict[str, object]) -> None:
    r = _get(served, served["mon"])  # type: ignore[arg-type]
    assert r.status_code == 200
    assert "billkit_app_lockouts_total" in r.text


@pytest.mark.control("MON-03")
@pytest.mark.parametrize("who", ["no certificate", "another CA's certificate"])
def test_a_client_without_the_monitoring_cas_certificate_is_refused(served: dict[str, object], who: str) -> None:
    cert = None if who == "no certificate" else served["intruder"]
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        _get(served, cert)  # type: ignore[arg-type]


@pytest.mark.control("MON-03")
def test_plain_http_and_tls_1_1_are_refused(served: dict[str, object]) -> None:
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError, httpx.ConnectError)):
        httpx.get(f"http://127.0.0.1:{served['port']}/metrics", timeout=5)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(served["ca"]))
    ctx.load_cert_chain(*served["mon"])  # type: ignore[misc]
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    port = int(served["port"])  # type: ignore[call-overload]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, pytest.raises(ssl.SSLError):
        ctx.wrap_socket(raw, server_hostname="app-1")


@pytest.mark.control("MON-03")
def test_a_metrics_port_without_its_certificates_is_refused_at_start() -> None:
    s = Settings(environment="development", database_url="x", tokenizer_database_url="y", metrics_port=9464)
    with pytest.raises(SettingsError, match="mutual TLS only"):
        s.validate()


@pytest.mark.control("MON-03", "ENC-07")
@pytest.mark.parametrize(("offer", "accepted"), [(CBC_ONLY_OPENSSL, False), (OPENSSL_CIPHERS, True)])
def test_tls_1_2_with_cbc_suites_only_is_refused_and_the_policys_aead_suites_are_accepted(
    served: dict[str, object], offer: str, accepted: bool
) -> None:
    """A client, with the monitoring host's own certificate, that offers only CBC suites in TLS 1.2 (an old or
    downgraded client) gets no handshake; the same client offering the kit's policy does (the positive control)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(served["ca"]))
    ctx.load_cert_chain(*served["mon"])  # type: ignore[misc]
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(offer)
    port = int(served["port"])  # type: ignore[call-overload]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        if accepted:
            with ctx.wrap_socket(raw, server_hostname="app-1") as tls:
                assert tls.cipher()[0] in {"ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256",
                                           "ECDHE-ECDSA-CHACHA20-POLY1305"}  # fmt: skip
        else:
            with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE|NO_SHARED_CIPHER"):
                ctx.wrap_socket(raw, server_hostname="app-1")
