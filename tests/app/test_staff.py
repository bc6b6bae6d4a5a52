"""Separation of duties in staff management: nobody grants a role to themselves, the powerful roles
need a second person, new accounts start with a password they must replace, disabled accounts are
shut out, and every change of privilege ends the affected sessions."""

import pytest
from apphelpers import Env, StaffClient


def roles_of(env: Env, uid: int) -> set[str]:
    with env.owner() as conn:
        return {r[0] for r in conn.execute("SELECT role FROM staff.user_roles WHERE user_id = %s", (uid,))}


def audit_actions(env: Env) -> list[tuple[str, str, str]]:
    with env.owner() as conn:
        return [tuple(r) for r in conn.execute("SELECT action, target, outcome FROM audit.events ORDER BY seq")]


def grant(admin: StaffClient, uid: int, role: str) -> object:
    return admin.post(f"/api/users/{uid}/roles", json={"role": role}, headers={"X-Step-Up-Code": admin.code()})


@pytest.mark.control("RBAC-02", "RBAC-01")
@pytest.mark.parametrize("role", ["payment_processor", "admin", "auditor", "billing_clerk"])
def test_nobody_grants_a_role_to_themselves(env: Env, role: str) -> None:
    admin = env.staff("admin", "admin")
    r = grant(admin, admin.uid, role)
    assert r.status_code == 403 and "your own account" in r.json()["detail"]  # type: ignore[attr-defined]
    assert roles_of(env, admin.uid) == {"admin"}
    assert ("role.grant", f"user:{admin.uid}", "refused") in audit_actions(env)
    # nor revokes their own (the last admin cannot lock everyone out by mistake)
    r = admin.delete(f"/api/users/{admin.uid}/roles/admin", headers={"X-Step-Up-Code": admin.code()})
    assert r.status_code == 403 and roles_of(env, admin.uid) == {"admin"}


@pytest.mark.control("RBAC-02", "MFA-04", "LOG-07")
@pytest.mark.parametrize("role", ["payment_processor", "admin"])
def test_powerful_roles_need_a_second_person(env: Env, role: str) -> None:
    a = env.staff("admin-a", "admin")
    b = env.staff("admin-b", "admin")
    c = env.staff("carol", "billing_clerk")
    r = grant(a, c.uid, role)
    assert r.status_code == 202, r.text  # type: ignore[attr-defined]
    rid = r.json()["request_id"]  # type: ignore[attr-defined]
    assert roles_of(env, c.uid) == {"billing_clerk"}
    pending = a.get("/api/role-requests").json()
    assert [(p["id"], p["user_id"], p["role"], p["requested_by"]) for p in pending] == [(rid, c.uid, role, a.uid)]
    # the requester cannot approve it, nor can the beneficiary, nor without a step-up code
    r = a.post(f"/api/role-requests/{rid}/approve", headers={"X-Step-Up-Code": a.code()})
    assert r.status_code == 403 and "second" in r.json()["detail"]
    assert c.post(f"/api/role-requests/{rid}/approve", headers={"X-Step-Up-Code": c.code()}).status_code == 403
    assert b.post(f"/api/role-requests/{rid}/approve").status_code == 401
    assert roles_of(env, c.uid) == {"billing_clerk"}
    # a second admin approves: granted once, and the beneficiary's sessions end (log in again to use it)
    r = b.post(f"/api/role-requests/{rid}/approve", headers={"X-Step-Up-Code": b.code()})
    assert r.status_code == 200, r.text
    assert roles_of(env, c.uid) == {"billing_clerk", role}
    assert c.get("/api/me").status_code == 401
    r = b.post(f"/api/role-requests/{rid}/approve", headers={"X-Step-Up-Code": b.code()})
    assert r.status_code == 409  # replaying the approval does nothing
    assert a.get("/api/role-requests").json() == []
    actions = audit_actions(env)
    assert ("role.request", f"user:{c.uid}", "ok") in actions
    assert ("role.approve", f"user:{c.uid}", "ok") in actions
    assert ("role.approve", f"user:{c.uid}", "refused") in actions


@pytest.mark.control("RBAC-02", "TOK-02")
def test_an_admin_cannot_reach_card_numbers_alone(env: Env) -> None:
    """The review's path: an admin grants itself payment_processor, then detokenizes. Both ways are shut."""
    a = env.staff("admin-a", "admin")
    assert grant(a, a.uid, "payment_processor").status_code == 403  # type: ignore[attr-defined]
    # a sock-puppet account made by the same admin cannot be made a processor without a second admin
    r = a.post("/api/users", json={"username": "puppet", "password": "Puppet-password-12"})
    puppet = r.json()["id"]
    assert grant(a, puppet, "payment_processor").status_code == 202  # type: ignore[attr-defined]
    assert roles_of(env, puppet) == set()


@pytest.mark.control("RBAC-02")
def test_a_pending_request_can_be_rejected_and_then_not_approved(env: Env) -> None:
    a = env.staff("admin-a", "admin")
    b = env.staff("admin-b", "admin")
    c = env.staff("carol", "auditor")
    rid = grant(a, c.uid, "admin").json()["request_id"]  # type: ignore[attr-defined]
    assert b.post(f"/api/role-requests/{rid}/reject").json()["status"] == "rejected"
    r = b.post(f"/api/role-requests/{rid}/approve", headers={"X-Step-Up-Code": b.code()})
    assert r.status_code == 409 and roles_of(env, c.uid) == {"auditor"}


@pytest.mark.control("RBAC-02", "APP-01")
def test_a_revoked_role_ends_the_users_sessions(env: Env) -> None:
    a = env.staff("admin-a", "admin")
    c = env.staff("carol", "billing_clerk")
    assert c.get("/api/customers").status_code == 200
    r = a.delete(f"/api/users/{c.uid}/roles/billing_clerk", headers={"X-Step-Up-Code": a.code()})
    assert r.status_code == 200
    assert c.get("/api/customers").status_code == 401  # not a stale 200 from a session made before


@pytest.mark.control("HRD-02", "MFA-01")
def test_accounts_made_by_an_admin_must_change_the_password_at_first_login(env: Env) -> None:
    a = env.staff("admin-a", "admin")
    chosen = "Admin-chosen-pass-1"
    uid = a.post("/api/users", json={"username": "newhire", "password": chosen}).json()["id"]
    n = StaffClient(env, env.client(), uid, "newhire")
    assert n.login(chosen).json()["stage"] == "enrol"
    uri = n.post("/api/mfa/enrol").json()["otpauth_uri"]
    n.secret = uri.split("secret=")[1].split("&")[0]
    r = n.post("/api/mfa/enrol/confirm", json={"code": n.code()})
    assert r.json()["stage"] == "password"
    n.csrf = r.json()["csrf_token"]
    assert n.get("/api/me").status_code == 401
    assert n.post("/api/password", json={"old_password": chosen, "new_password": "My-own-secret-42"}).status_code == 200
    assert n.get("/api/me").status_code == 200


@pytest.mark.control("RBAC-01", "LOG-07")
def test_disabled_accounts_cannot_log_in_and_lose_their_sessions(env: Env) -> None:
    a = env.staff("admin-a", "admin")
    c = env.staff("carol", "billing_clerk")
    assert a.post(f"/api/users/{a.uid}/disable").status_code == 403  # never oneself
    assert a.post(f"/api/users/{c.uid}/disable").json()["status"] == "disabled"
    assert c.get("/api/me").status_code == 401
    r = c.login()
    assert r.status_code == 401 and r.json()["detail"] == "invalid username or password"  # no hint
    users = {u["id"]: u for u in a.get("/api/users").json()}
    assert users[c.uid]["disabled"] is True
    assert a.post(f"/api/users/{c.uid}/enable").json()["status"] == "enabled"
    assert c.login().status_code == 200
    actions = audit_actions(env)
    assert ("user.disable", f"user:{c.uid}", "ok") in actions
    assert ("auth.login", f"user:{c.uid}", "refused-disabled") in actions


@pytest.mark.control("RBAC-02", "LOG-07")
def test_with_one_admin_an_operator_is_the_second_person(
    env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from app_stub.__main__ import main

    a = env.staff("admin-a", "admin")
    c = env.staff("carol", "billing_clerk")
    rid = grant(a, c.uid, "payment_processor").json()["request_id"]  # type: ignore[attr-defined]
    monkeypatch.setenv("BILLKIT_APP_OWNER_DATABASE_URL", env.services.owner_dsn(env.dbname))
    assert main(["approve-role-request", str(rid), "--operator", "ops.jane"]) == 0
    assert main(["approve-role-request", str(rid), "--operator", "ops.jane"]) == 1  # once only
    assert "no pending role request" in capsys.readouterr().err
    assert roles_of(env, c.uid) == {"billing_clerk", "payment_processor"}
    with env.owner() as conn:
        actor = conn.execute("SELECT actor FROM audit.events WHERE action = 'role.approve'").fetchone()
    assert actor == ("operator:ops.jane",)
