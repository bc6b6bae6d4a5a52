"""HTTP layer: the JSON API (OpenAPI schema at /openapi.json) and the staff web UI (Jinja2).

``create_app(settings)`` is the app factory; tests pass their own settings (and gateway).
Every API route declares the permission it needs in ``openapi_extra["x-permission"]``.
"""

import asyncio
import hmac
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import hvac
import hvac.exceptions
import psycopg
from fastapi import Depends, FastAPI, Form, Header, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException

from app_stub import audit, db
from app_stub.config import Settings, SettingsError
from app_stub.crypto import Transit, VaultError
from app_stub.gateway import FakeGateway, PaymentGateway
from app_stub.rbac import Perm
from app_stub.service import AppError, Core, PaymentRecovery, Session, Staff
from app_stub.tokenization import Card, CardError, validate_card
from app_stub.ui import format as fmt
from app_stub.ui import qr
from app_stub.ui.forms import FormErrors
from app_stub.ui.render import error_page, render

COOKIE = "__Host-billkit_session"
LOGIN_CSRF = "__Host-billkit_login_csrf"

Text = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
LongText = Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]+$")]
Email = Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s\x00-\x1f]+@[^@\s\x00-\x1f]+\.[^@\s]+$")]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class CustomerIn(BaseModel):
    name: Text
    email: Email
    address: LongText
    tax_id: Annotated[str, StringConstraints(max_length=40, pattern=r"^[A-Za-z0-9 .\-]*$")] = ""


class LineIn(BaseModel):
    description: Text
    quantity: int = Field(ge=1, le=1_000_000)
    unit_price_minor: int = Field(ge=0, le=10**12)
    tax_rate_bp: int = Field(ge=0, le=10_000, description="tax rate in basis points (2000 = 20 %)")


class InvoiceIn(BaseModel):
    customer_id: int = Field(ge=1, le=2**62)
    currency: Currency
    lines: list[LineIn] = Field(min_length=1, max_length=100)


class CreditNoteIn(BaseModel):
    amount_minor: int = Field(ge=1, le=10**15)
    reason: Text


class CardIn(BaseModel):
    number: Annotated[str, StringConstraints(min_length=1, max_length=30)]
    exp_month: int = Field(ge=1, le=12)
    exp_year: int = Field(ge=2000, le=2100)

    def __repr__(self) -> str:
        return "CardIn(<redacted>)"


class StoredCardIn(CardIn):
    customer_id: int = Field(ge=1, le=2**62, description="the customer the card belongs to (TOK-03)")


class PaymentIn(BaseModel):
    card: CardIn | None = None
    token: Annotated[str, StringConstraints(max_length=40)] | None = None


class UserIn(BaseModel):
    username: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_.-]{3,64}$")]
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class RoleIn(BaseModel):
    role: Annotated[str, StringConstraints(max_length=40)]


class LoginIn(BaseModel):
    username: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class CodeIn(BaseModel):
    code: Annotated[str, StringConstraints(min_length=1, max_length=40)]


class PasswordIn(BaseModel):
    old_password: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    new_password: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class NeedLogin(Exception):
    def __init__(self, status: int, message: str, where: str = "/login") -> None:
        self.status, self.message, self.where = status, message, where


def _approle_factory(s: Settings, role_id: str, secret_id: str) -> Callable[[], Any]:
    def make() -> Any:
        client = hvac.Client(url=s.vault_url, verify=s.vault_ca_file or True, timeout=10)
        client.auth.approle.login(role_id=role_id, secret_id=secret_id)
        return client

    return make


def _unwrap(s: Settings, wrapping_token: str) -> str:
    """The secret ID inside a response-wrapping token (which Vault then destroys: single use)."""
    client = hvac.Client(url=s.vault_url, verify=s.vault_ca_file or True, timeout=10)
    try:
        resp = client.adapter.post("/v1/sys/wrapping/unwrap", headers={"X-Vault-Token": wrapping_token})
    except hvac.exceptions.VaultError as exc:
        raise SettingsError(
            f"cannot unwrap the AppRole secret ID ({exc}); it was used or expired: deliver a new wrapped secret ID "
            "(in the lab: `billkit up`)"
        ) from None
    return str(resp["data"]["secret_id"])


def build_core(s: Settings, gateway: PaymentGateway | None = None) -> Core:
    s.validate()
    secret_id, processor_secret_id = s.vault_secret_id, s.vault_processor_secret_id
    if s.vault_secret_ids_wrapped:
        secret_id, processor_secret_id = _unwrap(s, secret_id), _unwrap(s, processor_secret_id)
    app_login = _approle_factory(s, s.vault_role_id, secret_id)
    creds = tcreds = None
    if s.database_vault_role:
        creds = db.VaultCredentials(app_login, s.database_vault_role, s.database_vault_mount)
    if s.tokenizer_vault_role:
        tcreds = db.VaultCredentials(app_login, s.tokenizer_vault_role, s.database_vault_mount)
    pool = db.make_pool(s.database_url, "billing", s.db_pool_size, creds)
    tpool = db.make_pool(s.tokenizer_database_url, "tokenizer", 4, tcreds)
    transit = Transit(app_login, s.transit_mount)
    processor = Transit(_approle_factory(s, s.vault_processor_role_id, processor_secret_id), s.transit_mount)
    return Core(s, pool, tpool, transit, processor, gateway or FakeGateway())


def create_app(settings: Settings | None = None, gateway: PaymentGateway | None = None) -> FastAPI:
    s = settings or Settings.from_env()
    audit.configure_logging()
    core = build_core(s, gateway)
    recovery = PaymentRecovery(core)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        recovery.start()  # finishes what a crash left pending, then on a timer (APP-03)
        yield
        await asyncio.to_thread(recovery.stop)
        core.pool.close()
        core.tokens.pool.close()

    # OpenAPI is published at /openapi.json; the interactive docs are off (they load scripts from a CDN)
    app = FastAPI(title="billkit billing app", version="1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.core = core
    app.state.recovery = recovery
    _install_handlers(app)
    _api_routes(app, core)
    _ui_routes(app, core)
    from app_stub.ui import staff  # imports this module's dependencies: import it once they exist

    app.include_router(staff.router)
    return app


# --- cross-cutting -------------------------------------------------------------------------


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api")


def _install_handlers(app: FastAPI) -> None:
    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "frame-ancestors 'none'; form-action 'self'"
        )
        response.headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
        return response

    def page_or_json(request: Request, status: int, message: str, problems: list[str] | None = None) -> Response:
        if _wants_html(request):
            return error_page(request, status, message, problems)
        return JSONResponse({"detail": message}, status_code=status)

    @app.exception_handler(AppError)
    async def app_error(request: Request, exc: AppError) -> Response:
        return page_or_json(request, exc.status, exc.message)

    @app.exception_handler(CardError)
    async def card_error(request: Request, exc: CardError) -> Response:
        return page_or_json(request, 422, f"card refused: {exc}")

    @app.exception_handler(VaultError)
    async def vault_error(request: Request, exc: VaultError) -> Response:
        return page_or_json(request, 503, "the key service is unavailable; try again shortly")

    @app.exception_handler(psycopg.errors.DataError)
    async def data_error(request: Request, exc: psycopg.errors.DataError) -> Response:
        return page_or_json(request, 400, "invalid value for the database: check the input")

    @app.exception_handler(psycopg.errors.IntegrityError)
    async def integrity_error(request: Request, exc: psycopg.errors.IntegrityError) -> Response:
        return page_or_json(request, 409, "the change conflicts with existing data")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if not _wants_html(request):
            return await http_exception_handler(request, exc)
        message = "there is no page at this address" if exc.status_code == 404 else str(exc.detail)
        _signed_in(request)  # no route ran its dependencies: find the staff member for the nav
        return error_page(request, exc.status_code, message)

    @app.exception_handler(NeedLogin)
    async def need_login(request: Request, exc: NeedLogin) -> Response:
        if _wants_html(request):
            return RedirectResponse(exc.where, status_code=303)
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        html = _wants_html(request)
        # a page names the field only; the API keeps where it was (body, path, query)
        skip = ("body", "path", "query") if html else ("body",)
        problems = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e.get("loc", ()) if p not in skip)
            problems.append(f"{loc}: {e.get('msg')}")  # the message, never the input value
        if html:
            return page_or_json(request, 422, "the request had missing or invalid values", problems)
        return page_or_json(request, 422, "invalid input: " + "; ".join(problems))


def _core(request: Request) -> Core:
    return request.app.state.core


def _session(request: Request) -> Session | None:
    return _core(request).session(request.cookies.get(COOKIE))


async def _check_csrf(request: Request, sess: Session) -> None:
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    sent = request.headers.get("x-csrf-token")
    if sent is None and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        form = await request.form()
        value = form.get("csrf_token")
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent, sess.csrf):
        raise AppError(403, "CSRF token missing or wrong: reload the page and try again")


def _signed_in(request: Request) -> None:
    """Put a fully signed-in staff member (if any) on the request, for pages no route dependency rendered."""
    sess = _session(request)
    if sess is None or sess.stage != "full":
        return
    core = _core(request)
    try:
        with core.tx() as conn:
            request.state.staff = core.staff(conn, sess.user_id)
    except AppError:
        return
    request.state.session = sess


async def pending_session(request: Request) -> Session:
    """A session at any stage (for the MFA, enrolment and password steps), CSRF-checked."""
    sess = _session(request)
    if sess is None:
        raise NeedLogin(401, "log in first")
    await _check_csrf(request, sess)
    request.state.session = sess
    return sess


async def current_staff(request: Request) -> Staff:
    sess = _session(request)
    if sess is None:
        raise NeedLogin(401, "log in first (session missing or expired)")
    if sess.stage == "mfa":
        raise NeedLogin(401, "finish MFA first", "/login/mfa")
    if sess.stage == "enrol":
        raise NeedLogin(401, "enrol MFA first", "/mfa/enrol")
    if sess.stage == "password":
        raise NeedLogin(401, "your password expired: change it first", "/password")
    await _check_csrf(request, sess)
    core = _core(request)
    with core.tx() as conn:
        staff = core.staff(conn, sess.user_id)
    request.state.session = sess
    request.state.staff = staff  # pages (error pages too) show this staff member's nav
    return staff


def require(perm: Perm) -> Callable[..., Any]:
    async def dep(request: Request, staff: Annotated[Staff, Depends(current_staff)]) -> Staff:
        if perm not in staff.perms:
            _core(request).audit_apart(staff.actor, "access.denied", str(perm), "refused")
            if not staff.training_current and staff.granted_roles:
                raise AppError(403, f"permission denied: needs {perm}; acknowledge the current security training")
            raise AppError(403, f"permission denied: needs {perm}")
        return staff

    return dep


CurrentStaff = Annotated[Staff, Depends(current_staff)]
PendingSession = Annotated[Session, Depends(pending_session)]


def _perm(p: Perm) -> dict[str, Any]:
    return {"x-permission": str(p)}


def _set_session_cookie(response: Response, cookie: str, s: Settings) -> None:
    response.set_cookie(
        COOKIE,
        cookie,
        httponly=True,
        secure=s.secure_cookies,
        samesite="strict",
        path="/",
        max_age=int(s.idle_timeout.total_seconds()) + 60,
    )


def _renewed(response: Response, sess: Session, s: Settings) -> None:
    if sess.new_cookie:
        _set_session_cookie(response, sess.new_cookie, s)


def _card(core: Core, c: CardIn) -> Card:
    return validate_card(c.number, c.exp_month, c.exp_year, core.now().date())


# --- JSON API ------------------------------------------------------------------------------


def _api_routes(app: FastAPI, core: Core) -> None:
    @app.post("/api/login", tags=["auth"])
    def api_login(body: LoginIn, response: Response) -> dict[str, Any]:
        cookie, sess = core.login(body.username, body.password)
        _set_session_cookie(response, cookie, core.s)
        return {"stage": sess.stage, "csrf_token": sess.csrf}

    @app.post("/api/login/mfa", tags=["auth"])
    def api_mfa(body: CodeIn, sess: PendingSession, response: Response) -> dict[str, Any]:
        stage = core.verify_mfa(sess, body.code)
        _renewed(response, sess, core.s)
        return {"stage": stage, "csrf_token": sess.csrf}

    @app.post("/api/mfa/enrol", tags=["auth"])
    def api_enrol_start(sess: PendingSession) -> dict[str, Any]:
        return {"otpauth_uri": core.start_enrolment(sess)}

    @app.post("/api/mfa/enrol/confirm", tags=["auth"])
    def api_enrol_confirm(body: CodeIn, sess: PendingSession, response: Response) -> dict[str, Any]:
        stage, codes = core.finish_enrolment(sess, body.code)
        _renewed(response, sess, core.s)
        return {"stage": stage, "recovery_codes": codes, "csrf_token": sess.csrf}

    @app.post("/api/password", tags=["auth"])
    def api_password(body: PasswordIn, sess: PendingSession, response: Response) -> dict[str, Any]:
        core.change_password(sess, body.old_password, body.new_password)
        _renewed(response, sess, core.s)
        return {"stage": sess.stage}

    @app.post("/api/logout", tags=["auth"])
    def api_logout(sess: PendingSession, response: Response) -> dict[str, str]:
        core.logout(sess)
        response.delete_cookie(COOKIE, path="/", secure=core.s.secure_cookies, httponly=True, samesite="strict")
        return {"status": "logged out"}

    @app.get("/api/me", tags=["auth"])
    def api_me(staff: CurrentStaff) -> dict[str, Any]:
        return {
            "id": staff.id,
            "username": staff.username,
            "roles": sorted(staff.roles),
            "granted_roles": sorted(staff.granted_roles),
            "training_current": staff.training_current,
            "permissions": sorted(staff.perms),
        }

    @app.post("/api/training/acknowledge", tags=["auth"])
    def api_training(staff: CurrentStaff) -> dict[str, Any]:
        core.ack_training(staff)
        return {"training_version": core.s.training_version}

    @app.get("/api/users", tags=["staff"], openapi_extra=_perm(Perm.USERS_READ))
    def api_users(staff: Annotated[Staff, Depends(require(Perm.USERS_READ))]) -> list[dict[str, Any]]:
        return core.list_users(staff)

    @app.post("/api/users", tags=["staff"], status_code=201, openapi_extra=_perm(Perm.USERS_MANAGE))
    def api_user_create(body: UserIn, staff: Annotated[Staff, Depends(require(Perm.USERS_MANAGE))]) -> dict[str, Any]:
        return {"id": core.create_user(body.username, body.password, staff.actor)}

    @app.post("/api/users/{user_id}/roles", tags=["staff"], openapi_extra=_perm(Perm.ROLES_GRANT))
    def api_grant(
        user_id: int,
        body: RoleIn,
        staff: Annotated[Staff, Depends(require(Perm.ROLES_GRANT))],
        response: Response,
        x_step_up_code: Annotated[str | None, Header(max_length=40)] = None,
    ) -> dict[str, Any]:
        """200 when granted; 202 with a request ID when the role needs a second admin's approval."""
        result = core.grant_role(staff, user_id, body.role, x_step_up_code)
        if result["status"] == "pending":
            response.status_code = 202
        return result

    @app.delete("/api/users/{user_id}/roles/{role}", tags=["staff"], openapi_extra=_perm(Perm.ROLES_GRANT))
    def api_revoke(
        user_id: int,
        role: str,
        staff: Annotated[Staff, Depends(require(Perm.ROLES_GRANT))],
        x_step_up_code: Annotated[str | None, Header(max_length=40)] = None,
    ) -> dict[str, Any]:
        return core.grant_role(staff, user_id, role, x_step_up_code, revoke=True)

    @app.post("/api/users/{user_id}/disable", tags=["staff"], openapi_extra=_perm(Perm.USERS_MANAGE))
    def api_disable(user_id: int, staff: Annotated[Staff, Depends(require(Perm.USERS_MANAGE))]) -> dict[str, str]:
        return core.set_disabled(staff, user_id, True)

    @app.post("/api/users/{user_id}/enable", tags=["staff"], openapi_extra=_perm(Perm.USERS_MANAGE))
    def api_enable(user_id: int, staff: Annotated[Staff, Depends(require(Perm.USERS_MANAGE))]) -> dict[str, str]:
        return core.set_disabled(staff, user_id, False)

    @app.get("/api/role-requests", tags=["staff"], openapi_extra=_perm(Perm.ROLES_GRANT))
    def api_role_requests(staff: Annotated[Staff, Depends(require(Perm.ROLES_GRANT))]) -> list[dict[str, Any]]:
        return core.role_requests(staff)

    @app.post("/api/role-requests/{request_id}/approve", tags=["staff"], openapi_extra=_perm(Perm.ROLES_GRANT))
    def api_role_approve(
        request_id: int,
        staff: Annotated[Staff, Depends(require(Perm.ROLES_GRANT))],
        x_step_up_code: Annotated[str | None, Header(max_length=40)] = None,
    ) -> dict[str, Any]:
        return core.decide_role_request(staff, request_id, True, x_step_up_code)

    @app.post("/api/role-requests/{request_id}/reject", tags=["staff"], openapi_extra=_perm(Perm.ROLES_GRANT))
    def api_role_reject(request_id: int, staff: Annotated[Staff, Depends(require(Perm.ROLES_GRANT))]) -> dict[str, Any]:
        return core.decide_role_request(staff, request_id, False, None)

    @app.get("/api/customers", tags=["customers"], openapi_extra=_perm(Perm.CUSTOMERS_READ))
    def api_customers(staff: Annotated[Staff, Depends(require(Perm.CUSTOMERS_READ))]) -> list[dict[str, Any]]:
        return core.list_customers(staff)

    @app.post("/api/customers", tags=["customers"], status_code=201, openapi_extra=_perm(Perm.CUSTOMERS_WRITE))
    def api_customer_create(
        body: CustomerIn, staff: Annotated[Staff, Depends(require(Perm.CUSTOMERS_WRITE))]
    ) -> dict[str, Any]:
        return {"id": core.create_customer(staff, body.model_dump())}

    @app.get("/api/customers/search", tags=["customers"], openapi_extra=_perm(Perm.CUSTOMERS_READ))
    def api_customer_search(
        email: Annotated[str, Field(max_length=254)], staff: Annotated[Staff, Depends(require(Perm.CUSTOMERS_READ))]
    ) -> list[int]:
        return core.find_customers(staff, email)

    @app.get("/api/customers/{cid}", tags=["customers"], openapi_extra=_perm(Perm.CUSTOMERS_READ))
    def api_customer(cid: int, staff: Annotated[Staff, Depends(require(Perm.CUSTOMERS_READ))]) -> dict[str, Any]:
        return core.get_customer(staff, cid)

    @app.get("/api/customers/{cid}/export", tags=["gdpr"], openapi_extra=_perm(Perm.GDPR_EXPORT))
    def api_export(cid: int, staff: Annotated[Staff, Depends(require(Perm.GDPR_EXPORT))]) -> dict[str, Any]:
        return core.export_customer(staff, cid)

    @app.post("/api/customers/{cid}/erase", tags=["gdpr"], openapi_extra=_perm(Perm.GDPR_ERASE))
    def api_erase(cid: int, staff: Annotated[Staff, Depends(require(Perm.GDPR_ERASE))]) -> dict[str, str]:
        core.erase_customer(staff, cid)
        return {"status": "erased"}

    @app.get("/api/invoices", tags=["invoices"], openapi_extra=_perm(Perm.INVOICES_READ))
    def api_invoices(staff: Annotated[Staff, Depends(require(Perm.INVOICES_READ))]) -> list[dict[str, Any]]:
        return core.list_invoices(staff)

    @app.post("/api/invoices", tags=["invoices"], status_code=201, openapi_extra=_perm(Perm.INVOICES_WRITE))
    def api_invoice_create(
        body: InvoiceIn, staff: Annotated[Staff, Depends(require(Perm.INVOICES_WRITE))]
    ) -> dict[str, Any]:
        iid = core.create_invoice(staff, body.customer_id, body.currency, [ln.model_dump() for ln in body.lines])
        return core.get_invoice(staff, iid)

    @app.get("/api/invoices/{iid}", tags=["invoices"], openapi_extra=_perm(Perm.INVOICES_READ))
    def api_invoice(iid: int, staff: Annotated[Staff, Depends(require(Perm.INVOICES_READ))]) -> dict[str, Any]:
        return core.get_invoice(staff, iid)

    @app.post("/api/invoices/{iid}/issue", tags=["invoices"], openapi_extra=_perm(Perm.INVOICES_ISSUE))
    def api_issue(iid: int, staff: Annotated[Staff, Depends(require(Perm.INVOICES_ISSUE))]) -> dict[str, Any]:
        return core.transition(staff, iid, "issued")

    @app.post("/api/invoices/{iid}/void", tags=["invoices"], openapi_extra=_perm(Perm.INVOICES_VOID))
    def api_void(iid: int, staff: Annotated[Staff, Depends(require(Perm.INVOICES_VOID))]) -> dict[str, Any]:
        return core.transition(staff, iid, "void")

    @app.post(
        "/api/invoices/{iid}/credit-notes",
        tags=["invoices"],
        status_code=201,
        openapi_extra=_perm(Perm.CREDIT_NOTES_WRITE),
    )
    def api_credit(
        iid: int, body: CreditNoteIn, staff: Annotated[Staff, Depends(require(Perm.CREDIT_NOTES_WRITE))]
    ) -> dict[str, Any]:
        return {"id": core.credit_note(staff, iid, body.amount_minor, body.reason)}

    @app.post("/api/invoices/{iid}/payments", tags=["payments"], openapi_extra=_perm(Perm.PAYMENTS_CHARGE))
    def api_pay(
        iid: int,
        body: PaymentIn,
        staff: Annotated[Staff, Depends(require(Perm.PAYMENTS_CHARGE))],
        idempotency_key: Annotated[str | None, Header(max_length=100)] = None,
    ) -> dict[str, Any]:
        card = _card(core, body.card) if body.card else None
        return core.pay(staff, iid, idempotency_key or "", card, body.token)

    @app.get("/api/payments", tags=["payments"], openapi_extra=_perm(Perm.PAYMENTS_READ))
    def api_payments(staff: Annotated[Staff, Depends(require(Perm.PAYMENTS_READ))]) -> list[dict[str, Any]]:
        return core.list_payments(staff)

    @app.post("/api/cards", tags=["cards"], status_code=201, openapi_extra=_perm(Perm.CARDS_TOKENIZE))
    def api_tokenize(
        body: StoredCardIn, staff: Annotated[Staff, Depends(require(Perm.CARDS_TOKENIZE))]
    ) -> dict[str, Any]:
        return core.tokenize(staff, _card(core, body), body.customer_id)

    @app.post("/api/cards/{token}/detokenize", tags=["cards"], openapi_extra=_perm(Perm.CARDS_DETOKENIZE))
    def api_detokenize(
        token: Annotated[str, Field(max_length=40)],
        staff: Annotated[Staff, Depends(require(Perm.CARDS_DETOKENIZE))],
        x_step_up_code: Annotated[str | None, Header(max_length=40)] = None,
    ) -> dict[str, Any]:
        return core.detokenize(staff, token, x_step_up_code)

    @app.get("/api/audit", tags=["audit"], openapi_extra=_perm(Perm.AUDIT_READ))
    def api_audit(staff: Annotated[Staff, Depends(require(Perm.AUDIT_READ))]) -> list[dict[str, Any]]:
        return core.audit_events(staff)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        with core.tx() as conn:
            conn.execute("SELECT 1")
        return {"status": "ok"}


# --- staff web UI ----------------------------------------------------------------------------


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


def _ui_routes(app: FastAPI, core: Core) -> None:
    page = render

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(request: Request) -> Response:
        token = secrets.token_urlsafe(32)
        resp = page(request, "login.html", csrf=token)
        resp.set_cookie(LOGIN_CSRF, token, httponly=True, secure=core.s.secure_cookies, samesite="strict", path="/")
        return resp

    @app.post("/login", include_in_schema=False)
    def login_post(
        request: Request,
        username: Annotated[str, Form(max_length=64)],
        password: Annotated[str, Form(max_length=256)],
        csrf_token: Annotated[str, Form(max_length=100)],
    ) -> Response:
        expected = request.cookies.get(LOGIN_CSRF, "")
        if not expected or not hmac.compare_digest(expected, csrf_token):
            raise AppError(403, "CSRF token missing or wrong: reload the login page")
        try:
            cookie, sess = core.login(username, password)
        except AppError as exc:
            return page(request, "login.html", exc.status, csrf=expected, error=exc.message)
        resp = RedirectResponse("/login/mfa" if sess.stage == "mfa" else "/mfa/enrol", status_code=303)
        _set_session_cookie(resp, cookie, core.s)
        resp.delete_cookie(LOGIN_CSRF, path="/", secure=core.s.secure_cookies, httponly=True, samesite="strict")
        return resp

    @app.get("/login/mfa", response_class=HTMLResponse, include_in_schema=False)
    def mfa_form(request: Request, sess: PendingSession) -> Response:
        return page(request, "mfa.html")

    @app.post("/login/mfa", include_in_schema=False)
    def mfa_post(request: Request, sess: PendingSession, code: Annotated[str, Form(max_length=40)]) -> Response:
        try:
            stage = core.verify_mfa(sess, code)
        except AppError as exc:
            return page(request, "mfa.html", exc.status, error=exc.message)
        resp = RedirectResponse("/password" if stage == "password" else "/", status_code=303)
        _renewed(resp, sess, core.s)
        return resp

    def enrolment(request: Request, sess: Session, status_code: int = 200, error: str = "") -> Response:
        uri = core.start_enrolment(sess)
        secret = uri.split("secret=")[1].split("&")[0]
        return page(request, "enrol.html", status_code, secret=secret, qr=qr.svg(uri), error=error)

    @app.get("/mfa/enrol", response_class=HTMLResponse, include_in_schema=False)
    def enrol_form(request: Request, sess: PendingSession) -> Response:
        if sess.stage != "enrol":
            return RedirectResponse("/", status_code=303)
        return enrolment(request, sess)

    @app.post("/mfa/enrol", include_in_schema=False)
    def enrol_post(request: Request, sess: PendingSession, code: Annotated[str, Form(max_length=40)]) -> Response:
        try:
            stage, codes = core.finish_enrolment(sess, code)
        except AppError as exc:
            if sess.stage != "enrol":
                raise
            # the pending key is replaced: say so, or the authenticator keeps the old entry
            msg = f"{exc.message}. A new key was generated: delete the previous entry and scan this code."
            return enrolment(request, sess, exc.status, msg)
        resp = page(request, "recovery.html", codes=codes, next="/password" if stage == "password" else "/")
        _renewed(resp, sess, core.s)
        return resp

    @app.get("/password", response_class=HTMLResponse, include_in_schema=False)
    def password_form(request: Request, sess: PendingSession) -> Response:
        if sess.stage in ("mfa", "enrol"):  # the second factor comes first (MFA-01)
            return RedirectResponse("/login/mfa" if sess.stage == "mfa" else "/mfa/enrol", status_code=303)
        return page(request, "password.html")

    @app.post("/password", include_in_schema=False)
    def password_post(
        request: Request,
        sess: PendingSession,
        old_password: Annotated[str, Form(max_length=256)],
        new_password: Annotated[str, Form(max_length=256)],
    ) -> Response:
        try:
            core.change_password(sess, old_password, new_password)
        except AppError as exc:
            return page(request, "password.html", exc.status, error=exc.message)
        resp = RedirectResponse("/", status_code=303)
        _renewed(resp, sess, core.s)
        return resp

    @app.post("/logout", include_in_schema=False)
    def logout_post(request: Request, sess: PendingSession) -> Response:
        core.logout(sess)
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE, path="/", secure=core.s.secure_cookies, httponly=True, samesite="strict")
        return resp

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def home(request: Request, staff: CurrentStaff) -> Response:
        return page(request, "home.html", training_version=core.s.training_version)

    @app.post("/training", include_in_schema=False)
    def training_post(request: Request, staff: CurrentStaff) -> Response:
        core.ack_training(staff)
        return RedirectResponse("/", status_code=303)

    def customers_page(request: Request, staff: Staff, status_code: int = 200, **ctx: Any) -> Response:
        return page(request, "customers.html", status_code, customers=core.list_customers(staff), **ctx)

    @app.get("/customers", response_class=HTMLResponse, include_in_schema=False)
    def customers(request: Request, staff: Annotated[Staff, Depends(require(Perm.CUSTOMERS_READ))]) -> Response:
        return customers_page(request, staff)

    @app.post("/customers", include_in_schema=False)
    def customers_post(
        request: Request,
        staff: Annotated[Staff, Depends(require(Perm.CUSTOMERS_WRITE))],
        name: Annotated[str, Form()] = "",
        email: Annotated[str, Form()] = "",
        address: Annotated[str, Form()] = "",
        tax_id: Annotated[str, Form()] = "",
    ) -> Response:
        values = {"name": name, "email": email, "address": address, "tax_id": tax_id}
        errors = FormErrors()
        body = errors.model(CustomerIn, _CUSTOMER_HINTS, **values)
        if body is None:
            return customers_page(request, staff, 422, errors=errors, values=values)
        core.create_customer(staff, body.model_dump())
        return RedirectResponse("/customers", status_code=303)

    def invoices_page(request: Request, staff: Staff, status_code: int = 200, **ctx: Any) -> Response:
        invs = core.list_invoices(staff)
        names: dict[int, str] = {}
        custs: list[dict[str, Any]] = []
        if Perm.CUSTOMERS_READ in staff.perms:  # names are personal data: only for roles that read customers
            if Perm.INVOICES_WRITE in staff.perms:
                custs = core.list_customers(staff)
            names = core.customer_names(staff, [i["customer_id"] for i in invs])
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

    @app.get("/invoices", response_class=HTMLResponse, include_in_schema=False)
    def invoices(request: Request, staff: Annotated[Staff, Depends(require(Perm.INVOICES_READ))]) -> Response:
        return invoices_page(request, staff)

    @app.post("/invoices", include_in_schema=False)
    def invoices_post(
        request: Request,
        staff: Annotated[Staff, Depends(require(Perm.INVOICES_WRITE))],
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
        cid = errors.parse("customer_id", _whole, customer_id, 1, 2**62)
        places = errors.parse("currency", fmt.digits, currency.strip().upper())
        qty = errors.parse("quantity", _whole, quantity, 1, 1_000_000)
        price = (
            errors.parse("unit_price", fmt.to_minor, unit_price, currency.strip().upper())
            if places is not None
            else None
        )
        bp = errors.parse("tax_rate", fmt.percent_to_bp, tax_rate)
        line = errors.model(
            LineIn, _LINE_HINTS, description=description, quantity=qty or 1, unit_price_minor=price or 0,
            tax_rate_bp=bp or 0,
        )  # fmt: skip
        if errors or cid is None or line is None:
            return invoices_page(request, staff, 422, errors=errors, values=values)
        iid = core.create_invoice(staff, cid, currency.strip().upper(), [line.model_dump()])
        return RedirectResponse(f"/invoices/{iid}", status_code=303)

    def invoice_page(request: Request, staff: Staff, iid: int, status_code: int = 200, **ctx: Any) -> Response:
        inv = core.get_invoice(staff, iid)
        name = None
        if Perm.CUSTOMERS_READ in staff.perms:
            name = core.customer_names(staff, [inv["customer_id"]]).get(inv["customer_id"])
        return page(
            request, "invoice.html", status_code, inv=inv, customer_name=name, idem=secrets.token_urlsafe(18), **ctx
        )

    @app.get("/invoices/{iid}", response_class=HTMLResponse, include_in_schema=False)
    def invoice(request: Request, iid: int, staff: Annotated[Staff, Depends(require(Perm.INVOICES_READ))]) -> Response:
        return invoice_page(request, staff, iid)

    @app.post("/invoices/{iid}/issue", include_in_schema=False)
    def invoice_issue(
        request: Request, iid: int, staff: Annotated[Staff, Depends(require(Perm.INVOICES_ISSUE))]
    ) -> Response:
        core.transition(staff, iid, "issued")
        return RedirectResponse(f"/invoices/{iid}", status_code=303)

    @app.post("/invoices/{iid}/pay", include_in_schema=False)
    def invoice_pay(
        request: Request,
        iid: int,
        staff: Annotated[Staff, Depends(require(Perm.PAYMENTS_CHARGE))],
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
                card = validate_card(number, month, year, core.now().date())
            except CardError as exc:
                errors["number"] = f"card refused: {exc}"
        # the card number is never sent back; the expiry is, so only the number is retyped
        values = {"exp_month": exp_month, "exp_year": exp_year}
        if card is None:
            return invoice_page(request, staff, iid, 422, errors=errors, values=values)
        try:
            core.pay(staff, iid, idempotency_key, card, None)
        except AppError as exc:  # shown on the invoice itself, next to what is paid and pending
            return invoice_page(request, staff, iid, exc.status, error=exc.message, values=values)
        return RedirectResponse(f"/invoices/{iid}", status_code=303)

    @app.get("/audit", response_class=HTMLResponse, include_in_schema=False)
    def audit_page(request: Request, staff: Annotated[Staff, Depends(require(Perm.AUDIT_READ))]) -> Response:
        return page(request, "audit.html", events=core.audit_events(staff))
