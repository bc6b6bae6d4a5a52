"""The kit's one TLS policy (ENC-07, billkit.tls_policy) in every role that opens a TLS listener: each role's
default is the policy in its server's notation, and both notations name the same TLS 1.2 suites, none of them CBC
(OpenSSL's own expansion of the cipher string is the judge). The lab check tests/hosts/test_tls_policy.py probes the
listeners themselves."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from billkit.controls import ROOT
from billkit.system import require_command
from billkit.tls_policy import CBC_ONLY_OPENSSL, IANA_CIPHER_SUITES, OPENSSL_CIPHERS

ROLES = ROOT / "playbooks/roles"

# (role, variable, notation): every TLS listener's cipher setting.
SETTINGS = [
    ("waf", "waf_tls_ciphers", "openssl"),
    ("billing_app", "billing_app_tls_ciphers", "openssl"),
    ("postgresql", "postgresql_ssl_ciphers", "openssl"),
    ("backup", "backup_store_tls_ciphers", "openssl"),
    ("monitoring", "monitoring_tls_ciphers", "openssl"),
    ("openbao", "openbao_tls_cipher_suites", "iana"),
    ("host_monitoring", "host_monitoring_tls_cipher_suites", "iana"),
    ("monitoring", "monitoring_tls_cipher_suites", "iana"),
]

pytestmark = pytest.mark.control("ENC-07")


def tls12_suites(cipher_string: str) -> set[str]:
    """The TLS 1.2 suites (IANA names) an OpenSSL cipher string enables; TLS 1.3 suites are listed apart."""
    openssl = require_command("openssl", "openssl")
    out = subprocess.run([openssl, "ciphers", "-stdname", "-tls1_2", cipher_string], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    names = {line.split()[0] for line in out.splitlines() if line.strip()}
    return {n for n in names if not n.startswith(("TLS_AES_", "TLS_CHACHA20_"))}


def role_default(role: str, variable: str) -> Any:
    defaults: dict[str, Any] = yaml.safe_load((ROLES / role / "defaults/main.yml").read_text())
    specs = yaml.safe_load((ROLES / role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    assert specs[variable]["default"] == defaults[variable], f"{variable}: documented default differs"
    return defaults[variable]


def test_the_two_notations_name_the_same_aead_suites_and_no_cbc() -> None:
    suites = tls12_suites(OPENSSL_CIPHERS)
    assert suites == set(IANA_CIPHER_SUITES)
    assert all("_GCM_" in s or "CHACHA20" in s for s in suites) and all(s.startswith("TLS_ECDHE_") for s in suites)
    attacker = tls12_suites(CBC_ONLY_OPENSSL)
    assert attacker and all("_CBC_" in s for s in attacker), attacker
    assert not attacker & suites


@pytest.mark.parametrize(("role", "variable", "notation"), SETTINGS, ids=[v for _, v, _ in SETTINGS])
def test_every_listeners_role_defaults_to_the_policy(role: str, variable: str, notation: str) -> None:
    value = role_default(role, variable)
    if notation == "openssl":
        assert value == OPENSSL_CIPHERS
    else:
        assert tuple(value) == IANA_CIPHER_SUITES


@pytest.mark.parametrize(("template", "variable"), [
    ("waf/templates/etc/nginx/conf.d/billkit.conf.j2", "waf_tls_ciphers"),
    ("billing_app/templates/etc/systemd/system/billing-app.service.j2", "billing_app_tls_ciphers"),
    ("billing_app/templates/etc/billing-app/app.env.j2", "billing_app_tls_ciphers"),
    ("postgresql/templates/etc/postgresql/15/main/conf.d/billkit.conf.j2", "postgresql_ssl_ciphers"),
    ("backup/templates/etc/systemd/system/billkit-s3.service.j2", "backup_store_tls_ciphers"),
    ("monitoring/templates/etc/billkit/journal/stunnel.conf.j2", "monitoring_tls_ciphers"),
    ("openbao/templates/etc/openbao/openbao.hcl.j2", "openbao_tls_cipher_suites"),
    ("host_monitoring/templates/etc/prometheus/node-exporter-web.yml.j2", "host_monitoring_tls_cipher_suites"),
    ("host_monitoring/templates/etc/prometheus/postgres-exporter-web.yml.j2", "host_monitoring_tls_cipher_suites"),
    ("monitoring/templates/etc/prometheus/web.yml.j2", "monitoring_tls_cipher_suites"),
    ("monitoring/templates/etc/prometheus/alertmanager-web.yml.j2", "monitoring_tls_cipher_suites"),
])  # fmt: skip
def test_every_listeners_configuration_uses_its_roles_variable(template: str, variable: str) -> None:
    assert variable in (ROLES / template).read_text(), f"{template} does not apply {variable}"
