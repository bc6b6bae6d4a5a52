"""openbao role on vault-1..3 and the converged cluster, against the running lab."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from billkit.lab.state import KNOWN_HOSTS
from billkit.lab.testing import host_urls
from billkit.vault import configure
from billkit.vault import lab as vault_lab
from billkit.vault.bootstrap import admin_login
from billkit.vault.deploy import open_cluster
from billkit.vault.server import lab_nodes
from infra.topology import VAULT_API, VAULT_CLUSTER, lab_host

pytestmark = pytest.mark.lab
testinfra_hosts = host_urls("vault")


@pytest.mark.control("BAK-08", "EAR-07")
def test_openbao_runs_as_its_own_account_under_a_hardened_unit(host):
    svc = host.service("openbao")
    assert svc.is_running and svc.is_enabled
    props = dict(
        line.split("=", 1)
        for line in host.check_output(
            "systemctl show openbao -p User -p NoNewPrivileges -p ProtectSystem -p PrivateTmp -p CapabilityBoundingSet"
        ).splitlines()
    )
    assert props["User"] == "openbao" and props["NoNewPrivileges"] == "yes"
    assert props["ProtectSystem"] == "strict" and props["PrivateTmp"] == "yes"
    assert props["CapabilityBoundingSet"] == ""
    assert host.file("/usr/local/bin/bao").mode == 0o755


@pytest.mark.control("ENC-03")
def test_listeners_are_tls_on_the_data_address_only(host):
    addr = host.ansible.get_variables()["ansible_host"]
    for port in (VAULT_API, VAULT_CLUSTER):
        assert host.socket(f"tcp://{addr}:{port}").is_listening
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening
    cfg = host.file("/etc/openbao/openbao.hcl")
    assert cfg.mode == 0o640 and cfg.group == "openbao"
    assert "tls_disable              = false" in cfg.content_string
    key = host.file("/etc/openbao/tls/server.key")
    assert key.mode == 0o640 and key.user == "root" and key.group == "openbao"


@pytest.mark.control("LOG-09")
def test_audit_device_on_every_node(host):
    assert 'audit "file"' in host.file("/etc/openbao/openbao.hcl").content_string
    name = host.ansible.get_variables()["inventory_hostname"]
    cluster, _ = open_cluster(lab_nodes(), vault_lab.state())
    if cluster.active().name != name:
        return  # standbys forward requests; the device is declared here and audits when this node leads
    log = host.file("/var/log/openbao/audit.log")
    assert log.user == "openbao" and log.mode == 0o600
    before = log.size
    cluster.client(next(n for n in lab_nodes() if n.name == name)).sys.read_health_status(method="GET")
    cluster.active_client("s.not-a-token").adapter.get("/v1/auth/token/lookup-self", raise_exception=False)
    assert host.file("/var/log/openbao/audit.log").size > before


@pytest.mark.control("BAK-08", "EAR-07", "ENC-05")
def test_cluster_is_unsealed_ha_and_on_pki_certificates():
    import ssl

    from billkit.vault.pki import issuer_cn

    cluster, _ = open_cluster(lab_nodes(), vault_lab.state())
    roles = []
    for node in lab_nodes():
        h = cluster.client(node).sys.read_health_status(method="GET", standby_ok=True)
        assert not h["sealed"]
        roles.append("standby" if h["standby"] else "active")
        assert issuer_cn(ssl.get_server_certificate((node.host, node.api_port))) == "billkit lab intermediate CA"
    assert sorted(roles) == ["active", "standby", "standby"]
    assert cluster.keystore.load().root_token is None


@pytest.mark.control("HRD-01", "MFA-03")
def test_vault_signed_ssh_certificate_logs_in(tmp_path: Path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "id")], check=True)
    cluster, _ = open_cluster(lab_nodes(), vault_lab.state())
    c = cluster.active_client(admin_login(cluster))  # password + TOTP; the operator policy may sign
    try:
        cert = configure.sign_ssh_key(c, (tmp_path / "id.pub").read_text(), "ops")
    finally:
        c.auth.token.revoke_self()
    (tmp_path / "id-cert.pub").write_text(cert + "\n")
    target = lab_host("app-1")
    proc = subprocess.run(
        ["ssh", "-i", str(tmp_path / "id"), "-o", f"CertificateFile={tmp_path / 'id-cert.pub'}",
         "-o", f"UserKnownHostsFile={KNOWN_HOSTS}", "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
         "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", f"ops@{target.address}", "echo", "certified"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0 and "certified" in proc.stdout, proc.stderr
