"""Dependencies of every route: the services (``Svc``), the session at each stage, CSRF, and ``guarded``.

``guarded(Perm.X)`` is the one place a route names its permission: the dependency refuses (and
audits) staff without it, and ``GuardedRoute`` publishes the same permission in the OpenAPI
document (``x-permission``) and on the route (``route.permission``), so the two cannot drift.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, Header, Request, Response
from fastapi.routing import APIRoute

from app_stub.core.config import Settings
from app_stub.rbac import Perm
from app_stub.services import AppError, Services, Session, Staff

COOKIE = "__Host-billkit_session"
LOGIN_CSRF = "__Host-billkit_login_csrf"


class NeedLogin(Exception):
    """No session at the stage a route needs: the API answers 401, the UI redirects to ``where``."""

    def __init__(self, status: int, message: str, where: str = "/login") -> None:
        self.status, self.message, self.where = status, message, where


def get_services(request: Request) -> Services:
    return request.app.state.services


Svc = Annotated[Services, Depends(get_services)]
StepUpCode = Annotated[str | None, Header(max_length=40)]  # X-Step-Up-Code (the parameter is x_step_up_code)


async def check_csrf(request: Request, sess: Session) -> None:
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    sent = request.headers.get("x-csrf-token")
    if sent is None and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        form = await request.form()
        value = form.get("csrf_token")
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent, sess.csrf):
        raise AppError(403, "CSRF token missing or wrong: reload the page and try again")


async def pending_session(request: Request, svc: Svc) -> Session:
    """A session at any stage (for the MFA, enrolment and password steps), CSRF-checked."""
    sess = svc.auth.session(request.cookies.get(COOKIE))
    if sess is None:
        raise NeedLogin(401, "log in first")
    await check_csrf(request, sess)
    request.state.session = sess
    return sess


async def current_staff(request: Request, svc: Svc) -> Staff:
    """The fully authenticated staff member (password, MFA, and an unexpired password), CSRF-checked."""
    sess = svc.auth.session(request.cookies.get(COOKIE))
    if sess is None:
        raise NeedLogin(401, "log in first (session missing or expired)")
    if sess.stage == "mfa":
        raise NeedLogin(401, "finish MFA first", "/login/mfa")
    if sess.stage == "enrol":
        raise NeedLogin(401, "enrol MFA first", "/mfa/enrol")
    if sess.stage == "password":
        raise NeedLogin(401, "your password expired: change it first", "/password")
    await check_csrf(request, sess)
    with svc.auth.tx() as conn:
        staff = svc.auth.identity(conn, sess.user_id)
    request.state.session = sess
    request.state.staff = staff  # pages (error pages too) show this staff member's nav
    return staff


def signed_in(request: Request) -> None:
    """Put a fully signed-in staff member (if any) on the request, for pages no route dependency rendered."""
    svc = get_services(request)
    sess = svc.auth.session(request.cookies.get(COOKIE))
    if sess is None or sess.stage != "full":
        return
    try:
        with svc.auth.tx() as conn:
            request.state.staff = svc.auth.identity(conn, sess.user_id)
    except AppError:
        return
    request.state.session = sess


CurrentStaff = Annotated[Staff, Depends(current_staff)]
PendingSession = Annotated[Session, Depends(pending_session)]


def guarded(perm: Perm) -> Any:
    """``staff: Annotated[Staff, guarded(Perm.X)]``: the staff member, refused (403, audited) without ``perm``."""

    async def dep(staff: CurrentStaff, svc: Svc) -> Staff:
        if perm not in staff.perms:
            svc.auth.audit_apart(staff.actor, "access.denied", str(perm), "refused")
            if not staff.training_current and staff.granted_roles:
                raise AppError(403, f"permission denied: needs {perm}; acknowledge the current security training")
            raise AppError(403, f"permission denied: needs {perm}")
        return staff

    dep.permission = perm  # type: ignore[attr-defined]  # read by GuardedRoute
    return Depends(dep)


class GuardedRoute(APIRoute):
    """A route that knows the permission its ``guarded`` dependency demands (None: self-service or public)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        perms = {p for d in self.dependant.dependencies if (p := getattr(d.call, "permission", None)) is not None}
        if len(perms) > 1:
            raise TypeError(f"{self.path}: one guarded() per route, not {sorted(perms)}")
        self.permission: Perm | None = perms.pop() if perms else None
        if self.permission is not None:
            self.openapi_extra = {**(self.openapi_extra or {}), "x-permission": str(self.permission)}


def set_session_cookie(response: Response, cookie: str, s: Settings) -> None:
    response.set_cookie(
        COOKIE,
        cookie,
        httponly=True,
        secure=s.secure_cookies,
        samesite="strict",
        path="/",
        max_age=int(s.idle_timeout.total_seconds()) + 60,
    )


def renewed(response: Response, sess: Session, s: Settings) -> None:
    """Send the new session cookie when the session's id was renewed (MFA passed, password changed)."""
    if sess.new_cookie:
        set_session_cookie(response, sess.new_cookie, s)


def clear_session_cookie(response: Response, s: Settings) -> None:
    response.delete_cookie(COOKIE, path="/", secure=s.secure_cookies, httponly=True, samesite="strict")
