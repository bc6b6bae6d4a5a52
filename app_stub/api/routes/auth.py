"""Sign-in and self-service: password, MFA (enrolment, login, recovery), password change, training."""

from typing import Any

from fastapi import APIRouter, Response

from app_stub.api.deps import (
    CurrentStaff,
    GuardedRoute,
    PendingSession,
    Svc,
    clear_session_cookie,
    renewed,
    set_session_cookie,
)
from app_stub.api.schemas import CodeIn, LoginIn, PasswordIn

router = APIRouter(prefix="/api", tags=["auth"], route_class=GuardedRoute)


@router.post("/login")
def login(body: LoginIn, response: Response, svc: Svc) -> dict[str, Any]:
    cookie, sess = svc.auth.login(body.username, body.password)
    set_session_cookie(response, cookie, svc.ctx.settings)
    return {"stage": sess.stage, "csrf_token": sess.csrf}


@router.post("/login/mfa")
def mfa(body: CodeIn, sess: PendingSession, response: Response, svc: Svc) -> dict[str, Any]:
    stage = svc.auth.verify_mfa(sess, body.code)
    renewed(response, sess, svc.ctx.settings)
    return {"stage": stage, "csrf_token": sess.csrf}


@router.post("/mfa/enrol")
def enrol_start(sess: PendingSession, svc: Svc) -> dict[str, Any]:
    return {"otpauth_uri": svc.auth.start_enrolment(sess)}


@router.post("/mfa/enrol/confirm")
def enrol_confirm(body: CodeIn, sess: PendingSession, response: Response, svc: Svc) -> dict[str, Any]:
    stage, codes = svc.auth.finish_enrolment(sess, body.code)
    renewed(response, sess, svc.ctx.settings)
    return {"stage": stage, "recovery_codes": codes, "csrf_token": sess.csrf}


@router.post("/password")
def password(body: PasswordIn, sess: PendingSession, response: Response, svc: Svc) -> dict[str, Any]:
    svc.auth.change_password(sess, body.old_password, body.new_password)
    renewed(response, sess, svc.ctx.settings)
    return {"stage": sess.stage}


@router.post("/logout")
def logout(sess: PendingSession, response: Response, svc: Svc) -> dict[str, str]:
    svc.auth.logout(sess)
    clear_session_cookie(response, svc.ctx.settings)
    return {"status": "logged out"}


@router.get("/me")
def me(staff: CurrentStaff) -> dict[str, Any]:
    return {
        "id": staff.id,
        "username": staff.username,
        "roles": sorted(staff.roles),
        "granted_roles": sorted(staff.granted_roles),
        "training_current": staff.training_current,
        "permissions": sorted(staff.perms),
    }


@router.post("/training/acknowledge")
def training(staff: CurrentStaff, svc: Svc) -> dict[str, Any]:
    svc.auth.ack_training(staff)
    return {"training_version": svc.ctx.settings.training_version}
