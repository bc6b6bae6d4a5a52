"""``billkit audit-log verify``: check the app's audit log (hash chain and signed heads) from a database connection.

The heads' public keys are read from Vault (``BILLKIT_APP_VAULT_URL``, ``VAULT_TOKEN``: a token with
the ``auditor`` policy, ``BILLKIT_APP_VAULT_CA_FILE``); the signatures are then checked locally.
"""

from __future__ import annotations

import datetime as dt
import os
import sys

import psycopg

from app_stub import vault_setup as vs
from app_stub.audit import MAX_HEAD_AGE, public_keys, verify


def verify_dsn(
    dsn: str,
    expected_head: str | None = None,
    mount: str = vs.TRANSIT_MOUNT,
    max_head_age: float | None = None,
) -> int:
    """Print the verdict; 0 when the log is intact, 1 when it is broken, 2 when it cannot be checked.

    ``max_head_age``: seconds the newest signed head may be old (default ``MAX_HEAD_AGE``).
    """
    import hvac
    import hvac.exceptions

    url, token = os.environ.get("BILLKIT_APP_VAULT_URL", ""), os.environ.get("VAULT_TOKEN", "")
    if not url or not token:
        print(
            "cannot check the audit log's signed heads: set BILLKIT_APP_VAULT_URL and VAULT_TOKEN (a token with the "
            f"'{vs.POLICY_AUDITOR}' policy, which reads the heads' public key)",
            file=sys.stderr,
        )
        return 2
    client = hvac.Client(url=url, token=token, verify=os.environ.get("BILLKIT_APP_VAULT_CA_FILE") or True, timeout=10)
    try:
        keys = public_keys(client, mount)
    except (hvac.exceptions.VaultError, OSError, KeyError) as exc:
        print(f"cannot read the audit heads' public key from Vault ({mount}/keys/{vs.KEY_AUDIT_HEAD}): {exc}",
              file=sys.stderr)  # fmt: skip
        return 2
    with psycopg.connect(dsn) as conn:
        age = MAX_HEAD_AGE if max_head_age is None else dt.timedelta(seconds=max_head_age)
        result = verify(conn, keys, expected_head=expected_head, max_head_age=age)
    if result.ok and result.signed is not None:
        print(
            f"audit log intact: {result.records} records, head {result.head}; signed head at record "
            f"{result.signed.seq} ({result.signed.at.isoformat()})"
        )
        return 0
    print(f"audit log BROKEN ({result.records} records):")
    for p in result.problems:
        print(f"  - {p}")
    return 1
