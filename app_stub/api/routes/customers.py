"""Customers: personal data, envelope-encrypted per customer."""

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import Field

from app_stub.api.deps import GuardedRoute, Svc, guarded
from app_stub.api.schemas import CustomerIn
from app_stub.rbac import Perm
from app_stub.services import Staff

router = APIRouter(prefix="/api/customers", tags=["customers"], route_class=GuardedRoute)


@router.get("")
def customers(staff: Annotated[Staff, guarded(Perm.CUSTOMERS_READ)], svc: Svc) -> list[dict[str, Any]]:
    return svc.customers.list_customers(staff)


@router.post("", status_code=201)
def customer_create(
    body: CustomerIn, staff: Annotated[Staff, guarded(Perm.CUSTOMERS_WRITE)], svc: Svc
) -> dict[str, Any]:
    return {"id": svc.customers.create_customer(staff, body.model_dump())}


@router.get("/search")
def customer_search(
    email: Annotated[str, Field(max_length=254)], staff: Annotated[Staff, guarded(Perm.CUSTOMERS_READ)], svc: Svc
) -> list[int]:
    return svc.customers.find_customers(staff, email)


@router.get("/{cid}")
def customer(cid: int, staff: Annotated[Staff, guarded(Perm.CUSTOMERS_READ)], svc: Svc) -> dict[str, Any]:
    return svc.customers.get_customer(staff, cid)
