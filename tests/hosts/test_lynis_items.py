"""The Lynis items os_hardening takes on every lab host (HRD-05, HRD-09); read-only checks."""

from __future__ import annotations

import json

import pytest

from billkit.lab.testing import host_urls

pytestmark = pytest.mark.lab
testinfra_hosts = host_urls()

COMPILERS = ["/usr/bin/as", "/usr/bin/cc", "/usr/bin/c++", "/usr/bin/gcc", "/usr/bin/g++", "/usr/bin/clang"]


def settings(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip().strip('"')
    return out


@pytest.mark.control("HRD-05")
def test_systemd_coredump_keeps_nothing(host):
    conf = settings(host.file("/etc/systemd/coredump.conf.d/10-billkit.conf").content_string)
    assert conf.get("Storage") == "none" and conf.get("ProcessSizeMax") == "0", conf


@pytest.mark.control("HRD-05")
def test_login_shells_start_without_core_dumps(host):
    assert host.run("bash -lc 'ulimit -c'").stdout.strip() == "0"
    assert host.run("sh -lc 'ulimit -c'").stdout.strip() == "0"


@pytest.mark.control("HRD-05")
@pytest.mark.parametrize("path", COMPILERS)
def test_compilers_run_for_root_only(host, path):
    if not host.file(path).exists:
        pytest.skip(f"{path} is not installed")
    real = host.check_output(f"readlink -f {path}")
    f = host.file(real)
    assert f.user == "root" and not f.mode & 0o007, f"{real}: {oct(f.mode)} (others may run it)"
    # as an intruder without root would: the compiler refuses to start (while any other program runs)
    assert host.run("sudo -n runuser -u nobody -- /bin/true").rc == 0
    assert host.run(f"sudo -n runuser -u nobody -- {path} --version").rc != 0
    # and the mode survives package upgrades
    assert real in host.check_output("dpkg-statoverride --list")


@pytest.mark.control("HRD-05")
def test_shared_memory_is_not_executable(host):
    opts = host.check_output("findmnt -no OPTIONS /dev/shm").split(",")
    assert {"noexec", "nosuid", "nodev"} <= set(opts), opts
    assert host.service("billkit-shm-noexec.service").is_enabled


@pytest.mark.control("HRD-09")
def test_rootkit_scanner_installed_and_scheduled(host):
    assert host.package("chkrootkit").is_installed
    assert host.service("chkrootkit.timer").is_enabled and host.service("chkrootkit.timer").is_running
    conf = settings(host.file("/etc/chkrootkit/chkrootkit.conf").content_string)
    assert conf.get("RUN_DAILY") == "true" and conf.get("MAILTO") == "", conf


@pytest.mark.control("HRD-09")
def test_rootkit_scan_runs_gently(host):
    props = host.check_output("systemctl show chkrootkit.service -p Nice -p IOSchedulingClass -p ProtectSystem")
    values = dict(line.split("=", 1) for line in props.splitlines())
    assert values["Nice"] == "19" and values["ProtectSystem"] == "strict", values


@pytest.mark.control("HRD-07")
def test_lynis_suggestions_not_taken_are_waived(host):
    items = json.loads(host.file("/etc/billkit/waivers/os_hardening.json").content_string)
    waived = " ".join(w["item"] for w in items)
    for lynis_test in ("DEB-0810", "DEB-0880", "SSH-7408", "USB-3000"):
        assert lynis_test in waived, f"no waiver names Lynis {lynis_test}"
