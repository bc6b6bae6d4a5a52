"""The app's audit log: an append-only, hash-chained table, mirrored as JSON events on stdout.

Each record's hash is SHA-256 over the previous record's hash and the record's canonical
JSON; sequence numbers are contiguous, so an altered, inserted or deleted record breaks the
chain (``verify``). The table refuses UPDATE, DELETE and TRUNCATE (trigger) and the app's
database role may only INSERT and SELECT. Each event also goes to stdout as one JSON line
(the journal under systemd) carrying the record's hash, which anchors the chain's head.

Details must never carry a card number, a personal field or a secret: callers pass IDs,
tokens, last four digits and outcomes only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import sys
from dataclasses import dataclass
from typing import Any

import psycopg

GENESIS = "0" * 64
_LOCK = 7_341_002
log = logging.getLogger("billkit.app.audit")


class _JsonLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "event", None)
        return json.dumps(event if event is not None else {"message": record.getMessage()}, sort_keys=True)


class _Stdout(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stdout is at the time (so captured output and the journal both work)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stdout

    @stream.setter
    def stream(self, _value) -> None:  # noqa: ANN001
        pass


def configure_logging() -> None:
    """Send audit events to stdout as JSON lines (systemd puts them in the journal)."""
    if not any(getattr(h, "_billkit", False) for h in log.handlers):
        handler = _Stdout()
        handler.setFormatter(_JsonLine())
        handler._billkit = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = True


def _record(seq: int, at: str, actor: str, action: str, target: str, outcome: str, detail: Any) -> dict[str, Any]:
    """One event's chained fields: the same dict is hashed into the chain and written to the journal."""
    return {"seq": seq, "at": at, "actor": actor, "action": action, "target": target, "outcome": outcome,
            "detail": detail}  # fmt: skip


def _digest(prev: str, record: dict[str, Any]) -> str:
    body = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256((prev + body).encode()).hexdigest()


def append(
    conn: psycopg.Connection[Any],
    now: dt.datetime,
    actor: str,
    action: str,
    target: str = "-",
    outcome: str = "ok",
    **detail: Any,
) -> str:
    """Append one event inside the caller's transaction (so it commits or rolls back with the change)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
    row = conn.execute("SELECT seq, hash FROM audit.events ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
    at = now.astimezone(dt.UTC).isoformat(timespec="microseconds")
    detail = json.loads(json.dumps(detail, default=str))
    record = _record(seq, at, actor, action, target, outcome, detail)
    h = _digest(prev, record)
    conn.execute(
        "INSERT INTO audit.events (seq, at, actor, action, target, outcome, detail, prev_hash, hash) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (seq, at, actor, action, target, outcome, json.dumps(detail), prev, h),
    )
    log.info(action, extra={"event": {"type": "audit", **record, "hash": h}})
    return h


@dataclass
class VerifyResult:
    ok: bool
    records: int
    head: str
    problems: list[str]


def verify(conn: psycopg.Connection[Any], expected_head: str | None = None) -> VerifyResult:
    """Recompute the chain; report every altered, missing or re-ordered record."""
    problems: list[str] = []
    prev, expect_seq, n = GENESIS, 1, 0
    cur = conn.execute(
        "SELECT seq, at, actor, action, target, outcome, detail, prev_hash, hash FROM audit.events ORDER BY seq"
    )
    for seq, at, actor, action, target, outcome, detail, prev_hash, h in cur:
        n += 1
        if seq != expect_seq:
            problems.append(f"record {expect_seq}..{seq - 1} missing (deleted?)")
        if prev_hash != prev:
            problems.append(f"record {seq}: previous-hash link broken")
        at_s = at.astimezone(dt.UTC).isoformat(timespec="microseconds")
        if _digest(prev_hash, _record(seq, at_s, actor, action, target, outcome, detail)) != h:
            problems.append(f"record {seq}: content does not match its hash (altered)")
        prev, expect_seq = h, seq + 1
    if expected_head is not None and prev != expected_head:
        problems.append("the chain's head differs from the expected head (records removed from the end?)")
    return VerifyResult(not problems, n, prev, problems)
