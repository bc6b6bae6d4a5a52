"""The payment-gateway adapter and a local fake gateway (the lab's and the tests' gateway).

A gateway charges idempotently: the same idempotency key always returns the first result
and never charges again, as real gateways do. The app relies on this to charge at most
once whatever is retried or crashes (APP-03).
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from pydantic import BaseModel, Field


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


class HttpGateway:
    """Adapter for a gateway reached over HTTPS (the lab's fake gateway speaks this small API).

    ``POST {base}/v1/charges`` with ``{"idempotency_key", "pan", "amount_minor", "currency"}``
    answers ``{"charge_id", "approved", "reason"}``; the same key always gets the same answer.
    """

    def __init__(self, client: httpx.Client, base_url: str = "") -> None:
        """``client``: an httpx client with the gateway's CA, client certificate and timeout configured."""
        self.client, self.base = client, base_url.rstrip("/")

    def charge(self, idempotency_key: str, pan: str, amount_minor: int, currency: str) -> ChargeResult:
        r = self.client.post(
            f"{self.base}/v1/charges",
            json={"idempotency_key": idempotency_key, "pan": pan, "amount_minor": amount_minor, "currency": currency},
            headers={"Idempotency-Key": idempotency_key},
        )
        r.raise_for_status()
        data = r.json()
        return ChargeResult(str(data["charge_id"]), bool(data["approved"]), str(data.get("reason", "")))


class ChargeIn(BaseModel):
    """A charge request to the fake gateway."""

    idempotency_key: str = Field(min_length=8, max_length=100)
    pan: str = Field(pattern=r"^[0-9]{13,19}$")
    amount_minor: int = Field(ge=1, le=10**15)
    currency: str = Field(pattern=r"^[A-Z]{3}$")

    def __repr__(self) -> str:
        return "ChargeIn(<redacted>)"


def fake_gateway_app(gateway: FakeGateway | None = None) -> Any:
    """The fake gateway as a small ASGI app (run it with uvicorn in the lab). Logs nothing about cards."""
    from fastapi import FastAPI

    gw = gateway or FakeGateway()
    app = FastAPI(title="billkit fake payment gateway", docs_url=None, redoc_url=None)

    @app.post("/v1/charges")
    def charge(body: ChargeIn) -> dict[str, Any]:
        res = gw.charge(body.idempotency_key, body.pan, body.amount_minor, body.currency)
        return {"charge_id": res.charge_id, "approved": res.approved, "reason": res.reason}

    app.state.gateway = gw
    return app
