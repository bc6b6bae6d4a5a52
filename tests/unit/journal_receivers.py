"""The central journal's receivers, running on loopback with Debian's real binaries and the monitoring role's own
files: its receiver set-up script, one sealed receiver per sending host started with the role's unit command line,
behind stunnel with the role's configuration and connection router. Shared by the journal's flow tests
(test_journal_central.py) and its re-sent uploads' tests (test_journal_resend.py).

Each receiver runs in a mount namespace of its own (unshare) with its own machine id bound over /etc/machine-id
and a temporary directory over /var/log/journal, as the role's units do on the host: the sealing key is
/var/log/journal/<machine id>/fss (systemd's journal-authenticate.c), nothing of this machine's journal is
touched."""

from __future__ import annotations

import datetime
import ipaddress
import json
import shlex
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client.parser import text_string_to_metric_families

from billkit.localsvc import free_port, stop_process
from billkit.system import ensure_packages, require_command
from tests.unit.journal_units import MONITORING, exec_start, render

VERIFY = MONITORING / "files/billkit-journal-verify"
RECEIVERS = MONITORING / "files/billkit-journal-receivers"
ROUTE = MONITORING / "files/billkit-journal-route"
UPLOAD = "/lib/systemd/systemd-journal-upload"
REMOTE = "/lib/systemd/systemd-journal-remote"
PYTHON = "/usr/bin/python3"
LOOPBACK = ipaddress.ip_address("127.0.0.1")

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


@dataclass
class Receivers:
    root: Path
    port: int
    ca: Path
    varlog: Path  # bound over /var/log/journal in the receivers' namespaces
    config: Path  # the role's monitoring_journal_config_dir
    machine_ids: dict[str, str]
    sockets: Path  # the receivers' socket directories, one per host
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
            a for s in self.machine_ids for a in ("--receiver", f"{self.output(s)}={self.key_file(s)}")
        ]


def source_journal(d: Path, hostname: str, *messages: str) -> Path:
    """A small journal file as a host would hold it, its entries stamped now."""
    now = time.time_ns() // 1000
    return journal_file(d, b"".join(
        f"__REALTIME_TIMESTAMP={now + i}\n__MONOTONIC_TIMESTAMP={i + 1}\n_BOOT_ID={uuid.uuid4().hex}\n"
        f"_HOSTNAME={hostname}\nSYSLOG_IDENTIFIER=billkit-test\nMESSAGE={m}\n\n".encode()
        for i, m in enumerate(messages)
    ))  # fmt: skip


def journal_file(d: Path, export: bytes) -> Path:
    """A journal file written by journal-remote from the journal export format."""
    path = d / f"source-{uuid.uuid4().hex[:8]}.export"
    path.write_bytes(export)
    out = path.with_suffix(".journal")
    subprocess.run([REMOTE, f"--output={out}", str(path)], capture_output=True, check=True)
    return out


def in_namespace(varlog: Path, command: str, machine_id_file: Path | None = None) -> list[str]:
    """A command in a mount namespace of its own, the test's directory over /var/log/journal (and a receiver's
    machine id over /etc/machine-id), as the role's units see the host: nothing of this machine's journal is touched."""
    binds = f"mount --bind {varlog} /var/log/journal"
    if machine_id_file:
        binds += f" && mount --bind {machine_id_file} /etc/machine-id"
    return ["unshare", "--mount", "--propagation", "private", "sh", "-ec", f"{binds} && exec {command}"]


def set_up_receivers(varlog: Path, config: Path, senders: tuple[str, ...], interval: str) -> dict[str, Any]:
    """The role's receiver set-up script, as its task runs it."""
    command = [PYTHON, str(RECEIVERS), "--config-dir", str(config), "--interval", interval, *senders]
    proc = subprocess.run(
        in_namespace(varlog, shlex.join(command)),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def tools() -> None:
    ensure_packages(
        ["systemd-journal-remote", "stunnel4", "socat"], "the central journal's unit tests run Debian's binaries"
    )
    require_command("unshare", "util-linux")
    require_command("stunnel4", "stunnel4")


@contextmanager
def running_receivers(root: Path, senders: tuple[str, ...], interval: str = "15min") -> Iterator[Receivers]:
    """A receiver per sender (sealing every INTERVAL), behind the role's TLS front, in ROOT; stopped on exit."""
    tools()
    kit_ca = make_ca(root, "kit-ca")
    mon = issue(root, kit_ca, "mon-1")
    varlog, config, run_dir = root / "varlog", root / "config", root / "run"
    varlog.mkdir()
    run_dir.mkdir()
    machine_ids = set_up_receivers(varlog, config, senders, interval)["receivers"]
    assert sorted(machine_ids) == sorted(senders)

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
        conf = conf.replace("/etc/billkit/journal/", f"{config}/").replace("/var/log/journal/", f"{varlog}/")
        conf = conf.replace(f"{root}/host.pem", str(mon.cert)).replace(f"{root}/ca.pem", str(kit_ca[2]))
        conf = conf.replace("/run/credentials/billkit-journal-tls.service/host.key", str(mon.key))
        (root / "stunnel.conf").write_text(conf)
        procs.append(subprocess.Popen(["stunnel4", str(root / "stunnel.conf")], stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, start_new_session=True))  # fmt: skip

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, "stunnel's port")
        yield Receivers(root, port, kit_ca[2], varlog, config, machine_ids, run_dir, kit_ca)
    finally:
        for p in procs:
            stop_process(p, timeout=10, group=True)  # stunnel's connection routers are its children


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
