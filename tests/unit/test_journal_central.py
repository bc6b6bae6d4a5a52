"""The central journal (MON-04, LOG-04) with Debian's real binaries on loopback, no lab (journal_receivers.py):
systemd-journal-upload over mutual TLS into one sealed receiver per sending host, then the role's seal verifier and
the lab drill's tamper script against what arrived."""

from __future__ import annotations

import shlex
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.hosts.monitoring.journal_support import parse, tamper_script
from tests.unit.journal_receivers import (
    PYTHON,
    RECEIVERS,
    Identity,
    Receivers,
    flip_in_copy,
    in_namespace,
    issue,
    make_ca,
    run_verify,
    running_receivers,
    sealed,
    set_up_receivers,
    source_journal,
    wait_for,
)

pytestmark = pytest.mark.control("MON-04")

SENDERS = ("app-1", "db-1")


@pytest.fixture(scope="module")
def receivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receivers]:
    with running_receivers(tmp_path_factory.mktemp("journal"), SENDERS) as running:
        yield running


# --- the flow, with the real binaries ---------------------------------------------------------------------------


@pytest.mark.control("MON-04", "LOG-04")
def test_a_host_with_a_kit_certificate_uploads_into_its_own_sealed_files(receivers: Receivers, tmp_path: Path) -> None:
    app = issue(receivers.root, receivers.kit_ca, "app-1")
    marker = f"upload-{uuid.uuid4().hex}"
    proc = receivers.upload(app, source_journal(tmp_path, "app-1", marker, marker + "-second"))
    assert proc.returncode == 0, proc.stderr
    wait_for(lambda: marker + "-second" in receivers.messages("app-1"), "the uploaded entries")
    assert marker not in receivers.messages("db-1")
    assert marker + "-second" in receivers.messages(), "the log readers' view of the whole journal lacks it"
    for sender in SENDERS:
        files = list(receivers.output(sender).glob("*.journal"))
        assert files and all(sealed(f) for f in files), f"{sender}: {files}"
        fss = receivers.varlog / receivers.machine_ids[sender] / "fss"
        assert fss.stat().st_mode & 0o077 == 0, "the sealing key is readable by others"
        assert receivers.key_file(sender).stat().st_mode & 0o077 == 0, "the verification key is readable by others"
    assert len(set(receivers.machine_ids.values())) == len(SENDERS), "each receiver seals with a key of its own"


@pytest.mark.control("MON-04")
def test_a_host_cannot_write_into_another_hosts_journal_by_claiming_its_name(
    receivers: Receivers, tmp_path: Path
) -> None:
    """app-1's certificate with entries that say _HOSTNAME=db-1: they land in app-1's files, never in db-1's."""
    app = issue(receivers.root, receivers.kit_ca, "app-1")
    marker = f"forged-{uuid.uuid4().hex}"
    assert receivers.upload(app, source_journal(tmp_path, "db-1", marker)).returncode == 0
    wait_for(lambda: marker in receivers.messages("app-1"), "the entry in the sender's own files")
    assert marker not in receivers.messages("db-1")


def assert_refused(receivers: Receivers, ident: Identity, tmp_path: Path, why: str) -> None:
    marker = f"refused-{uuid.uuid4().hex}"
    proc = receivers.upload(ident, source_journal(tmp_path, "db-1", marker))
    assert proc.returncode != 0, why
    time.sleep(0.5)
    assert marker not in receivers.messages()


@pytest.mark.parametrize("subject", ["intruder", "O=billkit, CN=db-1"])
@pytest.mark.control("MON-04")
def test_a_kit_certificate_that_names_no_sending_host_is_refused(
    receivers: Receivers, tmp_path: Path, subject: str
) -> None:
    """A certificate of the kit's CA for a host without a receiver, or whose subject is more than a host name."""
    name = None
    if subject.startswith("O="):
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "billkit"),
                          x509.NameAttribute(NameOID.COMMON_NAME, "db-1")])  # fmt: skip
    ident = issue(tmp_path, receivers.kit_ca, "odd" if name else subject, name)
    assert_refused(receivers, ident, tmp_path, "a certificate naming no sending host got through")


@pytest.mark.control("MON-04")
def test_an_uploader_with_a_certificate_of_another_ca_is_refused(receivers: Receivers, tmp_path: Path) -> None:
    rogue = issue(tmp_path, make_ca(tmp_path, "rogue-ca"), "db-1")
    assert_refused(receivers, rogue, tmp_path, "an uploader of another CA got through")


@pytest.mark.control("MON-04")
def test_a_client_without_a_certificate_never_reaches_a_receiver(receivers: Receivers) -> None:
    ctx = ssl.create_default_context(cafile=str(receivers.ca))
    ctx.check_hostname = False
    body = b"MESSAGE=forged\n_HOSTNAME=db-1\n\n"
    request = (b"POST /upload HTTP/1.1\r\nHost: mon-1\r\nContent-Type: application/vnd.fdo.journal\r\n"
               b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip
    with (
        pytest.raises((ssl.SSLError, ConnectionError, OSError)),
        socket.create_connection(("127.0.0.1", receivers.port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="mon-1") as s,
    ):
        s.sendall(request)
        if not s.recv(1024):
            raise ConnectionError("closed without a reply")
    assert "forged" not in receivers.messages()


@pytest.mark.control("MON-04")
def test_the_set_up_is_idempotent_and_refuses_a_sealing_key_whose_verification_key_is_lost(
    receivers: Receivers, tmp_path: Path
) -> None:
    again = set_up_receivers(receivers.varlog, receivers.config, SENDERS, "15min")
    assert again == {"receivers": receivers.machine_ids, "changed": []}
    # A copy of the set-up whose app-1 verification key is gone: nothing could prove app-1's files untouched.
    varlog, config = tmp_path / "varlog", tmp_path / "config"
    shutil.copytree(receivers.varlog, varlog, ignore=shutil.ignore_patterns("*.journal"))
    shutil.copytree(receivers.config, config)
    (config / "senders/app-1/verify.key").unlink()
    proc = subprocess.run(
        in_namespace(varlog, shlex.join([PYTHON, str(RECEIVERS), "--config-dir", str(config), *SENDERS])),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and "verify.key is missing while the sealing key" in proc.stderr, proc.stderr
    bad = subprocess.run([PYTHON, str(RECEIVERS), "--config-dir", str(config), "../etc"], capture_output=True,
                         text=True, check=False)  # fmt: skip
    assert bad.returncode != 0 and "not host names" in bad.stderr


@pytest.mark.control("MON-04")
def test_the_received_files_verify_and_a_changed_byte_fails(receivers: Receivers, tmp_path: Path) -> None:
    for sender in SENDERS:
        ident = issue(tmp_path, receivers.kit_ca, sender)
        assert receivers.upload(ident, source_journal(tmp_path, sender, f"seal-{sender}")).returncode == 0
        wait_for(lambda s=sender: f"seal-{s}" in receivers.messages(s), f"{sender}'s entry")

    # The live (online) files pass the role's verifier: their tails since the last seal are reported, not failed.
    proc, metrics = run_verify(receivers.verify_args(), tmp_path / "textfile")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert metrics["billkit_journal_verify_success"] == 1 and metrics["billkit_journal_verify_files"] >= 2
    assert abs(metrics["billkit_journal_verify_last_run_timestamp_seconds"] - time.time()) < 60

    # One byte of an entry changed in a copy: the verifier fails it, and says so in its metrics.
    live = next(f for f in receivers.output("db-1").glob("*.journal") if b"seal-db-1" in f.read_bytes())
    tampered = flip_in_copy(live, tmp_path / "tampered", "seal-db-1")
    args = ["--root", str(tampered.parent), "--receiver", f"{tampered.parent}={receivers.key_file('db-1')}"]
    proc, metrics = run_verify(args, tmp_path / "textfile2")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert metrics["billkit_journal_verify_success"] == 0 and metrics["billkit_journal_verify_failed_files"] == 1

    # Another key, even another receiver's, does not verify the untouched file: the seal is checked, not only hashes.
    for key in (wrong_key(receivers.key("db-1")), receivers.key("app-1")):
        other = subprocess.run(["journalctl", "--verify", f"--verify-key={key}", f"--file={live}"],
                               capture_output=True, text=True, check=False)  # fmt: skip
        assert other.returncode != 0, other.stdout + other.stderr


def wrong_key(key: str) -> str:
    seed, rest = key.split("/", 1)
    flipped = ("0" if seed[0] != "0" else "1") + seed[1:]
    return f"{flipped}/{rest}"


@pytest.mark.control("MON-04")
def test_an_unsealed_file_or_a_file_no_receiver_covers_fails(receivers: Receivers, tmp_path: Path) -> None:
    """A file written without the sealing key (a forged replacement) passes plain --verify; the verifier refuses it.
    So it does a file put anywhere else below the central journal, which the log readers would read all the same."""
    d = tmp_path / "unsealed"
    d.mkdir()
    source_journal(d, "db-1", "unsealed replacement").rename(d / "remote.journal")
    forged = d / "remote.journal"
    plain = subprocess.run(["journalctl", "--verify", f"--verify-key={receivers.key('db-1')}", f"--file={forged}"],
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert plain.returncode == 0, "journalctl itself accepts an unsealed file: the verifier's header check matters"
    proc, metrics = run_verify(["--root", str(d), "--receiver", f"{d}={receivers.key_file('db-1')}"],
                               tmp_path / "textfile")  # fmt: skip
    assert proc.returncode == 1 and "not sealed" in proc.stderr
    assert metrics["billkit_journal_verify_success"] == 0

    stray_root = tmp_path / "root"
    (stray_root / uuid.uuid4().hex).mkdir(parents=True)
    shutil.copy(forged, stray_root / "stray.journal")
    proc, metrics = run_verify(["--root", str(stray_root)] + receivers.verify_args()[2:], tmp_path / "textfile2")
    assert proc.returncode == 1 and "no key covers it" in proc.stderr, proc.stderr
    assert metrics["billkit_journal_verify_failed_files"] == 1


@pytest.mark.control("MON-04")
def test_the_lab_drill_script_detects_the_flipped_byte(receivers: Receivers, tmp_path: Path) -> None:
    """tests/hosts/monitoring/journal_support.py's script, run here as root against the test's receiver."""
    app = issue(tmp_path, receivers.kit_ca, "app-1")
    marker = f"drill-{uuid.uuid4().hex}"
    assert receivers.upload(app, source_journal(tmp_path, "app-1", marker)).returncode == 0
    wait_for(lambda: marker in receivers.messages("app-1"), "the uploaded entry")
    script = tamper_script(str(receivers.output("app-1")), str(receivers.key_file("app-1")))
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=120, check=True).stdout
    result = parse(out)
    assert result.detected, out
    assert "FAIL" in result.tampered_output and "PASS" in result.original_output
