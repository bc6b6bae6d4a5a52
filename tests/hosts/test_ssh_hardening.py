"""ssh_hardening: the effective sshd configuration, and real logins that must be refused."""

from __future__ import annotations

import subprocess

import pytest

from billkit.lab.hosts import ssh_command
from billkit.lab.testing import host_urls
from infra.topology import lab_host

pytestmark = pytest.mark.lab
testinfra_hosts = host_urls()

WEAK = {
    "ciphers": ["3des-cbc", "aes128-cbc", "aes256-cbc"],
    "macs": ["hmac-md5", "hmac-sha1", "umac-64@openssh.com", "hmac-sha2-256"],
    "kexalgorithms": ["diffie-hellman-group1-sha1", "diffie-hellman-group14-sha1", "ecdh-sha2-nistp256"],
}


def sshd_effective(host) -> dict[str, str]:
    out = host.run("sshd -T -C user=ops,host=lab,addr=10.77.0.1")
    assert out.rc == 0, out.stderr
    return dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)


@pytest.mark.control("HRD-01")
@pytest.mark.parametrize(("key", "ok"), [
    ("passwordauthentication", lambda v: v == "no"),
    ("kbdinteractiveauthentication", lambda v: v == "no"),
    ("permitrootlogin", lambda v: v == "no"),
    ("permitemptypasswords", lambda v: v == "no"),
    ("pubkeyauthentication", lambda v: v == "yes"),
    ("authenticationmethods", lambda v: v == "publickey"),
    ("maxauthtries", lambda v: int(v) <= 4),
    ("logingracetime", lambda v: int(v) <= 60),
    ("allowgroups", lambda v: v == "ssh-users"),
    ("x11forwarding", lambda v: v == "no"),
    ("allowtcpforwarding", lambda v: v == "no"),
])  # fmt: skip
def test_sshd_access(host, key, ok):
    value = sshd_effective(host)[key]
    assert ok(value), f"{key} {value}"


@pytest.mark.control("HRD-04")
def test_sshd_idle_timeout(host):
    cfg = sshd_effective(host)
    assert int(cfg["clientaliveinterval"]) * int(cfg["clientalivecountmax"]) <= 900


@pytest.mark.control("ENC-06")
@pytest.mark.parametrize("kind", sorted(WEAK))
def test_sshd_offers_no_weak_algorithm(host, kind):
    offered = set(sshd_effective(host)[kind].split(","))
    assert not offered & set(WEAK[kind]), f"weak {kind}: {offered & set(WEAK[kind])}"
    assert offered, f"no {kind} offered"


@pytest.mark.control("ENC-06")
def test_no_weak_host_keys(host):
    for key in ("ssh_host_dsa_key", "ssh_host_ecdsa_key"):
        assert not host.file(f"/etc/ssh/{key}").exists


HOSTS = ["edge-1", "db-1"]  # one host in the public tier, one in the CDE core: the logins are real, keep them few


def _ssh(name: str, *opts: str, user: str = "ops") -> subprocess.CompletedProcess:
    cmd = ssh_command(lab_host(name), "true")
    # LogLevel INFO: the client's reason for a refusal is part of what is checked.
    cmd = [("LogLevel=INFO" if c == "LogLevel=ERROR" else c) for c in cmd[:-2]]
    cmd += [*opts, f"{user}@{lab_host(name).address}", "true"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.control("HRD-01")
@pytest.mark.parametrize("name", HOSTS)
def test_key_login_works(name):
    assert _ssh(name).returncode == 0


@pytest.mark.control("HRD-01")
@pytest.mark.parametrize("name", HOSTS)
def test_password_login_refused(name):
    proc = _ssh(name, "-o", "PreferredAuthentications=password,keyboard-interactive", "-o", "PubkeyAuthentication=no")
    assert proc.returncode != 0 and "Permission denied" in proc.stderr


@pytest.mark.control("HRD-01")
@pytest.mark.parametrize("name", HOSTS)
def test_root_login_refused_even_with_a_key(name):
    proc = _ssh(name, user="root")
    assert proc.returncode != 0 and "Permission denied" in proc.stderr


@pytest.mark.control("ENC-06")
@pytest.mark.parametrize("name", HOSTS)
@pytest.mark.parametrize("opts", [
    ("Ciphers=aes128-cbc",),
    ("Ciphers=aes128-ctr", "MACs=hmac-sha1"),  # a MAC is negotiated only with a non-AEAD cipher
    ("KexAlgorithms=diffie-hellman-group14-sha1",),
])  # fmt: skip
def test_weak_algorithm_negotiation_refused(name, opts):
    proc = _ssh(name, *(x for o in opts for x in ("-o", o)))
    assert proc.returncode != 0 and "no matching" in proc.stderr, proc.stderr
