"""The permission matrix: one test per (role, endpoint) pair."""

from collections.abc import Iterator
from typing import Any

import pytest
from apphelpers import Services, StaffClient, build_env, close_env

from app_stub.rbac import ROLE_PERMISSIONS, ROLES, Perm

# (method, path, permission) of every protected API route, read from the app's own routes
_ENDPOINTS: list[tuple[str, str, str]] = []


def endpoints() -> list[tuple[str, str, str]]:
    if not _ENDPOINTS:
        from fastapi.routing import APIRoute

        from app_stub import web

        probe = web.FastAPI()
        web._api_routes(probe, None)  # type: ignore[arg-type]  # routes only; never called
        for r in probe.routes:
            if isinstance(r, APIRoute) and r.openapi_extra and "x-permission" in r.openapi_extra:
                for m in sorted(r.methods):
                    _ENDPOINTS.append((m, r.path, r.openapi_extra["x-permission"]))
    return _ENDPOINTS


@pytest.fixture(scope="module")
def matrix(services: Services) -> Iterator[dict[str, StaffClient]]:
    env = build_env(services)
    clients = {role: env.staff(role.replace("_", "-"), role) for role in ROLES}
    yield clients
    close_env(env)


@pytest.mark.control("RBAC-01")
def test_every_role_has_an_explicit_least_privilege_list() -> None:
    assert set(ROLES) == {"admin", "billing_clerk", "payment_processor", "auditor"}
    assert {p for perms in ROLE_PERMISSIONS.values() for p in perms} == set(Perm)
    readonly = {p for p in Perm if p.value.endswith(".read")}
    assert ROLE_PERMISSIONS["auditor"] <= readonly and Perm.AUDIT_READ in ROLE_PERMISSIONS["auditor"]
    holders = [r for r, perms in ROLE_PERMISSIONS.items() if Perm.CARDS_DETOKENIZE in perms]
    assert holders == ["payment_processor"]
    assert Perm.ROLES_GRANT not in ROLE_PERMISSIONS["billing_clerk"] | ROLE_PERMISSIONS["payment_processor"]
    assert len(endpoints()) >= 20


def _path(path: str) -> str:
    return (
        path.replace("{cid}", "1")
        .replace("{iid}", "1")
        .replace("{user_id}", "1")
        .replace("{role}", "auditor")
        .replace("{request_id}", "1")
        .replace("{token}", "tok_aaaaaaaaaaaaaaaaaaaaaaaaaaaa")
    )


@pytest.mark.control("RBAC-01")
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "path", "perm"), endpoints(), ids=lambda v: str(v))
def test_permission_matrix(matrix: dict[str, StaffClient], role: str, method: str, path: str, perm: str) -> None:
    c = matrix[role]
    kw: dict[str, Any] = {"headers": {"X-CSRF-Token": c.csrf}}
    if method in ("POST", "PUT", "PATCH"):
        kw["json"] = {}
    if path == "/api/customers/search":
        kw["params"] = {"email": "nobody@example.org"}
    r = c.http.request(method, _path(path), **kw)
    allowed = Perm(perm) in ROLE_PERMISSIONS[role]
    if allowed:
        assert not (r.status_code == 403 and "permission denied" in r.text), r.text
        assert r.status_code < 500
    else:
        assert r.status_code == 403 and f"needs {perm}" in r.json()["detail"]


@pytest.mark.control("RBAC-01")
def test_openapi_is_published_and_every_data_route_declares_its_permission(matrix: dict[str, StaffClient]) -> None:
    spec = matrix["auditor"].http.get("/openapi.json").json()
    self_service = {"/api/login", "/api/login/mfa", "/api/mfa/enrol", "/api/mfa/enrol/confirm", "/api/password",
                    "/api/logout", "/api/me", "/api/training/acknowledge"}  # fmt: skip
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if path.startswith("/api/") and path not in self_service:
                assert op.get("x-permission") in {p.value for p in Perm}, f"{method.upper()} {path}"
