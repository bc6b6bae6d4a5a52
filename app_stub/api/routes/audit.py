"""The audit log, read by auditors and admins."""

from typing import Annotated, Any

from fastapi import APIRouter

from app_stub.api.deps import GuardedRoute, Svc, guarded
from app_stub.rbac import Perm
from app_stub.services import Staff

router = APIRouter(prefix="/api/audit", tags=["audit"], route_class=GuardedRoute)


@router.get("")
def audit_events(staff: Annotated[Staff, guarded(Perm.AUDIT_READ)], svc: Svc) -> list[dict[str, Any]]:
    return svc.audit.audit_events(staff)
