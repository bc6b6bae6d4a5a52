"""Vault configuration as code: the desired state of every engine, key, role and policy.

Each ``ensure_*`` function reads what is there, writes only what differs and returns the
list of changes, so a second run reports nothing (idempotence is tested). The names are
a contract with the app: mount ``transit``, keys ``pan``, ``pii``, ``lookup-hmac``,
``backup``; policies ``billing-app`` and ``payment-processor``.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions

from billkit.vault.pki import RootCA
from billkit.vault.server import DOMAIN

POLICY_DIR = Path(__file__).parent / "policies"

TRANSIT = "transit"
PKI = "pki_int"
SSH = "ssh-client-signer"
DATABASE = "database"
KV = "secret"
PKI_ROLE = "service"
SSH_ROLE = "operator"
DB_CONNECTION = "billing"
MFA_ISSUER = "billkit"
MFA_ENFORCEMENT = "operators-totp"
BILLING_APP = "billing-app"
PAYMENT_PROCESSOR = "payment-processor"
BACKUP_PASSPHRASE = "backup/pgbackrest"  # noqa: S105 - a KV path, not a secret

HOUR = 3600
DAY = 24 * HOUR


def _hours(seconds: int) -> str:
    return f"{seconds // HOUR}h" if seconds % HOUR == 0 else f"{seconds}s"


@dataclass(frozen=True)
class TransitKey:
    name: str
    type: str
    auto_rotate_period: int = 0  # seconds; 0 = never (HMAC keys: rotation changes every lookup value)
    key_size: int = 0  # HMAC keys only


# EAR-05: AES-256-GCM with automatic rotation for card data (30 days) and personal data (90 days).
TRANSIT_KEYS: tuple[TransitKey, ...] = (
    TransitKey("pan", "aes256-gcm96", 30 * DAY),
    TransitKey("pii", "aes256-gcm96", 90 * DAY),
    TransitKey("lookup-hmac", "hmac", key_size=32),
    TransitKey("backup", "aes256-gcm96", 365 * DAY),
    # LOG-08: signs the app's audit chain head; its public keys are what auditors verify heads with.
    TransitKey("audit-head", "ed25519"),
)


@dataclass(frozen=True)
class Settings:
    """What differs between environments (lab, AWS, loopback tests)."""

    domain: str = DOMAIN
    # Bare names allowed in service certificates besides *.domain (the lab's host names).
    service_names: tuple[str, ...] = ()
    allow_localhost: bool = False
    # Where the app runs: AppRole secret IDs and tokens only work from there.
    app_cidrs: tuple[str, ...] = ()
    cert_ttl: int = 24 * HOUR
    cert_max_ttl: int = 72 * HOUR
    ssh_users: tuple[str, ...] = ("ops",)  # the lab's admin account (billkit.lab.state.ADMIN_USER)
    ssh_ttl: int = 30 * 60
    ssh_max_ttl: int = HOUR
    secret_id_ttl: int = 24 * HOUR
    secret_id_num_uses: int = 0
    app_token_ttl: int = HOUR
    app_token_max_ttl: int = 24 * HOUR
    db_default_ttl: int = HOUR
    db_max_ttl: int = 4 * HOUR
    operator_token_ttl: int = HOUR
    operator_token_max_ttl: int = 8 * HOUR
    transit_keys: tuple[TransitKey, ...] = TRANSIT_KEYS
    extra: dict[str, Any] = field(default_factory=dict)


def lab_settings() -> Settings:
    from infra.topology import lab_hosts, tier

    return Settings(
        service_names=tuple(h.name for h in lab_hosts()),
        app_cidrs=(tier("app").lab_cidr,),
    )


# --- small helpers over the HTTP API ----------------------------------------------------------


def _get(c: hvac.Client, path: str) -> dict[str, Any] | None:
    try:
        resp = c.adapter.get(f"/v1/{path}")
    except hvac.exceptions.InvalidPath:
        return None
    if not isinstance(resp, dict):
        return None
    return resp.get("data") or {}


def _post(c: hvac.Client, path: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    resp = c.adapter.post(f"/v1/{path}", json=data or {})
    return resp if isinstance(resp, dict) else {}


def _list(c: hvac.Client, path: str) -> list[str]:
    try:
        resp = c.adapter.list(f"/v1/{path}")
    except hvac.exceptions.InvalidPath:
        return []
    if not isinstance(resp, dict):
        return []
    return list(resp.get("data", {}).get("keys", []))


def _norm(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return sorted(str(v) for v in value)
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return int(value)
    return value


def _differs(current: dict[str, Any] | None, desired: dict[str, Any]) -> list[str]:
    if current is None:
        return list(desired)
    return [k for k, v in desired.items() if _norm(current.get(k)) != _norm(v)]


def converge(c: hvac.Client, path: str, desired: dict[str, Any], changes: list[str], read_path: str = "") -> None:
    """Write ``desired`` at ``path`` unless every field already has that value."""
    diff = _differs(_get(c, read_path or path), desired)
    if diff:
        _post(c, path, desired)
        changes.append(f"{path} ({', '.join(sorted(diff))})")


def ensure_mount(c: hvac.Client, path: str, type_: str, changes: list[str], options: dict | None = None,
                 description: str = "", max_lease_ttl: str | None = None) -> None:  # fmt: skip
    mounts = c.sys.list_mounted_secrets_engines()["data"]
    if f"{path}/" not in mounts:
        config = {"max_lease_ttl": max_lease_ttl} if max_lease_ttl else None
        c.sys.enable_secrets_engine(type_, path=path, options=options, description=description, config=config)
        changes.append(f"mounted {type_} at {path}/")


def ensure_auth(c: hvac.Client, path: str, type_: str, changes: list[str], description: str = "") -> str:
    """Enable an auth method (idempotent); return its accessor."""
    methods = c.sys.list_auth_methods()["data"]
    if f"{path}/" not in methods:
        c.sys.enable_auth_method(type_, path=path, description=description)
        changes.append(f"enabled auth {type_} at {path}/")
        methods = c.sys.list_auth_methods()["data"]
    return methods[f"{path}/"]["accessor"]


# --- policies ---------------------------------------------------------------------------------


def policy_texts() -> dict[str, str]:
    return {p.stem: p.read_text(encoding="utf-8") for p in sorted(POLICY_DIR.glob("*.hcl"))}


def ensure_policies(c: hvac.Client, changes: list[str]) -> None:
    for name, text in policy_texts().items():
        current = _get(c, f"sys/policies/acl/{name}")
        if current is None or current.get("policy", "").strip() != text.strip():
            c.sys.create_or_update_acl_policy(name, text)
            changes.append(f"policy {name}")


# --- transit ----------------------------------------------------------------------------------


def ensure_transit(c: hvac.Client, settings: Settings, changes: list[str]) -> None:
    ensure_mount(c, TRANSIT, "transit", changes, description="encryption as a service (card and personal data)")
    for key in settings.transit_keys:
        path = f"{TRANSIT}/keys/{key.name}"
        current = _get(c, path)
        if current is None:
            body: dict[str, Any] = {"type": key.type, "exportable": False, "allow_plaintext_backup": False}
            if key.key_size:
                body["key_size"] = key.key_size
            if key.auto_rotate_period:
                body["auto_rotate_period"] = _hours(key.auto_rotate_period)
            _post(c, path, body)
            changes.append(f"transit key {key.name} ({key.type})")
            current = _get(c, path) or {}
        elif current.get("type") != key.type:
            raise RuntimeError(
                f"transit key {key.name} exists with type {current.get('type')}, expected {key.type}: "
                "keys are never re-created automatically (that would destroy data); fix by hand"
            )
        desired = {"deletion_allowed": False, "exportable": False, "auto_rotate_period": key.auto_rotate_period}
        if _differs(current, desired):
            _post(c, f"{path}/config", {**desired, "auto_rotate_period": _hours(key.auto_rotate_period)})
            changes.append(f"transit key {key.name} config")


def rewrap(c: hvac.Client, key: str, ciphertexts: list[str]) -> list[str]:
    """Re-encrypt ciphertexts under the key's newest version without exposing the plaintext."""
    if not ciphertexts:
        return []
    resp = _post(c, f"{TRANSIT}/rewrap/{key}", {"batch_input": [{"ciphertext": ct} for ct in ciphertexts]})
    out = [item.get("ciphertext", "") for item in resp["data"]["batch_results"]]
    errors = [item["error"] for item in resp["data"]["batch_results"] if item.get("error")]
    if errors:
        raise RuntimeError(f"rewrap with {key} failed for {len(errors)} item(s): {errors[0]}")
    return out


def retire_old_versions(c: hvac.Client, key: str) -> int:
    """After every stored ciphertext was re-wrapped: older key versions can no longer decrypt (EAR-05)."""
    latest = int((_get(c, f"{TRANSIT}/keys/{key}") or {})["latest_version"])
    _post(c, f"{TRANSIT}/keys/{key}/config", {"min_decryption_version": latest})
    return latest


# --- PKI: an intermediate signed by the offline root ----------------------------------------


def ensure_pki(c: hvac.Client, root: RootCA, settings: Settings, changes: list[str]) -> None:
    ensure_mount(c, PKI, "pki", changes, description="intermediate CA: every service certificate",
                 max_lease_ttl="8760h")  # fmt: skip
    issuers = _list(c, f"{PKI}/issuers")
    if not issuers:
        csr = _post(c, f"{PKI}/intermediate/generate/internal", {
            "common_name": "billkit lab intermediate CA", "key_type": "ec", "key_bits": 256,
            "organization": "billkit", "exclude_cn_from_sans": True,
        })["data"]["csr"]  # fmt: skip
        signed = root.sign_intermediate_csr(csr)
        _post(c, f"{PKI}/intermediate/set-signed", {"certificate": signed + "\n" + root.pem})
        changes.append("intermediate CA signed by the offline root")
    converge(c, f"{PKI}/config/urls", {
        "issuing_certificates": [], "crl_distribution_points": [],
    }, [])  # fmt: skip
    allowed = [settings.domain, *settings.service_names, *(["localhost"] if settings.allow_localhost else [])]
    converge(c, f"{PKI}/roles/{PKI_ROLE}", {
        "allowed_domains": allowed, "allow_subdomains": True, "allow_bare_domains": True,
        "allow_glob_domains": False, "allow_wildcard_certificates": False, "allow_any_name": False,
        "allow_localhost": settings.allow_localhost, "allow_ip_sans": True, "enforce_hostnames": True,
        "server_flag": True, "client_flag": True, "key_type": "ec", "key_bits": 256,
        "ttl": settings.cert_ttl, "max_ttl": settings.cert_max_ttl, "no_store": False,
    }, changes)  # fmt: skip
    converge(c, f"{PKI}/config/auto-tidy", {
        "enabled": True, "tidy_cert_store": True, "tidy_revoked_certs": True, "interval_duration": 12 * HOUR,
    }, changes)  # fmt: skip


def ensure_host_cert(c: hvac.Client, name: str, cert_path: Path, key_path: Path, dns: tuple[str, ...] = (),
                     ips: tuple[str, ...] = (), fraction: float = 2 / 3) -> bool:  # fmt: skip
    """Issue a host's certificate, or renew it once past `fraction` of its lifetime; True if written."""
    from billkit.vault.pki import needs_renewal, write_private

    if not needs_renewal(cert_path, fraction):
        return False
    cert = issue_cert(c, name, dns, ips)
    cert_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(key_path, cert.private_key.encode())
    cert_path.write_text(cert.fullchain, encoding="ascii")
    return True


@dataclass(frozen=True)
class IssuedCert:
    certificate: str
    private_key: str
    ca_chain: str  # intermediate + root

    @property
    def fullchain(self) -> str:
        return self.certificate.rstrip() + "\n" + self.ca_chain


def issue_cert(c: hvac.Client, common_name: str, dns: tuple[str, ...] = (), ips: tuple[str, ...] = (),
               ttl: int | None = None) -> IssuedCert:  # fmt: skip
    """Issue (or renew: issue anew) a short-lived service certificate from the intermediate CA."""
    body: dict[str, Any] = {"common_name": common_name, "exclude_cn_from_sans": False}
    alt = [d for d in dict.fromkeys(dns) if d != common_name]
    if alt:
        body["alt_names"] = ",".join(alt)
    if ips:
        body["ip_sans"] = ",".join(dict.fromkeys(ips))
    if ttl:
        body["ttl"] = f"{ttl}s"
    data = _post(c, f"{PKI}/issue/{PKI_ROLE}", body)["data"]
    chain = "\n".join(x.strip() for x in data.get("ca_chain") or [data["issuing_ca"]]) + "\n"
    return IssuedCert(data["certificate"], data["private_key"], chain)


# --- SSH user CA ------------------------------------------------------------------------------


def ensure_ssh_ca(c: hvac.Client, settings: Settings, changes: list[str]) -> str:
    """The SSH user CA; returns its public key (for the ssh_hardening role's TrustedUserCAKeys)."""
    ensure_mount(c, SSH, "ssh", changes, description="SSH user CA: short-lived operator certificates")
    try:
        current = _get(c, f"{SSH}/config/ca")
    except hvac.exceptions.InvalidRequest:  # "no default issuer currently configured"
        current = None
    if not current or not current.get("public_key"):
        _post(c, f"{SSH}/config/ca", {"generate_signing_key": True, "key_type": "ssh-ed25519"})
        changes.append("SSH user CA key generated")
        current = _get(c, f"{SSH}/config/ca") or {}
    converge(c, f"{SSH}/roles/{SSH_ROLE}", {
        "key_type": "ca", "allow_user_certificates": True, "allow_host_certificates": False,
        "allowed_users": ",".join(settings.ssh_users), "default_user": settings.ssh_users[0],
        "allowed_extensions": "permit-pty", "default_extensions": {"permit-pty": ""},
        "allow_user_key_ids": False, "ttl": settings.ssh_ttl, "max_ttl": settings.ssh_max_ttl,
    }, changes)  # fmt: skip
    return str(current["public_key"]).strip()


def sign_ssh_key(c: hvac.Client, public_key: str, user: str, ttl: int | None = None) -> str:
    body: dict[str, Any] = {"public_key": public_key, "valid_principals": user, "cert_type": "user"}
    if ttl:
        body["ttl"] = f"{ttl}s"
    return str(_post(c, f"{SSH}/sign/{SSH_ROLE}", body)["data"]["signed_key"]).strip()


# --- AppRole for the app and the payment processor --------------------------------------------


def ensure_approles(c: hvac.Client, settings: Settings, changes: list[str]) -> None:
    ensure_auth(c, "approle", "approle", changes, description="machine identities (app hosts)")
    for role, policies in ((BILLING_APP, [BILLING_APP]), (PAYMENT_PROCESSOR, [PAYMENT_PROCESSOR])):
        converge(c, f"auth/approle/role/{role}", {
            "token_policies": policies, "token_ttl": settings.app_token_ttl,
            "token_max_ttl": settings.app_token_max_ttl, "secret_id_ttl": settings.secret_id_ttl,
            "secret_id_num_uses": settings.secret_id_num_uses, "bind_secret_id": True,
            "secret_id_bound_cidrs": list(settings.app_cidrs), "token_bound_cidrs": list(settings.app_cidrs),
            "token_no_default_policy": True, "token_type": "service",
        }, changes)  # fmt: skip


def role_id(c: hvac.Client, role: str) -> str:
    return str(c.auth.approle.read_role_id(role)["data"]["role_id"])


def wrapped_secret_id(c: hvac.Client, role: str, wrap_ttl: str = "5m") -> str:
    """A new secret ID, response-wrapped: the caller only ever sees a single-use wrapping token."""
    resp = c.adapter.post(f"/v1/auth/approle/role/{role}/secret-id", json={}, headers={"X-Vault-Wrap-TTL": wrap_ttl})
    if not isinstance(resp, dict) or not resp.get("wrap_info"):
        raise RuntimeError(f"Vault did not wrap the secret ID of {role}")
    return str(resp["wrap_info"]["token"])


def with_token(c: hvac.Client, token: str | None) -> hvac.Client:
    """A client for the same server and CA with another token (or none)."""
    return hvac.Client(url=c.url, token=token, verify=getattr(c.adapter, "_kwargs", {}).get("verify", True))


def unwrap(c: hvac.Client, wrapping_token: str) -> dict[str, Any]:
    """Unwrap a response-wrapped secret: the wrapping token authenticates itself, once."""
    return with_token(c, wrapping_token).sys.unwrap()["data"]


def approle_login(c: hvac.Client, role_id_: str, wrapping_token: str) -> str:
    """Unwrap a delivered secret ID and log in with it (what the app does at start)."""
    secret_id = unwrap(c, wrapping_token)["secret_id"]
    return str(with_token(c, None).auth.approle.login(role_id_, secret_id, use_token=False)["auth"]["client_token"])


# --- operators: userpass + TOTP login MFA ------------------------------------------------------


def ensure_operator_mfa(c: hvac.Client, settings: Settings, changes: list[str]) -> str:
    """userpass for operators with TOTP enforced at login; returns the TOTP method ID."""
    accessor = ensure_auth(c, "userpass", "userpass", changes, description="operators (password + TOTP)")
    # Lock a user out for 15 minutes after 5 failed logins (the tune endpoint reads back flattened).
    lockout = {"lockout_threshold": 5, "lockout_duration": "15m", "lockout_counter_reset_duration": "15m",
               "lockout_disable": False}  # fmt: skip
    tune = _get(c, "sys/auth/userpass/tune") or {}
    if _differs(tune, {"user_lockout_threshold": 5, "user_lockout_duration": 900, "user_lockout_disable": False}):
        _post(c, "sys/auth/userpass/tune", {"user_lockout_config": lockout})
        changes.append("userpass lockout after 5 failures")
    method_id = ""
    for mid in _list(c, "identity/mfa/method/totp"):
        m = _get(c, f"identity/mfa/method/totp/{mid}") or {}
        if m.get("issuer") == MFA_ISSUER:
            method_id = mid
            break
    desired = {"issuer": MFA_ISSUER, "period": 30, "digits": 6, "algorithm": "SHA1", "key_size": 20,
               "skew": 1, "max_validation_attempts": 5}  # fmt: skip
    if not method_id:
        method_id = _post(c, "identity/mfa/method/totp", desired)["data"]["method_id"]
        changes.append("TOTP MFA method")
    else:
        converge(c, f"identity/mfa/method/totp/{method_id}", desired, changes)
    converge(c, f"identity/mfa/login-enforcement/{MFA_ENFORCEMENT}", {
        "mfa_method_ids": [method_id], "auth_method_accessors": [accessor],
    }, changes)  # fmt: skip
    return method_id


@dataclass(frozen=True)
class Operator:
    username: str
    totp_secret: str  # base32; what an authenticator app enrols from the otpauth URL
    otpauth_url: str


def add_operator(c: hvac.Client, username: str, password: str, policies: tuple[str, ...] = ("operator",)) -> Operator:
    """Create (or update) an operator: userpass user, identity entity, TOTP secret (enrolled once)."""
    _post(c, f"auth/userpass/users/{username}", {
        "password": password, "token_policies": list(policies), "token_ttl": "1h", "token_max_ttl": "8h",
        "token_no_default_policy": False, "token_type": "service",
    })  # fmt: skip
    accessor = c.sys.list_auth_methods()["data"]["userpass/"]["accessor"]
    entity = _get(c, f"identity/entity/name/{username}")
    if entity is None:
        entity = _post(c, "identity/entity", {"name": username, "metadata": {"role": "operator"}})["data"]
    entity_id = entity["id"]
    aliases = entity.get("aliases") or []
    if not any(a.get("mount_accessor") == accessor for a in aliases):
        _post(c, "identity/entity-alias", {"name": username, "canonical_id": entity_id, "mount_accessor": accessor})
    method_id = next(
        mid for mid in _list(c, "identity/mfa/method/totp")
        if (_get(c, f"identity/mfa/method/totp/{mid}") or {}).get("issuer") == MFA_ISSUER
    )  # fmt: skip
    # Re-enrol: destroy an old secret first (admin-generate refuses to overwrite one).
    _post(c, "identity/mfa/method/totp/admin-destroy", {"method_id": method_id, "entity_id": entity_id})
    gen = _post(c, "identity/mfa/method/totp/admin-generate", {"method_id": method_id, "entity_id": entity_id})
    url = gen["data"]["url"]
    from urllib.parse import parse_qs, urlparse

    secret = parse_qs(urlparse(url).query)["secret"][0]
    return Operator(username, secret, url)


class MFAError(RuntimeError):
    """Login MFA failed (wrong or reused code)."""


def operator_login(c: hvac.Client, username: str, password: str, totp_code: str) -> str:
    """Password, then TOTP (login MFA, two phases); returns the operator's token."""
    first = c.adapter.post(f"/v1/auth/userpass/login/{username}", json={"password": password})
    auth = first["auth"] if isinstance(first, dict) else None
    if not auth:
        raise MFAError("login returned no auth block")
    req = auth.get("mfa_requirement")
    if not req:
        raise MFAError(f"login of {username} was not asked for MFA: the TOTP enforcement is missing")
    method_ids = [m["id"] for con in req["mfa_constraints"].values() for m in con["any"]]
    try:
        second = c.adapter.post(
            "/v1/sys/mfa/validate",
            json={"mfa_request_id": req["mfa_request_id"], "mfa_payload": {method_ids[0]: [totp_code]}},
        )
    except hvac.exceptions.VaultError as exc:
        raise MFAError(f"TOTP refused for {username}: {exc}") from None
    if not isinstance(second, dict) or not second.get("auth"):
        raise MFAError(f"TOTP validation for {username} returned no token")
    return str(second["auth"]["client_token"])


# --- database secrets engine (PostgreSQL) -------------------------------------------------------

# Vault's database roles (database/creds/<role>) and the NOLOGIN group role each credential joins.
DB_APP = BILLING_APP  # billing_app: the app's data
DB_TOKENIZER = "billing-tokenizer"  # billing_tokenizer: the card-vault schema only
DB_MIGRATE = "billing-migrate"  # billing_owner via SET ROLE: migrations, short-lived
DB_AUDITOR = "auditor"  # billing_auditor: read-only
MIGRATE_TTL = 15 * 60


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
            "max_open_connections": 4, "max_connection_lifetime": "5m",
        })  # fmt: skip
        _post(c, f"{DATABASE}/rotate-root/{DB_CONNECTION}")
        changes.append(f"database connection {DB_CONNECTION} (admin password rotated)")
    elif not set(allowed) <= set(current.get("allowed_roles") or []):
        _post(c, path, {"allowed_roles": sorted(set(allowed) | set(current.get("allowed_roles") or []))})
        changes.append(f"database connection {DB_CONNECTION} allowed roles")
    for role, group, inherit, ttl, max_ttl in roles:
        converge(c, f"{DATABASE}/roles/{role}", {
            "db_name": DB_CONNECTION, "creation_statements": creation_statements(group, inherit),
            "revocation_statements": REVOCATION, "default_ttl": ttl, "max_ttl": max_ttl,
        }, changes)  # fmt: skip


# --- a host's encrypted volume: its key in KV, read by the host itself (cert auth) ---------------

CERT_AUTH = "cert"
VOLUME_KEYS = "volumes"  # KV v2 folder: secret/data/volumes/<host>


def volume_key_path(host: str) -> str:
    return f"{KV}/data/{VOLUME_KEYS}/{host}"


def ensure_volume_identity(c: hvac.Client, host: str, address: str, ca_pem: str, changes: list[str],
                           token_ttl: int = 5 * 60) -> None:  # fmt: skip
    """The volume key of one host (32 random bytes, made once, never re-made) and the host's login.

    The host logs in with its own PKI certificate (cert auth: common name = host name, chain to
    ``ca_pem``, only from its address) and gets a 5-minute token whose only right is reading that key.
    """
    ensure_kv(c, changes)
    path = volume_key_path(host)
    if _get(c, path) is None:
        # cas=0: written only if absent, so a race never replaces a key that encrypts data.
        _post(c, path, {"options": {"cas": 0}, "data": {"key": base64.b64encode(secrets.token_bytes(32)).decode()}})
        changes.append(f"volume key of {host}")
    policy = f"volume-{host}"
    text = f'# {host} reads its data volume key (EAR-01).\npath "{path}" {{\n  capabilities = ["read"]\n}}\n'
    current = _get(c, f"sys/policies/acl/{policy}")
    if current is None or current.get("policy", "").strip() != text.strip():
        c.sys.create_or_update_acl_policy(policy, text)
        changes.append(f"policy {policy}")
    ensure_auth(c, CERT_AUTH, "cert", changes, description="host identities (PKI certificates)")
    converge(c, f"auth/{CERT_AUTH}/certs/{host}", {
        "certificate": ca_pem, "allowed_common_names": [host], "token_policies": [policy],
        "token_bound_cidrs": [address], "token_ttl": token_ttl, "token_max_ttl": token_ttl,
        "token_no_default_policy": True, "token_type": "service",
    }, changes)  # fmt: skip


# --- KV: secrets the platform itself needs ----------------------------------------------------


def ensure_kv(c: hvac.Client, changes: list[str]) -> None:
    ensure_mount(c, KV, "kv", changes, options={"version": "2"}, description="platform secrets")
    deadline = time.monotonic() + 30
    while True:  # a fresh KV v2 mount answers 400 "upgrading" for a moment
        try:
            current = _get(c, f"{KV}/data/{BACKUP_PASSPHRASE}")
            break
        except hvac.exceptions.InvalidRequest:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    if current is None:
        _post(c, f"{KV}/data/{BACKUP_PASSPHRASE}", {"data": {"passphrase": secrets.token_urlsafe(48)}})
        changes.append("backup repository passphrase")


# --- everything ---------------------------------------------------------------------------------


@dataclass
class Applied:
    changes: list[str]
    ssh_ca_public_key: str
    mfa_method_id: str


def apply(c: hvac.Client, root: RootCA, settings: Settings, db: Database | None = None) -> Applied:
    """Converge the whole configuration (needs a root token). Returns what changed."""
    changes: list[str] = []
    ensure_policies(c, changes)
    ensure_transit(c, settings, changes)
    ensure_pki(c, root, settings, changes)
    ssh_key = ensure_ssh_ca(c, settings, changes)
    ensure_approles(c, settings, changes)
    method_id = ensure_operator_mfa(c, settings, changes)
    ensure_kv(c, changes)
    if db is not None:
        ensure_database(c, db, settings, changes)
    return Applied(changes, ssh_key, method_id)
