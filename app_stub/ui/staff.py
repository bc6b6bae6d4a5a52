"""Staff management pages: the account list (an access review for auditors), new accounts, one account's state.

Each route names its permission once, through ``require``; the service checks the rules again.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app_stub.rbac import ROLES, Perm
from app_stub.service import AppError, Core, Staff
from app_stub.ui.forms import FormErrors
from app_stub.ui.render import render
from app_stub.web import UserIn, require

router = APIRouter(include_in_schema=False)

_USER_HINTS = {
    "username": "3-64 characters: lowercase letters, digits, '.', '_' or '-'",
    "password": "enter a first password (the new user must change it at first login)",
}

Reader = Annotated[Staff, Depends(require(Perm.USERS_READ))]
Manager = Annotated[Staff, Depends(require(Perm.USERS_MANAGE))]


def _core(request: Request) -> Core:
    return request.app.state.core


def _list_page(request: Request, staff: Staff, status_code: int = 200, **ctx: Any) -> Response:
    users = _core(request).list_users(staff)
    return render(request, "staff.html", status_code, users=users, roles=ROLES, **ctx)


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
        uid = _core(request).create_user(body.username, body.password, staff.actor)
    except AppError as exc:
        errors["password" if "password" in exc.message else "username"] = exc.message
        return _list_page(request, staff, exc.status, errors=errors, values=values)
    return RedirectResponse(f"/staff/{uid}", status_code=303)


@router.get("/staff/{user_id}", response_class=HTMLResponse)
def staff_user(request: Request, user_id: int, staff: Manager) -> Response:
    user = next((u for u in _core(request).list_users(staff) if u["id"] == user_id), None)
    if user is None:
        raise AppError(404, f"no staff account {user_id}")
    return render(request, "staff_user.html", user=user, roles=ROLES)
