"""Operations: the health check the WAF's upstreams and the lab probe."""

from fastapi import APIRouter

from app_stub.api.deps import CoreDep, GuardedRoute

router = APIRouter(tags=["ops"], route_class=GuardedRoute)


@router.get("/healthz")
def healthz(core: CoreDep) -> dict[str, str]:
    with core.tx() as conn:
        conn.execute("SELECT 1")
    return {"status": "ok"}
