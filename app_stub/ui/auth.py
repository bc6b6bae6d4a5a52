"""Sign-in pages: password, TOTP (or enrolment and recovery codes), password change, logout."""

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app_stub.api.deps import (
    LOGIN_CSRF,
    GuardedRoute,
    PendingSession,
    Svc,
    clear_session_cookie,
    renewed,
    set_session_cookie,
)
from app_stub.services import AppError, Session
from app_stub.ui import qr
from app_stub.ui.render import render as page

router = APIRouter(include_in_schema=False, route_class=GuardedRoute)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, svc: Svc) -> Response:
    token = secrets.token_urlsafe(32)
    resp = page(request, "login.html", csrf=token)
    resp.set_cookie(
        LOGIN_CSRF, token, httponly=True, secure=svc.ctx.settings.secure_cookies, samesite="strict", path="/"
    )
    return resp


@router.post("/login")
def login_post(
    request: Request,
    svc: Svc,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=256)],
    csrf_token: Annotated[str, Form(max_length=100)],
) -> Response:
    expected = request.cookies.get(LOGIN_CSRF, "")
    if not expected or not hmac.compare_digest(expected, csrf_token):
        raise AppError(403, "CSRF token missing or wrong: reload the login page")
    try:
        cookie, sess = svc.auth.login(username, password)
    except AppError as exc:
        return page(request, "login.html", exc.status, csrf=expected, error=exc.message)
    resp = RedirectResponse("/login/mfa" if sess.stage == "mfa" else "/mfa/enrol", status_code=303)
    set_session_cookie(resp, cookie, svc.ctx.settings)
    resp.delete_cookie(LOGIN_CSRF, path="/", secure=svc.ctx.settings.secure_cookies, httponly=True, samesite="strict")
    return resp


@router.get("/login/mfa", response_class=HTMLResponse)
def mfa_form(request: Request, sess: PendingSession) -> Response:
    return page(request, "mfa.html")


@router.post("/login/mfa")
def mfa_post(request: Request, sess: PendingSession, svc: Svc, code: Annotated[str, Form(max_length=40)]) -> Response:
    try:
        stage = svc.auth.verify_mfa(sess, code)
    except AppError as exc:
        return page(request, "mfa.html", exc.status, error=exc.message)
    resp = RedirectResponse("/password" if stage == "password" else "/", status_code=303)
    renewed(resp, sess, svc.ctx.settings)
    return resp


def _enrolment(request: Request, sess: Session, svc: Svc, status_code: int = 200, error: str = "") -> Response:
    """A new key, as a QR code drawn on the server (inline SVG) and as text for manual entry."""
    uri = svc.auth.start_enrolment(sess)
    secret = uri.split("secret=")[1].split("&")[0]
    return page(request, "enrol.html", status_code, secret=secret, qr=qr.svg(uri), error=error)


@router.get("/mfa/enrol", response_class=HTMLResponse)
def enrol_form(request: Request, sess: PendingSession, svc: Svc) -> Response:
    if sess.stage != "enrol":
        return RedirectResponse("/", status_code=303)
    return _enrolment(request, sess, svc)


@router.post("/mfa/enrol")
def enrol_post(request: Request, sess: PendingSession, svc: Svc, code: Annotated[str, Form(max_length=40)]) -> Response:
    try:
        stage, codes = svc.auth.finish_enrolment(sess, code)
    except AppError as exc:
        if sess.stage != "enrol":
            raise
        # the pending key is replaced: say so, or the authenticator keeps the old entry
        msg = f"{exc.message}. A new key was generated: delete the previous entry and scan this code."
        return _enrolment(request, sess, svc, exc.status, msg)
    resp = page(request, "recovery.html", codes=codes, next="/password" if stage == "password" else "/")
    renewed(resp, sess, svc.ctx.settings)
    return resp


@router.get("/password", response_class=HTMLResponse)
def password_form(request: Request, sess: PendingSession) -> Response:
    if sess.stage in ("mfa", "enrol"):  # the second factor comes first (MFA-01)
        return RedirectResponse("/login/mfa" if sess.stage == "mfa" else "/mfa/enrol", status_code=303)
    return page(request, "password.html")


@router.post("/password")
def password_post(
    request: Request,
    sess: PendingSession,
    svc: Svc,
    old_password: Annotated[str, Form(max_length=256)],
    new_password: Annotated[str, Form(max_length=256)],
) -> Response:
    try:
        svc.auth.change_password(sess, old_password, new_password)
    except AppError as exc:
        return page(request, "password.html", exc.status, error=exc.message)
    resp = RedirectResponse("/", status_code=303)
    renewed(resp, sess, svc.ctx.settings)
    return resp


@router.post("/logout")
def logout_post(request: Request, sess: PendingSession, svc: Svc) -> Response:
    svc.auth.logout(sess)
    resp = RedirectResponse("/login", status_code=303)
    clear_session_cookie(resp, svc.ctx.settings)
    return resp
