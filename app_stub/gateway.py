"""The payment-gateway adapter and a local fake gateway (the lab's and the tests' gateway).

A gateway charges idempotently: the same idempotency key always returns the first result
and never charges again, as real gateways do. The app relies on this to charge at most
once whatever is retried or crashes (APP-03).
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ChargeResult:
    charge_id: str
    approved: bool
    reason: str = ""


class PaymentGateway(Protocol):
    def charge(self, idempotency_key: str, pan: str, amount_minor: int, currency: str) -> ChargeResult: ...


DECLINED_TEST_CARDS = frozenset({"4000000000000002"})


class FakeGateway:
    """In-process gateway: approves every valid card except the declined test cards; keeps last four only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ledger: dict[str, tuple[ChargeResult, str, int, str]] = {}  # key -> (result, last4, amount, currency)

    def charge(self, idempotency_key: str, pan: str, amount_minor: int, currency: str) -> ChargeResult:
        with self._lock:
            if idempotency_key in self.ledger:
                return self.ledger[idempotency_key][0]
            approved = pan not in DECLINED_TEST_CARDS
            result = ChargeResult("ch_" + secrets.token_hex(12), approved, "" if approved else "card declined")
            self.ledger[idempotency_key] = (result, pan[-4:], amount_minor, currency)
            return result

    @property
    def charges(self) -> int:
        """Approved charges made (each idempotency key counts once)."""
        return sum(1 for r, *_ in self.ledger.values() if r.approved)
