"""Payments: an invoice is charged at most once per idempotency key, whatever is retried or crashes (APP-03)."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import TYPE_CHECKING, Any, LiteralString

import psycopg
from psycopg import sql

from app_stub import audit
from app_stub.services.base import AppError, Context, Service, Staff, bad
from app_stub.services.cards import token_details
from app_stub.tokenization import TOKEN_RE, Card

if TYPE_CHECKING:
    from app_stub.services.cards import CardService
    from app_stub.services.invoices import InvoiceService


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


class PaymentService(Service):
    def __init__(self, ctx: Context, invoices: InvoiceService, cards: CardService) -> None:
        super().__init__(ctx)
        self.invoices, self.cards = invoices, cards

    def list_payments(self, staff: Staff) -> list[dict[str, Any]]:
        with self.tx() as conn:
            return payment_rows(conn, "TRUE", ())

    def pay(self, staff: Staff, iid: int, idempotency_key: str, card: Card | None, token: str | None) -> dict[str, Any]:
        """Charge an invoice's balance at most once per idempotency key (APP-03).

        1. record a pending payment (committed) — or find the one this key already recorded;
        2. charge through the gateway with the same idempotency key (the gateway never charges a key twice);
        3. record the outcome. A crash or retry anywhere resumes from the recorded state.
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
            with self.tx() as conn:
                inv = self.invoices.invoice_row(conn, iid)
                if inv["state"] != "issued":
                    raise AppError(409, f"invoice {iid} is {inv['state']}: only issued invoices can be paid")
                if inv["balance_minor"] <= 0:
                    raise AppError(409, f"invoice {iid} has nothing left to pay")
                if token is not None and token_details(conn, token) is None:
                    raise AppError(404, "unknown card token")
            card_token = self.cards.vault.tokenize(card, now) if card is not None else token or ""
            try:
                with self.tx() as conn:
                    pid = self._start_payment(conn, staff, iid, idempotency_key, req_hash, card, card_token, now)
            except _SameKeyCommitted:
                return self.pay(staff, iid, idempotency_key, card, token)  # the other request won: replay it
        return self._charge_and_record(staff, pid, card_token, idempotency_key, pan)

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
        if inv["state"] != "issued" or inv["balance_minor"] <= 0:
            raise AppError(409, f"invoice {iid} is {inv['state']} with nothing left to pay")
        if card is not None:
            conn.execute(
                "INSERT INTO billing.cards (token, brand, last4, exp_month, exp_year, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (card_token, card.brand, card.last4, card.exp_month, card.exp_year, now),
            )
            audit.append(conn, now, staff.actor, "card.tokenize", f"card:{card_token}", last4=card.last4)
        row = conn.execute(
            "INSERT INTO billing.payments (idempotency_key, request_hash, invoice_id, amount_minor, currency, "
            "card_token, status, created_by, created_at) VALUES (%s, %s, %s, %s, %s, %s, 'pending', %s, %s) "
            "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
            (idempotency_key, req_hash, iid, inv["balance_minor"], inv["currency"], card_token, staff.id, now),
        ).fetchone()
        if row is None:
            raise AppError(409, "a concurrent request with this Idempotency-Key is in progress; retry it")
        pid = row[0]
        audit.append(
            conn,
            now,
            staff.actor,
            "payment.start",
            f"payment:{pid}",
            invoice=iid,
            amount_minor=inv["balance_minor"],
        )
        return pid

    def _charge_and_record(self, staff: Staff, pid: int, card_token: str, key: str, pan: str | None) -> dict[str, Any]:
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
                    staff.actor,
                    f"payment.{status}",
                    f"payment:{pid}",
                    invoice=iid,
                    charge=result.charge_id,
                    outcome_reason=result.reason,
                )
        return self._payment_result(pid, replayed=updated is None)

    def _payment_result(self, pid: int, replayed: bool) -> dict[str, Any]:
        with self.tx() as conn:
            (p,) = payment_rows(conn, "p.id = %s", (pid,))
        p["replayed"] = replayed
        return p

    def recover_pending_payments(self, staff: Staff) -> int:
        """Finish every payment left pending by a crash (same idempotency key: never a second charge)."""
        with self.tx() as conn:
            rows = conn.execute(
                "SELECT id, card_token, idempotency_key FROM billing.payments WHERE status = 'pending'"
            ).fetchall()
        for pid, token, key in rows:
            self._charge_and_record(staff, pid, token, key, None)
        return len(rows)
