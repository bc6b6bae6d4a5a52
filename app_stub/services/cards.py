"""Cards: the one module that owns both card tables. ``billing.cards`` keeps a token with brand, last
four and expiry; ``cardvault.pans`` (the tokenizer's own database role) keeps the number, encrypted
with transit key ``pan``. Only the payment-processor Vault identity can decrypt it."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg_pool import ConnectionPool

from app_stub import audit
from app_stub import vault_setup as vs
from app_stub.crypto import Transit
from app_stub.services.base import AppError, Context, Service, Staff, bad
from app_stub.tokenization import TOKEN_RE, Card, CardError, new_token

if TYPE_CHECKING:
    from app_stub.services.auth import AuthService
    from app_stub.services.customers import CustomerService


class TokenVault:
    """The tokenization service: its own database role (card vault) and Vault identities."""

    def __init__(self, pool: ConnectionPool, transit: Transit, processor: Transit) -> None:
        self.pool = pool
        self.transit = transit  # billing-app identity: encrypt with 'pan' only
        self.processor = processor  # payment-processor identity: decrypt with 'pan'

    def tokenize_many(self, cards: list[Card], now: dt.datetime) -> list[str]:
        """Encrypt the numbers in one batched transit call and store them; return one token per card."""
        cts = self.transit.encrypt(vs.KEY_PAN, [c.pan.encode() for c in cards])
        tokens = [new_token() for _ in cards]
        with self.pool.connection() as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO cardvault.pans (token, pan_ct, created_at) VALUES (%s, %s, %s)",
                [(t, ct, now) for t, ct in zip(tokens, cts, strict=True)],
            )
        return tokens

    def tokenize(self, card: Card, now: dt.datetime) -> str:
        return self.tokenize_many([card], now)[0]

    def destroy(self, tokens: list[str]) -> int:
        """Delete the ciphertexts of ``tokens`` (erasure, or a card whose record was refused); return how many."""
        if not tokens:
            return 0
        with self.pool.connection() as conn:
            return conn.execute("DELETE FROM cardvault.pans WHERE token = ANY(%s)", (tokens,)).rowcount

    def detokenize(self, token: str) -> str:
        """The card number behind ``token`` (payment-processor identity). Callers audit and gate this."""
        if not TOKEN_RE.match(token):
            raise CardError("not a card token")
        with self.pool.connection() as conn:
            row = conn.execute("SELECT pan_ct FROM cardvault.pans WHERE token = %s", (token,)).fetchone()
        if row is None:
            raise KeyError("unknown card token")
        return self.processor.decrypt(vs.KEY_PAN, [row[0]])[0].decode()


def token_details(conn: Any, token: str) -> dict[str, Any] | None:
    """A stored card's displayable details, its customer and when it was erased (None: no such card)."""
    row = conn.execute(
        "SELECT token, customer_id, brand, last4, exp_month, exp_year, erased_at FROM billing.cards WHERE token = %s",
        (token,),
    ).fetchone()
    if row is None:
        return None
    keys = ("token", "customer_id", "brand", "last4", "exp_month", "exp_year", "erased_at")
    return dict(zip(keys, row, strict=True))


class CardService(Service):
    def __init__(self, ctx: Context, auth: AuthService, customers: CustomerService, vault: TokenVault) -> None:
        super().__init__(ctx)
        self.auth, self.customers, self.vault = auth, customers, vault

    def insert_card(
        self, conn: psycopg.Connection[Any], staff: Staff, token: str, card: Card, cid: int, now: dt.datetime
    ) -> None:
        conn.execute(
            "INSERT INTO billing.cards (token, customer_id, brand, last4, exp_month, exp_year, created_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (token, cid, card.brand, card.last4, card.exp_month, card.exp_year, now),
        )
        audit.append(
            conn, now, staff.actor, "card.tokenize", f"card:{token}", customer=cid, brand=card.brand, last4=card.last4
        )

    def forget_unrecorded(self, token: str) -> None:
        """Destroy a new card's ciphertext when its card record was not committed (a refused request).

        Checked rather than assumed: after a failed COMMIT the record may exist, with a payment needing it.
        """
        with self.tx() as conn:
            recorded = conn.execute("SELECT 1 FROM billing.cards WHERE token = %s", (token,)).fetchone()
        if recorded is None:
            self.vault.destroy([token])

    def tokenize(self, staff: Staff, card: Card, customer_id: int) -> dict[str, Any]:
        """Store a card for ``customer_id`` (TOK-03: a card pays only its own customer's invoices)."""
        with self.tx() as conn:
            self.customers.customer_open(conn, customer_id)  # before the Vault call: no ciphertext for no one
        now = self.now()
        token = self.vault.tokenize(card, now)
        try:
            with self.tx() as conn:
                self.customers.customer_open(conn, customer_id, lock=True)
                self.insert_card(conn, staff, token, card, customer_id, now)
                details = token_details(conn, token)
        except BaseException:
            self.forget_unrecorded(token)
            raise
        if details is None:
            raise AppError(500, "card was not stored")
        return details

    def detokenize(self, staff: Staff, token: str, code: str | None) -> dict[str, Any]:
        if not TOKEN_RE.match(token):
            raise bad("not a card token")
        with self.tx() as conn:
            card = token_details(conn, token)
            if card is None:
                raise AppError(404, "unknown card token")
            if card["erased_at"] is not None:
                raise AppError(410, "this card was erased with its customer: its number no longer exists")
        self.auth.step_up(staff, code, "card.detokenize")
        # the step-up is committed (its code is spent) before the number is revealed
        try:
            pan = self.vault.detokenize(token)
        except KeyError:
            raise AppError(410, "this card's number no longer exists (erased)") from None
        with self.tx() as conn:
            audit.append(conn, self.now(), staff.actor, "card.detokenize", f"card:{token}")
        return {"token": token, "pan": pan}

    def of_customer(self, conn: psycopg.Connection[Any], cid: int) -> list[dict[str, Any]]:
        """A customer's stored cards as they may be shown (GDPR export)."""
        keys = ("token", "brand", "last4", "exp_month", "exp_year")
        return [
            dict(zip(keys, r, strict=True))
            for r in conn.execute(
                "SELECT token, brand, last4, exp_month, exp_year FROM billing.cards "
                "WHERE customer_id = %s AND erased_at IS NULL ORDER BY created_at, token",
                (cid,),
            )
        ]

    def erase_customers_cards(self, conn: psycopg.Connection[Any], cid: int, now: dt.datetime) -> int:
        """Destroy a customer's card numbers; each card row stays as a tombstone (brand, last four) for the
        payments that refer to it. Returns how many cards were erased."""
        # their own cards, and cards stored before cards had customers that paid their invoices
        tokens = [
            r[0]
            for r in conn.execute(
                "SELECT token FROM billing.cards WHERE erased_at IS NULL AND (customer_id = %s OR "
                "(customer_id IS NULL AND token IN (SELECT p.card_token FROM billing.payments p "
                "JOIN billing.invoices i ON i.id = p.invoice_id WHERE i.customer_id = %s))) FOR UPDATE",
                (cid, cid),
            )
        ]
        # the numbers go first (the card vault commits on its own): should the rest fail, a retry finishes it
        self.vault.destroy(tokens)
        conn.execute(
            "UPDATE billing.cards SET customer_id = %s, exp_month = NULL, exp_year = NULL, erased_at = %s "
            "WHERE token = ANY(%s)",
            (cid, now, tokens),
        )
        return len(tokens)
