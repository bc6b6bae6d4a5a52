"""The database role-change drill (MON-01, LOG-10, RBAC-05): what to run on the db host and what to wait for.

A superuser creates a role, grants it a group role and drops it: pgaudit logs three ROLE entries, PostgreSQL
sends them to the journal (syslog), the journal reaches mon-1, mtail counts them in
billkit_pgaudit_role_changes_total{host} and the rule PgauditRoleChange fires. Nothing here runs by itself:
a drill calls ``trigger_role_change`` and waits for ``ROLE_CHANGE_ALERT`` or ``role_change_promql``.
"""

from __future__ import annotations

import secrets
import shlex

from infra.topology import hosts_of

DB_HOST = hosts_of("db")[0].name
DATABASE = "billing"
GRANTED = "billing_auditor"  # a group role of the postgresql role: read-only, harmless for a moment
ROLE_CHANGE_ALERT = "PgauditRoleChange"
ROLE_CHANGE_METRIC = "billkit_pgaudit_role_changes_total"


def drill_role_name() -> str:
    return f"drill_{secrets.token_hex(4)}"


def role_change_sql(role: str) -> list[str]:
    """Three role changes, each one pgaudit SESSION,ROLE entry that pgaudit.mtail counts; nothing is left."""
    if not role.isidentifier() or not role.startswith("drill_"):
        raise ValueError(f"{role!r}: a drill role is drill_<hex>")
    return [
        f"CREATE ROLE {role} NOLOGIN",
        f"GRANT {GRANTED} TO {role}",
        f"DROP ROLE {role}",
    ]


def role_change_command(role: str) -> list[str]:
    """The command, for run_on_hosts on the db host: psql as the postgres superuser over the local socket."""
    argv = ["sudo", "-u", "postgres", "psql", "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "-d", DATABASE]
    for statement in role_change_sql(role):
        argv += ["-c", statement]
    return argv


def role_change_promql(host: str = DB_HOST, window: str = "5m") -> str:
    """True (non-empty) once mon-1 counted a role change on ``host`` in the window.

    A counter born inside the window (mtail exports it from its first event) counts at its value: increase()
    alone would see nothing on a series with one sample."""
    series = f'{ROLE_CHANGE_METRIC}{{job="mtail", host="{host}"}}'
    return f"(increase({series}[{window}]) > 0) or ({series} unless {series} offset {window})"


def trigger_role_change(host: str = DB_HOST) -> str:
    """Run the role changes on the db host; the role's name (already dropped)."""
    from billkit.lab.testing import run_on_hosts

    role = drill_role_name()
    proc = run_on_hosts([host], role_change_command(role))[host]
    if proc.returncode != 0:
        raise AssertionError(f"{shlex.join(role_change_command(role))} on {host}: {proc.stderr.strip()[-500:]}")
    return role
