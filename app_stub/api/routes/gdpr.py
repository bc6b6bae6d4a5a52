"""Data-subject requests (GDPR): export, and erasure by crypto-shredding."""

from typing import Annotated, Any

from fastapi import APIRouter

from app_stub.api.deps import GuardedRoute, Svc, guarded
from app_stub.rbac import Perm
from app_stub.services import Staff

router = APIRouter(prefix="/api/customers", tags=["gdpr"], route_class=GuardedRoute)


@router.get("/{cid}/export")
def export(cid: int, staff: Annotated[Staff, guarded(Perm.GDPR_EXPORT)], svc: Svc) -> dict[str, Any]:
    return svc.gdpr.export_customer(staff, cid)


@router.post("/{cid}/erase")
def erase(cid: int, staff: Annotated[Staff, guarded(Perm.GDPR_ERASE)], svc: Svc) -> dict[str, str]:
    svc.gdpr.erase_customer(staff, cid)
    return {"status": "erased"}
