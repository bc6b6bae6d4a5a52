"""Operations: the health check the WAF's upstreams and the lab probe."""

from fastapi import APIRouter

from app_stub.api.deps import GuardedRoute, Svc

router = APIRouter(tags=["ops"], route_class=GuardedRoute)


@router.get("/healthz")
def healthz(svc: Svc) -> dict[str, str]:
    with svc.auth.tx() as conn:
        conn.execute("SELECT 1")
    return {"status": "ok"}
