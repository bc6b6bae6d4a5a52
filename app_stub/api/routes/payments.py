"""Payments: charge an invoice at most once per idempotency key (APP-03)."""

from typing import Annotated, Any

from fastapi import APIRouter, Header

from app_stub.api.deps import CoreDep, GuardedRoute, guarded
from app_stub.api.schemas import PaymentIn
from app_stub.rbac import Perm
from app_stub.service import Staff
from app_stub.tokenization import validate_card

router = APIRouter(prefix="/api", tags=["payments"], route_class=GuardedRoute)


@router.post("/invoices/{iid}/payments")
def pay(
    iid: int,
    body: PaymentIn,
    staff: Annotated[Staff, guarded(Perm.PAYMENTS_CHARGE)],
    core: CoreDep,
    idempotency_key: Annotated[str | None, Header(max_length=100)] = None,
) -> dict[str, Any]:
    c = body.card
    card = validate_card(c.number, c.exp_month, c.exp_year, core.now().date()) if c else None
    return core.pay(staff, iid, idempotency_key or "", card, body.token)


@router.get("/payments")
def payments(staff: Annotated[Staff, guarded(Perm.PAYMENTS_READ)], core: CoreDep) -> list[dict[str, Any]]:
    return core.list_payments(staff)
