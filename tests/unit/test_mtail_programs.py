"""The mtail programs of mon-1 (playbooks/roles/monitoring/files/mtail) run by Debian's mtail.

Each program reads journal lines as `journalctl --merge --follow -o short-iso` prints them. The SSH, sudo
and ModSecurity lines are the formats of Debian 12's OpenSSH 9.2, sudo 1.9.13 / PAM 1.5 and nginx with
libmodsecurity 3; the pgaudit lines come from a real PostgreSQL 15 with pgaudit and the postgresql role's
settings, driven by the kit's own Vault configuration against a real OpenBao. Lines that must not count
sit beside those that must, including text an attacker controls (a user name, a request line).
"""

from __future__ import annotations

import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jinja2
import psycopg
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from billkit.controls import ROOT
from billkit.localsvc import PostgresServer, postgres
from billkit.system import ensure_packages, require_command
from billkit.vault import configure
from tests.unit.baodev import BaoDev, bao_dev

PROGRAMS = ROOT / "playbooks/roles/monitoring/files/mtail"
PG_ROLE = ROOT / "playbooks/roles/postgresql"
Counts = dict[str, dict[str, float]]  # metric -> host -> value


@pytest.fixture(scope="module")
def mtail() -> str:
    ensure_packages(["mtail"], "mtail program tests")
    return require_command("mtail", "mtail")


def run_mtail(mtail: str, program: str, lines: list[str], tmp_path: Path) -> Counts:
    """mtail --one_shot over ``lines``: every counter it exports, by metric and host."""
    log = tmp_path / f"{program}.journal"
    log.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    proc = subprocess.run(
        [mtail, "--one_shot", "--one_shot_format=prometheus", "--logtostderr", "--address=127.0.0.1", "--port=0",
         f"--progs={PROGRAMS / program}", f"--logs={log}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts: Counts = {}
    for family in text_string_to_metric_families(proc.stdout):
        for sample in family.samples:
            assert sample.labels.get("prog") == program
            counts.setdefault(sample.name, {})[sample.labels["host"]] = sample.value
    return counts


@pytest.mark.control("MON-01")
@pytest.mark.parametrize("program", sorted(p.name for p in PROGRAMS.glob("*.mtail")))
def test_every_program_compiles(mtail: str, program: str) -> None:
    proc = subprocess.run([mtail, "--compile_only", "--logtostderr", f"--progs={PROGRAMS / program}"],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_the_programs_are_the_four_of_the_contract() -> None:
    assert sorted(p.name for p in PROGRAMS.glob("*.mtail")) == [
        "modsecurity.mtail", "pgaudit.mtail", "sshd.mtail", "sudo.mtail",
    ]  # fmt: skip


def test_a_broken_program_fails_compilation(mtail: str, tmp_path: Path) -> None:
    """Positive control for the compile test: mtail's exit code does report errors."""
    bad = tmp_path / "bad.mtail"
    bad.write_text("counter x\n/(/ {\n  x++\n}\n")
    proc = subprocess.run([mtail, "--compile_only", "--logtostderr", f"--progs={bad}"],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert proc.returncode != 0


# --- SSH ------------------------------------------------------------------------------------------

SSHD = [
    # counted on app-1: a scanner naming a user that does not exist, then its key and its password
    "2026-12-01T14:02:03+0000 app-1 sshd[812]: Invalid user admin from 203.0.113.9 port 40122",
    "2026-12-01T14:02:03+0000 app-1 sshd[812]: Failed publickey for invalid user admin from 203.0.113.9 port "
    "40122 ssh2: RSA SHA256:Xq4bqPmSPhZ1hB3u9r0kdl2b8Mtd9fE0I1cJv2m3Q7w",
    "2026-12-01T14:02:04+0000 app-1 sshd[812]: Failed password for invalid user admin from 203.0.113.9 port 40122 ssh2",
    # counted on app-1: three keys refused for a real account, then the cut at MaxAuthTries
    *(
        f"2026-12-01T14:02:0{i}+0000 app-1 sshd[815]: Failed publickey for ops from 203.0.113.9 port 40188 ssh2: "
        f"ED25519 SHA256:k{i}b1Xh2mQ0f9d8s7a6p5o4i3u2y1t0r9e8w7q6Z5xC"
        for i in (5, 6, 7)
    ),  # fmt: skip
    "2026-12-01T14:02:07+0000 app-1 sshd[815]: error: maximum authentication attempts exceeded for ops from "
    "203.0.113.9 port 40188 ssh2 [preauth]",
    # counted once on db-1 (VERBOSE): the agent's first key refused before the right one
    "2026-12-01T14:03:10+0000 db-1 sshd[2201]: Failed publickey for ops from 10.77.40.1 port 51022 ssh2: "
    "ED25519 SHA256:oldkeyoldkeyoldkeyoldkeyoldkeyoldkeyoldke",
    # not counted: successes, summaries, PAM's duplicate, the "none" probe, other programs, continuations
    "2026-12-01T14:03:10+0000 db-1 sshd[2201]: Accepted publickey for ops from 10.77.40.1 port 51022 ssh2: "
    "ED25519-CERT SHA256:Zx2QKi7vV2b2hX0qTtDgGZ8eXc3d1Yc7lT3yK3X5aDk ID ops (serial 7) CA ED25519 SHA256:ca",
    "2026-12-01T14:03:10+0000 db-1 sshd[2201]: pam_unix(sshd:session): session opened for user ops(uid=1000) "
    "by (uid=0)",
    "2026-12-01T14:02:07+0000 app-1 sshd[815]: Disconnecting authenticating user ops 203.0.113.9 port 40188: "
    "Too many authentication failures [preauth]",
    "2026-12-01T14:02:04+0000 app-1 sshd[812]: Connection closed by invalid user admin 203.0.113.9 port 40122 "
    "[preauth]",
    "2026-12-01T14:02:03+0000 app-1 sshd[812]: Failed none for invalid user admin from 203.0.113.9 port 40122 ssh2",
    "2026-12-01T14:02:04+0000 app-1 sshd[812]: pam_unix(sshd:auth): authentication failure; logname= uid=0 "
    "euid=0 tty=ssh ruser= rhost=203.0.113.9",
    "2026-12-01T14:02:09+0000 app-1 python3[999]: Failed password for root from 203.0.113.9 port 22 ssh2",
    "2026-12-01T14:02:09+0000 app-1 sshd-keygen[41]: Failed password for root from 203.0.113.9 port 22 ssh2",
    "                                      Failed password for root from 203.0.113.9 port 22 ssh2",
    # a user name sent by a client that imitates a failure line: counted once (the unknown account), not
    # again when sshd repeats the name in a line that reports no failure
    "2026-12-01T14:04:00+0000 edge-1 sshd[640]: Invalid user Failed password for root from 1.2.3.4 port 1 "
    "from 203.0.113.9 port 40555",
    "2026-12-01T14:04:01+0000 edge-1 sshd[640]: Connection closed by invalid user Failed password for root from "
    "1.2.3.4 port 1 203.0.113.9 port 40555 [preauth]",
]


@pytest.mark.control("MON-01", "HRD-01")
def test_ssh_failures_are_counted_per_host(mtail: str, tmp_path: Path) -> None:
    counts = run_mtail(mtail, "sshd.mtail", SSHD, tmp_path)
    assert counts == {"billkit_ssh_auth_failures_total": {"app-1": 7.0, "db-1": 1.0, "edge-1": 1.0}}


@pytest.mark.control("MON-01", "HRD-01")
def test_a_successful_login_alone_creates_no_series(mtail: str, tmp_path: Path) -> None:
    ok = [line for line in SSHD if "Accepted publickey" in line]
    assert run_mtail(mtail, "sshd.mtail", ok, tmp_path) == {}


@pytest.mark.control("MON-01", "HRD-01")
def test_the_session_process_of_newer_openssh_is_read_too(mtail: str, tmp_path: Path) -> None:
    line = "2026-12-01T14:02:03+00:00 app-2 sshd-session[77]: Failed publickey for ops from 10.77.40.1 port 1 ssh2"
    assert run_mtail(mtail, "sshd.mtail", [line], tmp_path) == {"billkit_ssh_auth_failures_total": {"app-2": 1.0}}


# --- sudo -----------------------------------------------------------------------------------------

SUDO = [
    # counted on db-1: two wrong passwords (the second attempt then succeeds: sudo reports nothing itself)
    "2026-12-01T15:00:01+0000 db-1 sudo[3301]: pam_unix(sudo:auth): authentication failure; logname=ops "
    "uid=1000 euid=0 tty=/dev/pts/0 ruser=ops rhost=  user=ops",
    "2026-12-01T15:00:05+0000 db-1 sudo[3310]: pam_unix(sudo-i:auth): authentication failure; logname=ops "
    "uid=1000 euid=0 tty=/dev/pts/0 ruser=ops rhost=  user=ops",
    # counted on db-1: refused by policy
    "2026-12-01T15:00:09+0000 db-1 sudo[3320]:      bob : user NOT in sudoers ; TTY=pts/1 ; PWD=/home/bob ; "
    "USER=root ; COMMAND=/bin/bash",
    "2026-12-01T15:00:12+0000 db-1 sudo[3330]:      ops : command not allowed ; TTY=pts/0 ; PWD=/home/ops ; "
    "USER=root ; COMMAND=/usr/bin/vi /etc/shadow",
    # counted on vault-2
    "2026-12-01T15:01:00+0000 vault-2 sudo[880]: operator : user NOT authorized on host ; TTY=pts/0 ; "
    "PWD=/home/operator ; USER=root ; COMMAND=/usr/bin/id",
    # not counted: sudo's summary of passwords already counted, sessions, commands run, `sudo -n`, su, a
    # command line that imitates a refusal
    "2026-12-01T15:00:20+0000 db-1 sudo[3340]:      ops : 3 incorrect password attempts ; TTY=pts/0 ; "
    "PWD=/home/ops ; USER=root ; COMMAND=/usr/bin/cat /etc/shadow",
    "2026-12-01T15:00:05+0000 db-1 sudo[3310]:      ops : TTY=pts/0 ; PWD=/home/ops ; USER=root ; "
    "COMMAND=/usr/bin/systemctl status postgresql",
    "2026-12-01T15:00:05+0000 db-1 sudo[3310]: pam_unix(sudo:session): session opened for user root(uid=0) "
    "by ops(uid=1000)",
    "2026-12-01T15:00:30+0000 db-1 sudo[3350]:      ops : a password is required ; TTY=unknown ; PWD=/ ; "
    "USER=root ; COMMAND=/usr/bin/true",
    "2026-12-01T15:00:31+0000 db-1 su[3360]: pam_unix(su:auth): authentication failure; logname=ops uid=1000 "
    "euid=0 tty=/dev/pts/0 ruser=ops rhost=  user=root",
    "2026-12-01T15:00:32+0000 db-1 sudo[3370]:      ops : TTY=pts/0 ; PWD=/home/ops ; USER=root ; "
    "COMMAND=/usr/bin/echo x : command not allowed ; y",
]


@pytest.mark.control("MON-01")
def test_sudo_failures_and_refusals_are_counted_per_host(mtail: str, tmp_path: Path) -> None:
    counts = run_mtail(mtail, "sudo.mtail", SUDO, tmp_path)
    assert counts == {"billkit_sudo_auth_failures_total": {"db-1": 4.0, "vault-2": 1.0}}


# --- ModSecurity ----------------------------------------------------------------------------------

_CRS_403 = (
    "[client 203.0.113.7] ModSecurity: Access denied with code 403 (phase 2). Matched \"Operator `Ge' with "
    "parameter `5' against variable `TX:ANOMALY_SCORE' (Value: `5' ) [file "
    '"/usr/share/modsecurity-crs/rules/REQUEST-949-BLOCKING-EVALUATION.conf"] [line "81"] [id "949110"] '
    '[rev ""] [msg "Inbound Anomaly Score Exceeded (Total Score: 5)"] [data ""] [severity "2"] '
    '[ver "OWASP_CRS/3.3.4"] [maturity "0"] [accuracy "0"] [tag "application-multi"] [tag "language-multi"] '
    '[tag "platform-multi"] [tag "attack-generic"] [hostname "10.77.10.11"] [uri "/login"] '
    '[unique_id "176459772351.482210"] [ref ""], client: 203.0.113.7, server: _, '
    'request: "POST /login HTTP/2.0", host: "127.0.0.1:9443"'
)
_BODY_400 = (
    "[client 203.0.113.8] ModSecurity: Access denied with code 400 (phase 2). Matched \"Operator `Eq' with "
    "parameter `0' against variable `REQBODY_ERROR' (Value: `1' ) [file "
    '"/etc/nginx/modsecurity/modsecurity.conf"] [line "14"] [id "200002"] [rev ""] '
    '[msg "Failed to parse request body"] [data "JSON parsing error: lexical error"] [severity "0"] [ver ""] '
    '[maturity "0"] [accuracy "0"] [hostname "10.77.10.12"] [uri "/api/payments"] '
    '[unique_id "176459772355.112093"] [ref "v30,1"], client: 203.0.113.8, server: _, '
    'request: "POST /api/payments HTTP/2.0", host: "127.0.0.1:9443"'
)
_WARNING = (
    "[client 203.0.113.7] ModSecurity: Warning. detected XSS using libinjection. [file "
    '"/usr/share/modsecurity-crs/rules/REQUEST-941-APPLICATION-ATTACK-XSS.conf"] [line "55"] [id "941100"] '
    '[msg "XSS Attack Detected via libinjection"] [hostname "10.77.10.11"] [uri "/search"] [unique_id "1764"]'
)
MODSECURITY = [
    # counted on edge-1: through syslog (no PID in nginx's syslog header; journald adds it from the socket)
    f"2026-12-01T14:02:03+0000 edge-1 nginx[641]: 2026/12/01 14:02:03 [error] 641#641: *57 {_CRS_403}",
    # counted on edge-1 and edge-2: a body the kit's own rules refuse (400) is a block too
    f"2026-12-01T14:02:04+0000 edge-1 nginx: 2026/12/01 14:02:04 [error] 641#641: *58 {_BODY_400}",
    f"2026-12-01T14:02:05+0000 edge-2 nginx[702]: 2026/12/01 14:02:05 [error] 703#703: *12 {_CRS_403}",
    # not counted: a rule that matched without blocking, the rate limit, an access-log line, an error whose
    # request line carries the phrase, the same text from another program, a 200
    f"2026-12-01T14:02:03+0000 edge-1 nginx[641]: 2026/12/01 14:02:03 [info] 641#641: *57 {_WARNING}",
    "2026-12-01T14:02:06+0000 edge-1 nginx[641]: 2026/12/01 14:02:06 [warn] 641#641: *60 limiting requests, "
    'excess: 10.500 by zone "login", client: 203.0.113.7, server: _, request: "POST /login HTTP/2.0", '
    'host: "127.0.0.1:9443"',
    '2026-12-01T14:02:07+0000 edge-1 nginx[641]: 203.0.113.7 [2026-12-01T14:02:07+00:00] "GET /ModSecurity: '
    'Access denied with code 403" 404 153 0.001 "10.77.20.11:8443" 404 5c1f0e7d9a',
    "2026-12-01T14:02:08+0000 edge-1 nginx[641]: 2026/12/01 14:02:08 [error] 641#641: *61 open() "
    '"/usr/share/nginx/html/x" failed (2: No such file or directory), client: 203.0.113.7, server: _, '
    'request: "GET /ModSecurity: Access denied with code 403 HTTP/1.1", host: "127.0.0.1:9443"',
    f"2026-12-01T14:02:09+0000 edge-1 logger[900]: 2026/12/01 14:02:09 [error] 1#1: *1 {_CRS_403}",
    '2026-12-01T14:02:10+0000 edge-1 nginx[641]: 10.77.40.1 [2026-12-01T14:02:10+00:00] "GET /health" 200 2 '
    '0.003 "10.77.20.11:8443" 200 0a9b8c7d6e',
]


@pytest.mark.control("MON-01", "NET-06")
def test_modsecurity_blocks_are_counted_per_host(mtail: str, tmp_path: Path) -> None:
    counts = run_mtail(mtail, "modsecurity.mtail", MODSECURITY, tmp_path)
    assert counts == {"billkit_waf_blocks_total": {"edge-1": 2.0, "edge-2": 1.0}}


# --- pgaudit, from a real PostgreSQL driven by the kit's Vault configuration ------------------------

# The username template that names migration credentials after their Vault role (the program's rule), and
# the postgresql plugin's own default, under which no credential is recognised.
MIGRATE_TEMPLATE = '{{ printf "v-%s-%s-%s" (.RoleName | truncate 20) (random 20) (unix_time) | truncate 63 }}'
PLUGIN_DEFAULT_TEMPLATE = (
    '{{ printf "v-%s-%s-%s-%s" (.DisplayName | truncate 8) (.RoleName | truncate 8) (random 20) (unix_time) '
    "| truncate 63 }}"
)
_PG_KEYS = re.compile(r"^(log_line_prefix|log_connections|log_disconnections|shared_preload_libraries|pgaudit\.\w+)"
                      r"\s*=\s*(.+)$")  # fmt: skip


def role_pg_settings() -> dict[str, str]:
    """The logging and pgaudit settings of the postgresql role, rendered with its defaults."""
    defaults = yaml.safe_load((PG_ROLE / "defaults/main.yml").read_text(encoding="utf-8"))
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701 - not HTML
    text = (PG_ROLE / "templates/etc/postgresql/15/main/conf.d/billkit.conf.j2").read_text(encoding="utf-8")
    settings: dict[str, str] = {}
    for line in text.splitlines():
        m = _PG_KEYS.match(line)
        if m:
            value = env.from_string(m.group(2).strip()).render(defaults)
            settings[m.group(1)] = value[1:-1] if value.startswith("'") and value.endswith("'") else value
    return settings


@dataclass
class AuditRun:
    lines: list[str]  # PostgreSQL's own log lines, from the start of the scenario
    app_user: str
    migrate_users: tuple[str, str]  # default username template, then MIGRATE_TEMPLATE
    kit_template: str  # the connection's username template as the kit's configuration left it
    second_pass: list[str]  # what a second run of the kit's configuration changed


def _prepare(pg: PostgresServer, admin_pw: str) -> None:
    """What the postgresql role creates (roles.yml), as the local superuser."""
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE billing")
        for role in ("billing_owner", "billing_app", "billing_tokenizer", "billing_auditor", "billing_pgaudit"):
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("CREATE ROLE vault_admin LOGIN CREATEROLE NOSUPERUSER NOCREATEDB PASSWORD {}")
                     .format(sql.Literal(admin_pw)))  # fmt: skip
        conn.execute("GRANT billing_app, billing_tokenizer, billing_auditor, billing_owner, pg_signal_backend "
                     "TO vault_admin")  # fmt: skip
        conn.execute("ALTER DATABASE billing OWNER TO billing_owner")
    with psycopg.connect(pg.dsn("billing"), autocommit=True) as conn:
        conn.execute("ALTER DEFAULT PRIVILEGES FOR ROLE billing_owner GRANT INSERT, UPDATE, DELETE ON TABLES "
                      "TO billing_pgaudit")  # fmt: skip


def _creds(bao: BaoDev, role: str) -> tuple[str, str, str]:
    data = bao.client().adapter.get(f"/v1/{configure.DATABASE}/creds/{role}")
    return data["data"]["username"], data["data"]["password"], data["lease_id"]


@pytest.fixture(scope="module")
def audit_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditRun]:
    ensure_packages(["postgresql-15", "postgresql-15-pgaudit"], "pgaudit log format for the mtail tests")
    base = tmp_path_factory.mktemp("pgaudit")
    admin_pw = secrets.token_urlsafe(18)
    with postgres(settings=role_pg_settings()) as pg, bao_dev(base / "bao") as bao:
        _prepare(pg, admin_pw)
        start = pg.log_file.stat().st_size
        c = bao.client()
        # Vault's database engine as the kit configures it (admin password rotated: a real role change).
        db = configure.Database(pg.host, pg.port, "billing", "vault_admin", admin_pw, str(pg.ca_file))
        configure.ensure_database(c, db, configure.Settings(), [])
        connection = f"/v1/{configure.DATABASE}/config/{configure.DB_CONNECTION}"
        kit_template = c.adapter.get(connection)["data"]["connection_details"].get("username_template", "")
        # The app's credential lifecycle: CREATE ROLE + GRANT, renewal, revocation (Vault's churn).
        app_user, _, app_lease = _creds(bao, configure.DB_APP)
        c.sys.renew_lease(app_lease, increment=1800)
        c.sys.revoke_lease(app_lease)
        # Migrations under Vault's default username template, then under the template the program expects.
        migrate_users = []
        for template in (PLUGIN_DEFAULT_TEMPLATE, MIGRATE_TEMPLATE):
            c.adapter.post(connection, json={"username_template": template})
            user, password, lease = _creds(bao, configure.DB_MIGRATE)
            migrate_users.append(user)
            dsn = pg.dsn("billing", user, password) + f" options='-c role={configure.Database.owner_role}'"
            with psycopg.connect(dsn) as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS public.schema_migrations (name text PRIMARY KEY)")
                if template == MIGRATE_TEMPLATE:
                    from app_stub.db import migrate

                    assert migrate(dsn), "the app's migrations did not run"
                conn.commit()
            c.sys.revoke_lease(lease)
        second_pass: list[str] = []
        configure.ensure_database(c, db, configure.Settings(), second_pass)
        # What an intruder with the superuser, or an operator by hand, does: each must count.
        with psycopg.connect(pg.dsn("billing"), autocommit=True) as conn:
            conn.execute("""CREATE ROLE "v-backdoor" LOGIN PASSWORD 'pw'""")  # a Vault-like name, not Vault
            conn.execute('GRANT billing_tokenizer TO "v-backdoor"')
            conn.execute("ALTER DEFAULT PRIVILEGES FOR ROLE billing_owner GRANT SELECT ON TABLES TO billing_app")
            conn.execute("GRANT SELECT ON cardvault.pans TO billing_app")
            conn.execute('REVOKE billing_tokenizer FROM "v-backdoor"')
            conn.execute('DROP ROLE "v-backdoor"')
            conn.execute("ALTER TABLE staff.users ADD COLUMN note text")
            conn.execute("CREATE TABLE public.exfil (\n    id int,\n    pan text\n)")
            conn.execute("INSERT INTO public.schema_migrations (name) VALUES ('by hand')")  # object audit only
            conn.execute("DROP TABLE public.exfil")
        text = pg.log_file.read_bytes()[start:].decode("utf-8", errors="replace")
    yield AuditRun(text.splitlines(), app_user, (migrate_users[0], migrate_users[1]), kit_template, second_pass)


_PG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \S+ \[(\d+)\] ")


def as_journal(lines: list[str], host: str, syslog: bool) -> list[str]:
    """PostgreSQL's log lines as the journal on mon-1 prints them.

    stderr under systemd: one journal entry per line, all under the postmaster's stream. syslog (elog.c's
    write_syslog, sequence numbers on): one entry per message, "[seq] line", or per line of a message that
    has several, "[seq-n] line", under the backend's PID."""
    messages: list[list[str]] = []
    for line in lines:
        if _PG_LINE.match(line) or not messages:
            messages.append([line])
        else:
            messages[-1].append(line)
    stamp, out = "2026-12-01T14:02:03+0000", []
    for seq, message in enumerate(messages, start=1):
        m = _PG_LINE.match(message[0])
        pid = m.group(1) if m else "1"
        for n, line in enumerate(message, start=1):
            if not syslog:
                out.append(f"{stamp} {host} postgres[4001]: {line}")
            elif len(message) == 1:
                out.append(f"{stamp} {host} postgres[{pid}]: [{seq}] {line}")
            else:
                out.append(f"{stamp} {host} postgres[{pid}]: [{seq}-{n}] {line}")
    return out


@pytest.mark.control("MON-01", "LOG-10", "RBAC-05")
def test_the_scenario_logged_what_the_counts_rest_on(audit_run: AuditRun) -> None:
    """The real log holds each kind of event the program must tell apart: else the counts prove nothing."""
    text = "\n".join(audit_run.lines)
    vault = "vault_admin@billing from 127.0.0.1 LOG:  AUDIT: SESSION,"
    app, (default_user, named_user) = audit_run.app_user, audit_run.migrate_users
    for churn in (f',ROLE,CREATE ROLE,,,"CREATE ROLE ""{app}"" WITH LOGIN PASSWORD <REDACTED>",',
                  f',ROLE,GRANT ROLE,,,"GRANT ""billing_app"" TO ""{app}""",',
                  f',ROLE,ALTER ROLE,,,"ALTER ROLE ""{app}"" VALID UNTIL ',
                  f',ROLE,DROP ROLE,,,"DROP ROLE IF EXISTS ""{app}""",'):  # fmt: skip
        assert any(vault in line and churn in line for line in audit_run.lines), churn
    assert ',ROLE,ALTER ROLE,,,"ALTER ROLE ""vault_admin"" WITH PASSWORD <REDACTED>",' in text  # rotate-root
    assert not default_user.startswith("v-billing-migrate-"), default_user
    assert re.fullmatch(r"v-billing-migrate-[0-9A-Za-z]{20}-\d+", named_user), named_user
    for user, klass in ((default_user, "DDL"), (named_user, "DDL"), (named_user, "ROLE,GRANT")):
        pattern = rf"{re.escape(user)}@billing from \S+ LOG:  AUDIT: SESSION,\d+,\d+,{klass},"
        assert re.search(pattern, text), (user, klass)
    assert "AUDIT: OBJECT," in text and ",WRITE,INSERT," in text  # writes: object audit, never counted
    assert "\t    pan text" in text  # a multi-line statement's continuation lines
    assert "PASSWORD '" not in text  # pgaudit redacts passwords: nothing secret travels to the journal


@pytest.mark.control("MON-01", "LOG-10", "RBAC-05")
@pytest.mark.parametrize("syslog", [False, True], ids=["stderr", "syslog"])
def test_pgaudit_role_changes_and_ddl_are_counted_without_vault_churn_or_migrations(
    mtail: str, audit_run: AuditRun, tmp_path: Path, syslog: bool
) -> None:
    counts = run_mtail(mtail, "pgaudit.mtail", as_journal(audit_run.lines, "db-1", syslog), tmp_path)
    # The scenario: Vault rotates its admin password (1); the intruder's CREATE ROLE, GRANT, ALTER DEFAULT
    # PRIVILEGES, GRANT SELECT, REVOKE, DROP ROLE (6). DDL: the schema_migrations table made under the
    # default username template (1), then ALTER TABLE, CREATE TABLE, DROP TABLE by the superuser (3).
    assert counts == {
        "billkit_pgaudit_role_changes_total": {"db-1": 7.0},
        "billkit_pgaudit_ddl_total": {"db-1": 4.0},
    }


@pytest.mark.control("MON-01", "LOG-10", "RBAC-05")
def test_the_kits_vault_configuration_names_credentials_as_the_program_expects(audit_run: AuditRun) -> None:
    """billkit.vault.configure sets the template pgaudit.mtail relies on, and a second run changes nothing."""
    assert configure.USERNAME_TEMPLATE == MIGRATE_TEMPLATE
    assert audit_run.kit_template == MIGRATE_TEMPLATE
    assert audit_run.second_pass == []


# --- the role's mtail command line, reading its pipe at the pace of a burst ----------------------------------------


SOURCE = "0123456789abcdef0123456789abcdef"  # a receiver's directory: one pipe per sending host


def _role_exec_start() -> list[str]:
    template = ROOT / "playbooks/roles/monitoring/templates/etc/systemd/system/billkit-mtail.service.j2"
    defaults = yaml.safe_load((ROOT / "playbooks/roles/monitoring/defaults/main.yml").read_text())
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True)  # noqa: S701 -- a unit
    values = {"ansible_managed": "managed", "monitoring_mtail_sources": [SOURCE]}
    unit = env.from_string(template.read_text()).render(defaults | values)
    line = next(x for x in unit.replace("\\\n", " ").splitlines() if x.startswith("ExecStart="))
    return line.removeprefix("ExecStart=").split()


def _lines_read(port: int) -> float:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:  # noqa: S310 -- loopback
            text = r.read().decode()
    except OSError:
        return 0
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "mtail_log_lines_total")  # fmt: skip


@pytest.mark.control("MON-01")
def test_the_roles_mtail_keeps_up_with_a_burst_through_its_pipe(mtail: str, tmp_path: Path) -> None:
    """20,000 journal lines into a host's pipe, as the data drills' pgaudit burst once sent: the role's command
    line reads them in seconds (mtail's default poll read about 225 lines a second, an alert minutes late)."""
    import os
    import time

    from billkit.localsvc import free_port

    port = free_port()
    fifo = tmp_path / "journal.fifo"
    os.mkfifo(fifo, 0o600)
    argv = [a.replace(f"/run/billkit-mtail/{SOURCE}.fifo", str(fifo)).replace("/etc/mtail/billkit", str(PROGRAMS))
            for a in _role_exec_start()]  # fmt: skip
    assert str(fifo) in argv
    argv[argv.index("--port") + 1] = str(port)
    argv[0] = mtail
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        n = 20_000
        line = "2026-12-02T04:50:00+0000 db-1 postgres[4242]: AUDIT: SESSION,1,1,READ,SELECT,,,select 1,<not logged>\n"
        with open(fifo, "w") as f:  # blocks until mtail opens its end, then while the pipe is full
            start = time.monotonic()
            f.write(line * n)
        deadline = start + 30
        while _lines_read(port) < n and time.monotonic() < deadline:
            time.sleep(0.2)
        took = time.monotonic() - start
        assert _lines_read(port) >= n, f"mtail read {_lines_read(port):.0f} of {n} lines in {took:.0f} s"
        assert n / took >= 1500, f"{n / took:.0f} lines a second"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
