"""Cross-cutting HTTP behaviour: security headers on every answer, and errors a user can act on
(a page for the UI, JSON for the API; never the input value that was refused)."""

from collections.abc import Callable
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response

from app_stub.api.deps import NeedLogin
from app_stub.crypto import VaultError
from app_stub.services import AppError
from app_stub.tokenization import CardError
from app_stub.ui.templating import templates

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'"
)


def wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api")


def page_or_json(request: Request, status: int, message: str) -> Response:
    if wants_html(request):
        return templates.TemplateResponse(
            request, "error.html", {"status": status, "message": message}, status_code=status
        )
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

    @app.exception_handler(NeedLogin)
    async def need_login(request: Request, exc: NeedLogin) -> Response:
        if wants_html(request):
            return RedirectResponse(exc.where, status_code=303)
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            problems.append(f"{loc}: {e.get('msg')}")  # the message, never the input value
        return page_or_json(request, 422, "invalid input: " + "; ".join(problems))
