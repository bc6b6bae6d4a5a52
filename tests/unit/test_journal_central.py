"""The central journal (MON-04, LOG-04) with Debian's real binaries on loopback, no lab: systemd-journal-remote
started with the monitoring role's own command line and sealing key set-up, behind stunnel with the role's own
configuration, fed by systemd-journal-upload over mutual TLS; then the role's seal verifier and the lab drill's
tamper script against what arrived. Also the two roles' shape and `systemd-analyze verify` of their units.

The receiver runs in a mount namespace of its own (unshare) with its own machine id bound over /etc/machine-id
and a temporary directory over /var/log/journal, as the role's unit and `systemd-run` do on the host: the
sealing key is /var/log/journal/<machine id>/fss (systemd's journal-authenticate.c), nothing of this machine's
journal is touched.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shlex
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

import jinja2
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client.parser import text_string_to_metric_families

from billkit.controls import ROOT
from billkit.system import ensure_packages, require_command
from tests.hosts.monitoring.journal_support import parse, tamper_script

MONITORING = ROOT / "playbooks/roles/monitoring"
HOST_MONITORING = ROOT / "playbooks/roles/host_monitoring"
VERIFY = MONITORING / "files/billkit-journal-verify"
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


def issue(d: Path, ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path], cn: str) -> Identity:
    ca_key, ca_cert, _ = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject).public_key(key.public_key())
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


# --- the role's own files, rendered -----------------------------------------------------------------------------


def render(role: Path, template: str, **values: Any) -> str:
    defaults: dict[str, Any] = yaml.safe_load((role / "defaults/main.yml").read_text())
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)  # noqa: S701 -- units, not HTML
    return env.from_string((role / "templates" / template).read_text()).render(
        defaults | {"ansible_managed": "managed"} | values
    )


def exec_start(unit: str) -> list[str]:
    line = next(x for x in unit.splitlines() if x.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Any, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- the receiver ----------------------------------------------------------------------------------------------


@dataclass
class Receiver:
    root: Path
    port: int
    ca: Path
    verify_key: str
    output: Path  # the receiver's output directory (the host's /var/log/journal/remote)
    fss: Path
    procs: list[subprocess.Popen[str]]
    kit_ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]

    def upload(self, ident: Identity, source: Path, ca: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [UPLOAD, "--follow=no", f"--file={source}", f"--url=https://127.0.0.1:{self.port}", f"--key={ident.key}",
             f"--cert={ident.cert}", f"--trust={ca or self.ca}"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip

    def messages(self) -> list[str]:
        out = subprocess.run(["journalctl", f"--directory={self.output}", "-o", "cat", "--no-pager"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        return out.splitlines()


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
    ensure_packages(["systemd-journal-remote", "stunnel4"], "the central journal's unit tests run Debian's binaries")
    require_command("unshare", "util-linux")
    require_command("stunnel4", "stunnel4")


@pytest.fixture(scope="module")
def receiver(tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    root = tmp_path_factory.mktemp("journal")
    kit_ca = make_ca(root, "kit-ca")
    mon = issue(root, kit_ca, "mon-1")
    machine_id = uuid.uuid4().hex
    (root / "machine-id").write_text(machine_id + "\n")
    varlog = root / "varlog"
    (varlog / machine_id).mkdir(parents=True)
    output = varlog / "remote"
    output.mkdir()
    run_dir = root / "run"
    run_dir.mkdir()
    sock = run_dir / "upload.sock"
    binds = f"mount --bind {root / 'machine-id'} /etc/machine-id && mount --bind {varlog} /var/log/journal"

    # The role's set-up of the sealing key: once, the receiver's machine id, the verification key on stdout.
    setup = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-ec",
         f"{binds} && exec journalctl --setup-keys --interval=15min"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    verify_key = setup.stdout.strip()
    fss = varlog / machine_id / "fss"
    assert fss.is_file() and verify_key, setup.stderr

    # The role's receiver command line, its socket and output moved into the test's directories.
    unit = render(
        MONITORING, "etc/systemd/system/billkit-journal-remote.service.j2", monitoring_journal_machine_id=machine_id
    )
    # (the output path stays: the temporary directory is bound over /var/log/journal)
    argv = [a.replace("/run/billkit-journal-remote/upload.sock", str(sock)) for a in exec_start(unit)]
    remote = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-ec", f"{binds} && exec {shlex.join(argv)}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    procs = [remote]
    try:
        wait_for(sock.exists, "the receiver's socket")
        port = free_port()
        conf = render(MONITORING, "etc/billkit/journal/stunnel.conf.j2", monitoring_listen_address="127.0.0.1",
                      monitoring_journal_port=port, monitoring_tls_dir=str(root))  # fmt: skip
        conf = conf.replace("/run/billkit-journal-remote/upload.sock", str(sock))
        conf = conf.replace(f"{root}/host.pem", str(mon.cert)).replace(f"{root}/ca.pem", str(kit_ca[2]))
        conf = conf.replace("/run/credentials/billkit-journal-tls.service/host.key", str(mon.key))
        (root / "stunnel.conf").write_text(conf)
        tls = subprocess.Popen(["stunnel4", str(root / "stunnel.conf")], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
        procs.append(tls)

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, "stunnel's port")
        yield Receiver(root, port, kit_ca[2], verify_key, output, fss, procs, kit_ca)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()


def run_verify(
    directory: Path, key: str, textfile_dir: Path, tmp: Path
) -> tuple[subprocess.CompletedProcess[str], dict[str, float]]:
    key_file = tmp / f"verify-{uuid.uuid4().hex[:6]}.key"
    key_file.write_text(key + "\n")
    textfile_dir.mkdir(exist_ok=True)
    proc = subprocess.run([PYTHON, str(VERIFY), "--directory", str(directory), "--verify-key-file", str(key_file),
                           "--textfile-dir", str(textfile_dir), "--pause", "0.2"],
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


# --- the flow, with the real binaries ---------------------------------------------------------------------------


@pytest.mark.control("MON-04", "LOG-04")
def test_a_host_with_a_kit_certificate_uploads_and_the_entries_arrive_sealed(
    receiver: Receiver, tmp_path: Path
) -> None:
    app = issue(receiver.root, receiver.kit_ca, "app-1")
    marker = f"upload-{uuid.uuid4().hex}"
    proc = receiver.upload(app, source_journal(tmp_path, "app-1", marker, marker + "-second"))
    assert proc.returncode == 0, proc.stderr
    wait_for(lambda: marker + "-second" in receiver.messages(), "the uploaded entries")
    files = list(receiver.output.glob("*.journal"))
    assert files, "the receiver wrote no file"
    for f in files:
        head = subprocess.run(["journalctl", "--header", f"--file={f}"], capture_output=True, text=True, check=True)
        assert "SEALED" in head.stdout, f"{f} is not sealed:\n{head.stdout}"
    assert receiver.fss.stat().st_mode & 0o077 == 0, "the sealing key is readable by others"


@pytest.mark.control("MON-04")
def test_an_uploader_with_a_certificate_of_another_ca_is_refused(receiver: Receiver, tmp_path: Path) -> None:
    rogue_ca = make_ca(tmp_path, "rogue-ca")
    rogue = issue(tmp_path, rogue_ca, "app-1")
    marker = f"rogue-{uuid.uuid4().hex}"
    proc = receiver.upload(rogue, source_journal(tmp_path, "app-1", marker))
    assert proc.returncode != 0, "an uploader of another CA got through"
    time.sleep(0.5)
    assert marker not in receiver.messages()


@pytest.mark.control("MON-04")
def test_a_client_without_a_certificate_never_reaches_the_receiver(receiver: Receiver) -> None:
    ctx = ssl.create_default_context(cafile=str(receiver.ca))
    ctx.check_hostname = False
    body = b"MESSAGE=forged\n_HOSTNAME=db-1\n\n"
    request = (b"POST /upload HTTP/1.1\r\nHost: mon-1\r\nContent-Type: application/vnd.fdo.journal\r\n"
               b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip
    with (
        pytest.raises((ssl.SSLError, ConnectionError, OSError)),
        socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="mon-1") as s,
    ):
        s.sendall(request)
        if not s.recv(1024):
            raise ConnectionError("closed without a reply")
    assert "forged" not in receiver.messages()


@pytest.mark.control("MON-04")
def test_the_received_file_verifies_and_a_changed_byte_fails(receiver: Receiver, tmp_path: Path) -> None:
    app = issue(receiver.root, receiver.kit_ca, "app-2")
    marker = f"seal-{uuid.uuid4().hex}"
    assert receiver.upload(app, source_journal(tmp_path, "app-2", marker)).returncode == 0
    wait_for(lambda: marker in receiver.messages(), "the uploaded entry")

    # The live (online) file passes the role's verifier: its tail since the last seal is reported, not failed.
    proc, metrics = run_verify(receiver.output, receiver.verify_key, tmp_path / "textfile", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert metrics["billkit_journal_verify_success"] == 1 and metrics["billkit_journal_verify_files"] >= 1
    assert abs(metrics["billkit_journal_verify_last_run_timestamp_seconds"] - time.time()) < 60

    # One byte of the entry changed in a copy: the verifier fails it, and says so in its metrics.
    live = next(f for f in receiver.output.glob("*.journal") if marker.encode() in f.read_bytes())
    tampered = flip_in_copy(live, tmp_path / "tampered", marker)
    proc, metrics = run_verify(tampered.parent, receiver.verify_key, tmp_path / "textfile2", tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert metrics["billkit_journal_verify_success"] == 0 and metrics["billkit_journal_verify_failed_files"] == 1

    # Another key does not verify the untouched file: the seal, not only the hashes, is checked.
    other = subprocess.run(["journalctl", "--verify", f"--verify-key={wrong_key(receiver.verify_key)}",
                            f"--file={live}"], capture_output=True, text=True, check=False)  # fmt: skip
    assert other.returncode != 0, other.stdout + other.stderr


def wrong_key(key: str) -> str:
    seed, rest = key.split("/", 1)
    flipped = ("0" if seed[0] != "0" else "1") + seed[1:]
    return f"{flipped}/{rest}"


@pytest.mark.control("MON-04")
def test_an_unsealed_file_in_the_central_journal_fails(receiver: Receiver, tmp_path: Path) -> None:
    """A file written without the sealing key (a forged replacement) passes plain --verify; the verifier refuses it."""
    d = tmp_path / "unsealed"
    d.mkdir()
    source_journal(d, "db-1", "unsealed replacement").rename(d / "remote.journal")
    forged = d / "remote.journal"
    plain = subprocess.run(["journalctl", "--verify", f"--verify-key={receiver.verify_key}", f"--file={forged}"],
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert plain.returncode == 0, "journalctl itself accepts an unsealed file: the verifier's header check matters"
    proc, metrics = run_verify(d, receiver.verify_key, tmp_path / "textfile", tmp_path)
    assert proc.returncode == 1 and "not sealed" in proc.stderr
    assert metrics["billkit_journal_verify_success"] == 0


@pytest.mark.control("MON-04")
def test_the_lab_drill_script_detects_the_flipped_byte(receiver: Receiver, tmp_path: Path) -> None:
    """tests/hosts/monitoring/journal_support.py's script, run here as root against the test's receiver."""
    app = issue(receiver.root, receiver.kit_ca, "app-3")
    marker = f"drill-{uuid.uuid4().hex}"
    assert receiver.upload(app, source_journal(tmp_path, "app-3", marker)).returncode == 0
    wait_for(lambda: marker in receiver.messages(), "the uploaded entry")
    key_file = tmp_path / "verify.key"
    key_file.write_text(receiver.verify_key + "\n")
    out = subprocess.run(["sh", "-c", tamper_script(str(receiver.output), str(key_file))], capture_output=True,
                         text=True, timeout=120, check=True).stdout  # fmt: skip
    result = parse(out)
    assert result.detected, out
    assert "FAIL" in result.tampered_output and "PASS" in result.original_output


# --- the roles' shape ---------------------------------------------------------------------------------------------


def _tasks(role: Path, name: str) -> list[dict[str, Any]]:
    return yaml.safe_load((role / "tasks" / name).read_text())


@pytest.mark.parametrize(("role", "concern", "gate"), [
    (HOST_MONITORING, "journal_upload.yml", "host_monitoring_journal_upload_enabled"),
    (MONITORING, "journal_remote.yml", "monitoring_journal_enabled"),
])  # fmt: skip
def test_each_role_imports_its_journal_concern_gated_and_documents_its_variables(
    role: Path, concern: str, gate: str
) -> None:
    main = _tasks(role, "main.yml")
    entry = next(t for t in main if t.get("ansible.builtin.import_tasks") == concern)
    assert entry["when"] == f"{gate} | bool" and "MON-04" in entry["name"]
    defaults: dict[str, Any] = yaml.safe_load((role / "defaults/main.yml").read_text())
    specs = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    prefix = "host_monitoring_journal_" if role == HOST_MONITORING else "monitoring_journal_"
    for name, value in defaults.items():
        if name.startswith(prefix):
            assert name in specs and specs[name]["default"] == value, f"{name}: undocumented or a different default"
    assert defaults[gate] is False, "enabled only where the receiver is deployed"
    for task in _tasks(role, concern):
        assert any(f"MON-0{n}" in task["name"] or "LOG-04" in task["name"] for n in (2, 4)), task["name"]


def test_the_upload_is_refused_without_its_url_and_sends_with_a_credential_and_restarts() -> None:
    first = _tasks(HOST_MONITORING, "journal_upload.yml")[0]
    assert "ansible.builtin.assert" in first and "host_monitoring_journal_upload_url" in str(
        first["ansible.builtin.assert"]
    )
    conf = render(HOST_MONITORING, "etc/systemd/journal-upload.conf.d/billkit.conf.j2",
                  host_monitoring_journal_upload_url="https://10.77.40.12:19532")  # fmt: skip
    assert "URL=https://10.77.40.12:19532" in conf
    assert "ServerKeyFile=/run/credentials/systemd-journal-upload.service/host.key" in conf
    assert "TrustedCertificateFile=/etc/billkit/monitoring/ca.pem" in conf
    dropin = render(HOST_MONITORING, "etc/systemd/system/systemd-journal-upload.service.d/billkit.conf.j2")
    assert "LoadCredential=host.key:/etc/billkit/monitoring/host.key" in dropin
    assert "Restart=always" in dropin and "RestartSec=5s" in dropin


@pytest.mark.control("MON-02", "MON-04")
def test_the_systemd_collector_reports_the_upload_unit() -> None:
    import re

    units = yaml.safe_load((HOST_MONITORING / "defaults/main.yml").read_text())["host_monitoring_systemd_units"]
    assert re.fullmatch(units, "systemd-journal-upload.service")
    assert not re.fullmatch(units, "systemd-journal-remote.service")


@pytest.mark.control("MON-04", "LOG-04")
def test_the_receiver_seals_keeps_13_months_and_listens_only_behind_the_tls_front() -> None:
    unit = render(
        MONITORING, "etc/systemd/system/billkit-journal-remote.service.j2", monitoring_journal_machine_id="0" * 32
    )
    argv = exec_start(unit)
    assert "--seal=yes" in argv and "--listen-http=/run/billkit-journal-remote/upload.sock" in argv
    assert not any(a.startswith(("--listen-https", "--listen-raw")) for a in argv)
    assert "RestrictAddressFamilies=AF_UNIX" in unit and "PrivateNetwork=yes" in unit
    assert "BindReadOnlyPaths=/etc/billkit/journal/machine-id:/etc/machine-id" in unit
    conf = render(MONITORING, "etc/billkit/journal/stunnel.conf.j2", monitoring_listen_address="10.77.40.12",
                  monitoring_journal_port=19532)  # fmt: skip
    for line in (
        "accept = 10.77.40.12:19532",
        "requireCert = yes",
        "verifyChain = yes",
        "CAfile = /etc/billkit/monitoring/ca.pem",
        "key = /run/credentials/billkit-journal-tls.service/host.key",
    ):
        assert line in conf
    vacuum = render(MONITORING, "etc/systemd/system/billkit-journal-vacuum.service.j2")
    assert "--vacuum-time=13months" in vacuum and "--directory=/var/log/journal/remote" in vacuum
    fetch = next(t for t in _tasks(MONITORING, "journal_remote.yml") if "ansible.builtin.fetch" in t)
    assert fetch["when"] == "monitoring_journal_verify_key_fetch_dir | length > 0"


UNITS = [
    (HOST_MONITORING, "etc/systemd/system/systemd-journal-upload.service.d/billkit.conf.j2", None),
    (MONITORING, "etc/systemd/system/billkit-journal-remote.service.j2", None),
    (MONITORING, "etc/systemd/system/billkit-journal-tls.service.j2", "billkit-journal-remote.service"),
    (MONITORING, "etc/systemd/system/billkit-journal-verify.service.j2", None),
    (MONITORING, "etc/systemd/system/billkit-journal-verify.timer.j2", "billkit-journal-verify.service"),
    (MONITORING, "etc/systemd/system/billkit-journal-vacuum.service.j2", None),
    (MONITORING, "etc/systemd/system/billkit-journal-vacuum.timer.j2", "billkit-journal-vacuum.service"),
]


@pytest.mark.parametrize(("role", "template", "pair"), UNITS, ids=[Path(t).name for _, t, _ in UNITS])
def test_systemd_analyze_accepts_the_units(
    tools: None, role: Path, template: str, pair: str | None, tmp_path: Path
) -> None:
    values = {"monitoring_journal_machine_id": "0" * 32}
    name = Path(template).name.removesuffix(".j2")
    if name == "billkit.conf":  # a drop-in: verified on the packaged unit it extends
        unit_dir = tmp_path / "systemd-journal-upload.service.d"
        unit_dir.mkdir()
        (unit_dir / name).write_text(render(role, template, **values))
        target = tmp_path / "systemd-journal-upload.service"
        target.write_text(Path("/lib/systemd/system/systemd-journal-upload.service").read_text())
    else:
        target = tmp_path / name
        target.write_text(render(role, template, **values))
        if pair:
            (tmp_path / pair).write_text(render(role, f"etc/systemd/system/{pair}.j2", **values))
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(target)], capture_output=True, text=True,
                          check=False, env=dict(os.environ, SYSTEMD_UNIT_PATH=f"{tmp_path}:"))  # fmt: skip
    problems = [line for line in proc.stderr.splitlines() if "billkit" in line or name in line]
    assert proc.returncode == 0 and not problems, proc.stderr
