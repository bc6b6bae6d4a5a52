"""The app hosts: AppRole files, no secret ID on disk, TLS listener on the tier address only."""

from __future__ import annotations

import pytest

from billkit.lab.testing import host_urls
from infra.topology import APP_PORT, hosts_of

pytestmark = pytest.mark.lab
testinfra_hosts = host_urls("app")


@pytest.mark.control("RBAC-08")
def test_app_host_keeps_role_id_only_and_no_secret_id_on_disk(host):
    role_id = host.file("/etc/billing-app/role-id")
    assert role_id.user == "root" and role_id.group == "billing-app" and role_id.mode == 0o640
    creds = host.file("/etc/billing-app/credentials")
    assert creds.user == "root" and creds.mode == 0o700
    # After the start the wrapping tokens are gone from the disk (the unit's copy lives in memory).
    listing = host.check_output("sudo ls /etc/billing-app/credentials")
    assert listing.split() == ["session-secret"], listing
    env = host.file("/etc/billing-app/app.env").content_string
    assert "BILLKIT_APP_VAULT_SECRET_IDS_WRAPPED=true" in env and "SECRET_ID=" not in env
    assert "sslmode=verify-full" in env and "BILLKIT_APP_VAULT_URL=https://" in env


@pytest.mark.control("HRD-08", "PAT-06")
def test_the_running_app_is_the_deployed_release_and_configuration(host):
    """A changed release or configuration leaves a restart marker that `up` acts on (a new wrapped secret ID, a
    restart). None may stay pending and the service must have started after its configuration was written: `up`
    once could not read the marker, and a new release sat installed while the old one ran."""
    with host.sudo():
        assert not host.file("/etc/billing-app/restart-needed").exists, "a restart is pending"
        started = int(host.check_output(
            "date -d \"$(systemctl show -p ActiveEnterTimestamp --value billing-app)\" +%s"
        ))  # fmt: skip
        written = int(host.check_output("stat -c %Y /etc/billing-app/app.env"))
    assert started >= written, f"billing-app started {written - started} s before its configuration was written"


@pytest.mark.control("NET-06")
def test_app_believes_forwarded_client_addresses_from_the_edge_only(host):
    """Audit records name the client the WAF saw (LOG-07, proven in tests/app), and no one else may say so."""
    env = host.file("/etc/billing-app/app.env").content_string
    edges = ",".join(h.address for h in hosts_of("waf"))
    assert f"BILLKIT_APP_TRUSTED_PROXIES={edges}\n" in env
    # uvicorn does not rewrite the peer address itself: the app alone decides whom to believe
    assert "--no-proxy-headers" in host.file("/etc/systemd/system/billing-app.service").content_string


@pytest.mark.control("ENC-01", "NET-02")
def test_app_listens_on_its_tier_address_over_tls_only(host):
    addr = host.ansible.get_variables()["ansible_host"]
    assert host.socket(f"tcp://{addr}:{APP_PORT}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{APP_PORT}").is_listening
    unit = host.file("/etc/systemd/system/billing-app.service").content_string
    assert "--ssl-certfile" in unit and "--ssl-keyfile" in unit
