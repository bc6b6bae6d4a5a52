"""The app tier and the edge in the lab: what `billkit up` does around the billing_app and waf roles.

1. ``build_wheelhouse``: the app as a wheel plus its runtime dependencies' wheels, pinned to uv.lock
   (hosts never reach a package index), rebuilt only when the lock or the app changes.
2. ``prepare``: service certificates from the PKI engine for edge-1 and the app hosts (a short-lived
   root token is made only when one is missing or past two thirds of its life), the AppRole role
   IDs, the session-signing key, and the roles' variables (ports from the topology) as group_vars
   next to the generated inventory; ``migrate_and_bootstrap``: the migrations (as the schema owner,
   with a 15-minute dynamic login) and the first admin, once.
3. the ``billing_app.yml`` playbook installs the app hosts (venv from the wheelhouse, sandboxed
   unit, certificate, role IDs); the unit is enabled but started only by the next step.
4. ``deliver``: every app host whose service is not running, whose release or settings changed, or
   whose secret ID is due for renewal gets two new response-wrapped secret IDs (single use,
   10-minute TTL) and a restart; the app unwraps them once at start and keeps them in memory only.
5. the ``waf.yml`` playbook installs edge-1 in front of both app hosts.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac

from billkit.controls import ROOT
from billkit.lab import inventory
from billkit.lab.state import LAB_DIR
from billkit.vault.server import DOMAIN
from infra.topology import (
    APP_METRICS,
    APP_PORT,
    HTTP,
    HTTPS,
    LAB_PUBLISHED_HTTPS,
    POSTGRES,
    VAULT_API,
    LabHost,
    hosts_of,
    lab_floating_address,
)

Progress = Callable[[str], None]

# The name every app host's certificate carries besides its own: what the WAF verifies upstream.
APP_TLS_NAME = f"app.{DOMAIN}"
# The name both edge hosts answer to (with the floating address they share): a client sees one edge.
EDGE_TLS_NAME = f"edge.{DOMAIN}"
# What the app imports (app_stub): pinned to the lock file's versions when the wheelhouse is built.
APP_REQUIREMENTS = (
    "fastapi", "uvicorn", "psycopg[binary,pool]", "hvac", "jinja2", "python-multipart", "argon2-cffi",
    "pyotp", "cryptography", "httpx", "pydantic", "babel", "segno", "prometheus-client",
)  # fmt: skip
APP_DIST = "billkit-app"
WRAP_TTL = "10m"
# The billing database on db-1 (the postgresql role creates it).
DB_NAME = "billing"


def _quiet(_: str) -> None:
    pass


def app_dir() -> Path:
    return LAB_DIR / "app"


def tls_staging() -> Path:
    """<host>/server.pem (leaf + chain), <host>/server.key (0600) and ca.pem (the lab's root CA)."""
    return app_dir() / "tls"


def wheelhouse() -> Path:
    return app_dir() / "wheelhouse"


def wheelhouse_archive() -> Path:
    """The wheelhouse as one tar (one copy per host instead of one per wheel)."""
    return app_dir() / "wheelhouse.tar"


def _write_archive(house: Path, target: Path) -> None:
    """A reproducible tar of the wheelhouse: sorted names, no times or owners from this machine."""
    tmp = target.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(house.glob("*.whl")):
            info = tar.gettarinfo(str(path), arcname=path.name)
            info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "root", "root", 0o644
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    tmp.replace(target)


def published_url() -> str:
    return f"https://127.0.0.1:{LAB_PUBLISHED_HTTPS}/"


# --- certificates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertSpec:
    host: str
    dns: tuple[str, ...]
    ips: tuple[str, ...]

    @property
    def folder(self) -> Path:
        return tls_staging() / self.host


def cert_specs() -> tuple[CertSpec, ...]:
    """Each edge host answers on its own names, the edge's shared name and floating address, and the
    machine's published loopback port; app hosts also carry the shared app name the WAF verifies."""
    vip = lab_floating_address("waf")
    out = [
        CertSpec(h.name, (h.name, f"{h.name}.{DOMAIN}", EDGE_TLS_NAME), (h.address, vip, "127.0.0.1"))
        for h in hosts_of("waf")
    ]
    out += [CertSpec(h.name, (h.name, f"{h.name}.{DOMAIN}", APP_TLS_NAME), (h.address,)) for h in hosts_of("app")]
    return tuple(out)


@contextlib.contextmanager
def vault_root(progress: Progress = _quiet, attempts: int = 3) -> Iterator[hvac.Client]:
    """A short-lived root client on the lab's cluster (revoked at the end of the block).

    Making the root token is retried: on a lab shared by several checkouts another process may be
    making one at the same moment (the administrator's TOTP step or the key store is then busy).
    """
    from billkit.vault import lab as vault_lab
    from billkit.vault.bootstrap import root_session
    from billkit.vault.deploy import open_cluster
    from billkit.vault.server import lab_nodes

    cluster, _ = open_cluster(lab_nodes(), vault_lab.state())
    for attempt in range(1, attempts + 1):
        stack = contextlib.ExitStack()
        try:
            c = stack.enter_context(root_session(cluster, progress))
        except Exception as exc:  # any failure to make the token is retried, then raised
            if attempt == attempts:
                raise
            progress(f"making a root token failed ({type(exc).__name__}: {exc}); retrying")
            time.sleep(5 * attempt)
            continue
        with stack:
            yield c
        return


def approle_dir() -> Path:
    return app_dir() / "approle"


def session_secret_file() -> Path:
    return app_dir() / "session-secret"


ROLE_ID_FILES = {"role-id": "billing-app", "processor-role-id": "payment-processor"}


def ensure_certs(progress: Progress = _quiet) -> list[str]:
    """Issue or renew (past 2/3 of their life) the edge and app certificates, and stage the AppRole
    role IDs; a root token is made only when something is due. Returns what changed."""
    from billkit.vault import configure
    from billkit.vault import lab as vault_lab
    from billkit.vault.pki import ensure_root_ca, needs_renewal

    staging = tls_staging()
    staging.mkdir(parents=True, exist_ok=True, mode=0o700)
    root = ensure_root_ca(vault_lab.state().pki)
    ca = staging / "ca.pem"
    if not ca.exists() or ca.read_text() != root.pem:
        ca.write_text(root.pem, encoding="ascii")
    due = [s for s in cert_specs() if needs_renewal(s.folder / "server.pem")]
    missing_ids = [name for name in ROLE_ID_FILES if not (approle_dir() / name).exists()]
    if not due and not missing_ids:
        return []
    changed = []
    progress(f"issuing certificates for {', '.join(s.host for s in due) or 'no host'}")
    with vault_root(progress) as c:
        for spec in due:
            if configure.ensure_host_cert(c, spec.host, spec.folder / "server.pem", spec.folder / "server.key",
                                          spec.dns, spec.ips, fraction=0):  # fmt: skip
                changed.append(f"certificate of {spec.host} from the PKI engine")
        for name in missing_ids:
            approle_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
            (approle_dir() / name).write_text(configure.role_id(c, ROLE_ID_FILES[name]) + "\n", encoding="ascii")
            changed.append(f"AppRole role ID of {ROLE_ID_FILES[name]}")
    return changed


def ensure_session_secret() -> list[str]:
    """The app's session-signing key, made once on the controller (0600), shared by the app hosts."""
    from billkit.vault.pki import write_private

    if session_secret_file().exists():
        return []
    write_private(session_secret_file(), secrets.token_urlsafe(48).encode())
    return ["session-signing key of the app"]


# --- role variables ----------------------------------------------------------------------------


def _write_vars(name: str, body: dict[str, Any]) -> bool:
    return inventory.write_group_vars(name, body, "billkit.lab.app")


def waf_vars() -> dict[str, object]:
    """The waf role's variables: ports from the topology; the methods to allow and the step-up
    operations to rate-limit from the app's OpenAPI document (a new route is followed by the next `up`)."""
    from billkit.lab import openapi_probe

    api = openapi_probe.app_openapi()
    return {
        "waf_https_port": HTTPS,
        "waf_http_port": HTTP,
        "waf_app_port": APP_PORT,
        "waf_app_tls_name": APP_TLS_NAME,
        "waf_tls_src_dir": str(tls_staging()),
        "waf_numeric_hosts_allowed": ["127.0.0.1"],  # the published entry (published_url)
        # The published port forwards to this address; keepalived keeps it on one healthy edge host.
        "waf_floating_address": lab_floating_address("waf"),
        "waf_vrrp_interface": "host0",
        "waf_allowed_methods": openapi_probe.allowed_methods(api),
        "waf_step_up_requests": openapi_probe.step_up_request_patterns(api),
    }


def write_group_vars() -> list[str]:
    changed = []
    if _write_vars("role_waf", waf_vars()):
        changed.append("group_vars/role_waf.yml")
    ca = "/etc/billing-app/tls/ca.pem"
    db = hosts_of("db")[0].address
    app = {
        "billing_app_port": APP_PORT,
        "billing_app_metrics_port": APP_METRICS,
        "billing_app_wheelhouse_archive": str(wheelhouse_archive()),
        "billing_app_version": app_version(),
        "billing_app_tls_src_dir": str(tls_staging()),
        "billing_app_vault_url": f"https://{hosts_of('vault')[0].address}:{VAULT_API}",
        "billing_app_approle_src_dir": str(approle_dir()),
        "billing_app_session_secret_src": str(session_secret_file()),
        "billing_app_database_url": f"postgresql://{db}:{POSTGRES}/{DB_NAME}?sslmode=verify-full&sslrootcert={ca}",
        "billing_app_tokenizer_database_url": (
            f"postgresql://{db}:{POSTGRES}/{DB_NAME}?sslmode=verify-full&sslrootcert={ca}"
        ),
    }
    if _write_vars("role_app", app):
        changed.append("group_vars/role_app.yml")
    return changed


def prepare(progress: Progress = _quiet) -> list[str]:
    """Certificates, role IDs, the session key and role variables (wheelhouse: see build_wheelhouse)."""
    return ensure_certs(progress) + ensure_session_secret() + write_group_vars()


# --- the app's wheelhouse (hosts never reach PyPI) ----------------------------------------------


def _uv() -> str:
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    if not Path(found).exists():
        raise RuntimeError("uv not found: run ./billkit once (it installs uv) or put uv on PATH")
    return found


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): " + " | ".join(tail))
    return proc.stdout


def app_version() -> str:
    """1.0+g<digest of the lock file, the app's sources and its requirements>: a new release per change."""
    h = hashlib.sha256()
    h.update((ROOT / "uv.lock").read_bytes())
    h.update(repr(APP_REQUIREMENTS).encode())
    src = ROOT / "app_stub"
    for path in sorted(p for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(src)).encode() + b"\0" + path.read_bytes() + b"\0")
    return f"1.0+g{h.hexdigest()[:12]}"


def _pinned_names(pins: str) -> set[str]:
    return {re.split(r"[=<>!~; \[]", ln, maxsplit=1)[0].lower().replace("-", "_") for ln in pins.splitlines() if ln}


def build_wheelhouse(progress: Progress = _quiet) -> list[str]:
    """The app as a wheel plus every dependency's wheel, pinned to uv.lock; rebuilt only on change."""
    version = app_version()
    house = wheelhouse()
    stamp = house / ".release"
    if stamp.exists() and stamp.read_text().strip() == version and wheelhouse_archive().exists():
        return []
    build = app_dir() / "build"
    shutil.rmtree(build, ignore_errors=True)
    project = build / "project"
    shutil.copytree(ROOT / "app_stub", project / "app_stub", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    deps = ",\n".join(f'    "{r}"' for r in APP_REQUIREMENTS)
    (project / "pyproject.toml").write_text(
        f'[project]\nname = "{APP_DIST}"\nversion = "{version}"\nrequires-python = ">=3.11"\n'
        f"dependencies = [\n{deps},\n]\n\n"
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        '[tool.hatch.build.targets.wheel]\npackages = ["app_stub"]\n',
        encoding="utf-8",
    )
    progress("building the app's wheel")
    _run([_uv(), "build", "--wheel", "--quiet", "--out-dir", str(build / "dist"), str(project)], "uv build")
    progress("pinning the app's dependencies to uv.lock")
    pins = _run([_uv(), "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes", "--no-header",
                 "--no-annotate", "--project", str(ROOT)], "uv export")  # fmt: skip
    constraints = build / "constraints.txt"
    constraints.write_text(
        "\n".join(re.sub(r"\[[^\]]*\]", "", ln) for ln in pins.splitlines() if ln and not ln.startswith(("#", "-")))
        + "\n",
        encoding="utf-8",
    )
    tools = app_dir() / "pip-venv"
    if not (tools / "bin" / "pip").exists():
        progress("a pip for building wheels (controller only)")
        _run([_uv(), "venv", "--seed", "--quiet", "--python", sys.executable, str(tools)], "uv venv")
    progress("collecting the dependencies' wheels (first run downloads them)")
    house.mkdir(parents=True, exist_ok=True)
    for old in house.glob("billkit_app-*.whl"):
        old.unlink()
    wheel = next((build / "dist").glob("billkit_app-*.whl"))
    _run([str(tools / "bin" / "pip"), "wheel", "--quiet", "--disable-pip-version-check", "--wheel-dir", str(house),
          "-c", str(constraints), str(wheel)], "pip wheel")  # fmt: skip
    for stale in house.glob("*.whl"):  # a wheel no longer pinned by the lock file is dropped
        if stale.name.split("-")[0].lower() not in _pinned_names(pins) | {APP_DIST.replace("-", "_")}:
            stale.unlink()
    _write_archive(house, wheelhouse_archive())
    stamp.write_text(version + "\n", encoding="ascii")
    return [f"wheelhouse for {APP_DIST} {version} ({len(list(house.glob('*.whl')))} wheels)"]


# --- delivery of the wrapped secret IDs and (re)start ----------------------------------------------

CONFIG_DIR = "/etc/billing-app"
CREDENTIALS = f"{CONFIG_DIR}/credentials"
SERVICE = "billing-app"
# Secret IDs live 24 h in the lab (billkit.vault.configure.Settings.secret_id_ttl): the app logs in again
# with its secret ID while it runs, so `up` re-delivers once two thirds of that have passed.
REDELIVER_AFTER = 16 * 3600


def _ssh(h: LabHost, command: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    from billkit.lab.hosts import ssh_command

    proc = subprocess.CompletedProcess([], 255)
    for _ in range(3):  # 255: SSH itself failed (a busy machine can miss the banner timeout)
        proc = subprocess.run(ssh_command(h, command), input=stdin, capture_output=True, text=True,
                              timeout=timeout, check=False)  # fmt: skip
        if proc.returncode != 255:
            break
    return proc


def _deliveries() -> dict[str, float]:
    path = app_dir() / "delivered.json"
    return json.loads(path.read_text()) if path.exists() else {}


def needs_delivery(h: LabHost) -> str:
    """Why this app host needs a new wrapped secret ID and a restart ('' when it does not)."""
    # sudo: the marker lies in the app's configuration folder, which the admin account cannot enter
    proc = _ssh(h, f"systemctl is-active {SERVICE}; sudo test -e {CONFIG_DIR}/restart-needed && echo restart-needed")
    out = proc.stdout.split()
    if not out or out[0] != "active":
        return "service not running"
    if "restart-needed" in out:
        return "new release or configuration"
    if time.time() - _deliveries().get(h.name, 0) > REDELIVER_AFTER:
        return "secret ID due for renewal"
    return ""


HEALTH_SCRIPT = """
import socket, ssl, sys, time
addr, port, name, ca, wait = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
ctx = ssl.create_default_context(cafile=ca)
deadline, err = time.monotonic() + wait, None
while time.monotonic() < deadline:
    try:
        with socket.create_connection((addr, port), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname=name) as s:
            s.sendall(f"GET /healthz HTTP/1.1\\r\\nHost: {name}\\r\\nConnection: close\\r\\n\\r\\n".encode())
            status = s.recv(200).split(b"\\r\\n", 1)[0]
            if b" 200 " in status:
                sys.exit(0)
            err = status.decode(errors="replace")
    except OSError as exc:
        err = exc
    time.sleep(1)
print(err)
sys.exit(1)
"""


def _health(h: LabHost, wait: float = 60) -> None:
    """Wait until the app answers /healthz over TLS on its own address, checked from the host itself
    against the lab CA and the name the WAF verifies."""
    code = base64.b64encode(HEALTH_SCRIPT.encode()).decode()
    run = f"import base64; exec(base64.b64decode('{code}'))"
    cmd = shlex.join(["sudo", "python3", "-c", run, h.address, str(APP_PORT), APP_TLS_NAME, f"{CONFIG_DIR}/tls/ca.pem",
                      str(wait)])  # fmt: skip
    proc = _ssh(h, cmd, timeout=wait + 30)
    if proc.returncode != 0:
        logs = _ssh(h, f"sudo journalctl -u {SERVICE} --no-pager -n 15 -o cat").stdout.strip()
        raise RuntimeError(
            f"{h.name}: the billing app did not become healthy ({proc.stdout.strip() or proc.stderr.strip()}); "
            f"its last log lines:\n{logs}"
        )


def _start_with_fresh_secret_ids(c: hvac.Client, h: LabHost, why: str, progress: Progress) -> None:
    from billkit.vault import configure

    progress(f"{h.name}: new wrapped secret IDs ({why})")
    app_token = configure.wrapped_secret_id(c, configure.BILLING_APP, WRAP_TTL)
    processor_token = configure.wrapped_secret_id(c, configure.PAYMENT_PROCESSOR, WRAP_TTL)
    for name, token in (("secret-id.wrapped", app_token), ("processor-secret-id.wrapped", processor_token)):
        proc = _ssh(h, f"sudo install -o root -g root -m 0600 /dev/stdin {CREDENTIALS}/{name}", stdin=token)
        if proc.returncode != 0:
            raise RuntimeError(f"{h.name}: could not deliver {name}: {proc.stderr.strip()}")
    proc = _ssh(h, f"sudo systemctl restart {SERVICE}")
    if proc.returncode != 0:
        logs = _ssh(h, f"sudo journalctl -u {SERVICE} --no-pager -n 15 -o cat").stdout.strip()
        raise RuntimeError(f"{h.name}: {SERVICE} did not start: {proc.stderr.strip()}\n{logs}")
    progress(f"{h.name}: waiting for the app to answer")
    _health(h)


def deliver(progress: Progress = _quiet, force: bool = False, only: Sequence[str] | None = None) -> list[str]:
    """Give each app host that needs it two new response-wrapped secret IDs and (re)start its service.

    The wrapping tokens travel over SSH on standard input (never on a command line: sudo logs those),
    land root-only in the credentials folder, are handed to the unit by LoadCredential= and removed
    once the app has started: the app unwrapped them (single use), so a copy is worthless.
    """
    chosen = [h for h in hosts_of("app") if only is None or h.name in only]
    targets = {h.name: why for h in chosen if (why := "forced" if force else needs_delivery(h))}
    if not targets:
        return []
    changed = []
    done = _deliveries()
    with vault_root(progress) as c:
        for h in hosts_of("app"):
            if h.name not in targets:
                continue
            try:
                for attempt in (1, 2):  # a dependency restarting at that moment (db-1, Vault) gets a second try
                    try:
                        _start_with_fresh_secret_ids(c, h, targets[h.name], progress)
                        break
                    except RuntimeError as exc:
                        if attempt == 2:
                            raise
                        progress(f"{h.name}: the app did not start ({str(exc).splitlines()[0]}); retrying")
                        time.sleep(10)
                _ssh(h, f"sudo rm -f {CONFIG_DIR}/restart-needed")
            finally:  # used by the app, or never to be used: either way no wrapping token stays on disk
                _ssh(h, f"sudo rm -f {CREDENTIALS}/secret-id.wrapped {CREDENTIALS}/processor-secret-id.wrapped")
            done[h.name] = time.time()
            changed.append(f"{h.name}: started with fresh wrapped secret IDs ({targets[h.name]})")
    app_dir().mkdir(parents=True, exist_ok=True)
    (app_dir() / "delivered.json").write_text(json.dumps(done, indent=2), encoding="utf-8")
    return changed


# --- migrations and the first admin (from the controller: operators reach db-1 over TLS) ---------------

MIGRATE_ROLE = "billing-migrate"  # Vault database role: a 15-minute login that may SET ROLE billing_owner
OWNER_ROLE = "billing_owner"  # NOLOGIN owner of the schema
FIRST_ADMIN = "admin"


def first_admin_file() -> Path:
    return app_dir() / "first-admin.json"


def _migrations_digest() -> str:
    h = hashlib.sha256()
    for path in sorted((ROOT / "app_stub" / "migrations").glob("*.sql")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


@contextlib.contextmanager
def owner_dsn(progress: Progress = _quiet) -> Iterator[str]:
    """A libpq DSN acting as the schema owner: a 15-minute dynamic login (revoked at the end)."""
    from psycopg.conninfo import make_conninfo

    from billkit.vault import lab as vault_lab
    from billkit.vault.pki import ensure_root_ca

    root = ensure_root_ca(vault_lab.state().pki)
    with vault_root(progress) as c:
        resp = c.adapter.get(f"/v1/database/creds/{MIGRATE_ROLE}")
        data = resp["data"]
        try:
            yield make_conninfo(
                host=hosts_of("db")[0].address, port=POSTGRES, dbname=DB_NAME, user=data["username"],
                password=data["password"], sslmode="verify-full", sslrootcert=str(root.cert_path),
                options=f"-c role={OWNER_ROLE}", connect_timeout=10,
            )  # fmt: skip
        finally:
            with contextlib.suppress(Exception):
                c.sys.revoke_lease(resp["lease_id"])


def _admin_enrolled(dsn: str) -> bool:
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT totp_secret_ct IS NOT NULL AND password_changed_at > created_at FROM staff.users "
            "WHERE username = %s",
            (FIRST_ADMIN,),
        ).fetchone()
    return bool(row and row[0])


def migrate_and_bootstrap(progress: Progress = _quiet) -> list[str]:
    """Apply the app's migrations once per change (before the services start) and create the first
    admin once; its one-time password is kept 0600 on the controller until the admin has enrolled."""
    from app_stub.db import migrate
    from app_stub.services.staff import AppError, bootstrap_admin
    from billkit.vault.pki import write_private

    stamp = app_dir() / "migrated"
    need_migrate = not stamp.exists() or stamp.read_text().strip() != _migrations_digest()
    pending_admin = not (app_dir() / "first-admin.enrolled").exists()
    if not need_migrate and not pending_admin:
        return []
    changed: list[str] = []
    with owner_dsn(progress) as dsn:
        if need_migrate:
            progress("database migrations")
            applied = migrate(dsn)
            stamp.write_text(_migrations_digest() + "\n", encoding="ascii")
            if applied:
                changed.append(f"migrations applied: {', '.join(applied)}")
        if not first_admin_file().exists():
            try:
                password = bootstrap_admin(dsn, FIRST_ADMIN)
            except AppError as exc:
                if exc.status != 409:
                    raise
                (app_dir() / "first-admin.enrolled").write_text("staff accounts existed already\n")
                return changed
            write_private(first_admin_file(), json.dumps({"username": FIRST_ADMIN, "password": password}).encode())
            changed.append(f"first admin '{FIRST_ADMIN}' created (one-time password in {first_admin_file()})")
        elif _admin_enrolled(dsn):
            first_admin_file().unlink()
            (app_dir() / "first-admin.enrolled").write_text("the first admin changed the password and enrolled TOTP\n")
            changed.append("the first admin has enrolled: one-time password deleted")
    return changed


def first_admin_instructions() -> list[str]:
    """Lines for the terminal at the end of `billkit up`: how the first admin enrols, or that it has."""
    url = published_url()
    if (app_dir() / "first-admin.enrolled").exists():
        return [f"The first admin has enrolled; staff log in at {url}login"]
    if not first_admin_file().exists():
        return ["The first admin is not created yet: run `billkit up` to finish the deployment"]
    admin = json.loads(first_admin_file().read_text())
    return [
        f"First admin: {admin['username']}",
        f"One-time password: {admin['password']}  (kept 0600 in {first_admin_file()} until the admin has enrolled)",
        f"1. Open {url}login and log in with it (the lab CA: {tls_staging() / 'ca.pem'}).",
        "2. Enrol TOTP in an authenticator app (mandatory), and keep the recovery codes.",
        "3. Choose a new password (12+ characters; the one-time password expires at first login).",
        "4. Acknowledge the security training: the admin role takes effect after that.",
    ]
