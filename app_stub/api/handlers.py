"""Cross-cutting HTTP behaviour: security headers on every answer, and errors a user can act on
(a page for the UI, JSON for the API; never the input value that was refused)."""

from collections.abc import Callable
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from app_stub.api.deps import NeedLogin, signed_in
from app_stub.crypto import VaultError
from app_stub.services import AppError
from app_stub.tokenization import CardError
from app_stub.ui.render import error_page

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'"
)


def wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api")


def page_or_json(request: Request, status: int, message: str, problems: list[str] | None = None) -> Response:
    if wants_html(request):
        return error_page(request, status, message, problems)
    return JSONResponse({"detail": message}, status_code=status)


def install(app: FastAPI) -> None:
    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = CSP
        response.headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
        return response

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
        if not wants_html(request):
            return await http_exception_handler(request, exc)
        message = "there is no page at this address" if exc.status_code == 404 else str(exc.detail)
        signed_in(request)  # no route ran its dependencies: find the staff member for the nav
        return error_page(request, exc.status_code, message)

    @app.exception_handler(NeedLogin)
    async def need_login(request: Request, exc: NeedLogin) -> Response:
        if wants_html(request):
            return RedirectResponse(exc.where, status_code=303)
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        html = wants_html(request)
        # a page names the field only; the API keeps where it was (body, path, query)
        skip = ("body", "path", "query") if html else ("body",)
        problems = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e.get("loc", ()) if p not in skip)
            problems.append(f"{loc}: {e.get('msg')}")  # the message, never the input value
        if html:
            return page_or_json(request, 422, "the request had missing or invalid values", problems)
        return page_or_json(request, 422, "invalid input: " + "; ".join(problems))
