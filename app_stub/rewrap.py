"""Forced rewrap: move every stored ciphertext to the newest transit key version, then retire old versions.

For each transit key (``pii``: wrapped data keys and TOTP secrets; ``pan``: the card vault),
rows not yet on the latest version are rewrapped in batches (one batched transit call and
one transaction per batch). An interrupted run simply starts again where it stopped: it only
selects rows still on an older version. When no row is left, the key's
``min_decryption_version`` is raised to the latest, so old versions can no longer decrypt —
including copies of old wrapped keys in backups (this completes crypto-shredding).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from app_stub import vault_setup as vs
from app_stub.crypto import Transit

# (transit key, schema, table, ciphertext column, primary key column)
TARGETS: tuple[tuple[str, str, str, str, str], ...] = (
    (vs.KEY_PII, "billing", "customer_keys", "wrapped_key", "customer_id"),
    (vs.KEY_PII, "staff", "users", "totp_secret_ct", "id"),
    (vs.KEY_PAN, "cardvault", "pans", "pan_ct", "token"),
)


@dataclass
class RewrapStats:
    rewrapped: dict[str, int] = field(default_factory=dict)
    min_decryption_version: dict[str, int] = field(default_factory=dict)


def latest_version(transit: Transit, key: str) -> int:
    data = transit._client.adapter.get(f"/v1/{transit.mount}/keys/{key}")["data"]
    return int(data["latest_version"])


def rewrap_all(
    owner_dsn: str,
    transit: Transit,
    batch: int = 500,
    rotate: bool = False,
    progress: Callable[[str, int], None] | None = None,
    stop_after: int | None = None,
) -> RewrapStats:
    """Rewrap everything to the latest key versions (rotating first if asked), then retire older versions.

    ``transit`` must carry the ``key-rotation`` policy; ``owner_dsn`` a role that can update the
    card vault. ``stop_after`` (batches) simulates an interruption for tests.
    """
    stats = RewrapStats()
    keys = sorted({t[0] for t in TARGETS})
    if rotate:
        for key in keys:
            transit._post(f"keys/{key}/rotate", {})
    batches = 0
    with psycopg.connect(owner_dsn) as conn:
        for key, schema, name, col, pk in TARGETS:
            table = f"{schema}.{name}"
            ids = {"t": sql.Identifier(schema, name), "c": sql.Identifier(col), "pk": sql.Identifier(pk)}
            select = sql.SQL(
                "SELECT {pk}, {c} FROM {t} WHERE {c} IS NOT NULL AND {c} NOT LIKE %s ORDER BY {pk} LIMIT %s "
                "FOR UPDATE SKIP LOCKED"
            ).format(**ids)
            update = sql.SQL("UPDATE {t} SET {c} = %s WHERE {pk} = %s").format(**ids)
            latest = latest_version(transit, key)
            prefix = f"vault:v{latest}:"
            done = 0
            while True:
                rows: list[tuple[Any, str]] = conn.execute(select, (prefix + "%", batch)).fetchall()
                if not rows:
                    conn.commit()
                    break
                new = transit.rewrap(key, [r[1] for r in rows])
                with conn.cursor() as cur:
                    cur.executemany(update, [(ct, r[0]) for ct, r in zip(new, rows, strict=True)])
                conn.commit()
                done += len(rows)
                batches += 1
                if progress:
                    progress(f"{table}.{col}", done)
                if stop_after is not None and batches >= stop_after:
                    stats.rewrapped[f"{table}.{col}"] = done
                    return stats  # interrupted: min_decryption_version untouched
            stats.rewrapped[f"{table}.{col}"] = done
    for key in keys:
        latest = latest_version(transit, key)
        transit._post(f"keys/{key}/config", {"min_decryption_version": latest})
        stats.min_decryption_version[key] = latest
    return stats
