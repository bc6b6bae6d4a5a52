"""Card tokenization on Vault transit (seed practice 4).

A card number arrives once, is validated (Luhn, length, brand, expiry), encrypted with
transit key ``pan`` and stored in schema ``cardvault``, which only the tokenizer database
role can read. Billing data keeps a random token, never card-like: ``tok_`` followed by 26
lowercase letters (131 random bits) and not a single digit, so it can never pass for a card number;
plus brand, last four and expiry. Detokenization uses a second Vault identity, the
``payment-processor`` AppRole, the only one allowed to decrypt with ``pan``.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import string
from dataclasses import dataclass
from typing import Any

from psycopg_pool import ConnectionPool

from app_stub import vault_setup as vs
from app_stub.crypto import Transit

TOKEN_RE = re.compile(r"^tok_[a-z]{28}$")


class CardError(ValueError):
    """The card details are invalid; the message says what is wrong (and never contains the number)."""


@dataclass(frozen=True)
class Card:
    pan: str
    exp_month: int
    exp_year: int

    def __repr__(self) -> str:  # never print the number
        return f"Card(brand={self.brand}, last4={self.last4}, exp={self.exp_month:02d}/{self.exp_year})"

    __str__ = __repr__

    @property
    def last4(self) -> str:
        return self.pan[-4:]

    @property
    def brand(self) -> str:
        return brand_of(self.pan)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def brand_of(pan: str) -> str:
    if pan.startswith("4"):
        return "visa"
    if pan[:2] in {"34", "37"}:
        return "amex"
    if 51 <= int(pan[:2]) <= 55 or 2221 <= int(pan[:4]) <= 2720:
        return "mastercard"
    if pan.startswith("6011") or pan.startswith("65"):
        return "discover"
    return "unknown"


def validate_card(number: str, exp_month: int, exp_year: int, today: dt.date) -> Card:
    """A validated card, or CardError naming the problem (never echoing the number)."""
    pan = re.sub(r"[ -]", "", number or "")
    if not pan.isdigit() or not pan.isascii():
        raise CardError("card number must contain only digits (spaces and dashes allowed)")
    if not 13 <= len(pan) <= 19:
        raise CardError("card number must have 13 to 19 digits")
    if not luhn_ok(pan):
        raise CardError("card number fails the Luhn check: check for a typo")
    if brand_of(pan) == "unknown":
        raise CardError("card brand not accepted (visa, mastercard, amex, discover)")
    if not 1 <= exp_month <= 12:
        raise CardError("expiry month must be 1 to 12")
    if exp_year < 100:
        exp_year += 2000
    if (exp_year, exp_month) < (today.year, today.month):
        raise CardError("card has expired")
    if exp_year > today.year + 20:
        raise CardError("expiry year is too far in the future")
    return Card(pan, exp_month, exp_year)


def new_token() -> str:
    """``tok_`` and 28 random lowercase letters: 131 bits, and no digit a card-number scanner could match."""
    return "tok_" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(28))


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
