"""The app's audit log: an append-only, hash-chained table, signed heads, and JSON events on stdout.

Records. Each record's hash is SHA-256 over the previous record's hash and the record's canonical
JSON; sequence numbers are contiguous, so an altered, inserted or deleted record breaks the chain
(``verify``). The tables refuse UPDATE, DELETE and TRUNCATE (trigger) and the app's database role
may only INSERT and SELECT. Every record carries its origin (PCI DSS 10.2.2): the client address
and the request ID of the HTTP request it was made in (``RequestOrigin``), or nulls when it was made
outside a request (operator commands, background work). The origin is part of the hashed record.

Journal. Each record also goes to stdout as one JSON line (the journal under systemd) with its hash,
but only once its transaction has committed (``journaled``): a change that rolls back leaves
neither a row nor a journal line, so a sequence number is never journaled twice. ``append`` refuses
to run outside ``journaled``.

Signed heads: truncation is detected by default. A hash chain cannot show that its last records
were removed. So the app signs the chain's head (seq, hash, time) with the transit key
``audit-head`` (ed25519; the app's policy may sign with it, nothing more) every
``audit_head_interval``, after every ``audit_head_every``-th record and at shutdown
(``HeadSigner``), and stores it in ``audit.heads``. ``verify`` checks every head's signature
offline with ``cryptography``, that each head lies on the chain (a head beyond the chain's end means
records were removed from the end) and that the newest genuine head is recent (three intervals by
default): whoever removes the tail and the heads covering it cannot sign a fresh head without the
key, and the app refuses to sign a chain that lost what it signed before.

The verifier's public key comes from Vault, not from the database: transit's ``keys/audit-head``
read returns the public keys only, and the ``auditor`` policy may read it. Whoever can rewrite the
chain can rewrite anything stored beside it, so a key kept in the database would prove nothing.

Details must never carry a card number, a personal field or a secret: callers pass IDs,
tokens, last four digits and outcomes only.
"""

from __future__ import annotations

import base64
import contextvars
import datetime as dt
import hashlib
import ipaddress
import json
import logging
import re
import secrets
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from app_stub import metrics
from app_stub import vault_setup as vs

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from app_stub.core.config import Settings
    from app_stub.crypto import Transit

GENESIS = "0" * 64
_LOCK = 7_341_002
# Three intervals of the default audit_head_interval (60 s): the verifier's freshness bound.
MAX_HEAD_AGE = dt.timedelta(seconds=180)
log = logging.getLogger("billkit.app.audit")
heads_log = logging.getLogger("billkit.app.audit_heads")  # operational messages: stderr, never the event stream


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


# --- origin: who sent the request a record was made in ----------------------------------------

_origin: contextvars.ContextVar[tuple[str | None, str | None]] = contextvars.ContextVar(
    "billkit_audit_origin", default=(None, None)
)
# nginx's $request_id is 32 hex digits; anything outside this set could forge journal or log fields
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def _address(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


class RequestOrigin:
    """ASGI middleware: the client address and request ID that every audit record of a request carries.

    The client address is the peer's, unless the peer is one of ``trusted`` (the edge): then it is
    the right-most entry of X-Forwarded-For, the one the edge wrote. The request ID is the edge's
    X-Request-Id when the peer is trusted and the value is short and plain, else one made here.
    """

    def __init__(self, app: Callable[..., Any], trusted: Networks = ()) -> None:
        self.app, self.trusted = app, trusted

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = _origin.set(self.origin(scope))
        try:
            await self.app(scope, receive, send)
        finally:
            _origin.reset(token)

    def origin(self, scope: dict[str, Any]) -> tuple[str | None, str | None]:
        client = scope.get("client")
        ip = str(client[0])[:64] if client and client[0] else None
        request_id = None
        peer = _address(ip) if ip else None
        if peer is not None and any(ipaddress.ip_address(peer) in net for net in self.trusted):
            headers: dict[bytes, list[str]] = {}
            for name, value in scope.get("headers", ()):
                headers.setdefault(name.lower(), []).append(value.decode("latin-1"))
            forwarded = ",".join(headers.get(b"x-forwarded-for", [])).split(",")[-1]
            ip = _address(forwarded) or ip
            sent = (headers.get(b"x-request-id") or [""])[-1]
            request_id = sent if _REQUEST_ID.fullmatch(sent) else None
        return ip, request_id or secrets.token_hex(16)


# --- records --------------------------------------------------------------------------------


def _record(
    seq: int, at: str, actor: str, action: str, target: str, outcome: str, detail: Any, origin: Any = None
) -> dict[str, Any]:
    """One event's chained fields: the same dict is hashed into the chain and written to the journal.

    Records made before origins existed (origin NULL) are hashed without the field.
    """
    record = {"seq": seq, "at": at, "actor": actor, "action": action, "target": target, "outcome": outcome,
              "detail": detail}  # fmt: skip
    if origin is not None:
        record["origin"] = origin
    return record


def _digest(prev: str, record: dict[str, Any]) -> str:
    body = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256((prev + body).encode()).hexdigest()


# Records appended on a connection whose transaction has not committed yet, by id(connection).
_pending: dict[int, list[dict[str, Any]]] = {}
_pending_lock = threading.Lock()


@contextmanager
def journaled(
    conn: psycopg.Connection[Any], after: Callable[[list[dict[str, Any]]], None] | None = None
) -> Iterator[None]:
    """Journal the records appended on ``conn`` once the transaction inside this block committed.

    Enter it before the transaction (``with journaled(conn), conn.transaction():``): the block
    ends after the commit. On an exception (the transaction rolled back) nothing is journaled.
    ``after`` receives the committed records.
    """
    key = id(conn)
    with _pending_lock:
        outer = key not in _pending
        if outer:
            _pending[key] = []
    if not outer:  # an enclosing block journals
        yield
        return
    try:
        yield
    except BaseException:
        with _pending_lock:
            _pending.pop(key, None)
        raise
    with _pending_lock:
        records = _pending.pop(key)
    for event in records:
        log.info(event["action"], extra={"event": event})
    metrics.observe(records)
    if after is not None and records:
        after(records)


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
    with _pending_lock:
        pending = _pending.get(id(conn))
    if pending is None:
        raise RuntimeError("audit.append needs the transaction inside audit.journaled(conn)")
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
    row = conn.execute("SELECT seq, hash FROM audit.events ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
    at = now.astimezone(dt.UTC).isoformat(timespec="microseconds")
    detail = json.loads(json.dumps(detail, default=str))
    ip, request_id = _origin.get()
    origin = {"ip": ip, "request_id": request_id}
    record = _record(seq, at, actor, action, target, outcome, detail, origin)
    h = _digest(prev, record)
    conn.execute(
        "INSERT INTO audit.events (seq, at, actor, action, target, outcome, detail, origin, prev_hash, hash) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (seq, at, actor, action, target, outcome, json.dumps(detail), json.dumps(origin), prev, h),
    )
    pending.append({"type": "audit", **record, "hash": h})
    return h


# --- signed heads ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    seq: int
    hash: str
    at: dt.datetime
    signature: str


def head_message(seq: int, h: str, at: dt.datetime) -> bytes:
    """What the transit key signs for one head."""
    body = {"type": "billkit.audit.head", "seq": seq, "hash": h,
            "at": at.astimezone(dt.UTC).isoformat(timespec="microseconds")}  # fmt: skip
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _on_chain(conn: psycopg.Connection[Any], seq: int, h: str) -> bool:
    if seq == 0:
        return h == GENESIS
    row = conn.execute("SELECT hash FROM audit.events WHERE seq = %s", (seq,)).fetchone()
    return row is not None and row[0] == h


class HeadSigner:
    """Signs the chain's head with transit and stores it in ``audit.heads``: a background thread does it
    every ``audit_head_interval``, ``nudge`` after every ``audit_head_every``-th record, ``stop`` once
    more at shutdown. It never signs a chain on which the head it signed last is gone."""

    def __init__(self, pool: ConnectionPool[Any], transit: Transit, settings: Settings) -> None:
        self._pool, self._transit, self._clock = pool, transit, settings.clock
        self._interval = settings.audit_head_interval.total_seconds()
        self._every = settings.audit_head_every
        self._last: tuple[int, str] | None = None
        self._lock = threading.Lock()
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    def write(self) -> Head | None:
        """Sign and store the current head; None (and an alarm) when the chain lost the last signed head."""
        with self._lock:
            with self._pool.connection() as conn, conn.transaction():
                row = conn.execute("SELECT seq, hash FROM audit.events ORDER BY seq DESC LIMIT 1").fetchone()
                seq, h = (row[0], row[1]) if row else (0, GENESIS)
                if self._last is not None and not _on_chain(conn, *self._last):
                    message = (
                        f"audit chain no longer holds record {self._last[0]} as signed: records were removed "
                        "or altered; no further head is signed"
                    )
                    log.error(message, extra={"event": {"type": "audit.alarm", "message": message}})
                    return None
            at = self._clock()
            signature = self._transit.sign(vs.KEY_AUDIT_HEAD, head_message(seq, h, at))
            with self._pool.connection() as conn, conn.transaction():
                conn.execute(
                    "INSERT INTO audit.heads (seq, hash, at, signature) VALUES (%s, %s, %s, %s)",
                    (seq, h, at, signature),
                )
            self._last = (seq, h)
            return Head(seq, h, at, signature)

    def nudge(self, records: list[dict[str, Any]]) -> None:
        """After a commit: sign soon when an ``audit_head_every``-th record was among the records."""
        if self._every > 0 and any(r["seq"] % self._every == 0 for r in records):
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.write()
            except Exception as exc:  # noqa: BLE001 - Vault or the database away: retried next time
                heads_log.warning("signing the audit chain's head failed (retried): %s", exc)
            self._wake.wait(self._interval)
            self._wake.clear()

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="audit-heads", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """End the thread and sign a last head (shutdown)."""
        if self._thread is None:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        self._thread = None
        try:
            self.write()
        except Exception as exc:  # noqa: BLE001 - shutting down either way
            heads_log.warning("signing the audit chain's last head failed: %s", exc)


def public_keys(client: Any, mount: str = vs.TRANSIT_MOUNT) -> dict[int, Ed25519PublicKey]:
    """The heads' public keys by key version, read from Vault (``client`` needs the auditor policy)."""
    data = client.adapter.get(f"/v1/{mount}/keys/{vs.KEY_AUDIT_HEAD}")["data"]
    return {
        int(version): Ed25519PublicKey.from_public_bytes(base64.b64decode(k["public_key"]))
        for version, k in data["keys"].items()
    }


def _signed(keys: Mapping[int, Ed25519PublicKey], message: bytes, signature: str) -> bool:
    m = re.fullmatch(r"vault:v(\d+):([A-Za-z0-9+/=]+)", signature)
    key = keys.get(int(m.group(1))) if m else None
    if m is None or key is None:
        return False
    try:
        key.verify(base64.b64decode(m.group(2)), message)
    except (InvalidSignature, ValueError):
        return False
    return True


# --- verification ----------------------------------------------------------------------------


@dataclass
class VerifyResult:
    ok: bool
    records: int
    head: str
    problems: list[str]
    signed: Head | None = field(default=None)  # the newest head with a good signature


def verify(
    conn: psycopg.Connection[Any],
    keys: Mapping[int, Ed25519PublicKey],
    *,
    expected_head: str | None = None,
    now: dt.datetime | None = None,
    max_head_age: dt.timedelta = MAX_HEAD_AGE,
) -> VerifyResult:
    """Recompute the chain, then check the signed heads against it with ``keys`` (``public_keys``).

    Reports every altered, missing or re-ordered record, every head whose signature fails or that
    the chain does not hold (records removed from the end), and a newest genuine head older than
    ``max_head_age`` (the tail removed together with the heads covering it).
    """
    problems: list[str] = []
    prev, expect_seq, n = GENESIS, 1, 0
    cur = conn.execute(
        "SELECT seq, at, actor, action, target, outcome, detail, origin, prev_hash, hash FROM audit.events ORDER BY seq"
    )
    for seq, at, actor, action, target, outcome, detail, origin, prev_hash, h in cur:
        n += 1
        if seq != expect_seq:
            problems.append(f"record {expect_seq}..{seq - 1} missing (deleted?)")
        if prev_hash != prev:
            problems.append(f"record {seq}: previous-hash link broken")
        at_s = at.astimezone(dt.UTC).isoformat(timespec="microseconds")
        if _digest(prev_hash, _record(seq, at_s, actor, action, target, outcome, detail, origin)) != h:
            problems.append(f"record {seq}: content does not match its hash (altered)")
        prev, expect_seq = h, seq + 1
    last = expect_seq - 1
    if expected_head is not None and prev != expected_head:
        problems.append("the chain's head differs from the expected head (records removed from the end?)")
    newest: Head | None = None
    heads = conn.execute(
        "SELECT h.id, h.seq, h.hash, h.at, h.signature, e.hash FROM audit.heads h "
        "LEFT JOIN audit.events e ON e.seq = h.seq ORDER BY h.id"
    )
    for hid, seq, h, at, signature, chained in heads:
        if not _signed(keys, head_message(seq, h, at), signature):
            problems.append(f"signed head {hid} (record {seq}): the signature does not verify (forged or altered)")
            continue
        if seq > last:
            problems.append(
                f"signed head {hid} covers record {seq} but the chain ends at record {last}: "
                "records were removed from the end (truncated)"
            )
        elif (GENESIS if seq == 0 else chained) != h:
            problems.append(f"signed head {hid} does not match record {seq} (altered or removed)")
        if newest is None or at > newest.at:
            newest = Head(seq, h, at, signature)
    now = now or dt.datetime.now(dt.UTC)
    if newest is None:
        problems.append("no signed head with a good signature: the chain's end cannot be proven")
    elif now - newest.at > max_head_age:
        problems.append(
            f"the newest signed head ({newest.at.isoformat()}, record {newest.seq}) is older than {max_head_age}: "
            "the app stopped signing, or the last records were removed together with their heads"
        )
    return VerifyResult(not problems, n, prev, problems, newest)
