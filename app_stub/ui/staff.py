"""Staff management pages: the account list (an access review for auditors), new accounts, each account's
roles and state, and the role requests that wait for a second admin (the two-person rule, RBAC-02).

Each route names its permission once, through ``guarded``; the service enforces the rules (step-up
MFA, no change to one's own account, two people for admin and payment_processor) and the pages show
its refusals where the action was attempted.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app_stub.api.deps import GuardedRoute, guarded
from app_stub.api.schemas import UserIn
from app_stub.rbac import ROLES, TWO_PERSON_ROLES, Perm
from app_stub.services import AppError, Staff
from app_stub.services.staff import StaffService
from app_stub.ui.forms import FormErrors
from app_stub.ui.render import render

router = APIRouter(include_in_schema=False, route_class=GuardedRoute)

_USER_HINTS = {
    "username": "3-64 characters: lowercase letters, digits, '.', '_' or '-'",
    "password": "enter a first password (the new user must change it at first login)",
}
# outcomes shown after a redirect: the query names one of these, never free text
NOTICES = {
    "created": "Account created. Grant its roles below; the user changes this password at first login.",
    "granted": "Role granted. The user's open sessions ended: the role applies at their next login.",
    "pending": "Request filed: another admin must approve it (Staff page, pending role requests).",
    "revoked": "Role revoked. The user's open sessions ended.",
    "disabled": "Account disabled: its sessions ended and it cannot log in.",
    "enabled": "Account enabled: the user can log in again.",
    "approved": "Request approved: the role is granted.",
    "rejected": "Request rejected.",
}

Reader = Annotated[Staff, guarded(Perm.USERS_READ)]
Manager = Annotated[Staff, guarded(Perm.USERS_MANAGE)]
Granter = Annotated[Staff, guarded(Perm.ROLES_GRANT)]
Code = Annotated[str, Form(max_length=40)]


def _staff_service(request: Request) -> StaffService:
    return request.app.state.services.staff


def _notice(request: Request) -> str:
    return NOTICES.get(request.query_params.get("done", ""), "")


def _requests(staff_svc: StaffService, staff: Staff) -> list[dict[str, Any]]:
    return staff_svc.role_requests(staff) if Perm.ROLES_GRANT in staff.perms else []


def _list_page(request: Request, staff: Staff, status_code: int = 200, **ctx: Any) -> Response:
    staff_svc = _staff_service(request)
    ctx.setdefault("notice", _notice(request))
    users = staff_svc.list_users(staff)
    return render(request, "staff.html", status_code, users=users, requests=_requests(staff_svc, staff), **ctx)


def _user_page(request: Request, staff: Staff, user_id: int, status_code: int = 200, **ctx: Any) -> Response:
    staff_svc = _staff_service(request)
    user = next((u for u in staff_svc.list_users(staff) if u["id"] == user_id), None)
    if user is None:
        raise AppError(404, f"no staff account {user_id}")
    ctx.setdefault("notice", _notice(request))
    requests = [r for r in _requests(staff_svc, staff) if r["user_id"] == user_id]
    return render(
        request,
        "staff_user.html",
        status_code,
        user=user,
        roles=ROLES,
        two_person=TWO_PERSON_ROLES,
        requests=requests,
        **ctx,
    )


def _done(path: str, outcome: str) -> RedirectResponse:
    return RedirectResponse(f"{path}?done={outcome}", status_code=303)


@router.get("/staff", response_class=HTMLResponse)
def staff_list(request: Request, staff: Reader) -> Response:
    return _list_page(request, staff)


@router.post("/staff")
def staff_create(
    request: Request,
    staff: Manager,
    username: Annotated[str, Form(max_length=100)] = "",
    password: Annotated[str, Form(max_length=300)] = "",
) -> Response:
    errors = FormErrors()
    values = {"username": username}  # never the password
    body = errors.model(UserIn, _USER_HINTS, username=username, password=password)
    if body is None:
        return _list_page(request, staff, 422, errors=errors, values=values)
    try:
        uid = _staff_service(request).create_user(body.username, body.password, staff.actor)
    except AppError as exc:
        errors["password" if "password" in exc.message else "username"] = exc.message
        return _list_page(request, staff, exc.status, errors=errors, values=values)
    return _done(f"/staff/{uid}", "created")


@router.get("/staff/{user_id:int}", response_class=HTMLResponse)
def staff_user(request: Request, user_id: int, staff: Manager) -> Response:
    return _user_page(request, staff, user_id)


@router.post("/staff/{user_id:int}/roles")
def staff_grant(request: Request, user_id: int, staff: Granter, role: Code = "", code: Code = "") -> Response:
    try:
        result = _staff_service(request).grant_role(staff, user_id, role, code or None)
    except AppError as exc:
        errors = FormErrors(code=exc.message) if exc.status in (401, 423) else FormErrors()
        return _user_page(request, staff, user_id, exc.status, error=exc.message, errors=errors)
    return _done(f"/staff/{user_id}", result["status"])


@router.post("/staff/{user_id:int}/roles/{role}/revoke")
def staff_revoke(request: Request, user_id: int, role: str, staff: Granter, code: Code = "") -> Response:
    try:
        _staff_service(request).grant_role(staff, user_id, role, code or None, revoke=True)
    except AppError as exc:
        return _user_page(request, staff, user_id, exc.status, error=exc.message)
    return _done(f"/staff/{user_id}", "revoked")


@router.post("/staff/{user_id:int}/disable")
def staff_disable(request: Request, user_id: int, staff: Manager) -> Response:
    return _set_disabled(request, staff, user_id, True)


@router.post("/staff/{user_id:int}/enable")
def staff_enable(request: Request, user_id: int, staff: Manager) -> Response:
    return _set_disabled(request, staff, user_id, False)


def _set_disabled(request: Request, staff: Staff, user_id: int, disabled: bool) -> Response:
    try:
        result = _staff_service(request).set_disabled(staff, user_id, disabled)
    except AppError as exc:
        return _user_page(request, staff, user_id, exc.status, error=exc.message)
    return _done(f"/staff/{user_id}", result["status"])


@router.post("/staff/requests/{request_id:int}/approve")
def request_approve(request: Request, request_id: int, staff: Granter, code: Code = "") -> Response:
    return _decide(request, staff, request_id, True, code)


@router.post("/staff/requests/{request_id:int}/reject")
def request_reject(request: Request, request_id: int, staff: Granter) -> Response:
    return _decide(request, staff, request_id, False, "")


def _decide(request: Request, staff: Staff, request_id: int, approve: bool, code: str) -> Response:
    try:
        _staff_service(request).decide_role_request(staff, request_id, approve, code or None)
    except AppError as exc:
        return _list_page(request, staff, exc.status, error=exc.message)
    return _done("/staff", "approved" if approve else "rejected")
