"""Data-subject requests (GDPR): export everything about a customer; erase by crypto-shredding."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app_stub import audit
from app_stub.services.base import AppError, Context, Service, Staff
from app_stub.services.payments import payment_rows

if TYPE_CHECKING:
    from app_stub.services.cards import CardService
    from app_stub.services.customers import CustomerService
    from app_stub.services.invoices import InvoiceService


class GdprService(Service):
    def __init__(self, ctx: Context, customers: CustomerService, invoices: InvoiceService, cards: CardService) -> None:
        super().__init__(ctx)
        self.customers, self.invoices, self.cards = customers, invoices, cards

    def export_customer(self, staff: Staff, cid: int) -> dict[str, Any]:
        with self.tx() as conn:
            customer = self.customers.read_customer(conn, cid)
            invoices = []
            for (iid,) in conn.execute("SELECT id FROM billing.invoices WHERE customer_id = %s ORDER BY id", (cid,)):
                invoices.append(iid)
            inv_data = [self.invoices.invoice_row(conn, i) for i in invoices]
            payments = payment_rows(conn, "p.invoice_id = ANY(%s)", (invoices,)) if invoices else []
            cards = self.cards.of_customer(conn, cid)
            audit.append(conn, self.now(), staff.actor, "gdpr.export", f"customer:{cid}")
        return {
            "format": "billkit-export-1",
            "customer": customer,
            "invoices": inv_data,
            "payments": payments,
            "cards": cards,
        }

    def erase_customer(self, staff: Staff, cid: int) -> None:
        """Crypto-shredding: destroy the customer's data key; every copy of their data becomes unreadable.

        Backups still hold the wrapped key, under a transit ``pii`` version; the next forced
        rewrap (rotate, rewrap, raise min_decryption_version) retires that version, after which
        no backup can unwrap it either.

        The customer's cards go too: their ciphertexts are deleted from the card vault, and each card
        row stays as a tombstone (brand and last four, no expiry) for the payments that refer to it.
        """
        now = self.now()
        with self.tx() as conn:
            row = conn.execute("SELECT erased_at FROM billing.customers WHERE id = %s FOR UPDATE", (cid,)).fetchone()
            if row is None:
                raise AppError(404, f"no customer {cid}")
            if row[0] is not None:
                raise AppError(410, f"customer {cid} was already erased")
            pending = [
                r[0]
                for r in conn.execute(
                    "SELECT p.id FROM billing.payments p JOIN billing.invoices i ON i.id = p.invoice_id "
                    "WHERE i.customer_id = %s AND p.status = 'pending' ORDER BY p.id",
                    (cid,),
                )
            ]
            if pending:
                raise AppError(
                    409,
                    f"payment {', '.join(map(str, pending))} of customer {cid} is in progress and needs its card: "
                    "erase once it completes (pending payments are finished automatically within minutes)",
                )
            erased_cards = self.cards.erase_customers_cards(conn, cid, now)
            conn.execute("DELETE FROM billing.customer_keys WHERE customer_id = %s", (cid,))
            conn.execute(
                "UPDATE billing.customers SET name_ct = NULL, email_ct = NULL, address_ct = NULL, tax_id_ct = NULL, "
                "email_bidx = NULL, tax_id_bidx = NULL, erased_at = %s WHERE id = %s",
                (now, cid),
            )
            audit.append(conn, now, staff.actor, "gdpr.erase", f"customer:{cid}", cards=erased_cards)
        self.cipher.cache.drop(cid)
