"""The central journal on the lab (MON-04, LOG-04), as the host_monitoring and monitoring roles leave it: every host
but mon-1 uploads over mutual TLS, mon-1 routes each connection by its certificate to that host's own receiver,
which seals its own files with its own key (kept root-only) and is verified hourly. The checks read; the tamper
drill writes temporary copies on mon-1 only.

Runs once the central journal is deployed (host_monitoring_journal_upload_enabled, monitoring_journal_enabled).
"""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from billkit.lab.testing import host_urls
from infra.topology import lab_hosts
from tests.hosts.monitoring.journal_support import SENDERS_DIR, receiver_paths, tamper_check

pytestmark = [pytest.mark.lab, pytest.mark.control("MON-04")]
testinfra_hosts = host_urls()
MON = "mon-1"


def name(host: Any) -> str:
    return host.ansible.get_variables()["inventory_hostname"]


@pytest.mark.control("MON-04", "MON-02")
def test_every_host_but_the_receiver_uploads_its_journal(host: Any) -> None:
    unit = host.service("systemd-journal-upload")
    if name(host) == MON:
        assert not unit.is_running, "the receiver does not upload to itself"
        return
    assert unit.is_running and unit.is_enabled
    assert host.check_output("systemctl show -p Restart --value systemd-journal-upload") == "always"
    assert not host.socket("tcp://0.0.0.0:19532").is_listening, "no journal receiver on a sending host"


SENDERS = sorted(h.name for h in lab_hosts() if h.name != MON)


@pytest.mark.control("MON-04", "LOG-04")
def test_mon_keeps_one_sealed_receiver_per_host_each_holding_that_hosts_entries_only(host: Any) -> None:
    """Routing by certificate: a host's file holds its own entries and no other host's (a shared file failed its
    seals, and let one host's entries sit among another's)."""
    if name(host) != MON:
        pytest.skip("the receiver runs on mon-1 only")

    def on_mon(*command: str) -> str:
        with host.sudo():
            return host.check_output(shlex.join(command))

    with host.sudo():
        assert host.service("billkit-journal-tls").is_running
        assert host.service("billkit-journal-verify.timer").is_enabled
        assert host.service("billkit-journal-vacuum.timer").is_enabled
        for sender in SENDERS:
            assert host.service(f"billkit-journal-remote@{sender}").is_running, sender
            directory, key_file = receiver_paths(on_mon, sender)
            key = host.file(key_file)
            assert key.user == "root" and key.mode == 0o600, key_file
            header = host.check_output(f"journalctl --header --file={directory}/remote.journal")
            assert "SEALED" in header, f"{sender}'s file is not sealed"
            hosts = set(host.check_output(f"journalctl --directory={directory} --field=_HOSTNAME").split())
            assert hosts == {sender}, f"{sender}'s receiver holds entries of {hosts}"
        keys = host.check_output(f"ls {SENDERS_DIR}").split()
        assert sorted(keys) == SENDERS


@pytest.mark.drill("central-journal", disrupts="writes a tampered copy of each host's newest sealed file on mon-1")
@pytest.mark.control("MON-04")
def test_a_flipped_byte_in_a_copy_of_each_hosts_newest_file_fails_verification(host: Any) -> None:
    if name(host) != MON:
        pytest.skip("the receiver runs on mon-1 only")

    def on_mon(*command: str) -> str:
        with host.sudo():
            return host.check_output(shlex.join(command))

    for sender in SENDERS:
        result = tamper_check(on_mon, sender)
        assert result.original_rc == 0, f"{sender}'s untouched file fails: {result.original_output[-1500:]}"
        assert result.tampered_rc != 0, f"{sender}: a flipped byte at {result.offset} went unnoticed"
