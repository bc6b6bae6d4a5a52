"""db-1's certificate is re-issued by `billkit up` once half of its lifetime has passed (no lab needed)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from billkit.lab import data


def _cert(path: Path, age: dt.timedelta, lifetime: dt.timedelta) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "db-1")])
    start = dt.datetime.now(dt.UTC) - age
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(start + lifetime)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.mark.control("ENC-05")
@pytest.mark.parametrize(
    ("age_hours", "due"), [(1, False), (11.5, False), (12.5, True), (23, True), (25, True)]
)  # fmt: skip
def test_certificate_is_renewed_past_half_its_lifetime(tmp_path: Path, age_hours: float, due: bool):
    pem = _cert(tmp_path / "server.pem", dt.timedelta(hours=age_hours), dt.timedelta(hours=24))
    assert data.cert_due(pem) is due


@pytest.mark.control("ENC-05")
def test_missing_or_broken_certificate_is_issued(tmp_path: Path):
    assert data.cert_due(tmp_path / "absent.pem")
    (tmp_path / "broken.pem").write_text("not a certificate")
    assert data.cert_due(tmp_path / "broken.pem")
