"""The WAF and app units on their hosts: dedicated accounts, sandboxing, files, AppRole delivery."""

from __future__ import annotations

import re

import hvac
import pytest
from conftest import ssh

from billkit.lab.testing import host_urls
from infra.topology import hosts_of

pytestmark = pytest.mark.lab
testinfra_hosts = host_urls("waf") + host_urls("app")

# Unit name, account, and the worst `systemd-analyze security` exposure accepted (0 best, 10 worst).
UNITS = {"waf": ("nginx", "waf", 2.0), "app": ("billing-app", "billing-app", 2.0)}
SANDBOX = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes", "PrivateDevices": "yes",
           "ProtectHome": "yes", "RestrictSUIDSGID": "yes", "ProtectKernelModules": "yes",
           "ProtectControlGroups": "yes", "LockPersonality": "yes"}  # fmt: skip


def _role(host) -> str:
    return host.ansible.get_variables()["billkit_role"]


@pytest.mark.control("HRD-06")
def test_service_runs_as_its_own_account_in_a_sandboxed_unit(host):
    unit, user, worst = UNITS[_role(host)]
    svc = host.service(unit)
    assert svc.is_running and svc.is_enabled
    names = ["User", "CapabilityBoundingSet", "AmbientCapabilities", "RestrictAddressFamilies", "SystemCallFilter",
             "MemoryDenyWriteExecute", *SANDBOX]  # fmt: skip
    out = host.check_output(f"systemctl show {unit} " + " ".join(f"-p {n}" for n in names))
    props = dict(line.split("=", 1) for line in out.splitlines())
    assert props["User"] == user
    for name, value in SANDBOX.items():
        assert props[name] == value, name
    if unit == "nginx":
        assert props["CapabilityBoundingSet"] == "cap_net_bind_service"  # binding 80/443, nothing else
    else:
        assert props["CapabilityBoundingSet"] == "" and props["MemoryDenyWriteExecute"] == "yes"
    assert set(props["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    # Every process of the unit runs as the account, none as root.
    account = host.user(user)
    rows = [line.split() for line in host.check_output("ps -e -o uid=,unit=").splitlines()]
    owners = [int(row[0]) for row in rows if len(row) == 2 and row[1] == f"{unit}.service"]
    assert owners and set(owners) == {account.uid}, owners
    assert account.shell == "/usr/sbin/nologin" and account.uid < 1000
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)",
                      host.check_output(f"sudo systemd-analyze security {unit} --no-pager"))  # fmt: skip
    assert score and float(score.group(1)) <= worst, score


@pytest.mark.control("ENC-01", "ENC-05")
def test_private_keys_readable_by_the_service_only(host):
    role = _role(host)
    key = host.file("/etc/nginx/tls/server.key" if role == "waf" else "/etc/billing-app/tls/server.key")
    assert key.user == "root" and key.group == UNITS[role][1] and key.mode == 0o640


@pytest.mark.control("RBAC-08")
@pytest.mark.parametrize("name", [h.name for h in hosts_of("app")])
def test_the_delivered_wrapping_token_was_used_once_and_is_dead(name: str, lab_ca) -> None:
    """The app unwrapped its secret ID at start: the token it was handed cannot be unwrapped again."""
    proc = ssh(name, "sudo sh -c 'cat /run/credentials/billing-app.service/secret-id'")
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr
    vault = hosts_of("vault")[0].address
    from infra.topology import VAULT_API

    client = hvac.Client(url=f"https://{vault}:{VAULT_API}", verify=str(lab_ca))
    with pytest.raises(hvac.exceptions.VaultError):
        client.adapter.post("/v1/sys/wrapping/unwrap", headers={"X-Vault-Token": proc.stdout.strip()})
