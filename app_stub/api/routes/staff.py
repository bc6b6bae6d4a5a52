"""Staff accounts and roles: separation of duties (no self-grant, two-person rule for the powerful roles)."""

from typing import Annotated, Any

from fastapi import APIRouter, Response

from app_stub.api.deps import GuardedRoute, StepUpCode, Svc, guarded
from app_stub.api.schemas import RoleIn, UserIn
from app_stub.rbac import Perm
from app_stub.services import Staff

router = APIRouter(prefix="/api", tags=["staff"], route_class=GuardedRoute)


@router.get("/users")
def users(staff: Annotated[Staff, guarded(Perm.USERS_READ)], svc: Svc) -> list[dict[str, Any]]:
    return svc.staff.list_users(staff)


@router.post("/users", status_code=201)
def user_create(body: UserIn, staff: Annotated[Staff, guarded(Perm.USERS_MANAGE)], svc: Svc) -> dict[str, Any]:
    return {"id": svc.staff.create_user(body.username, body.password, staff.actor)}


@router.post("/users/{user_id}/disable")
def disable(user_id: int, staff: Annotated[Staff, guarded(Perm.USERS_MANAGE)], svc: Svc) -> dict[str, str]:
    return svc.staff.set_disabled(staff, user_id, True)


@router.post("/users/{user_id}/enable")
def enable(user_id: int, staff: Annotated[Staff, guarded(Perm.USERS_MANAGE)], svc: Svc) -> dict[str, str]:
    return svc.staff.set_disabled(staff, user_id, False)


@router.post("/users/{user_id}/roles")
def grant(
    user_id: int,
    body: RoleIn,
    staff: Annotated[Staff, guarded(Perm.ROLES_GRANT)],
    svc: Svc,
    response: Response,
    x_step_up_code: StepUpCode = None,
) -> dict[str, Any]:
    """200 when granted; 202 with a request ID when the role needs a second admin's approval."""
    result = svc.staff.grant_role(staff, user_id, body.role, x_step_up_code)
    if result["status"] == "pending":
        response.status_code = 202
    return result


@router.delete("/users/{user_id}/roles/{role}")
def revoke(
    user_id: int,
    role: str,
    staff: Annotated[Staff, guarded(Perm.ROLES_GRANT)],
    svc: Svc,
    x_step_up_code: StepUpCode = None,
) -> dict[str, Any]:
    return svc.staff.grant_role(staff, user_id, role, x_step_up_code, revoke=True)


@router.get("/role-requests")
def role_requests(staff: Annotated[Staff, guarded(Perm.ROLES_GRANT)], svc: Svc) -> list[dict[str, Any]]:
    return svc.staff.role_requests(staff)


@router.post("/role-requests/{request_id}/approve")
def role_approve(
    request_id: int,
    staff: Annotated[Staff, guarded(Perm.ROLES_GRANT)],
    svc: Svc,
    x_step_up_code: StepUpCode = None,
) -> dict[str, Any]:
    return svc.staff.decide_role_request(staff, request_id, True, x_step_up_code)


@router.post("/role-requests/{request_id}/reject")
def role_reject(request_id: int, staff: Annotated[Staff, guarded(Perm.ROLES_GRANT)], svc: Svc) -> dict[str, Any]:
    return svc.staff.decide_role_request(staff, request_id, False, None)
