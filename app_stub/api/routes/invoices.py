"""Invoices: draft, issue, void, credit notes."""

from typing import Annotated, Any

from fastapi import APIRouter

from app_stub.api.deps import CoreDep, GuardedRoute, guarded
from app_stub.api.schemas import CreditNoteIn, InvoiceIn
from app_stub.rbac import Perm
from app_stub.service import Staff

router = APIRouter(prefix="/api/invoices", tags=["invoices"], route_class=GuardedRoute)


@router.get("")
def invoices(staff: Annotated[Staff, guarded(Perm.INVOICES_READ)], core: CoreDep) -> list[dict[str, Any]]:
    return core.list_invoices(staff)


@router.post("", status_code=201)
def invoice_create(
    body: InvoiceIn, staff: Annotated[Staff, guarded(Perm.INVOICES_WRITE)], core: CoreDep
) -> dict[str, Any]:
    iid = core.create_invoice(staff, body.customer_id, body.currency, [ln.model_dump() for ln in body.lines])
    return core.get_invoice(staff, iid)


@router.get("/{iid}")
def invoice(iid: int, staff: Annotated[Staff, guarded(Perm.INVOICES_READ)], core: CoreDep) -> dict[str, Any]:
    return core.get_invoice(staff, iid)


@router.post("/{iid}/issue")
def issue(iid: int, staff: Annotated[Staff, guarded(Perm.INVOICES_ISSUE)], core: CoreDep) -> dict[str, Any]:
    return core.transition(staff, iid, "issued")


@router.post("/{iid}/void")
def void(iid: int, staff: Annotated[Staff, guarded(Perm.INVOICES_VOID)], core: CoreDep) -> dict[str, Any]:
    return core.transition(staff, iid, "void")


@router.post("/{iid}/credit-notes", status_code=201)
def credit_note(
    iid: int, body: CreditNoteIn, staff: Annotated[Staff, guarded(Perm.CREDIT_NOTES_WRITE)], core: CoreDep
) -> dict[str, Any]:
    return {"id": core.credit_note(staff, iid, body.amount_minor, body.reason)}
