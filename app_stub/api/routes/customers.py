"""Customers: personal data, envelope-encrypted per customer."""

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import Field

from app_stub.api.deps import CoreDep, GuardedRoute, guarded
from app_stub.api.schemas import CustomerIn
from app_stub.rbac import Perm
from app_stub.service import Staff

router = APIRouter(prefix="/api/customers", tags=["customers"], route_class=GuardedRoute)


@router.get("")
def customers(staff: Annotated[Staff, guarded(Perm.CUSTOMERS_READ)], core: CoreDep) -> list[dict[str, Any]]:
    return core.list_customers(staff)


@router.post("", status_code=201)
def customer_create(
    body: CustomerIn, staff: Annotated[Staff, guarded(Perm.CUSTOMERS_WRITE)], core: CoreDep
) -> dict[str, Any]:
    return {"id": core.create_customer(staff, body.model_dump())}


@router.get("/search")
def customer_search(
    email: Annotated[str, Field(max_length=254)], staff: Annotated[Staff, guarded(Perm.CUSTOMERS_READ)], core: CoreDep
) -> list[int]:
    return core.find_customers(staff, email)


@router.get("/{cid}")
def customer(cid: int, staff: Annotated[Staff, guarded(Perm.CUSTOMERS_READ)], core: CoreDep) -> dict[str, Any]:
    return core.get_customer(staff, cid)
