"""Payments: charge an invoice at most once per idempotency key (APP-03)."""

from typing import Annotated, Any

from fastapi import APIRouter, Header

from app_stub.api.deps import GuardedRoute, Svc, guarded
from app_stub.api.schemas import PaymentIn
from app_stub.rbac import Perm
from app_stub.services import Staff
from app_stub.tokenization import validate_card

router = APIRouter(prefix="/api", tags=["payments"], route_class=GuardedRoute)


@router.post("/invoices/{iid}/payments")
def pay(
    iid: int,
    body: PaymentIn,
    staff: Annotated[Staff, guarded(Perm.PAYMENTS_CHARGE)],
    svc: Svc,
    idempotency_key: Annotated[str | None, Header(max_length=100)] = None,
) -> dict[str, Any]:
    c = body.card
    card = validate_card(c.number, c.exp_month, c.exp_year, svc.auth.now().date()) if c else None
    return svc.payments.pay(staff, iid, idempotency_key or "", card, body.token)


@router.get("/payments")
def payments(staff: Annotated[Staff, guarded(Perm.PAYMENTS_READ)], svc: Svc) -> list[dict[str, Any]]:
    return svc.payments.list_payments(staff)
