"""os_hardening on every lab host: accounts, files, limits, logs, time, updates, banner, audit."""

from __future__ import annotations

import json

import pytest

from billkit.lab.testing import host_urls

pytestmark = pytest.mark.lab
testinfra_hosts = host_urls()


def login_defs(host) -> dict[str, str]:
    out = {}
    for line in host.file("/etc/login.defs").content_string.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not parts[0].startswith("#"):
            out[parts[0]] = parts[1]
    return out


def conf(text: str, sep: str = "=") -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and sep in line:
            k, v = line.split(sep, 1)
            out[k.strip()] = v.strip()
    return out


def waivers(host) -> list[dict]:
    f = host.file("/etc/billkit/waivers/os_hardening.json")
    return json.loads(f.content_string) if f.exists else []


def in_container(host) -> bool:
    return host.run("systemd-detect-virt --container").rc == 0


@pytest.mark.control("HRD-02")
@pytest.mark.parametrize(("key", "ok"), [
    ("PASS_MAX_DAYS", lambda v: 0 < int(v) <= 90),
    ("PASS_MIN_DAYS", lambda v: int(v) >= 1),
    ("ENCRYPT_METHOD", lambda v: v in ("YESCRYPT", "SHA512")),
])  # fmt: skip
def test_password_ageing(host, key, ok):
    value = login_defs(host).get(key, "0")
    assert ok(value), f"{key}={value}"


@pytest.mark.control("HRD-02")
@pytest.mark.parametrize(("key", "ok"), [
    ("minlen", lambda v: int(v) >= 12),
    ("minclass", lambda v: int(v) >= 3),
    ("dcredit", lambda v: int(v) <= -1),
])  # fmt: skip
def test_password_quality(host, key, ok):
    values = conf(host.file("/etc/security/pwquality.conf").content_string)
    assert key in values and ok(values[key]), f"pwquality {key}={values.get(key)}"


@pytest.mark.control("HRD-02", "HRD-03")
@pytest.mark.parametrize(("pam_file", "needle"), [
    ("/etc/pam.d/common-password", "pam_pwquality.so"),
    ("/etc/pam.d/common-password", "pam_pwhistory.so remember=4"),
    ("/etc/pam.d/common-auth", "pam_faillock.so preauth"),
    ("/etc/pam.d/common-auth", "pam_faillock.so authfail"),
    ("/etc/pam.d/common-account", "pam_faillock.so"),
])  # fmt: skip
def test_pam_stack(host, pam_file, needle):
    assert needle in host.file(pam_file).content_string


@pytest.mark.control("HRD-03")
def test_lockout_policy(host):
    values = conf(host.file("/etc/security/faillock.conf").content_string)
    assert 0 < int(values["deny"]) <= 10
    assert int(values["unlock_time"]) >= 1800


@pytest.mark.control("RBAC-07")
@pytest.mark.parametrize(("path", "group", "max_mode"), [
    ("/etc/shadow", "shadow", 0o640),
    ("/etc/gshadow", "shadow", 0o640),
    ("/etc/passwd", "root", 0o644),
    ("/etc/group", "root", 0o644),
    ("/etc/ssh/sshd_config", "root", 0o600),
    ("/etc/sudoers", "root", 0o440),
    ("/etc/crontab", "root", 0o600),
    ("/etc/cron.d", "root", 0o700),
])  # fmt: skip
def test_sensitive_file_permissions(host, path, group, max_mode):
    f = host.file(path)
    assert f.exists and f.user == "root" and f.group == group
    assert f.mode & ~max_mode == 0, f"{path} mode {oct(f.mode)} is wider than {oct(max_mode)}"


@pytest.mark.control("RBAC-07")
@pytest.mark.parametrize("tool", ["cron", "at"])
def test_cron_and_at_restricted(host, tool):
    allow = host.file(f"/etc/{tool}.allow")
    assert allow.exists and allow.mode == 0o600 and allow.content_string.split() == ["root"]
    assert not host.file(f"/etc/{tool}.deny").exists


@pytest.mark.control("HRD-05")
@pytest.mark.parametrize(("key", "want"), [
    ("net.ipv4.ip_forward", 0),
    ("net.ipv4.conf.all.accept_redirects", 0),
    ("net.ipv4.conf.all.send_redirects", 0),
    ("net.ipv4.conf.all.accept_source_route", 0),
    ("net.ipv4.conf.all.rp_filter", 1),
    ("net.ipv4.conf.all.log_martians", 1),
    ("net.ipv4.tcp_syncookies", 1),
    ("net.ipv4.icmp_echo_ignore_broadcasts", 1),
    ("net.ipv6.conf.all.accept_ra", 0),
])  # fmt: skip
def test_network_sysctls(host, key, want):
    assert host.sysctl(key) == want


@pytest.mark.control("HRD-05")
def test_kernel_sysctls_applied_or_waived(host):
    if in_container(host):
        assert any(w["control"] == "HRD-05" and w["reason"] for w in waivers(host)), "no waiver recorded"
    else:
        assert host.sysctl("kernel.randomize_va_space") == 2
        assert host.sysctl("fs.suid_dumpable") == 0


@pytest.mark.control("HRD-05")
def test_core_dumps_off(host):
    assert "hard core 0" in host.file("/etc/security/limits.d/10-billkit-coredump.conf").content_string
    assert host.run("bash -lc 'ulimit -Hc'").stdout.strip() == "0"


@pytest.mark.control("HRD-05")
def test_umask(host):
    assert login_defs(host).get("UMASK") == "027"
    assert host.run("bash -lc umask").stdout.strip() == "0027"


@pytest.mark.control("HRD-04")
def test_idle_shell_timeout(host):
    out = host.run("bash -lc 'echo $TMOUT; readonly -p | grep -c TMOUT'").stdout.split()
    assert 0 < int(out[0]) <= 900 and out[1] == "1"


@pytest.mark.control("PAT-03")
@pytest.mark.parametrize("package", ["telnet", "rsh-client", "rsh-server", "nis", "talk", "tftp", "xinetd", "ftp"])
def test_insecure_package_absent(host, package):
    assert not host.package(package).is_installed


@pytest.mark.control("PAT-01")
def test_security_updates_fetched_daily(host):
    periodic = host.file("/etc/apt/apt.conf.d/20auto-upgrades").content_string
    assert 'Update-Package-Lists "1"' in periodic and 'Download-Upgradeable-Packages "1"' in periodic
    assert "Debian-Security" in host.file("/etc/apt/apt.conf.d/52billkit-unattended-upgrades").content_string
    assert host.package("unattended-upgrades").is_installed
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        assert host.service(timer).is_enabled


@pytest.mark.control("PAT-08")
def test_unattended_upgrades_only_download(host):
    """No host installs (and restarts services) on its own timer: the rolling run does, one host at a time."""
    periodic = host.file("/etc/apt/apt.conf.d/20auto-upgrades").content_string
    assert 'Unattended-Upgrade "0"' in periodic and 'Download-Upgradeable-Packages "1"' in periodic
    out = host.run("apt-config dump APT::Periodic::Unattended-Upgrade")
    assert out.rc == 0 and '"0"' in out.stdout, out.stdout  # what apt itself reads, after every conf file


@pytest.mark.control("PAT-01", "NET-01")
def test_packages_only_through_the_gateway_proxy(host):
    """The apt proxy on the host's gateway answers (it is the only path to the mirror)."""
    proxy = host.file("/etc/apt/apt.conf.d/01billkit-proxy").content_string
    url = proxy.split('"')[1]
    out = host.run(
        f"python3 -c \"import urllib.request as u; print(u.urlopen('{url}/acng-report.html', timeout=5).status)\""
    )
    # apt-cacher-ng answers 200 on its own pages, or 403/406 when the report page is off: any HTTP answer will do.
    assert out.rc == 0 or "HTTP Error" in out.stderr, out.stderr


@pytest.mark.control("LOG-04")
def test_journal_persistent_for_a_year(host):
    values = conf(host.file("/etc/systemd/journald.conf.d/billkit.conf").content_string)
    assert values["Storage"] == "persistent"
    retention = values["MaxRetentionSec"]
    assert retention.endswith("month") and int(retention[:-5]) >= 12
    assert host.file("/var/log/journal").is_directory
    assert host.run("journalctl --header -q | grep -c 'File path: /var/log/journal'").stdout.strip() != "0"


@pytest.mark.control("LOG-06")
def test_time_synchronised_or_waived(host):
    assert host.package("chrony").is_installed
    if in_container(host):
        assert any(w["control"] == "LOG-06" and w["reason"] for w in waivers(host)), "no waiver recorded"
    else:
        assert host.service("chrony").is_running


@pytest.mark.control("LOG-05")
def test_audit_events_recorded_or_waived(host):
    if in_container(host):
        assert any(w["control"] == "LOG-05" and w["reason"] for w in waivers(host)), "no waiver recorded"
    else:
        assert host.service("auditd").is_running
        rules = host.run("auditctl -l").stdout
        for key in ("identity", "actions", "access", "audit_log_access", "time_change"):
            assert f"key={key}" in rules


@pytest.mark.control("EDU-02")
@pytest.mark.parametrize("path", ["/etc/issue", "/etc/issue.net"])
def test_banner(host, path):
    assert "Authorised use only" in host.file(path).content_string


@pytest.mark.control("EDU-02", "HRD-01")
def test_ssh_shows_banner(host):
    assert host.file("/etc/ssh/sshd_config").contains("^Banner /etc/issue.net")
