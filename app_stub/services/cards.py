"""Cards: the one module that owns both card tables. ``billing.cards`` keeps a token with brand, last
four and expiry; ``cardvault.pans`` (the tokenizer's own database role) keeps the number, encrypted
with transit key ``pan``. Only the payment-processor Vault identity can decrypt it."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from psycopg_pool import ConnectionPool

from app_stub import audit
from app_stub import vault_setup as vs
from app_stub.crypto import Transit
from app_stub.services.base import AppError, Context, Service, Staff, bad
from app_stub.tokenization import TOKEN_RE, Card, CardError, new_token

if TYPE_CHECKING:
    from app_stub.services.auth import AuthService


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
    row = conn.execute(
        "SELECT token, brand, last4, exp_month, exp_year FROM billing.cards WHERE token = %s", (token,)
    ).fetchone()
    if row is None:
        return None
    return {"token": row[0], "brand": row[1], "last4": row[2], "exp_month": row[3], "exp_year": row[4]}


class CardService(Service):
    def __init__(self, ctx: Context, auth: AuthService, vault: TokenVault) -> None:
        super().__init__(ctx)
        self.auth, self.vault = auth, vault

    def tokenize(self, staff: Staff, card: Card) -> dict[str, Any]:
        now = self.now()
        token = self.vault.tokenize(card, now)
        with self.tx() as conn:
            conn.execute(
                "INSERT INTO billing.cards (token, brand, last4, exp_month, exp_year, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (token, card.brand, card.last4, card.exp_month, card.exp_year, now),
            )
            audit.append(conn, now, staff.actor, "card.tokenize", f"card:{token}", brand=card.brand, last4=card.last4)
            details = token_details(conn, token)
        if details is None:
            raise AppError(500, "card was not stored")
        return details

    def detokenize(self, staff: Staff, token: str, code: str | None) -> dict[str, Any]:
        if not TOKEN_RE.match(token):
            raise bad("not a card token")
        with self.tx() as conn:
            if token_details(conn, token) is None:
                raise AppError(404, "unknown card token")
        self.auth.step_up(staff, code, "card.detokenize")
        # the step-up is committed (its code is spent) before the number is revealed
        pan = self.vault.detokenize(token)
        with self.tx() as conn:
            audit.append(conn, self.now(), staff.actor, "card.detokenize", f"card:{token}")
        return {"token": token, "pan": pan}
