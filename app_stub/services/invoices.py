"""Invoices: line items and totals in minor units, the draft → issued → paid/void states, credit notes."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import psycopg

from app_stub import audit
from app_stub.services.base import AppError, Context, Service, Staff, bad
from app_stub.services.payments import payment_rows, pending_minor

if TYPE_CHECKING:
    from app_stub.services.customers import CustomerService


class InvoiceService(Service):
    def __init__(self, ctx: Context, customers: CustomerService) -> None:
        super().__init__(ctx)
        self.customers = customers

    def create_invoice(self, staff: Staff, customer_id: int, currency: str, lines: list[dict[str, Any]]) -> int:
        if not lines:
            raise bad("an invoice needs at least one line item")
        computed = []
        for i, ln in enumerate(lines, 1):
            net = ln["quantity"] * ln["unit_price_minor"]
            tax = (net * ln["tax_rate_bp"] + 5000) // 10000  # round half up, in minor units
            computed.append((i, ln["description"], ln["quantity"], ln["unit_price_minor"], ln["tax_rate_bp"], net, tax))
        subtotal, tax_total = sum(c[5] for c in computed), sum(c[6] for c in computed)
        if subtotal + tax_total > 10**15:
            raise bad("invoice total too large")
        now = self.now()
        with self.tx() as conn:
            key = self.customers.customer_key(conn, customer_id)
            row = conn.execute(
                "SELECT name_ct, address_ct FROM billing.customers WHERE id = %s", (customer_id,)
            ).fetchone()
            if row is None:
                raise AppError(404, "not found")
            bill_to = json.dumps(
                {
                    "name": self.cipher.open(key, customer_id, "name", row[0]),
                    "address": self.cipher.open(key, customer_id, "address", row[1]),
                }
            )
            (iid,) = conn.execute(
                "INSERT INTO billing.invoices (customer_id, currency, subtotal_minor, tax_minor, total_minor, "
                "created_by, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (customer_id, currency, subtotal, tax_total, subtotal + tax_total, staff.id, now),
            ).fetchone()  # type: ignore[misc]
            conn.execute(
                "UPDATE billing.invoices SET bill_to_ct = %s WHERE id = %s",
                (self.cipher.seal(key, customer_id, f"invoice:{iid}:bill_to", bill_to), iid),
            )
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO billing.invoice_lines (invoice_id, position, description, quantity, "
                    "unit_price_minor, tax_rate_bp, net_minor, tax_minor) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    [(iid, *c) for c in computed],
                )
            audit.append(conn, now, staff.actor, "invoice.create", f"invoice:{iid}", total_minor=subtotal + tax_total)
        return iid

    def invoice_row(self, conn: psycopg.Connection[Any], iid: int, lock: bool = False) -> dict[str, Any]:
        row = conn.execute(
            "SELECT id, customer_id, currency, state, subtotal_minor, tax_minor, total_minor, credited_minor, "  # noqa: S608
            "paid_minor, created_at, issued_at, paid_at, voided_at FROM billing.invoices WHERE id = %s"
            + (" FOR UPDATE" if lock else ""),
            (iid,),
        ).fetchone()
        if row is None:
            raise AppError(404, f"no invoice {iid}")
        keys = (
            "id",
            "customer_id",
            "currency",
            "state",
            "subtotal_minor",
            "tax_minor",
            "total_minor",
            "credited_minor",
            "paid_minor",
            "created_at",
            "issued_at",
            "paid_at",
            "voided_at",
        )
        inv: dict[str, Any] = dict(zip(keys, row, strict=True))
        inv["balance_minor"] = inv["total_minor"] - inv["credited_minor"] - inv["paid_minor"]
        return inv

    def get_invoice(self, staff: Staff, iid: int) -> dict[str, Any]:
        with self.tx() as conn:
            inv = self.invoice_row(conn, iid)
            inv["lines"] = [
                dict(
                    zip(
                        (
                            "position",
                            "description",
                            "quantity",
                            "unit_price_minor",
                            "tax_rate_bp",
                            "net_minor",
                            "tax_minor",
                        ),
                        r,
                        strict=True,
                    )
                )
                for r in conn.execute(
                    "SELECT position, description, quantity, unit_price_minor, tax_rate_bp, net_minor, tax_minor "
                    "FROM billing.invoice_lines WHERE invoice_id = %s ORDER BY position",
                    (iid,),
                )
            ]
            inv["payments"] = payment_rows(conn, "p.invoice_id = %s", (iid,))
            inv["credit_notes"] = [
                {"id": r[0], "amount_minor": r[1], "reason": r[2]}
                for r in conn.execute(
                    "SELECT id, amount_minor, reason FROM billing.credit_notes WHERE invoice_id = %s ORDER BY id",
                    (iid,),
                )
            ]
        return inv

    def list_invoices(self, staff: Staff, limit: int = 100) -> list[dict[str, Any]]:
        with self.tx() as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM billing.invoices ORDER BY id DESC LIMIT %s", (limit,))]
            return [self.invoice_row(conn, i) for i in ids]

    def transition(self, staff: Staff, iid: int, to: str) -> dict[str, Any]:
        allowed = {"issued": ("draft",), "void": ("draft", "issued")}[to]
        now = self.now()
        with self.tx() as conn:
            inv = self.invoice_row(conn, iid, lock=True)
            if inv["state"] not in allowed:
                raise AppError(409, f"invoice {iid} is {inv['state']}; only {' or '.join(allowed)} can become {to}")
            if to == "void" and inv["paid_minor"] > 0:
                raise AppError(409, f"invoice {iid} has payments; issue a credit note instead")
            if to == "void" and pending_minor(conn, iid):
                raise AppError(409, f"a payment for invoice {iid} is in progress: void it once the payment completes")
            if to == "issued":
                conn.execute("UPDATE billing.invoices SET state = 'issued', issued_at = %s WHERE id = %s", (now, iid))
            else:
                conn.execute("UPDATE billing.invoices SET state = 'void', voided_at = %s WHERE id = %s", (now, iid))
            audit.append(conn, now, staff.actor, f"invoice.{'issue' if to == 'issued' else 'void'}", f"invoice:{iid}")
            return self.invoice_row(conn, iid)

    def credit_note(self, staff: Staff, iid: int, amount: int, reason: str) -> int:
        now = self.now()
        with self.tx() as conn:
            inv = self.invoice_row(conn, iid, lock=True)
            if inv["state"] not in ("issued", "paid"):
                raise AppError(409, f"invoice {iid} is {inv['state']}: credit notes apply to issued or paid invoices")
            # payments, pending ones included, and credits together never exceed the total (APP-03)
            pending = pending_minor(conn, iid)
            if amount > inv["balance_minor"] - pending:
                if pending and amount <= inv["balance_minor"]:
                    raise AppError(
                        409,
                        f"a payment of {pending} for invoice {iid} is in progress: credit at most "
                        f"{inv['balance_minor'] - pending} until it completes",
                    )
                raise AppError(409, f"credit exceeds the invoice's unpaid, uncredited balance ({inv['balance_minor']})")
            (nid,) = conn.execute(
                "INSERT INTO billing.credit_notes (invoice_id, amount_minor, reason, created_by, created_at) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (iid, amount, reason, staff.id, now),
            ).fetchone()  # type: ignore[misc]
            conn.execute(
                "UPDATE billing.invoices SET credited_minor = credited_minor + %s WHERE id = %s", (amount, iid)
            )
            inv = self.invoice_row(conn, iid)
            if inv["state"] == "issued" and inv["balance_minor"] <= 0:
                conn.execute("UPDATE billing.invoices SET state = 'paid', paid_at = %s WHERE id = %s", (now, iid))
            audit.append(conn, now, staff.actor, "credit_note.create", f"invoice:{iid}", amount_minor=amount)
        return nid
