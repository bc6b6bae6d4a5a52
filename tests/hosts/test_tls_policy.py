"""One TLS policy on every listener the topology opens (ENC-07): each host probes its own TLS ports with
`openssl s_client` in TLS 1.2, once offering only CBC suites (what an old or downgraded client offers) and once
offering the kit's AEAD suites (the positive control that the port speaks TLS and the probe works). A listener
that answers the CBC hello with a ServerHello accepted a suite outside the policy. Read only: a handshake each.
"""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from billkit.lab.testing import host_urls
from billkit.tls_policy import CBC_ONLY_OPENSSL, OPENSSL_CIPHERS
from infra.topology import (
    APT_PROXY,
    HTTP,
    POSTGRES,
    PSEUDO_ENDPOINTS,
    SSH,
    VAULT_CLUSTER,
    VRRP_NO_PORT,
    flows_into,
    lab_host,
)

pytestmark = [pytest.mark.lab, pytest.mark.control("ENC-07")]
testinfra_hosts = host_urls()

NOT_TLS = {SSH, HTTP, APT_PROXY, VRRP_NO_PORT}  # SSH has its own policy (ENC-06); port 80 only redirects
# OpenBao's cluster port answers its peers only: a hello without its cluster's ALPN and SNI names is refused before
# any suite is chosen (probed: "internal error", then "unrecognized name"), and OpenBao sets its suites itself.
NOT_PROBED = {VAULT_CLUSTER}


def tls_ports(role: str) -> list[int]:
    return sorted({f.port for f in flows_into(role, "lab") if f.protocol == "tcp" and f.port not in NOT_TLS | NOT_PROBED
                   and f.dst not in PSEUDO_ENDPOINTS})  # fmt: skip


def server_hello(host: Any, address: str, port: int, ciphers: str) -> tuple[bool, str]:
    """Whether the listener answered a TLS 1.2 hello offering only ``ciphers`` with a ServerHello."""
    starttls = ["-starttls", "postgres"] if port == POSTGRES else []
    command = ["timeout", "15", "openssl", "s_client", "-connect", f"{address}:{port}", "-tls1_2",
               "-cipher", ciphers, "-msg", *starttls]  # fmt: skip
    out = host.run(shlex.join(command) + " </dev/null 2>&1").stdout
    return "ServerHello" in out, out


@pytest.mark.control("ENC-07", "ENC-01", "ENC-02", "ENC-03")
def test_every_tls_listener_refuses_cbc_suites_and_speaks_the_policys(host: Any) -> None:
    me = lab_host(host.ansible.get_variables()["inventory_hostname"])
    ports = tls_ports(me.role)
    assert ports, f"no TLS listener on {me.name}? (the node exporter's port is on every host)"
    offenders, silent = [], []
    for port in ports:
        aead, aead_out = server_hello(host, me.address, port, OPENSSL_CIPHERS)
        if not aead:
            silent.append(f"{port}: {aead_out[-400:]}")
            continue
        cbc, _ = server_hello(host, me.address, port, CBC_ONLY_OPENSSL)
        if cbc:
            offenders.append(port)
    assert not silent, f"{me.name}: no TLS 1.2 handshake with the policy's suites on {silent}"
    assert not offenders, f"{me.name}: ports {offenders} accept CBC suites in TLS 1.2"
