"""The audit log, read by auditors and admins."""

from typing import Annotated, Any

from fastapi import APIRouter

from app_stub.api.deps import CoreDep, GuardedRoute, guarded
from app_stub.rbac import Perm
from app_stub.service import Staff

router = APIRouter(prefix="/api/audit", tags=["audit"], route_class=GuardedRoute)


@router.get("")
def audit_events(staff: Annotated[Staff, guarded(Perm.AUDIT_READ)], core: CoreDep) -> list[dict[str, Any]]:
    return core.audit_events(staff)
