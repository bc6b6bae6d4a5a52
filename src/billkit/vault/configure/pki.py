"""PKI: an intermediate CA signed by the offline root, and the service certificates it issues."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac

from billkit.vault.configure.api import _list, _post, converge, ensure_mount
from billkit.vault.configure.settings import HOUR, PKI, PKI_ROLE, Settings
from billkit.vault.pki import RootCA


def ensure_pki(c: hvac.Client, root: RootCA, settings: Settings, changes: list[str]) -> None:
    ensure_mount(c, PKI, "pki", changes, description="intermediate CA: every service certificate",
                 max_lease_ttl="8760h")  # fmt: skip
    issuers = _list(c, f"{PKI}/issuers")
    if not issuers:
        csr = _post(c, f"{PKI}/intermediate/generate/internal", {
            "common_name": "billkit lab intermediate CA", "key_type": "ec", "key_bits": 256,
            "organization": "billkit", "exclude_cn_from_sans": True,
        })["data"]["csr"]  # fmt: skip
        signed = root.sign_intermediate_csr(csr)
        _post(c, f"{PKI}/intermediate/set-signed", {"certificate": signed + "\n" + root.pem})
        changes.append("intermediate CA signed by the offline root")
    converge(c, f"{PKI}/config/urls", {
        "issuing_certificates": [], "crl_distribution_points": [],
    }, [])  # fmt: skip
    allowed = [settings.domain, *settings.service_names, *(["localhost"] if settings.allow_localhost else [])]
    converge(c, f"{PKI}/roles/{PKI_ROLE}", {
        "allowed_domains": allowed, "allow_subdomains": True, "allow_bare_domains": True,
        "allow_glob_domains": False, "allow_wildcard_certificates": False, "allow_any_name": False,
        "allow_localhost": settings.allow_localhost, "allow_ip_sans": True, "enforce_hostnames": True,
        "server_flag": True, "client_flag": True, "key_type": "ec", "key_bits": 256,
        "ttl": settings.cert_ttl, "max_ttl": settings.cert_max_ttl, "no_store": False,
    }, changes)  # fmt: skip
    converge(c, f"{PKI}/config/auto-tidy", {
        "enabled": True, "tidy_cert_store": True, "tidy_revoked_certs": True, "interval_duration": 12 * HOUR,
    }, changes)  # fmt: skip


def ensure_host_cert(c: hvac.Client, name: str, cert_path: Path, key_path: Path, dns: tuple[str, ...] = (),
                     ips: tuple[str, ...] = (), fraction: float = 2 / 3) -> bool:  # fmt: skip
    """Issue a host's certificate, or renew it once past `fraction` of its lifetime; True if written."""
    from billkit.vault.pki import needs_renewal, write_private

    if not needs_renewal(cert_path, fraction):
        return False
    cert = issue_cert(c, name, dns, ips)
    cert_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(key_path, cert.private_key.encode())
    cert_path.write_text(cert.fullchain, encoding="ascii")
    return True


@dataclass(frozen=True)
class IssuedCert:
    certificate: str
    private_key: str
    ca_chain: str  # intermediate + root

    @property
    def fullchain(self) -> str:
        return self.certificate.rstrip() + "\n" + self.ca_chain


def issue_cert(c: hvac.Client, common_name: str, dns: tuple[str, ...] = (), ips: tuple[str, ...] = (),
               ttl: int | None = None) -> IssuedCert:  # fmt: skip
    """Issue (or renew: issue anew) a short-lived service certificate from the intermediate CA."""
    body: dict[str, Any] = {"common_name": common_name, "exclude_cn_from_sans": False}
    alt = [d for d in dict.fromkeys(dns) if d != common_name]
    if alt:
        body["alt_names"] = ",".join(alt)
    if ips:
        body["ip_sans"] = ",".join(dict.fromkeys(ips))
    if ttl:
        body["ttl"] = f"{ttl}s"
    data = _post(c, f"{PKI}/issue/{PKI_ROLE}", body)["data"]
    chain = "\n".join(x.strip() for x in data.get("ca_chain") or [data["issuing_ca"]]) + "\n"
    return IssuedCert(data["certificate"], data["private_key"], chain)
