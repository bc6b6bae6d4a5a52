"""The central journal (MON-04, LOG-04) with Debian's real binaries on loopback, no lab: the monitoring role's
receiver set-up script makes one sealed receiver per sending host, each started with the role's own unit command
line, behind stunnel with the role's own configuration and connection router, fed by systemd-journal-upload over
mutual TLS; then the role's seal verifier and the lab drill's tamper script against what arrived. Also the two
roles' shape and `systemd-analyze verify` of their units.

Each receiver runs in a mount namespace of its own (unshare) with its own machine id bound over /etc/machine-id
and a temporary directory over /var/log/journal, as the role's units do on the host: the sealing key is
/var/log/journal/<machine id>/fss (systemd's journal-authenticate.c), nothing of this machine's journal is
touched."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client.parser import text_string_to_metric_families

from billkit.localsvc import free_port
from billkit.system import ensure_packages, require_command
from tests.hosts.monitoring.journal_support import parse, tamper_script
from tests.unit.journal_units import MONITORING, exec_start, render

VERIFY = MONITORING / "files/billkit-journal-verify"
RECEIVERS = MONITORING / "files/billkit-journal-receivers"
ROUTE = MONITORING / "files/billkit-journal-route"
UPLOAD = "/lib/systemd/systemd-journal-upload"
REMOTE = "/lib/systemd/systemd-journal-remote"
PYTHON = "/usr/bin/python3"
LOOPBACK = ipaddress.ip_address("127.0.0.1")

pytestmark = pytest.mark.control("MON-04")


# --- certificates made for the test --------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))  # fmt: skip
    path.chmod(0o600)


def make_ca(d: Path, cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    path = d / f"{cn}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def issue(
    d: Path, ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path], cn: str, subject: x509.Name | None = None
) -> Identity:
    ca_key, ca_cert, _ = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject or _name(cn)).issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn), x509.IPAddress(LOOPBACK)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    ident = Identity(d / f"{cn}.pem", d / f"{cn}.key")
    ident.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, ident.key)
    return ident


def wait_for(predicate: Any, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- the receivers ---------------------------------------------------------------------------------------------

SENDERS = ("app-1", "db-1")


@dataclass
class Receivers:
    root: Path
    port: int
    ca: Path
    varlog: Path  # bound over /var/log/journal in the receivers' namespaces
    config: Path  # the role's monitoring_journal_config_dir
    machine_ids: dict[str, str]
    kit_ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]

    @property
    def remote(self) -> Path:  # the host's /var/log/journal/remote
        return self.varlog / "remote"

    def output(self, sender: str) -> Path:
        return self.remote / self.machine_ids[sender]

    def key_file(self, sender: str) -> Path:
        return self.config / "senders" / sender / "verify.key"

    def key(self, sender: str) -> str:
        return self.key_file(sender).read_text().strip()

    def upload(self, ident: Identity, source: Path, ca: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [UPLOAD, "--follow=no", f"--file={source}", f"--url=https://127.0.0.1:{self.port}", f"--key={ident.key}",
             f"--cert={ident.cert}", f"--trust={ca or self.ca}"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip

    def messages(self, sender: str | None = None) -> list[str]:
        """What one sender's receiver holds, or (None) the whole central journal as the log readers read it."""
        directory = self.output(sender) if sender else self.remote
        out = subprocess.run(["journalctl", f"--directory={directory}", "-o", "cat", "--no-pager"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        return out.splitlines()

    def verify_args(self) -> list[str]:
        return ["--root", str(self.remote)] + [
            a for s in SENDERS for a in ("--receiver", f"{self.output(s)}={self.key_file(s)}")
        ]


def source_journal(d: Path, hostname: str, *messages: str) -> Path:
    """A small journal file as a host would hold it, written by journal-remote from the export format."""
    export = d / f"{hostname}-{uuid.uuid4().hex[:6]}.export"
    now = time.time_ns() // 1000
    export.write_text("".join(
        f"__REALTIME_TIMESTAMP={now + i}\n__MONOTONIC_TIMESTAMP={i + 1}\n_BOOT_ID={uuid.uuid4().hex}\n"
        f"_HOSTNAME={hostname}\nSYSLOG_IDENTIFIER=billkit-test\nMESSAGE={m}\n\n"
        for i, m in enumerate(messages)
    ))  # fmt: skip
    out = export.with_suffix(".journal")
    subprocess.run([REMOTE, f"--output={out}", str(export)], capture_output=True, check=True)
    return out


@pytest.fixture(scope="module")
def tools() -> None:
    ensure_packages(
        ["systemd-journal-remote", "stunnel4", "socat"], "the central journal's unit tests run Debian's binaries"
    )
    require_command("unshare", "util-linux")
    require_command("stunnel4", "stunnel4")


def in_namespace(varlog: Path, command: str, machine_id_file: Path | None = None) -> list[str]:
    """A command in a mount namespace of its own, the test's directory over /var/log/journal (and a receiver's
    machine id over /etc/machine-id), as the role's units see the host: nothing of this machine's journal is touched."""
    binds = f"mount --bind {varlog} /var/log/journal"
    if machine_id_file:
        binds += f" && mount --bind {machine_id_file} /etc/machine-id"
    return ["unshare", "--mount", "--propagation", "private", "sh", "-ec", f"{binds} && exec {command}"]


def set_up_receivers(varlog: Path, config: Path) -> dict[str, Any]:
    """The role's receiver set-up script, as its task runs it."""
    proc = subprocess.run(
        in_namespace(varlog, shlex.join([PYTHON, str(RECEIVERS), "--config-dir", str(config), *SENDERS])),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def receivers(tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receivers]:
    root = tmp_path_factory.mktemp("journal")
    kit_ca = make_ca(root, "kit-ca")
    mon = issue(root, kit_ca, "mon-1")
    varlog, config, run_dir = root / "varlog", root / "config", root / "run"
    varlog.mkdir()
    run_dir.mkdir()
    machine_ids = set_up_receivers(varlog, config)["receivers"]
    assert sorted(machine_ids) == sorted(SENDERS)

    procs: list[subprocess.Popen[str]] = []
    try:
        for sender, machine_id in machine_ids.items():
            # The role's unit for this sender, its socket moved into the test's directory.
            unit = render(MONITORING, "etc/systemd/system/billkit-journal-remote@.service.j2",
                          monitoring_journal_sender=sender, monitoring_journal_machine_id=machine_id)  # fmt: skip
            (run_dir / sender).mkdir()
            argv = [a.replace("/run/billkit-journal-remote", str(run_dir)) for a in exec_start(unit)]
            procs.append(subprocess.Popen(
                in_namespace(varlog, shlex.join(argv), config / "senders" / sender / "machine-id"),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            ))  # fmt: skip
            wait_for((run_dir / sender / "upload.sock").exists, f"{sender}'s receiver socket")
        port = free_port()
        conf = render(MONITORING, "etc/billkit/journal/stunnel.conf.j2", monitoring_listen_address="127.0.0.1",
                      monitoring_journal_port=port, monitoring_tls_dir=str(root))  # fmt: skip
        conf = conf.replace("/usr/local/sbin/billkit-journal-route", str(ROUTE))
        conf = conf.replace("/run/billkit-journal-remote", str(run_dir))
        conf = conf.replace(f"{root}/host.pem", str(mon.cert)).replace(f"{root}/ca.pem", str(kit_ca[2]))
        conf = conf.replace("/run/credentials/billkit-journal-tls.service/host.key", str(mon.key))
        (root / "stunnel.conf").write_text(conf)
        procs.append(subprocess.Popen(["stunnel4", str(root / "stunnel.conf")], stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, start_new_session=True))  # fmt: skip

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, "stunnel's port")
        yield Receivers(root, port, kit_ca[2], varlog, config, machine_ids, kit_ca)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()


def run_verify(args: list[str], textfile_dir: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, float]]:
    textfile_dir.mkdir(exist_ok=True)
    proc = subprocess.run([PYTHON, str(VERIFY), *args, "--textfile-dir", str(textfile_dir), "--pause", "0.2"],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    text = (textfile_dir / "billkit-journal.prom").read_text()
    metrics = {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples}
    return proc, metrics


def flip_in_copy(src: Path, dest_dir: Path, marker: str) -> Path:
    dest_dir.mkdir(exist_ok=True)
    data = bytearray(src.read_bytes())
    i = data.find(marker.encode())
    assert i >= 0, f"{marker} is not stored in {src}"
    data[i] ^= 0x01
    dest = dest_dir / src.name
    dest.write_bytes(bytes(data))
    return dest


def sealed(path: Path) -> bool:
    head = subprocess.run(["journalctl", "--header", f"--file={path}"], capture_output=True, text=True, check=True)
    return "SEALED" in head.stdout


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
    again = set_up_receivers(receivers.varlog, receivers.config)
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
