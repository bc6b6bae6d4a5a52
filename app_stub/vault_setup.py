"""What the app expects of Vault (OpenBao), as one idempotent function.

The production cluster configuration reuses exactly these names:

- transit secrets engine mounted at ``transit``;
- key ``pan`` (aes256-gcm96): card numbers, encrypt by the app, decrypt only by the payment processor;
- key ``pii`` (aes256-gcm96): wraps the per-customer data keys (envelope encryption of personal data);
- key ``lookup-hmac`` (hmac): blind indexes for exact-match search on encrypted fields;
- key ``audit-head`` (ed25519): signs the audit chain's head (app_stub.audit);
- policy ``billing-app``: encrypt with ``pan``; datakey, encrypt and decrypt with ``pii``; hmac with ``lookup-hmac``;
  sign with ``audit-head``;
- policy ``payment-processor``: decrypt with ``pan``;
- policy ``auditor``: read ``audit-head`` (its public keys: what the audit log's verifier checks heads with);
- policy ``key-rotation``: rotate, read, configure and rewrap ``pan`` and ``pii`` (the forced rewrap command);
- the app reads short-lived PostgreSQL logins from ``database/creds/billing-app`` and
  ``database/creds/billing-tokenizer`` (the database engine is configured by the platform);
- AppRole roles ``billing-app`` and ``payment-processor`` (auth mount ``approle``), each bound to its policy.

``pan`` and ``pii`` rotate automatically (``auto_rotate_period``); the rewrap command then
raises their ``min_decryption_version`` so that old versions are retired (EAR-05).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TRANSIT_MOUNT = "transit"
KEY_PAN = "pan"
KEY_PII = "pii"
KEY_HMAC = "lookup-hmac"
KEY_AUDIT_HEAD = "audit-head"
POLICY_APP = "billing-app"
POLICY_PROCESSOR = "payment-processor"
POLICY_ROTATION = "key-rotation"
POLICY_AUDITOR = "auditor"
APPROLE_MOUNT = "approle"
DATABASE_MOUNT = "database"
# Vault database-engine roles whose short-lived logins the app uses (RBAC-05)
DB_ROLE_APP = "billing-app"
DB_ROLE_TOKENIZER = "billing-tokenizer"
AUTO_ROTATE_PERIOD = "2160h"  # 90 days
# AppRole token and secret-ID lifetimes (durations, not secrets)
LIFETIMES = {"token_ttl": "1h", "token_max_ttl": "4h", "secret_id_ttl": "24h"}


def policies(mount: str = TRANSIT_MOUNT) -> dict[str, str]:
    """The HCL of each policy the app needs, for a transit engine mounted at ``mount``."""

    def rule(path: str, *caps: str) -> str:
        quoted = ", ".join(f'"{c}"' for c in caps)
        return f'path "{mount}/{path}" {{\n  capabilities = [{quoted}]\n}}\n'

    return {
        POLICY_APP: (
            rule(f"encrypt/{KEY_PAN}", "update")
            + rule(f"datakey/plaintext/{KEY_PII}", "update")
            + rule(f"encrypt/{KEY_PII}", "update")
            + rule(f"decrypt/{KEY_PII}", "update")
            + rule(f"hmac/{KEY_HMAC}", "update")
            + rule(f"hmac/{KEY_HMAC}/*", "update")
            + rule(f"sign/{KEY_AUDIT_HEAD}", "update")
            + "".join(
                f'path "{DATABASE_MOUNT}/creds/{r}" {{\n  capabilities = ["read"]\n}}\n'
                for r in (DB_ROLE_APP, DB_ROLE_TOKENIZER)
            )
        ),
        POLICY_PROCESSOR: rule(f"decrypt/{KEY_PAN}", "update"),
        POLICY_ROTATION: "".join(
            rule(f"keys/{k}", "read")
            + rule(f"keys/{k}/rotate", "update")
            + rule(f"keys/{k}/config", "update")
            + rule(f"rewrap/{k}", "update")
            for k in (KEY_PAN, KEY_PII)
        ),
        POLICY_AUDITOR: rule(f"keys/{KEY_AUDIT_HEAD}", "read"),
    }


@dataclass(frozen=True)
class AppRoleIds:
    app_role_id: str
    processor_role_id: str


def ensure_vault(client: Any, mount: str = TRANSIT_MOUNT, suffix: str = "") -> AppRoleIds:
    """Idempotently create the transit keys, policies and AppRole roles the app needs.

    ``client`` is an hvac client with a token allowed to manage mounts, policies and auth
    (root in tests, an operator token in the lab). ``suffix`` is appended to policy and role
    names (tests use it to isolate a second transit mount); production uses the defaults.
    """
    mounts = client.sys.list_mounted_secrets_engines()["data"]
    if f"{mount}/" not in mounts:
        client.sys.enable_secrets_engine("transit", path=mount)
    for name, body in (
        (KEY_PAN, {"type": "aes256-gcm96"}),
        (KEY_PII, {"type": "aes256-gcm96"}),
        (KEY_HMAC, {"type": "hmac", "key_size": 32}),
        (KEY_AUDIT_HEAD, {"type": "ed25519"}),
    ):
        existing = client.adapter.get(f"/v1/{mount}/keys/{name}", raise_exception=False)
        if not existing or "data" not in existing:
            client.adapter.post(f"/v1/{mount}/keys/{name}", json=body)
        if name in (KEY_PAN, KEY_PII):
            client.adapter.post(f"/v1/{mount}/keys/{name}/config", json={"auto_rotate_period": AUTO_ROTATE_PERIOD})
    for name, hcl in policies(mount).items():
        client.sys.create_or_update_policy(name=name + suffix, policy=hcl)
    auths = client.sys.list_auth_methods()["data"]
    if f"{APPROLE_MOUNT}/" not in auths:
        client.sys.enable_auth_method("approle", path=APPROLE_MOUNT)
    ids = []
    for role, policy in ((POLICY_APP, POLICY_APP), (POLICY_PROCESSOR, POLICY_PROCESSOR)):
        client.auth.approle.create_or_update_approle(
            role_name=role + suffix,
            token_policies=[policy + suffix],
            **LIFETIMES,
            secret_id_num_uses=0,
            mount_point=APPROLE_MOUNT,
        )
        ids.append(client.auth.approle.read_role_id(role + suffix, mount_point=APPROLE_MOUNT)["data"]["role_id"])
    return AppRoleIds(ids[0], ids[1])


def new_secret_id(client: Any, role: str, suffix: str = "") -> str:
    """A fresh AppRole secret ID for ``role`` (tests; the lab delivers it response-wrapped)."""
    resp = client.auth.approle.generate_secret_id(role + suffix, mount_point=APPROLE_MOUNT)
    return resp["data"]["secret_id"]
