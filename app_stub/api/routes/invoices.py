"""Invoices: draft, issue, void, credit notes."""

from typing import Annotated, Any

from fastapi import APIRouter

from app_stub.api.deps import GuardedRoute, Svc, guarded
from app_stub.api.schemas import CreditNoteIn, InvoiceIn
from app_stub.rbac import Perm
from app_stub.services import Staff

router = APIRouter(prefix="/api/invoices", tags=["invoices"], route_class=GuardedRoute)


@router.get("")
def invoices(staff: Annotated[Staff, guarded(Perm.INVOICES_READ)], svc: Svc) -> list[dict[str, Any]]:
    return svc.invoices.list_invoices(staff)


@router.post("", status_code=201)
def invoice_create(body: InvoiceIn, staff: Annotated[Staff, guarded(Perm.INVOICES_WRITE)], svc: Svc) -> dict[str, Any]:
    iid = svc.invoices.create_invoice(staff, body.customer_id, body.currency, [ln.model_dump() for ln in body.lines])
    return svc.invoices.get_invoice(staff, iid)


@router.get("/{iid}")
def invoice(iid: int, staff: Annotated[Staff, guarded(Perm.INVOICES_READ)], svc: Svc) -> dict[str, Any]:
    return svc.invoices.get_invoice(staff, iid)


@router.post("/{iid}/issue")
def issue(iid: int, staff: Annotated[Staff, guarded(Perm.INVOICES_ISSUE)], svc: Svc) -> dict[str, Any]:
    return svc.invoices.transition(staff, iid, "issued")


@router.post("/{iid}/void")
def void(iid: int, staff: Annotated[Staff, guarded(Perm.INVOICES_VOID)], svc: Svc) -> dict[str, Any]:
    return svc.invoices.transition(staff, iid, "void")


@router.post("/{iid}/credit-notes", status_code=201)
def credit_note(
    iid: int, body: CreditNoteIn, staff: Annotated[Staff, guarded(Perm.CREDIT_NOTES_WRITE)], svc: Svc
) -> dict[str, Any]:
    return {"id": svc.invoices.credit_note(staff, iid, body.amount_minor, body.reason)}
