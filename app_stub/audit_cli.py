"""``billkit audit-log verify``: check the app's audit log hash chain from a database connection."""

from __future__ import annotations

import psycopg

from app_stub.audit import verify


def verify_dsn(dsn: str, expected_head: str | None = None) -> int:
    """Print the verdict; 0 when the chain is intact, 1 when it is broken."""
    with psycopg.connect(dsn) as conn:
        result = verify(conn, expected_head)
    if result.ok:
        print(f"audit log intact: {result.records} records, head {result.head}")
        return 0
    print(f"audit log BROKEN ({result.records} records):")
    for p in result.problems:
        print(f"  - {p}")
    return 1
