"""Payments: an invoice is charged at most once per idempotency key, whatever is retried or crashes (APP-03)."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import threading
from typing import TYPE_CHECKING, Any, LiteralString

import psycopg
from psycopg import sql

from app_stub import audit
from app_stub.services.base import AppError, Context, Service, Staff, bad
from app_stub.services.cards import token_details
from app_stub.tokenization import TOKEN_RE, Card

if TYPE_CHECKING:
    from app_stub.services.cards import CardService
    from app_stub.services.customers import CustomerService
    from app_stub.services.invoices import InvoiceService


log = logging.getLogger("billkit.app.payments")
_RECOVERY_LOCK = 7_341_101  # advisory lock: one payment-recovery sweep at a time across app hosts


class _SameKeyCommitted(Exception):
    """A concurrent request with the same idempotency key committed its payment first."""


def payment_rows(conn: psycopg.Connection[Any], where: LiteralString, args: tuple[Any, ...]) -> list[dict[str, Any]]:
    query = sql.SQL(
        "SELECT p.id, p.invoice_id, p.amount_minor, p.currency, p.status, p.gateway_charge_id, p.decline_reason, "
        "p.created_at, c.token, c.brand, c.last4, c.exp_month, c.exp_year FROM billing.payments p "
        "JOIN billing.cards c ON c.token = p.card_token WHERE {} ORDER BY p.id"
    ).format(sql.SQL(where))
    rows = conn.execute(query, args).fetchall()
    keys = ("id", "invoice_id", "amount_minor", "currency", "status", "charge_id", "decline_reason", "created_at")
    out = []
    for r in rows:
        d: dict[str, Any] = dict(zip(keys, r[:8], strict=True))
        d["card"] = {"token": r[8], "brand": r[9], "last4": r[10], "exp_month": r[11], "exp_year": r[12]}
        out.append(d)
    return out


def pending_minor(conn: psycopg.Connection[Any], iid: int) -> int:
    """What payments in progress may still take from the invoice (read it under the invoice's row lock)."""
    row = conn.execute(
        "SELECT COALESCE(sum(amount_minor), 0) FROM billing.payments WHERE invoice_id = %s AND status = 'pending'",
        (iid,),
    ).fetchone()
    return int(row[0]) if row else 0


class PaymentService(Service):
    def __init__(self, ctx: Context, customers: CustomerService, invoices: InvoiceService, cards: CardService) -> None:
        super().__init__(ctx)
        self.customers, self.invoices, self.cards = customers, invoices, cards

    def list_payments(self, staff: Staff) -> list[dict[str, Any]]:
        with self.tx() as conn:
            return payment_rows(conn, "TRUE", ())

    def _payable(self, inv: dict[str, Any], pending: int) -> int:
        """The amount a new payment may charge: the balance less what payments in progress hold (APP-03)."""
        iid = inv["id"]
        if inv["state"] != "issued":
            raise AppError(409, f"invoice {iid} is {inv['state']}: only issued invoices can be paid")
        amount = inv["balance_minor"] - pending
        if amount <= 0 and pending:
            raise AppError(
                409,
                f"a payment of {pending} for invoice {iid} is in progress (its card may be charged already): "
                "do not take it again; retry that payment with its own Idempotency-Key, or wait: it is completed "
                "or released automatically",
            )
        if amount <= 0:
            raise AppError(409, f"invoice {iid} has nothing left to pay")
        return amount

    def _check_card(self, conn: psycopg.Connection[Any], staff: Staff, inv: dict[str, Any], token: str) -> None:
        """A stored card pays only its own customer's invoices (TOK-03); a refusal is audited."""
        card = token_details(conn, token)
        if card is None:
            raise AppError(404, "unknown card token")
        if card["erased_at"] is not None:
            raise AppError(410, "this card was erased with its customer: take a new card")
        if card["customer_id"] != inv["customer_id"]:
            self.audit_apart(
                staff.actor,
                "payment.start",
                f"invoice:{inv['id']}",
                "refused",
                card=token,
                reason="card of another customer",
            )
            if card["customer_id"] is None:
                raise AppError(403, "this card was stored before cards had customers: take it again for this customer")
            raise AppError(403, "this card belongs to another customer: pay with a card of the invoice's customer")

    def pay(self, staff: Staff, iid: int, idempotency_key: str, card: Card | None, token: str | None) -> dict[str, Any]:
        """Charge an invoice's balance at most once per idempotency key, and never beyond the total (APP-03).

        1. record a pending payment (committed) — or find the one this key already recorded; pending
           payments hold their amount, so a second key finds nothing left to pay while one is in progress;
        2. charge through the gateway with the same idempotency key (the gateway never charges a key twice);
        3. record the outcome. A crash or retry anywhere resumes from the recorded state, and the
           recovery timer (``PaymentRecovery``) finishes what no one retries.
        """
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{8,100}", idempotency_key or ""):
            raise bad("Idempotency-Key header required: 8-100 characters of letters, digits, '_', '.', ':' or '-'")
        if (card is None) == (token is None):
            raise bad("pay with either a new card or a card token")
        req_hash = hashlib.sha256(f"{iid}".encode()).hexdigest()
        now = self.now()
        pan: str | None = card.pan if card else None
        with self.tx() as conn:
            existing = conn.execute(
                "SELECT id, invoice_id, status, card_token FROM billing.payments WHERE idempotency_key = %s",
                (idempotency_key,),
            ).fetchone()
        if existing is not None:
            if existing[1] != iid:
                raise AppError(409, "this Idempotency-Key was used for another request; use a new key")
            if existing[2] != "pending":
                return self._payment_result(existing[0], replayed=True)
            pid, card_token, pan = existing[0], existing[3], None
        else:
            if token is not None and not TOKEN_RE.match(token):
                raise bad("not a card token")
            with self.tx() as conn:  # refuse early, before a card number is stored
                inv = self.invoices.invoice_row(conn, iid)
                self._payable(inv, pending_minor(conn, iid))
                self.customers.customer_open(conn, inv["customer_id"])
                if token is not None:
                    self._check_card(conn, staff, inv, token)
            card_token = self.cards.vault.tokenize(card, now) if card is not None else token or ""
            try:
                with self.tx() as conn:
                    pid = self._start_payment(conn, staff, iid, idempotency_key, req_hash, card, card_token, now)
            except BaseException as exc:
                if card is not None:
                    self.cards.forget_unrecorded(card_token)
                if isinstance(exc, _SameKeyCommitted):
                    return self.pay(staff, iid, idempotency_key, card, token)  # the other request won: replay it
                raise
        return self._charge_and_record(staff.actor, pid, card_token, idempotency_key, pan)

    def _start_payment(
        self,
        conn: psycopg.Connection[Any],
        staff: Staff,
        iid: int,
        idempotency_key: str,
        req_hash: str,
        card: Card | None,
        card_token: str,
        now: dt.datetime,
    ) -> int:
        """Record the pending payment under the invoice's row lock, re-checking what a racing request changed."""
        inv = self.invoices.invoice_row(conn, iid, lock=True)
        if conn.execute("SELECT 1 FROM billing.payments WHERE idempotency_key = %s", (idempotency_key,)).fetchone():
            raise _SameKeyCommitted
        amount = self._payable(inv, pending_minor(conn, iid))
        # an erasure runs before or after, never between; a new card belongs to the invoice's customer
        self.customers.customer_open(conn, inv["customer_id"], lock=True)
        if card is not None:
            self.cards.insert_card(conn, staff, card_token, card, inv["customer_id"], now)
        row = conn.execute(
            "INSERT INTO billing.payments (idempotency_key, request_hash, invoice_id, amount_minor, currency, "
            "card_token, status, created_by, created_at) VALUES (%s, %s, %s, %s, %s, %s, 'pending', %s, %s) "
            "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
            (idempotency_key, req_hash, iid, amount, inv["currency"], card_token, staff.id, now),
        ).fetchone()
        if row is None:
            raise AppError(409, "a concurrent request with this Idempotency-Key is in progress; retry it")
        pid = row[0]
        audit.append(conn, now, staff.actor, "payment.start", f"payment:{pid}", invoice=iid, amount_minor=amount)
        return pid

    def _charge_and_record(
        self, actor: str, pid: int, card_token: str, key: str, pan: str | None, **detail: Any
    ) -> dict[str, Any]:
        with self.tx() as conn:
            amount, currency, iid = conn.execute(
                "SELECT amount_minor, currency, invoice_id FROM billing.payments WHERE id = %s", (pid,)
            ).fetchone()  # type: ignore[misc]
        if pan is None:
            pan = self.cards.vault.detokenize(card_token)  # system use for the charge; never shown or logged
        result = self.ctx.gateway.charge(key, pan, amount, currency.strip())
        del pan
        self.ctx.hooks.after_charge()
        now = self.now()
        with self.tx() as conn:
            inv = self.invoices.invoice_row(conn, iid, lock=True)
            status = "succeeded" if result.approved else "declined"
            updated = conn.execute(
                "UPDATE billing.payments SET status = %s, gateway_charge_id = %s, decline_reason = %s, "
                "completed_at = %s WHERE id = %s AND status = 'pending' RETURNING id",
                (status, result.charge_id, result.reason or None, now, pid),
            ).fetchone()
            if updated is not None and result.approved:
                paid = inv["paid_minor"] + amount
                done = paid + inv["credited_minor"] >= inv["total_minor"]
                conn.execute(
                    "UPDATE billing.invoices SET paid_minor = %s, state = CASE WHEN %s THEN 'paid' ELSE state END, "
                    "paid_at = CASE WHEN %s THEN %s ELSE paid_at END WHERE id = %s",
                    (paid, done, done, now, iid),
                )
            if updated is not None:
                audit.append(
                    conn,
                    now,
                    actor,
                    f"payment.{status}",
                    f"payment:{pid}",
                    invoice=iid,
                    charge=result.charge_id,
                    outcome_reason=result.reason,
                    **detail,
                )
        return self._payment_result(pid, replayed=updated is None)

    def _payment_result(self, pid: int, replayed: bool) -> dict[str, Any]:
        with self.tx() as conn:
            (p,) = payment_rows(conn, "p.id = %s", (pid,))
        p["replayed"] = replayed
        return p

    def recover_pending_payments(self, grace: dt.timedelta | None = None) -> int:
        """Finish the payments pending longer than ``grace`` (a crash, a lost response); return how many.

        The same idempotency key goes to the gateway, which never charges a key twice, and an outcome
        is recorded only while the payment is still pending, so racing the original request's retry is
        harmless; the grace period keeps requests still in flight out of it. One app host sweeps at a
        time (an advisory lock held for the sweep); another host finding it taken skips its turn.
        """
        cutoff = self.now() - (self.s.payment_recovery_grace if grace is None else grace)
        done = 0
        with self.tx() as conn:
            (mine,) = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_RECOVERY_LOCK,)).fetchone()  # type: ignore[misc]
            if not mine:
                return 0
            rows = conn.execute(
                "SELECT id, card_token, idempotency_key FROM billing.payments WHERE status = 'pending' "
                "AND created_at < %s ORDER BY id",
                (cutoff,),
            ).fetchall()
            for pid, token, key in rows:
                try:
                    self._charge_and_record("system", pid, token, key, None, recovered=True)
                except Exception:  # one payment's failure (gateway down) must not stop the others
                    log.exception("payment %s: recovery failed; retried at the next sweep", pid)
                else:
                    done += 1
        return done


class PaymentRecovery:
    """Finishes pending payments when the app starts, then every ``payment_recovery_interval`` (APP-03)."""

    def __init__(self, payments: PaymentService) -> None:
        self.payments = payments
        self.sweeps = 0  # sweeps run (tests wait on it)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="payment-recovery", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        interval = self.payments.s.payment_recovery_interval.total_seconds()
        while True:
            try:
                if n := self.payments.recover_pending_payments():
                    log.info("payment recovery: %d pending payment(s) completed", n)
            except Exception:  # the database may be down for a while: the timer keeps going
                log.exception("payment recovery sweep failed; retrying in %.0f s", interval)
            self.sweeps += 1
            if self._stop.wait(interval):
                return
