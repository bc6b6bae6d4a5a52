"""The staff's working pages: home and training, customers, invoices and payments, the audit log.

Forms are read as typed text and checked field by field, so a mistake is shown on the form beside
the field (a card number is never sent back)."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app_stub.api.deps import CurrentStaff, GuardedRoute, Svc, guarded
from app_stub.api.schemas import CustomerIn, LineIn
from app_stub.rbac import Perm
from app_stub.services import AppError, Services, Staff
from app_stub.tokenization import CardError, validate_card
from app_stub.ui import format as fmt
from app_stub.ui.forms import FormErrors
from app_stub.ui.render import render as page

router = APIRouter(include_in_schema=False, route_class=GuardedRoute)

_CUSTOMER_HINTS = {
    "name": "enter the customer's name (up to 200 characters)",
    "email": "enter an email address such as name@example.org",
    "address": "enter the postal address (up to 500 characters)",
    "tax_id": "use letters, digits, spaces, '.' and '-' only (up to 40 characters)",
}
_LINE_HINTS = {"description": "describe the item (up to 200 characters)"}


def _whole(text: str, low: int, high: int) -> int:
    """A typed whole number within [low, high], or ValueError saying so."""
    t = text.strip()
    if not t.isdigit() or not low <= int(t) <= high:
        raise ValueError(f"enter a whole number from {low} to {high}")
    return int(t)


@router.get("/", response_class=HTMLResponse)
def home(request: Request, staff: CurrentStaff, svc: Svc) -> Response:
    return page(request, "home.html", training_version=svc.ctx.settings.training_version)


@router.post("/training")
def training_post(request: Request, staff: CurrentStaff, svc: Svc) -> Response:
    svc.auth.ack_training(staff)
    return RedirectResponse("/", status_code=303)


def _customers_page(request: Request, svc: Services, staff: Staff, status_code: int = 200, **ctx: Any) -> Response:
    return page(request, "customers.html", status_code, customers=svc.customers.list_customers(staff), **ctx)


@router.get("/customers", response_class=HTMLResponse)
def customers(request: Request, staff: Annotated[Staff, guarded(Perm.CUSTOMERS_READ)], svc: Svc) -> Response:
    return _customers_page(request, svc, staff)


@router.post("/customers")
def customers_post(
    request: Request,
    staff: Annotated[Staff, guarded(Perm.CUSTOMERS_WRITE)],
    svc: Svc,
    name: Annotated[str, Form()] = "",
    email: Annotated[str, Form()] = "",
    address: Annotated[str, Form()] = "",
    tax_id: Annotated[str, Form()] = "",
) -> Response:
    values = {"name": name, "email": email, "address": address, "tax_id": tax_id}
    errors = FormErrors()
    body = errors.model(CustomerIn, _CUSTOMER_HINTS, **values)
    if body is None:
        return _customers_page(request, svc, staff, 422, errors=errors, values=values)
    svc.customers.create_customer(staff, body.model_dump())
    return RedirectResponse("/customers", status_code=303)


def _invoices_page(request: Request, svc: Services, staff: Staff, status_code: int = 200, **ctx: Any) -> Response:
    invs = svc.invoices.list_invoices(staff)
    names: dict[int, str] = {}
    custs: list[dict[str, Any]] = []
    if Perm.CUSTOMERS_READ in staff.perms:  # names are personal data: only for roles that read customers
        if Perm.INVOICES_WRITE in staff.perms:
            custs = svc.customers.list_customers(staff)
        names = svc.customers.customer_names(staff, [i["customer_id"] for i in invs])
    return page(
        request,
        "invoices.html",
        status_code,
        invoices=invs,
        names=names,
        customers=custs,
        currencies=fmt.COMMON_CURRENCIES,
        **ctx,
    )


@router.get("/invoices", response_class=HTMLResponse)
def invoices(request: Request, staff: Annotated[Staff, guarded(Perm.INVOICES_READ)], svc: Svc) -> Response:
    return _invoices_page(request, svc, staff)


@router.post("/invoices")
def invoices_post(
    request: Request,
    staff: Annotated[Staff, guarded(Perm.INVOICES_WRITE)],
    svc: Svc,
    customer_id: Annotated[str, Form()] = "",
    currency: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    quantity: Annotated[str, Form()] = "",
    unit_price: Annotated[str, Form()] = "",
    tax_rate: Annotated[str, Form()] = "",
) -> Response:
    values = {
        "customer_id": customer_id,
        "currency": currency,
        "description": description,
        "quantity": quantity,
        "unit_price": unit_price,
        "tax_rate": tax_rate,
    }
    errors = FormErrors()
    cur = currency.strip().upper()
    cid = errors.parse("customer_id", _whole, customer_id, 1, 2**62)
    places = errors.parse("currency", fmt.digits, cur)
    qty = errors.parse("quantity", _whole, quantity, 1, 1_000_000)
    price = errors.parse("unit_price", fmt.to_minor, unit_price, cur) if places is not None else None
    bp = errors.parse("tax_rate", fmt.percent_to_bp, tax_rate)
    line = errors.model(
        LineIn, _LINE_HINTS, description=description, quantity=qty or 1, unit_price_minor=price or 0,
        tax_rate_bp=bp or 0,
    )  # fmt: skip
    if errors or cid is None or line is None:
        return _invoices_page(request, svc, staff, 422, errors=errors, values=values)
    iid = svc.invoices.create_invoice(staff, cid, cur, [line.model_dump()])
    return RedirectResponse(f"/invoices/{iid}", status_code=303)


def _invoice_page(
    request: Request, svc: Services, staff: Staff, iid: int, status_code: int = 200, **ctx: Any
) -> Response:
    inv = svc.invoices.get_invoice(staff, iid)
    name = None
    if Perm.CUSTOMERS_READ in staff.perms:
        name = svc.customers.customer_names(staff, [inv["customer_id"]]).get(inv["customer_id"])
    idem = secrets.token_urlsafe(18)
    return page(request, "invoice.html", status_code, inv=inv, customer_name=name, idem=idem, **ctx)


@router.get("/invoices/{iid}", response_class=HTMLResponse)
def invoice(request: Request, iid: int, staff: Annotated[Staff, guarded(Perm.INVOICES_READ)], svc: Svc) -> Response:
    return _invoice_page(request, svc, staff, iid)


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
    idempotency_key: Annotated[str, Form(max_length=100)],
    number: Annotated[str, Form(max_length=30)] = "",
    exp_month: Annotated[str, Form(max_length=4)] = "",
    exp_year: Annotated[str, Form(max_length=6)] = "",
) -> Response:
    errors = FormErrors()
    month = errors.parse("exp_month", _whole, exp_month, 1, 12)
    year = errors.parse("exp_year", _whole, exp_year, 2000, 2100)
    card = None
    if month is not None and year is not None:
        try:
            card = validate_card(number, month, year, svc.auth.now().date())
        except CardError as exc:
            errors["number"] = f"card refused: {exc}"
    # the card number is never sent back; the expiry is, so only the number is retyped
    values = {"exp_month": exp_month, "exp_year": exp_year}
    if card is None:
        return _invoice_page(request, svc, staff, iid, 422, errors=errors, values=values)
    try:
        svc.payments.pay(staff, iid, idempotency_key, card, None)
    except AppError as exc:  # shown on the invoice itself, next to what is paid and pending
        return _invoice_page(request, svc, staff, iid, exc.status, error=exc.message, values=values)
    return RedirectResponse(f"/invoices/{iid}", status_code=303)


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, staff: Annotated[Staff, guarded(Perm.AUDIT_READ)], svc: Svc) -> Response:
    return page(request, "audit.html", events=svc.audit.audit_events(staff))
