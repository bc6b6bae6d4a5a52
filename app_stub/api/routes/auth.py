"""Sign-in and self-service: password, MFA (enrolment, login, recovery), password change, training."""

from typing import Any

from fastapi import APIRouter, Response

from app_stub.api.deps import (
    CoreDep,
    CurrentStaff,
    GuardedRoute,
    PendingSession,
    clear_session_cookie,
    renewed,
    set_session_cookie,
)
from app_stub.api.schemas import CodeIn, LoginIn, PasswordIn

router = APIRouter(prefix="/api", tags=["auth"], route_class=GuardedRoute)


@router.post("/login")
def login(body: LoginIn, response: Response, core: CoreDep) -> dict[str, Any]:
    cookie, sess = core.login(body.username, body.password)
    set_session_cookie(response, cookie, core.s)
    return {"stage": sess.stage, "csrf_token": sess.csrf}


@router.post("/login/mfa")
def mfa(body: CodeIn, sess: PendingSession, response: Response, core: CoreDep) -> dict[str, Any]:
    stage = core.verify_mfa(sess, body.code)
    renewed(response, sess, core.s)
    return {"stage": stage, "csrf_token": sess.csrf}


@router.post("/mfa/enrol")
def enrol_start(sess: PendingSession, core: CoreDep) -> dict[str, Any]:
    return {"otpauth_uri": core.start_enrolment(sess)}


@router.post("/mfa/enrol/confirm")
def enrol_confirm(body: CodeIn, sess: PendingSession, response: Response, core: CoreDep) -> dict[str, Any]:
    stage, codes = core.finish_enrolment(sess, body.code)
    renewed(response, sess, core.s)
    return {"stage": stage, "recovery_codes": codes, "csrf_token": sess.csrf}


@router.post("/password")
def password(body: PasswordIn, sess: PendingSession, response: Response, core: CoreDep) -> dict[str, Any]:
    core.change_password(sess, body.old_password, body.new_password)
    renewed(response, sess, core.s)
    return {"stage": sess.stage}


@router.post("/logout")
def logout(sess: PendingSession, response: Response, core: CoreDep) -> dict[str, str]:
    core.logout(sess)
    clear_session_cookie(response, core.s)
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
def training(staff: CurrentStaff, core: CoreDep) -> dict[str, Any]:
    core.ack_training(staff)
    return {"training_version": core.s.training_version}
