"""The log-derived metrics as the roles deploy them, without a lab (MON-01, LOG-10).

mon-1's mtail is fed by one reader per receiver (billkit-journal-follow: `journalctl --follow -o short-iso` on its
active file, across rotations) through a named pipe each: here the real journalctl, systemd-journal-remote (which
writes the central journal's files) and mtail run with the command lines of the rendered units. The units verify
and are sandboxed; the roles' variables are documented and asserted; the sources are configured to reach the
journal.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from billkit.controls import ROOT
from billkit.localsvc import free_port
from billkit.system import ensure_packages, require_command

ROLES = ROOT / "playbooks/roles"
MON = ROLES / "monitoring"
JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"


def role_defaults(role: str) -> dict[str, Any]:
    return yaml.safe_load((ROLES / role / "defaults/main.yml").read_text(encoding="utf-8"))


def render(role: str, template: str, **extra: Any) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLES / role / "templates"),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True,
                             autoescape=False)  # noqa: S701 - configuration files, not HTML  # fmt: skip
    env.filters["bool"] = lambda value: value in (True, "true", "True", "yes", 1, "1")
    env.filters["regex_replace"] = lambda value, pattern, repl: re.sub(pattern, repl.replace("\\\\", "\\"), value)
    return env.get_template(template).render(role_defaults(role) | {"ansible_managed": "Ansible managed"} | extra)


def exec_start(unit_text: str) -> list[str]:
    """The unit's ExecStart as argv (continuation lines joined, as systemd reads them)."""
    joined = unit_text.replace("\\\n", " ")
    line = next(ln for ln in joined.splitlines() if ln.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


def unit_setting(unit_text: str, key: str) -> str:
    return next(ln.split("=", 1)[1] for ln in unit_text.splitlines() if ln.startswith(f"{key}="))


# --- the units ------------------------------------------------------------------------------------


UNITS = [
    ("monitoring", ("billkit-mtail.service", "billkit-mtail-journal@.service")),  # verified together: BindsTo
    ("openbao", ("billkit-bao-audit-metrics.service",)),
]
SOURCES = ["0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"]  # two receivers' directories


@pytest.mark.control("MON-01", "HRD-06")
@pytest.mark.parametrize(("role", "units"), UNITS, ids=[r for r, _ in UNITS])
def test_the_units_verify_and_are_sandboxed(role: str, units: tuple[str, ...], tmp_path: Path) -> None:
    analyze = require_command("systemd-analyze", "systemd")
    ensure_packages(["mtail"], "the mtail unit names its binary")
    paths = []
    for name in units:
        text = render(role, f"etc/systemd/system/{name}.j2", monitoring_mtail_sources=SOURCES)
        if "@." in name:  # a template: there for the instances the mtail unit wants, verified as one of them
            (tmp_path / name).write_text(text)
            name = name.replace("@.", f"@{SOURCES[0]}.")
        # ExecStart must name an existing program: the role's own file
        text = text.replace("/usr/local/sbin/bao-audit-metrics", str(ROLES / "openbao/files/bao-audit-metrics"))
        text = text.replace("/usr/local/sbin/billkit-journal-follow", str(MON / "files/billkit-journal-follow"))
        (tmp_path / name).write_text(text)
        paths.append(str(tmp_path / name))
    verify = subprocess.run([analyze, "verify", *paths], capture_output=True, text=True, cwd=tmp_path)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    for path in paths:  # systemd's exposure score (0 best, 10 worst): at most 2.5
        security = subprocess.run([analyze, "security", "--offline=yes", "--threshold=25", path],
                                  capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
        assert security.returncode == 0, security.stdout[-2000:]


@pytest.mark.control("MON-01")
def test_mtail_listens_on_loopback_only_without_the_prog_label() -> None:
    argv = exec_start(
        render("monitoring", "etc/systemd/system/billkit-mtail.service.j2", monitoring_mtail_sources=SOURCES)
    )
    assert argv[argv.index("--address") + 1] == "127.0.0.1"
    assert "--emit_prog_label=false" in argv
    assert argv[argv.index("--progs") + 1] == "/etc/mtail/billkit"
    mtail_unit = render("monitoring", "etc/systemd/system/billkit-mtail.service.j2", monitoring_mtail_sources=SOURCES)
    assert unit_setting(mtail_unit, "User") == "mtail" and unit_setting(mtail_unit, "IPAddressDeny") == "any"


# --- the pipeline: the central journal -> journalctl -> pipe -> mtail ------------------------------


def _export_entry(host: str, ident: str, pid: int, message: str, usec: int) -> str:
    """One entry in the journal export format, as systemd-journal-upload sends it."""
    return (f"__REALTIME_TIMESTAMP={usec}\n__MONOTONIC_TIMESTAMP={usec}\n"
            f"_BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME={host}\nSYSLOG_IDENTIFIER={ident}\n"
            f"_PID={pid}\nPRIORITY=3\nMESSAGE={message}\n\n")  # fmt: skip


def _receive(journal_dir: Path, host: str, entries: list[tuple[str, int, str]], age: float = 0) -> None:
    """Entries of ``host`` written ``age`` seconds old into its receiver's directory, as systemd-journal-remote
    writes them."""
    now = int((time.time() - age) * 1e6)
    export = "".join(_export_entry(host, i, p, m, now + n) for n, (i, p, m) in enumerate(entries))
    subprocess.run([JOURNAL_REMOTE, f"--output={journal_dir}/remote.journal", "-"], input=export.encode(),
                   capture_output=True, check=True, timeout=60)  # fmt: skip


def _scrape(port: int) -> dict[tuple[str, str], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:  # noqa: S310 - loopback
        text = r.read().decode()
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("billkit_"):
                assert "prog" not in s.labels, s
                out[(s.name, s.labels["host"])] = s.value
    return out


PGAUDIT_ROLE_CHANGE = (
    "[3] 2026-12-01 14:02:03.120 UTC [4410] postgres@billing from [local] LOG:  AUDIT: SESSION,1,1,ROLE,"
    "CREATE ROLE,,,CREATE ROLE drill_0a1b2c3d NOLOGIN,<not logged>"
)


@dataclass
class Pipeline:
    remote: Path  # the central journal's root: a directory per receiver
    sources: dict[str, str]  # host -> its receiver's directory name
    port: int

    def receive(self, host: str, entries: list[tuple[str, int, str]], age: float = 0) -> None:
        _receive(self.remote / self.sources[host], host, entries, age)


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    """journalctl readers and mtail started with the units' own command lines, on temporary paths: one reader and
    pipe per sending host's receiver, as on the monitoring host."""
    ensure_packages(["mtail", "systemd-journal-remote"], "mtail's journal pipeline")
    remote, progs, port = tmp_path / "remote", tmp_path / "progs", free_port()
    sources = {host: uuid.uuid4().hex for host in ("app-1", "db-1", "edge-1")}
    for source in sources.values():
        (remote / source).mkdir(parents=True)
    progs.mkdir()
    for name in role_defaults("monitoring")["monitoring_mtail_programs"]:
        (progs / f"{name}.mtail").write_bytes((MON / "files/mtail" / f"{name}.mtail").read_bytes())
    piped = Pipeline(remote, sources, port)
    # every receiver's file exists before the readers start, as the receivers make it when they start; a host's
    # old entries are not replayed (--lines=0)
    piped.receive("app-1", [("sshd", 812, "Invalid user old from 203.0.113.9 port 40122")])
    for host in ("db-1", "edge-1"):
        piped.receive(host, [("systemd", 1, "Started billkit-test.service.")])
    mtail_unit = render("monitoring", "etc/systemd/system/billkit-mtail.service.j2", monitoring_mtail_port=port,
                        monitoring_mtail_sources=sorted(sources.values()))  # fmt: skip
    feeder_unit = render("monitoring", "etc/systemd/system/billkit-mtail-journal@.service.j2",
                         monitoring_mtail_journal_dir=str(remote))  # fmt: skip

    def here(arg: str) -> str:
        return arg.replace("/run/billkit-mtail", str(tmp_path)).replace("/etc/mtail/billkit", str(progs))

    subprocess.run([here(a) for a in shlex.split(unit_setting(mtail_unit, "ExecStartPre"))], check=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(subprocess.Popen([here(a) for a in exec_start(mtail_unit)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))  # fmt: skip
        for source in sources.values():
            fifo = unit_setting(feeder_unit, "StandardOutput").removeprefix("file:").replace("%i", source)
            assert here(fifo) in here(exec_start(mtail_unit)[-1]), "each reader writes into a pipe mtail reads"
            with open(here(fifo), "wb", buffering=0) as out:  # noqa: PTH123 - the unit's StandardOutput=file:
                follow = str(MON / "files/billkit-journal-follow")
                argv = [a.replace("%i", source).replace("/usr/local/sbin/billkit-journal-follow", follow)
                        for a in exec_start(feeder_unit)]  # fmt: skip
                procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL))
        time.sleep(1.5)
        yield piped
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=20)


def _wait(port: int, expected: dict[tuple[str, str], float], timeout: float = 20) -> dict[tuple[str, str], float]:
    deadline, got = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        got = _scrape(port)
        if got == expected:
            return got
        time.sleep(0.5)
    return got


@pytest.mark.control("MON-01", "LOG-10", "HRD-01")
def test_entries_arriving_in_the_central_journal_are_counted_per_sending_host(pipeline: Pipeline) -> None:
    pipeline.receive("db-1", [
        ("postgres", 4410, PGAUDIT_ROLE_CHANGE),
        ("sshd", 900, "Failed publickey for ops from 10.77.40.1 port 1 ssh2: ED25519 SHA256:x"),
    ])  # fmt: skip
    pipeline.receive("app-1", [("sshd", 812, "Invalid user admin from 203.0.113.9 port 40123")])
    expected = {
        ("billkit_pgaudit_role_changes_total", "db-1"): 1.0,
        ("billkit_ssh_auth_failures_total", "db-1"): 1.0,
        ("billkit_ssh_auth_failures_total", "app-1"): 1.0,  # not 2: the entry from before start is not replayed
    }
    assert _wait(pipeline.port, expected) == expected


@pytest.mark.control("MON-01", "LOG-10")
def test_a_hosts_entries_that_arrive_after_newer_ones_of_another_host_are_counted(pipeline: Pipeline) -> None:
    """A host's backlog (an upload stopped, a reboot) reaches the central journal after other hosts' newer
    entries. One reader merging every host's files in time order skipped it: a role change on db-1 went
    uncounted while app-1's entries kept flowing."""
    pipeline.receive("app-1", [("sshd", 812, "Invalid user admin from 203.0.113.9 port 40123")])
    first = {("billkit_ssh_auth_failures_total", "app-1"): 1.0}
    assert _wait(pipeline.port, first) == first
    pipeline.receive("db-1", [("postgres", 4410, PGAUDIT_ROLE_CHANGE)], age=120)
    expected = first | {("billkit_pgaudit_role_changes_total", "db-1"): 1.0}
    assert _wait(pipeline.port, expected) == expected


@pytest.mark.control("MON-01", "LOG-10")
def test_a_hosts_entries_are_counted_after_its_receiver_rotates_its_file(pipeline: Pipeline) -> None:
    """The receiver moves its full file aside (remote@....journal, as journal-remote archives it) and starts a new
    remote.journal, twice in quick succession too. `journalctl --follow` stays on the file it opened, and on the
    lab's hosts (no inotify) the directory reader once kept reading a rotated file: the host went uncounted."""
    receiver = pipeline.remote / pipeline.sources["app-1"]
    for n, quick in enumerate((False, True, False), start=1):
        (receiver / "remote.journal").rename(receiver / f"remote@rotated-{n}.journal")
        pipeline.receive("app-1", [("sshd", 900 + n, f"Invalid user r{n} from 203.0.113.9 port {41000 + n}")])
        expected = {("billkit_ssh_auth_failures_total", "app-1"): float(n)}
        if not quick:
            assert _wait(pipeline.port, expected) == expected


@pytest.mark.control("MON-01", "LOG-10")
def test_a_host_cannot_forge_another_hosts_count_through_its_message(pipeline: Pipeline) -> None:
    """The host label is the journal's hostname field of the sender, not text in the message."""
    forged = "2026-12-01T14:02:03+0000 db-1 sshd[1]: Invalid user x from 1.2.3.4 port 1"
    pipeline.receive("edge-1", [("logger", 77, forged), ("sshd", 640, "Invalid user y from 1.2.3.4 port 2")])
    expected = {("billkit_ssh_auth_failures_total", "edge-1"): 1.0}
    assert _wait(pipeline.port, expected) == expected


# --- the sources: configured to reach the journal -------------------------------------------------


@pytest.mark.control("MON-01", "LOG-10")
def test_postgresql_logs_to_syslog_and_keeps_its_file_log() -> None:
    conf = render("postgresql", "etc/postgresql/15/main/conf.d/billkit.conf.j2", postgresql_listen_address="10.0.0.1",
                  postgresql_port=5432)  # fmt: skip
    destination = re.search(r"^log_destination = '([^']*)'$", conf, re.M)
    assert destination and set(destination.group(1).split(",")) == {"stderr", "syslog"}
    assert "syslog_ident = 'postgres'" in conf  # pgaudit.mtail reads the program name postgres[pid]
    assert "logging_collector" not in conf  # stderr stays pg_ctlcluster's file log (/var/log/postgresql)


@pytest.mark.control("MON-01", "NET-06")
def test_nginx_sends_its_error_log_to_the_journal_without_a_hostname() -> None:
    defaults = role_defaults("waf")
    assert defaults["waf_error_log_journal"] is True
    conf = render("waf", "etc/nginx/nginx.conf.j2")
    assert "error_log /var/log/nginx/error.log warn;" in conf
    # without nohostname, journald would read the host name as the program name and mtail would miss it
    assert "error_log syslog:server=unix:/dev/log,nohostname warn;" in conf
    assert "error_log syslog" not in render("waf", "etc/nginx/nginx.conf.j2", waf_error_log_journal=False)


# --- the roles' shape -----------------------------------------------------------------------------


def _specs(role: str) -> dict[str, Any]:
    data = yaml.safe_load((ROLES / role / "meta/argument_specs.yml").read_text(encoding="utf-8"))
    return data["argument_specs"]["main"]["options"]


NEW_VARIABLES = {
    "monitoring": ("monitoring_mtail_enabled", "monitoring_mtail_port", "monitoring_mtail_programs",
                   "monitoring_mtail_journal_dir", "monitoring_mtail_journal_group", "monitoring_mtail_memory_max",
                   "monitoring_postgres_exporter_port", "monitoring_db_group", "monitoring_rule_groups"),
    "host_monitoring": ("host_monitoring_postgres_exporter_enabled", "host_monitoring_postgres_exporter_port",
                        "host_monitoring_postgres_exporter_db_user", "host_monitoring_postgres_port"),
    "postgresql": ("postgresql_log_destination", "postgresql_monitor_user"),
    "openbao": ("openbao_audit_metrics_enabled",),
    "waf": ("waf_error_log_journal",),
}  # fmt: skip


@pytest.mark.control("MON-01")
@pytest.mark.parametrize("role", sorted(NEW_VARIABLES))
def test_every_default_is_documented_and_the_new_ones_with_their_value(role: str) -> None:
    specs, defaults = _specs(role), role_defaults(role)
    for name in defaults:
        assert name in specs, f"{role}: {name} is not in meta/argument_specs.yml"
        assert name.startswith(f"{role}_"), f"{role}: {name} lacks the role's prefix"
    for name in NEW_VARIABLES[role]:
        assert specs[name].get("default") == defaults[name], f"{role}: {name}'s documented default differs"


@pytest.mark.control("MON-01")
@pytest.mark.parametrize(("role", "tasks", "variable"), [
    ("host_monitoring", "postgres_exporter.yml", "host_monitoring_postgres_exporter_port"),
    ("monitoring", "mtail.yml", "monitoring_mtail_port"),
    ("monitoring", "prometheus.yml", "monitoring_postgres_exporter_port"),
])  # fmt: skip
def test_ports_default_to_nothing_and_are_asserted(role: str, tasks: str, variable: str) -> None:
    text = (ROLES / role / "tasks" / tasks).read_text(encoding="utf-8")
    asserts = [t for t in yaml.safe_load(text) if "ansible.builtin.assert" in t]
    assert any(variable in str(t["ansible.builtin.assert"]["that"]) for t in asserts), f"{variable} not asserted"
    if variable != "monitoring_mtail_port":  # mtail's port is its own loopback port, not the topology's
        assert role_defaults(role)[variable] == 0


@pytest.mark.control("MON-01")
def test_the_concerns_are_imported_and_gated() -> None:
    concerns = (("monitoring", "mtail.yml", "monitoring_mtail_enabled"),
                ("host_monitoring", "postgres_exporter.yml", "host_monitoring_postgres_exporter_enabled"),
                ("openbao", "audit_metrics.yml", "openbao_audit_metrics_enabled"))  # fmt: skip
    for role, concern, flag in concerns:
        main = yaml.safe_load((ROLES / role / "tasks/main.yml").read_text(encoding="utf-8"))
        entry = next(t for t in main if t.get("ansible.builtin.import_tasks") == concern)
        assert entry["when"] == f"{flag} | bool"
    groups = role_defaults("monitoring")["monitoring_rule_groups"]
    assert {"logs", "vault_audit", "postgres"} <= set(groups)


def _prometheus_config(**extra: Any) -> dict[str, Any]:
    hosts = {"db-1": "10.77.30.21", "mon-1": "10.77.40.12"}
    text = render(
        "monitoring", "etc/prometheus/prometheus.yml.j2",
        groups={"role_db": ["db-1"], "role_mon": ["mon-1"]},
        hostvars={h: {"ansible_host": a} for h, a in hosts.items()},
        inventory_hostname="mon-1", monitoring_listen_address="10.77.40.12", monitoring_prometheus_port=9090,
        monitoring_alertmanager_port=9093, monitoring_node_exporter_port=9100, monitoring_app_metrics_port=9464,
        monitoring_vault_port=8200, monitoring_postgres_exporter_port=9187, **extra,
    )  # fmt: skip
    return yaml.safe_load(text)


@pytest.mark.control("MON-01")
def test_prometheus_scrapes_mtail_keeping_its_host_label_and_the_database_exporter() -> None:
    jobs = {j["job_name"]: j for j in _prometheus_config()["scrape_configs"]}
    mtail = jobs["mtail"]
    assert mtail["honor_labels"] is True
    assert mtail["static_configs"] == [{"targets": ["127.0.0.1:3903"], "labels": {"host": "mon-1", "role": "mon"}}]
    pg = jobs["postgres"]
    assert pg["scheme"] == "https" and pg["tls_config"] == jobs["node"]["tls_config"]  # mutual TLS
    assert pg["static_configs"] == [{"targets": ["10.77.30.21:9187"], "labels": {"host": "db-1", "role": "db"}}]
    without = {j["job_name"] for j in _prometheus_config(monitoring_mtail_enabled=False)["scrape_configs"]}
    assert "mtail" not in without


# --- the database exporter: the real binary with the role's web config -----------------------------


def _ca_and_certs(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate from it, and one from a stranger CA."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    out: dict[str, Path] = {}

    def write(name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        out[name] = directory / f"{name}.pem"
        out[name].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out[f"{name}.key"] = directory / f"{name}.key"
        out[f"{name}.key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))  # fmt: skip

    def issue(cn: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None, server: bool = False,
              ca: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:  # fmt: skip
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        builder = (x509.CertificateBuilder().subject_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(hours=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))  # fmt: skip
        if not ca:
            usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if server:
            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            builder = builder.add_extension(san, critical=False)
        signer_cert, signer_key = issuer if issuer else (None, key)
        builder = builder.issuer_name(signer_cert.subject if signer_cert else name)
        return builder.sign(signer_key, hashes.SHA256()), key

    ca = issue("billkit test CA", None, ca=True)
    stranger = issue("stranger CA", None, ca=True)
    write("ca", *ca)
    write("host", *issue("db-1", ca, server=True))
    write("client", *issue("mon-1", ca))
    write("stranger", *issue("mon-1", stranger))
    return out


def _get(url: str, ca: Path, cert: tuple[Path, Path] | None) -> str:
    import ssl

    ctx = ssl.create_default_context(cafile=str(ca))
    if cert:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    with urllib.request.urlopen(url, context=ctx, timeout=10) as r:  # noqa: S310 - loopback
        return r.read().decode()


@pytest.mark.control("MON-01")
def test_the_database_exporter_answers_only_the_monitoring_hosts_certificate(tmp_path: Path) -> None:
    ensure_packages(["prometheus-postgres-exporter"], "the database exporter with the role's web config")
    exporter = require_command("prometheus-postgres-exporter", "prometheus-postgres-exporter")
    certs = _ca_and_certs(tmp_path)
    port = free_port()
    web = render("host_monitoring", "etc/prometheus/postgres-exporter-web.yml.j2",
                 host_monitoring_tls_dir=str(tmp_path))  # fmt: skip
    web = web.replace("/run/credentials/prometheus-postgres-exporter.service/host.key", str(certs["host.key"]))
    (tmp_path / "web.yml").write_text(web)
    settings = render("host_monitoring", "etc/default/prometheus-postgres-exporter.j2",
                      host_monitoring_listen_address="127.0.0.1", host_monitoring_postgres_exporter_port=port,
                      host_monitoring_postgres_port=free_port())  # fmt: skip
    args = shlex.split(re.search(r'^ARGS="(.*)"$', settings, re.M).group(1))  # type: ignore[union-attr]
    args = [a.replace("/etc/prometheus/postgres-exporter-web.yml", str(tmp_path / "web.yml")) for a in args]
    dsn = shlex.split(re.search(r"^DATA_SOURCE_NAME=(.*)$", settings, re.M).group(1))[0]  # type: ignore[union-attr]
    assert "password" not in dsn and "host=/var/run/postgresql" in dsn  # peer over the socket, no secret
    # The socket named in the DSN has no server here: the exporter runs and reports pg_up 0, as on a host
    # whose PostgreSQL is down (what PostgreSQLDown reads).
    proc = subprocess.Popen([exporter, *args], env={"DATA_SOURCE_NAME": dsn.replace("/var/run/postgresql",
                            str(tmp_path))}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"https://127.0.0.1:{port}/metrics"
    try:
        deadline, text = time.monotonic() + 20, ""
        while time.monotonic() < deadline and not text:
            try:
                text = _get(url, certs["ca"], (certs["client"], certs["client.key"]))
            except OSError:
                time.sleep(0.3)
        values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
        assert values.get("pg_up") == 0.0
        for who in (None, (certs["stranger"], certs["stranger.key"])):  # no certificate; another CA's
            with pytest.raises(OSError):
                _get(url, certs["ca"], who)
        assert "127.0.0.1" in args[0] and not args[0].startswith("--web.listen-address=:")
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.control("MON-01", "HRD-06")
def test_the_database_exporter_unit_with_the_roles_drop_in_is_sandboxed(tmp_path: Path) -> None:
    """Debian's unit with the role's drop-in merged into its [Service] section, scored by systemd."""
    analyze = require_command("systemd-analyze", "systemd")
    ensure_packages(["prometheus-postgres-exporter"], "the database exporter's unit")
    unit = Path("/lib/systemd/system/prometheus-postgres-exporter.service").read_text(encoding="utf-8")
    drop_in = render("host_monitoring", "etc/systemd/system/prometheus-postgres-exporter.service.d/billkit.conf.j2")
    service = drop_in.split("[Service]", 1)[1].replace("LoadCredential=", "#LoadCredential=")  # no key here
    merged = tmp_path / "prometheus-postgres-exporter.service"
    merged.write_text(unit.replace("[Install]", f"{service}\n[Install]"))
    security = subprocess.run([analyze, "security", "--offline=yes", "--threshold=25", str(merged)],
                              capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert security.returncode == 0, security.stdout[-2000:]
    assert "User=prometheus" in unit  # the account pg_hba's peer line and the postgresql role's role name
