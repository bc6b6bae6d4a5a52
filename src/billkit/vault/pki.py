"""The lab's offline root CA and the certificate helpers around the Vault PKI engine.

The root CA lives only in the state folder (key 0600); it signs exactly two things: the
intermediate CA that Vault's PKI engine holds (which issues every service certificate), and
the short-lived bootstrap certificates of the Vault nodes themselves (needed before the PKI
engine exists; replaced by intermediate-issued ones as soon as it does).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT_CA_NAME = "billkit lab root CA"
ROOT_CA_DAYS = 3650
INTERMEDIATE_DAYS = 365
BOOTSTRAP_HOURS = 24


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file with 0600 permissions from the first byte (never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # writers never share one
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


@dataclass(frozen=True)
class RootCA:
    cert_path: Path
    key_path: Path

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_path.read_bytes())

    @property
    def pem(self) -> str:
        return self.cert_path.read_text(encoding="ascii")

    def _key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError(f"{self.key_path} is not an EC private key")
        return key

    def sign_intermediate_csr(self, csr_pem: str, days: int = INTERMEDIATE_DAYS) -> str:
        """Sign the intermediate CA's CSR (generated inside Vault; its key never leaves Vault)."""
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        if not csr.is_signature_valid:
            raise ValueError("the intermediate CSR's signature is invalid")
        root = self.cert
        key = self._key()
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(root.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(min(now + dt.timedelta(days=days), root.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue_bootstrap(self, common_name: str, dns: list[str], ips: list[str], hours: int = BOOTSTRAP_HOURS):
        """A short-lived server certificate for a Vault node before the PKI engine exists."""
        key = ec.generate_private_key(ec.SECP256R1())
        root = self.cert
        now = _now()
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dict.fromkeys([common_name, *dns])]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in dict.fromkeys(ips)]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(root.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=hours))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key().public_key()), critical=False)
            .sign(self._key(), hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def ensure_root_ca(pki_dir: Path, name: str = ROOT_CA_NAME) -> RootCA:
    """Create the offline root CA once (idempotent): EC P-256, 10 years, key 0600."""
    ca = RootCA(pki_dir / "root-ca.pem", pki_dir / "root-ca.key")
    if ca.cert_path.exists() and ca.key_path.exists():
        return ca
    pki_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "billkit"), x509.NameAttribute(NameOID.COMMON_NAME, name)]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=ROOT_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ca_key_usage(digital_signature=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private(
        ca.key_path,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    ca.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ca


def cert_lifetime(pem: str | bytes) -> dt.timedelta:
    cert = x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)
    return cert.not_valid_after_utc - cert.not_valid_before_utc


def needs_renewal(cert_path: Path, fraction: float = 2 / 3) -> bool:
    """True when the certificate is missing, unreadable, or past `fraction` of its lifetime."""
    try:
        return pem_needs_renewal(cert_path.read_bytes(), fraction)
    except OSError:
        return True


def pem_needs_renewal(pem: bytes, fraction: float = 2 / 3) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return True
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return _now() >= start + (end - start) * fraction


def issuer_cn(pem: str | bytes) -> str:
    cert = x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)
    attrs = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def _ca_key_usage(*, digital_signature: bool) -> x509.KeyUsage:
    """Key usage of a CA certificate: signs certificates and CRLs; digital signatures only where asked."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        key_cert_sign=True,
        crl_sign=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )
