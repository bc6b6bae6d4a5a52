"""Data-subject requests (GDPR): export, and erasure by crypto-shredding."""

from typing import Annotated, Any

from fastapi import APIRouter

from app_stub.api.deps import CoreDep, GuardedRoute, guarded
from app_stub.rbac import Perm
from app_stub.service import Staff

router = APIRouter(prefix="/api/customers", tags=["gdpr"], route_class=GuardedRoute)


@router.get("/{cid}/export")
def export(cid: int, staff: Annotated[Staff, guarded(Perm.GDPR_EXPORT)], core: CoreDep) -> dict[str, Any]:
    return core.export_customer(staff, cid)


@router.post("/{cid}/erase")
def erase(cid: int, staff: Annotated[Staff, guarded(Perm.GDPR_ERASE)], core: CoreDep) -> dict[str, str]:
    core.erase_customer(staff, cid)
    return {"status": "erased"}
