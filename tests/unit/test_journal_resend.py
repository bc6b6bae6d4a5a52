"""Uploads the central journal receives more than once (MON-04), with Debian's real binaries (journal_receivers.py).

systemd-journal-upload delivers at least once: an upload cut mid-request is sent again from its last saved cursor,
and a host's first upload starts with entries older than its receiver's sealing key. systemd-journal-remote seals
by the entries' own time, so either used to leave an untouched file that `journalctl --verify` fails ("Older entry
after newer tag"). The TLS front's router (billkit-journal-route) drops those entries and passes the rest as they
came. The receivers here seal every 2 s so that an upload spans several seal epochs."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.journal_receivers import Receivers, issue, journal_file, run_verify, running_receivers, wait_for

pytestmark = pytest.mark.control("MON-04")

SENDER = "app-1"
OLDER_ENTRY = "Older entry after newer tag"


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[Receivers]:
    with running_receivers(tmp_path, (SENDER,), interval="2s") as running:
        yield running


def export(marker: str, boot: str, stamps: list[int], extra: bytes = b"", monotonic: int | None = None) -> bytes:
    """Entries as a host's journal holds them: its boot, monotonic and wall-clock time (µs), MESSAGE=marker-i."""
    return b"".join(
        f"__REALTIME_TIMESTAMP={t}\n__MONOTONIC_TIMESTAMP={monotonic or 1000 + i}\n_BOOT_ID={boot}\n"
        f"_HOSTNAME={SENDER}\nSYSLOG_IDENTIFIER=billkit-test\nMESSAGE={marker}-{i}\n".encode() + extra + b"\n"
        for i, t in enumerate(stamps)
    )  # fmt: skip


def upload(receivers: Receivers, tmp_path: Path, body: bytes) -> None:
    ident = issue(tmp_path, receivers.kit_ca, SENDER)
    proc = receivers.upload(ident, journal_file(tmp_path, body))
    assert proc.returncode == 0, proc.stderr


def held(receivers: Receivers, marker: str) -> list[str]:
    return [m for m in receivers.messages(SENDER) if m.startswith(marker)]


def verify(receivers: Receivers) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["journalctl", "--verify", f"--verify-key={receivers.key(SENDER)}", f"--directory={receivers.output(SENDER)}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def post_to_receiver(receivers: Receivers, body: bytes) -> None:
    """Straight to the receiver's socket, past the router: what the receiver does on its own."""
    head = "POST /upload HTTP/1.1\r\nHost: mon-1\r\nContent-Type: application/vnd.fdo.journal\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(receivers.sockets / SENDER / "upload.sock"))
        s.sendall(head.encode() + body)
        assert s.recv(1024).startswith(b"HTTP/1.1 202"), "the receiver did not take the upload"


@pytest.mark.control("MON-04", "LOG-04")
def test_an_upload_sent_again_across_seal_epochs_is_stored_once_and_the_file_still_verifies(
    receivers: Receivers, tmp_path: Path
) -> None:
    marker, boot = f"again-{uuid.uuid4().hex}", uuid.uuid4().hex
    now = time.time_ns() // 1000
    stamps = [now + i * 1_500_000 for i in range(6)]  # 1.5 s apart: four seal epochs
    upload(receivers, tmp_path, export(marker, boot, stamps[:4]))
    wait_for(lambda: len(held(receivers, marker)) == 4, "the first upload")
    # Cut before its cursor was saved: the host sends the same entries again, then newer ones.
    upload(receivers, tmp_path, export(marker, boot, stamps))
    wait_for(lambda: f"{marker}-5" in held(receivers, marker), "the upload sent again")
    assert held(receivers, marker) == [f"{marker}-{i}" for i in range(6)], "an entry is missing or stored twice"
    proc, metrics = run_verify(receivers.verify_args(), tmp_path / "textfile")
    assert proc.returncode == 0 and metrics["billkit_journal_verify_success"] == 1, proc.stdout + proc.stderr

    # The same entries past the router, as the receiver would take them by itself: the untouched file fails.
    post_to_receiver(receivers, export(marker, boot, stamps[2:]))
    wait_for(lambda: len(held(receivers, marker)) == 10, "the copies, past the router")
    failed = verify(receivers)
    assert failed.returncode != 0 and OLDER_ENTRY in failed.stdout + failed.stderr, failed.stdout + failed.stderr


@pytest.mark.control("MON-04", "LOG-04")
def test_entries_of_one_instant_all_pass(receivers: Receivers, tmp_path: Path) -> None:
    """journald stamps the lines it reads from a stream at once alike (time, boot, monotonic): none of them is a
    copy, and none breaks the seal, in one upload or the next."""
    marker, boot = f"instant-{uuid.uuid4().hex}", uuid.uuid4().hex
    now = time.time_ns() // 1000
    upload(receivers, tmp_path, export(marker, boot, [now] * 5, monotonic=77))
    wait_for(lambda: len(held(receivers, marker)) == 5, "the first five")
    upload(receivers, tmp_path, export(f"{marker}-next", boot, [now] * 3, monotonic=77))
    wait_for(lambda: len(held(receivers, marker)) == 8, "the next three of the same instant")
    ok = verify(receivers)
    assert ok.returncode == 0, ok.stdout + ok.stderr


@pytest.mark.control("MON-04", "LOG-04")
def test_an_entry_whose_monotonic_clock_went_back_within_its_boot_is_dropped(
    receivers: Receivers, tmp_path: Path
) -> None:
    """Newer by the wall clock, older by the monotonic clock of the same boot: `journalctl --verify` fails such a file
    ('Entry timestamp out of synchronization', seen on a lab receiver's file before the router read uploads)."""
    marker, boot = f"monotonic-{uuid.uuid4().hex}", uuid.uuid4().hex
    now = time.time_ns() // 1000
    body = export(marker, boot, [now, now + 10, now + 20])
    body = body.replace(b"__MONOTONIC_TIMESTAMP=1001\n", b"__MONOTONIC_TIMESTAMP=5\n")
    upload(receivers, tmp_path, body)
    wait_for(lambda: f"{marker}-2" in held(receivers, marker), "the last entry")
    assert held(receivers, marker) == [f"{marker}-0", f"{marker}-2"]
    ok = verify(receivers)
    assert ok.returncode == 0, ok.stdout + ok.stderr


@pytest.mark.control("MON-04", "LOG-04")
def test_a_backlog_older_than_the_sealing_key_stays_on_its_host(receivers: Receivers, tmp_path: Path) -> None:
    """A host's first upload starts at its journal's head, long before its receiver existed: those entries stay in
    the host's own journal; the newer ones arrive, and the file verifies."""
    marker, boot = f"backlog-{uuid.uuid4().hex}", uuid.uuid4().hex
    now = time.time_ns() // 1000
    upload(receivers, tmp_path, export(marker, boot, [now - 3_600_000_000, now - 60_000_000, now, now + 1]))
    wait_for(lambda: f"{marker}-3" in held(receivers, marker), "the newer entries")
    assert held(receivers, marker) == [f"{marker}-2", f"{marker}-3"]
    ok = verify(receivers)
    assert ok.returncode == 0, ok.stdout + ok.stderr


@pytest.mark.control("MON-04")
def test_binary_fields_pass_the_router_intact(receivers: Receivers, tmp_path: Path) -> None:
    """The export format's binary fields (a size, then bytes that may hold newlines, '=' and an empty line) are
    skipped whole, not read as the end of an entry."""
    marker, boot = f"binary-{uuid.uuid4().hex}", uuid.uuid4().hex
    blob = b"a=b\n\nMESSAGE=forged\n\n\x00\xff"
    field = b"BLOB\n" + len(blob).to_bytes(8, "little") + blob + b"\n"
    now = time.time_ns() // 1000
    upload(receivers, tmp_path, export(marker, boot, [now, now + 1], extra=field))
    wait_for(lambda: f"{marker}-1" in held(receivers, marker), "the entries with a binary field")
    out = subprocess.run(["journalctl", f"--directory={receivers.output(SENDER)}", "-o", "json", "--no-pager"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    entries = [json.loads(line) for line in out.splitlines()]
    ours = [e for e in entries if str(e.get("MESSAGE", "")).startswith(marker)]
    assert [bytes(e["BLOB"]) for e in ours] == [blob, blob]
    assert not any(e.get("MESSAGE") == "forged" for e in entries)


def tls_to_router(receivers: Receivers, tmp_path: Path, request: bytes) -> bytes:
    """A raw request over mutual TLS with the sender's kit certificate; what comes back before the close."""
    ident = issue(tmp_path, receivers.kit_ca, SENDER)
    ctx = ssl.create_default_context(cafile=str(receivers.ca))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(ident.cert), str(ident.key))
    answer = b""
    with (
        socket.create_connection(("127.0.0.1", receivers.port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="mon-1") as s,
    ):
        s.sendall(request)
        try:
            while data := s.recv(4096):
                answer += data
                if b"\r\n\r\n" in answer and not answer.startswith(b"HTTP/1.1 100"):
                    break
        except (ssl.SSLError, OSError):
            pass
    return answer


@pytest.mark.control("MON-04")
def test_a_malformed_upload_is_cut_and_a_sized_one_goes_through(receivers: Receivers, tmp_path: Path) -> None:
    """A chunk size that is not hex ends the connection with nothing stored; a body with Content-Length (not what
    journal-upload sends, but HTTP) is passed on, re-chunked."""
    marker = f"sized-{uuid.uuid4().hex}"
    head = b"POST /upload HTTP/1.1\r\nHost: mon-1\r\nContent-Type: application/vnd.fdo.journal\r\n"
    bad = export(f"{marker}-bad", uuid.uuid4().hex, [time.time_ns() // 1000])
    answer = tls_to_router(receivers, tmp_path, head + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + bad + b"\r\n")
    assert not answer.startswith(b"HTTP/1.1 202"), answer
    body = export(marker, uuid.uuid4().hex, [time.time_ns() // 1000])
    answer = tls_to_router(receivers, tmp_path, head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    assert answer.startswith(b"HTTP/1.1 202"), answer
    wait_for(lambda: f"{marker}-0" in held(receivers, marker), "the sized upload")
    assert not any("-bad-" in m for m in receivers.messages(SENDER))
