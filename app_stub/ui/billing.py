"""The staff's working pages: home and training, customers, invoices and payments, the audit log."""

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app_stub.api.deps import CurrentStaff, GuardedRoute, Svc, guarded
from app_stub.api.schemas import CustomerIn, InvoiceIn, LineIn
from app_stub.rbac import Perm
from app_stub.services import AppError, Staff
from app_stub.tokenization import CardError, validate_card
from app_stub.ui.templating import page

router = APIRouter(include_in_schema=False, route_class=GuardedRoute)


@router.get("/", response_class=HTMLResponse)
def home(request: Request, staff: CurrentStaff, svc: Svc) -> Response:
    return page(request, "home.html", staff=staff, training_version=svc.ctx.settings.training_version)


@router.post("/training")
def training_post(request: Request, staff: CurrentStaff, svc: Svc) -> Response:
    svc.auth.ack_training(staff)
    return RedirectResponse("/", status_code=303)


@router.get("/customers", response_class=HTMLResponse)
def customers(request: Request, staff: Annotated[Staff, guarded(Perm.CUSTOMERS_READ)], svc: Svc) -> Response:
    return page(request, "customers.html", staff=staff, customers=svc.customers.list_customers(staff))


@router.post("/customers")
def customers_post(
    request: Request,
    staff: Annotated[Staff, guarded(Perm.CUSTOMERS_WRITE)],
    svc: Svc,
    name: Annotated[str, Form()],
    email: Annotated[str, Form()],
    address: Annotated[str, Form()],
    tax_id: Annotated[str, Form()] = "",
) -> Response:
    body = CustomerIn(name=name, email=email, address=address, tax_id=tax_id)
    svc.customers.create_customer(staff, body.model_dump())
    return RedirectResponse("/customers", status_code=303)


@router.get("/invoices", response_class=HTMLResponse)
def invoices(request: Request, staff: Annotated[Staff, guarded(Perm.INVOICES_READ)], svc: Svc) -> Response:
    custs = svc.customers.list_customers(staff) if Perm.CUSTOMERS_READ in staff.perms else []
    return page(request, "invoices.html", staff=staff, invoices=svc.invoices.list_invoices(staff), customers=custs)


@router.post("/invoices")
def invoices_post(
    request: Request,
    staff: Annotated[Staff, guarded(Perm.INVOICES_WRITE)],
    svc: Svc,
    customer_id: Annotated[int, Form()],
    currency: Annotated[str, Form()],
    description: Annotated[str, Form()],
    quantity: Annotated[int, Form()],
    unit_price_minor: Annotated[int, Form()],
    tax_rate_bp: Annotated[int, Form()],
) -> Response:
    line = LineIn(
        description=description, quantity=quantity, unit_price_minor=unit_price_minor, tax_rate_bp=tax_rate_bp
    )
    body = InvoiceIn(customer_id=customer_id, currency=currency, lines=[line])
    iid = svc.invoices.create_invoice(staff, body.customer_id, body.currency, [ln.model_dump() for ln in body.lines])
    return RedirectResponse(f"/invoices/{iid}", status_code=303)


@router.get("/invoices/{iid}", response_class=HTMLResponse)
def invoice(request: Request, iid: int, staff: Annotated[Staff, guarded(Perm.INVOICES_READ)], svc: Svc) -> Response:
    return page(
        request, "invoice.html", staff=staff, inv=svc.invoices.get_invoice(staff, iid), idem=secrets.token_urlsafe(18)
    )


@router.post("/invoices/{iid}/issue")
def invoice_issue(
    request: Request, iid: int, staff: Annotated[Staff, guarded(Perm.INVOICES_ISSUE)], svc: Svc
) -> Response:
    svc.invoices.transition(staff, iid, "issued")
    return RedirectResponse(f"/invoices/{iid}", status_code=303)


@router.post("/invoices/{iid}/pay")
def invoice_pay(
    request: Request,
    iid: int,
    staff: Annotated[Staff, guarded(Perm.PAYMENTS_CHARGE)],
    svc: Svc,
    number: Annotated[str, Form(max_length=30)],
    exp_month: Annotated[int, Form(ge=1, le=12)],
    exp_year: Annotated[int, Form(ge=2000, le=2100)],
    idempotency_key: Annotated[str, Form(max_length=100)],
) -> Response:
    try:
        card = validate_card(number, exp_month, exp_year, svc.auth.now().date())
        svc.payments.pay(staff, iid, idempotency_key, card, None)
    except (AppError, CardError) as exc:  # shown on the invoice itself, next to what is paid and pending
        status, message = (exc.status, exc.message) if isinstance(exc, AppError) else (422, f"card refused: {exc}")
        inv = svc.invoices.get_invoice(staff, iid)
        return page(
            request, "invoice.html", status, staff=staff, inv=inv, idem=secrets.token_urlsafe(18), error=message
        )
    return RedirectResponse(f"/invoices/{iid}", status_code=303)


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, staff: Annotated[Staff, guarded(Perm.AUDIT_READ)], svc: Svc) -> Response:
    return page(request, "audit.html", staff=staff, events=svc.audit.audit_events(staff))
