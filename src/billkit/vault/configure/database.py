"""The database secrets engine: dynamic PostgreSQL credentials, one Vault role per group role."""

from __future__ import annotations

from dataclasses import dataclass

import hvac

from billkit.vault.configure.api import _get, _post, converge, ensure_mount
from billkit.vault.configure.settings import BILLING_APP, DATABASE, DB_CONNECTION, HOUR, Settings

# Vault's database roles (database/creds/<role>) and the NOLOGIN group role each credential joins.
DB_APP = BILLING_APP  # billing_app: the app's data
DB_TOKENIZER = "billing-tokenizer"  # billing_tokenizer: the card-vault schema only
DB_MIGRATE = "billing-migrate"  # billing_owner via SET ROLE: migrations, short-lived
DB_AUDITOR = "auditor"  # billing_auditor: read-only
MIGRATE_TTL = 15 * 60
# Credential names "v-<role, 20 chars>-<20 random>-<unix time>": mon-1's pgaudit.mtail recognises the migration
# credential's sessions by their name (its DDL is the approved change, not an alert).
USERNAME_TEMPLATE = '{{ printf "v-%s-%s-%s" (.RoleName | truncate 20) (random 20) (unix_time) | truncate 63 }}'


@dataclass(frozen=True)
class Database:
    host: str
    port: int
    dbname: str
    admin_user: str  # a role with CREATEROLE (not superuser) that Vault manages
    admin_password: str  # known only until Vault rotates it right after setup
    sslrootcert: str  # path on the Vault nodes of the CA that signed the server's certificate
    app_group: str = "billing_app"  # group role holding the app's grants
    auditor_group: str = "billing_auditor"
    tokenizer_group: str = "billing_tokenizer"
    owner_role: str = "billing_owner"  # NOLOGIN owner of the schema; migrations SET ROLE to it

    def roles(self, settings: Settings) -> tuple[tuple[str, str, bool, int, int], ...]:
        """(Vault role, group role, inherit, default TTL, max TTL) for every dynamic credential.

        The migration credential does not inherit the owner's rights: it must ``SET ROLE`` to it, so
        every object it creates belongs to the owner and the credential can always be dropped.
        """
        ttl, max_ttl = settings.db_default_ttl, settings.db_max_ttl
        return (
            (DB_APP, self.app_group, True, ttl, max_ttl),
            (DB_TOKENIZER, self.tokenizer_group, True, ttl, max_ttl),
            (DB_MIGRATE, self.owner_role, False, MIGRATE_TTL, min(HOUR, max_ttl)),
            (DB_AUDITOR, self.auditor_group, True, ttl, max_ttl),
        )


def creation_statements(group: str, inherit: bool = True) -> list[str]:
    return [
        "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' "
        f"NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION {'INHERIT' if inherit else 'NOINHERIT'};",
        f'GRANT "{group}" TO "{{{{name}}}}";',
    ]


REVOCATION = [
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}';",
    'DROP ROLE IF EXISTS "{{name}}";',
]


def ensure_database(c: hvac.Client, db: Database, settings: Settings, changes: list[str]) -> None:
    """Dynamic PostgreSQL credentials; the admin password is rotated at once so no one knows it."""
    ensure_mount(c, DATABASE, "database", changes, description="dynamic PostgreSQL credentials")
    path = f"{DATABASE}/config/{DB_CONNECTION}"
    roles = db.roles(settings)
    allowed = [r[0] for r in roles]
    current = _get(c, path)
    if current is None:
        url = (
            f"postgresql://{{{{username}}}}:{{{{password}}}}@{db.host}:{db.port}/{db.dbname}"
            f"?sslmode=verify-full&sslrootcert={db.sslrootcert}"
        )
        _post(c, path, {
            "plugin_name": "postgresql-database-plugin", "connection_url": url, "username": db.admin_user,
            "password": db.admin_password, "allowed_roles": allowed,
            "password_authentication": "scram-sha-256", "verify_connection": True,
            "max_open_connections": 4, "max_connection_lifetime": "5m", "username_template": USERNAME_TEMPLATE,
        })  # fmt: skip
        _post(c, f"{DATABASE}/rotate-root/{DB_CONNECTION}")
        changes.append(f"database connection {DB_CONNECTION} (admin password rotated)")
    elif not set(allowed) <= set(current.get("allowed_roles") or []):
        _post(c, path, {"allowed_roles": sorted(set(allowed) | set(current.get("allowed_roles") or []))})
        changes.append(f"database connection {DB_CONNECTION} allowed roles")
    if current is not None and (current.get("connection_details") or {}).get("username_template") != USERNAME_TEMPLATE:
        _post(c, path, {"username_template": USERNAME_TEMPLATE})
        changes.append(f"database connection {DB_CONNECTION} username template")
    for role, group, inherit, ttl, max_ttl in roles:
        converge(c, f"{DATABASE}/roles/{role}", {
            "db_name": DB_CONNECTION, "creation_statements": creation_statements(group, inherit),
            "revocation_statements": REVOCATION, "default_ttl": ttl, "max_ttl": max_ttl,
        }, changes)  # fmt: skip
