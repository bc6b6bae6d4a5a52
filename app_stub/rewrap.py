"""Forced rewrap: move every stored ciphertext to the newest transit key version, then retire old versions.

For each transit key (``pii``: wrapped data keys and TOTP secrets, pending ones included; ``pan``:
the card vault), the target is the key's latest version when the run starts (after the optional
rotation), remembered for the whole run. Rows below the target are rewrapped in batches (one
batched transit call and one transaction per batch); a row another transaction holds is waited
for, never skipped. An interrupted run simply starts again where it stopped: it only selects rows
still below the target.

Then a query proves that no row of the key is below the target any more (a row written meanwhile
is rewrapped by one more pass), and only then is the key's ``min_decryption_version`` raised — to
the target, never to a version read later: a rotation during the run (``auto_rotate_period``) must
not retire what was just rewrapped. Old versions can then no longer decrypt, including copies of
old wrapped keys in backups (this completes crypto-shredding).
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
    # a TOTP secret being enrolled becomes users.totp_secret_ct as it is: it must stay decryptable too
    (vs.KEY_PII, "staff", "sessions", "pending_totp_ct", "id_hash"),
    (vs.KEY_PAN, "cardvault", "pans", "pan_ct", "token"),
)


# The key version inside a transit ciphertext ("vault:v12:..."); rows of another form (development's
# "plain" data keys) are not transit ciphertexts and are left alone.
def _older(col: str) -> sql.Composed:
    """The condition "this row's ciphertext is below the version bound to %s"."""
    return sql.SQL("{c} LIKE 'vault:v%%' AND substring({c} from '^vault:v([0-9]+):')::int < %s").format(
        c=sql.Identifier(col)
    )


PASSES = 3  # passes per run before giving up (rows keep arriving below the target)
LOCK_TIMEOUT = "60s"  # waiting longer for a row aborts the run; nothing is retired then


@dataclass
class RewrapStats:
    rewrapped: dict[str, int] = field(default_factory=dict)
    min_decryption_version: dict[str, int] = field(default_factory=dict)


class RewrapIncomplete(RuntimeError):
    """Rows stayed below the target version: no version was retired."""


def key_info(transit: Transit, key: str) -> dict[str, Any]:
    return transit._client.adapter.get(f"/v1/{transit.mount}/keys/{key}")["data"]


def latest_version(transit: Transit, key: str) -> int:
    return int(key_info(transit, key)["latest_version"])


def _below(conn: psycopg.Connection[Any], key: str, target: int) -> int:
    """How many rows of ``key`` hold a ciphertext below ``target`` (the proof: zero)."""
    total = 0
    for k, schema, name, col, _ in TARGETS:
        if k != key:
            continue
        query = sql.SQL("SELECT count(*) FROM {t} WHERE {older}").format(
            t=sql.Identifier(schema, name), older=_older(col)
        )
        total += conn.execute(query, (target,)).fetchone()[0]  # type: ignore[index]
    conn.commit()
    return total


def rewrap_all(
    owner_dsn: str,
    transit: Transit,
    batch: int = 500,
    rotate: bool = False,
    progress: Callable[[str, int], None] | None = None,
    stop_after: int | None = None,
) -> RewrapStats:
    """Rewrap everything to the key versions current at the start (rotating first if asked), prove it,
    then retire older versions.

    ``transit`` must carry the ``key-rotation`` policy; ``owner_dsn`` a role that can update the
    card vault. ``stop_after`` (batches) simulates an interruption for tests.
    """
    stats = RewrapStats()
    keys = sorted({t[0] for t in TARGETS})
    if rotate:
        for key in keys:
            transit._post(f"keys/{key}/rotate", {})
    target = {key: latest_version(transit, key) for key in keys}
    batches = 0
    with psycopg.connect(owner_dsn) as conn:
        conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
        for _ in range(PASSES):
            for key, schema, name, col, pk in TARGETS:
                what = f"{schema}.{name}.{col}"
                stats.rewrapped.setdefault(what, 0)
                ids = {"t": sql.Identifier(schema, name), "c": sql.Identifier(col), "pk": sql.Identifier(pk)}
                # FOR UPDATE without SKIP LOCKED: a row held by another transaction is waited for
                select = sql.SQL("SELECT {pk}, {c} FROM {t} WHERE {older} ORDER BY {pk} LIMIT %s FOR UPDATE").format(
                    older=_older(col), **ids
                )
                update = sql.SQL("UPDATE {t} SET {c} = %s WHERE {pk} = %s").format(**ids)
                while rows := conn.execute(select, (target[key], batch)).fetchall():
                    new = transit.rewrap(key, [r[1] for r in rows])
                    with conn.cursor() as cur:
                        cur.executemany(update, [(ct, r[0]) for ct, r in zip(new, rows, strict=True)])
                    conn.commit()
                    stats.rewrapped[what] += len(rows)
                    batches += 1
                    if progress:
                        progress(what, stats.rewrapped[what])
                    if stop_after is not None and batches >= stop_after:
                        return stats  # interrupted: min_decryption_version untouched
                conn.commit()
            # the proof, for every key at once, right before anything is retired
            if not any(_below(conn, key, target[key]) for key in keys):
                break
        else:
            raise RewrapIncomplete(f"rows keep arriving below versions {target}: nothing retired")
    for key in keys:
        # raised only, and only to the version every row was proven to hold
        if int(key_info(transit, key).get("min_decryption_version", 1)) < target[key]:
            transit._post(f"keys/{key}/config", {"min_decryption_version": target[key]})
        stats.min_decryption_version[key] = target[key]
    return stats
