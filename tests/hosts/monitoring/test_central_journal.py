"""The central journal on the lab (MON-04, LOG-04), as the host_monitoring and monitoring roles leave it: every host
but mon-1 uploads over mutual TLS, mon-1 receives behind its TLS front, seals, keeps the verification key root-only
and verifies hourly. The checks read; the tamper drill writes a temporary copy on mon-1 only.

Runs once the central journal is deployed (host_monitoring_journal_upload_enabled, monitoring_journal_enabled).
"""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from billkit.lab.testing import host_urls
from tests.hosts.monitoring.journal_support import REMOTE_DIR, VERIFY_KEY, tamper_check

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


@pytest.mark.control("MON-04", "LOG-04")
def test_mon_receives_sealed_files_and_keeps_the_key_root_only(host: Any) -> None:
    if name(host) != MON:
        pytest.skip("the receiver runs on mon-1 only")
    with host.sudo():
        assert host.service("billkit-journal-remote").is_running and host.service("billkit-journal-tls").is_running
        key = host.file(VERIFY_KEY)
        assert key.user == "root" and key.mode == 0o600
        files = host.check_output(f"ls {REMOTE_DIR}").split()
        assert any(f.endswith(".journal") for f in files)
        header = host.check_output(f"journalctl --header --file={REMOTE_DIR}/remote.journal")
        assert "SEALED" in header
        hosts = set(host.check_output(f"journalctl -D {REMOTE_DIR} -F _HOSTNAME").split())
        assert {"app-1", "db-1"} <= hosts, hosts
        assert host.service("billkit-journal-verify.timer").is_enabled
        assert host.service("billkit-journal-vacuum.timer").is_enabled


# Open defect, seen some runs and not others: every host's upload goes into one sealed file, and when uploads
# interleave an entry older than the last seal tag arrives, so even the untouched file fails verification
# ('Older entry after newer tag'). Sealing needs one receiver and file per host. Until then the check reports
# that case as the known defect and asserts everything else.
OLDER_ENTRY = "Older entry after newer tag"


@pytest.mark.drill("central-journal", disrupts="writes a tampered copy of the newest sealed journal file on mon-1")
@pytest.mark.control("MON-04")
def test_a_flipped_byte_in_a_copy_of_the_newest_file_fails_verification(host: Any) -> None:
    if name(host) != MON:
        pytest.skip("the receiver runs on mon-1 only")

    def on_mon(*command: str) -> str:
        with host.sudo():
            return host.check_output(shlex.join(command))

    result = tamper_check(on_mon)
    if result.original_rc != 0 and OLDER_ENTRY in result.original_output:
        pytest.xfail(f"open defect, one sealed file for every host: {OLDER_ENTRY!r} in the untouched copy")
    assert result.original_rc == 0, f"the untouched copy fails verification: {result.original_output[-1500:]}"
    assert result.tampered_rc != 0, f"a flipped byte at {result.offset} went unnoticed: {result.tampered_output}"
