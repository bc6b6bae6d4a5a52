"""Staff authentication, sessions, CSRF, training gate and settings."""

import hashlib
from pathlib import Path

import pytest
from apphelpers import PASSWORD, Env, StaffClient
from fastapi.testclient import TestClient

from app_stub.core.config import DEV_SECRET, Settings, SettingsError


def audit_actions(env: Env) -> list[tuple[str, str, str]]:
    with env.owner() as conn:
        return [tuple(r) for r in conn.execute("SELECT action, target, outcome FROM audit.events ORDER BY seq")]


@pytest.mark.control("MFA-01")
def test_every_account_must_enrol_totp_before_any_access(env: Env) -> None:
    uid = env.svc.staff.create_user("newbie", PASSWORD, must_change=False)
    c = StaffClient(env, env.client(), uid, "newbie")
    r = c.login()
    assert r.json()["stage"] == "enrol"
    assert c.get("/api/me").status_code == 401  # password alone gives nothing
    assert c.get("/").headers.get("location") is None or True
    html = c.http.get("/", follow_redirects=False)
    assert html.status_code == 303 and html.headers["location"] == "/mfa/enrol"
    c.login_and_enrol()
    assert c.get("/api/me").status_code == 200
    # next login: password, then TOTP is required
    c2 = StaffClient(env, env.client(), uid, "newbie")
    c2.secret = c.secret
    assert c2.login().json()["stage"] == "mfa"
    assert c2.get("/api/me").status_code == 401
    assert c2.mfa("000000").status_code == 401
    assert c2.mfa(c2.code()).json()["stage"] == "full"
    assert c2.get("/api/me").status_code == 200


@pytest.mark.control("MFA-05")
def test_recovery_codes_are_single_use_and_stored_hashed(env: Env) -> None:
    c = env.staff("rita", "auditor")
    assert len(c.recovery) == 10
    with env.owner() as conn:
        stored = {r[0] for r in conn.execute("SELECT code_hash FROM staff.recovery_codes WHERE user_id = %s", (c.uid,))}
    assert not stored & set(c.recovery)
    assert hashlib.sha256(c.recovery[0].encode()).hexdigest() in stored
    code = c.recovery[0]
    c.login()
    assert c.mfa(code).status_code == 200
    c.login()
    r = c.mfa(code)
    assert r.status_code == 401 and "invalid MFA code" in r.text


@pytest.mark.control("MFA-06")
def test_passwords_are_hashed_with_argon2id(env: Env) -> None:
    uid = env.svc.staff.create_user("hashy", PASSWORD, must_change=False)
    with env.owner() as conn:
        (h,) = conn.execute("SELECT password_hash FROM staff.users WHERE id = %s", (uid,)).fetchone()
    assert h.startswith("$argon2id$") and PASSWORD not in h
    assert env.svc.auth.ph.verify(h, PASSWORD)
    prod = Settings()
    assert (prod.argon2_time_cost, prod.argon2_memory_kib, prod.argon2_lanes) == (3, 65536, 4)


@pytest.mark.control("HRD-02")
@pytest.mark.parametrize(
    ("password", "message"),
    [("Short-pw-1", "at least 12"), ("no-digits-in-this-one", "letters and digits"), ("123456789012345", "letters")],
)
def test_password_policy_rejects_weak_passwords(env: Env, password: str, message: str) -> None:
    admin = env.staff("admin", "admin")
    r = admin.post("/api/users", json={"username": "weakling", "password": password})
    assert r.status_code == 400 and message in r.json()["detail"]


@pytest.mark.control("HRD-02")
def test_password_history_and_expiry(env: Env) -> None:
    c = env.staff("hist", "auditor")
    news = [f"Another-pass-{i}23456" for i in range(4)]
    cur = PASSWORD
    for n in news:
        r = c.post("/api/password", json={"old_password": cur, "new_password": n})
        assert r.status_code == 200, r.text
        cur = n
    # the last four (including the current one) are refused; the fifth back is allowed again
    r = c.post("/api/password", json={"old_password": cur, "new_password": news[0]})
    assert r.status_code == 400 and "last 4" in r.json()["detail"]
    assert c.post("/api/password", json={"old_password": cur, "new_password": PASSWORD}).status_code == 200
    # after 90 days the password must be changed before anything else
    env.clock.advance(days=91)
    c.login()
    assert c.mfa(c.code()).json()["stage"] == "password"
    assert c.get("/api/me").status_code == 401
    c.post("/api/password", json={"old_password": PASSWORD, "new_password": "Fresh-password-99"}).raise_for_status()
    assert c.get("/api/me").status_code == 200


@pytest.mark.control("HRD-03", "LOG-07")
def test_lockout_after_ten_failures_for_thirty_minutes(env: Env) -> None:
    c = env.staff("lock", "auditor")
    for _ in range(10):
        assert c.login("Wrong-password-1").status_code == 401
    r = c.login()  # the right password no longer helps
    assert r.status_code == 423 and "locked" in r.json()["detail"]
    env.clock.advance(minutes=29)
    assert c.login().status_code == 423
    env.clock.advance(minutes=2)
    assert c.login().status_code == 200
    actions = audit_actions(env)
    assert ("auth.login", f"user:{c.uid}", "failure") in actions
    assert ("auth.lockout", f"user:{c.uid}", "ok") in actions
    assert ("auth.login", f"user:{c.uid}", "refused-locked") in actions


@pytest.mark.control("HRD-04")
def test_idle_session_ends_after_fifteen_minutes(env: Env) -> None:
    c = env.staff("idle", "auditor")
    env.clock.advance(minutes=14)
    assert c.get("/api/me").status_code == 200  # activity resets the idle timer
    env.clock.advance(minutes=14, seconds=59)
    assert c.get("/api/me").status_code == 200
    env.clock.advance(minutes=15, seconds=1)
    assert c.get("/api/me").status_code == 401
    assert ("auth.session_timeout", f"user:{c.uid}", "ok") in audit_actions(env)


@pytest.mark.control("APP-01")
def test_session_cookie_is_secure_httponly_samesite_and_csrf_enforced(env: Env) -> None:
    uid = env.svc.staff.create_user("cookie", PASSWORD, must_change=False)
    client = env.client()
    r = client.post("/api/login", json={"username": "cookie", "password": PASSWORD})
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("__Host-billkit_session=")
    low = cookie.lower()
    assert "secure" in low and "httponly" in low and "samesite=strict" in low and "path=/" in low
    assert "domain=" not in low
    c = StaffClient(env, client, uid, "cookie")
    c.csrf = r.json()["csrf_token"]
    assert client.post("/api/mfa/enrol").status_code == 403  # no CSRF token
    assert client.post("/api/mfa/enrol", headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert c.post("/api/mfa/enrol").status_code == 200
    # full authentication renews the session id: the pre-MFA cookie is worth nothing afterwards
    before = client.cookies.get("__Host-billkit_session")
    uri = c.post("/api/mfa/enrol").json()["otpauth_uri"]
    c.secret = uri.split("secret=")[1].split("&")[0]
    r = c.post("/api/mfa/enrol/confirm", json={"code": c.code()})
    assert r.status_code == 200
    after = client.cookies.get("__Host-billkit_session")
    assert after and after != before
    stale = TestClient(env.app, base_url="https://testserver", cookies={"__Host-billkit_session": before or ""})
    assert stale.get("/api/me").status_code == 401
    # the login form carries a CSRF token bound to a cookie
    anon = env.client()
    page = anon.get("/login")
    assert 'name="csrf_token"' in page.text
    r = anon.post("/login", data={"username": "cookie", "password": PASSWORD, "csrf_token": "wrong"})
    assert r.status_code == 403


@pytest.mark.control("EDU-01")
def test_roles_need_current_training_and_lapse_on_expiry(env: Env) -> None:
    c = env.staff("trainee", "billing_clerk", train=False)
    me = c.get("/api/me").json()
    assert me["granted_roles"] == ["billing_clerk"] and me["roles"] == []
    r = c.get("/api/customers")
    assert r.status_code == 403 and "training" in r.json()["detail"]
    c.post("/api/training/acknowledge").raise_for_status()
    assert c.get("/api/customers").status_code == 200
    env.clock.advance(days=366)  # the acknowledgement expires (session idle too: log in again)
    c.login()
    c.mfa(c.code())
    c.post("/api/password", json={"old_password": PASSWORD, "new_password": "Renewed-password-7"})
    assert c.get("/api/customers").status_code == 403
    # a new training version also suspends roles
    c.post("/api/training/acknowledge").raise_for_status()
    assert c.get("/api/customers").status_code == 200
    env.settings.training_version = "2099.1"
    assert c.get("/api/customers").status_code == 403


@pytest.mark.control("RBAC-02", "MFA-04", "LOG-07")
def test_role_grants_need_step_up_mfa_and_are_audited(env: Env) -> None:
    admin = env.staff("admin", "admin")
    uid = env.svc.staff.create_user("target", PASSWORD, must_change=False)
    r = admin.post(f"/api/users/{uid}/roles", json={"role": "auditor"})
    assert r.status_code == 401 and "step-up" in r.json()["detail"]
    r = admin.post(f"/api/users/{uid}/roles", json={"role": "auditor"}, headers={"X-Step-Up-Code": "123456"})
    assert r.status_code == 401
    with env.owner() as conn:
        assert conn.execute("SELECT count(*) FROM staff.user_roles WHERE user_id = %s", (uid,)).fetchone() == (0,)
    r = admin.post(f"/api/users/{uid}/roles", json={"role": "auditor"}, headers={"X-Step-Up-Code": admin.code()})
    assert r.status_code == 200, r.text
    code = admin.code()
    r = admin.delete(f"/api/users/{uid}/roles/auditor", headers={"X-Step-Up-Code": code})
    assert r.status_code == 200
    # a code is good once only
    r = admin.post(f"/api/users/{uid}/roles", json={"role": "auditor"}, headers={"X-Step-Up-Code": code})
    assert r.status_code == 401
    actions = audit_actions(env)
    assert ("role.grant", f"user:{uid}", "ok") in actions and ("role.revoke", f"user:{uid}", "ok") in actions
    assert ("auth.step_up", "role.grant", "missing") in actions


@pytest.mark.control("LOG-07")
def test_authentication_and_sensitive_reads_are_audited(env: Env) -> None:
    c = env.staff("reader", "billing_clerk")
    cid = c.post("/api/customers", json={"name": "Bo", "email": "bo@example.org", "address": "x"}).json()["id"]
    c.get(f"/api/customers/{cid}")
    c.post("/api/logout")
    actions = {a for a, _, _ in audit_actions(env)}
    assert {
        "auth.password",
        "auth.mfa_enrol",
        "training.acknowledge",
        "customer.create",
        "customer.read",
        "auth.logout",
    } <= actions


@pytest.mark.control("CMP-03")
def test_settings_refuse_default_secrets_outside_development() -> None:
    base = {"database_url": "host=db sslmode=verify-full", "tokenizer_database_url": "host=db sslmode=verify-full"}
    with pytest.raises(SettingsError, match="SESSION_SECRET"):
        Settings(environment="production", **base).validate()
    with pytest.raises(SettingsError, match="VAULT_SECRET_ID"):
        Settings(environment="production", session_secret="x" * 40, **base).validate()
    ok = Settings(
        environment="production",
        session_secret="s" * 40,
        vault_role_id="r",
        vault_secret_id="s",  # noqa: S106
        vault_processor_role_id="r",
        vault_processor_secret_id="s",  # noqa: S106
        database_vault_role="billing-app",
        tokenizer_vault_role="billing-tokenizer",
        **base,
    )
    ok.validate()
    with pytest.raises(SettingsError, match="encryption"):
        Settings(**{**ok.__dict__, "pii_encryption": False}).validate()
    Settings(environment="development", session_secret=DEV_SECRET, **base).validate()  # allowed only here


@pytest.mark.control("CMP-03", "HRD-02", "HRD-03", "HRD-04")
def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BILLKIT_APP_ENVIRONMENT", "production")
    monkeypatch.setenv("BILLKIT_APP_DATABASE_URL", "host=db sslmode=verify-full")
    monkeypatch.setenv("BILLKIT_APP_TOKENIZER_DATABASE_URL", "host=db sslmode=verify-full")
    monkeypatch.setenv("BILLKIT_APP_PII_ENCRYPTION", "false")
    monkeypatch.setenv("BILLKIT_APP_MAX_FAILED_LOGINS", "6")
    monkeypatch.setenv("BILLKIT_APP_LOCKOUT", "600")
    monkeypatch.setenv("BILLKIT_APP_IDLE_TIMEOUT", "600")
    secret = tmp_path / "session-secret"  # a setting from a file (systemd's LoadCredential=)
    secret.write_text("f" * 40 + "\n")
    monkeypatch.setenv("BILLKIT_APP_SESSION_SECRET_FILE", str(secret))
    s = Settings.from_env()
    assert s.session_secret == "f" * 40
    assert (s.environment, s.pii_encryption, s.max_failed_logins) == ("production", False, 6)
    assert s.idle_timeout.total_seconds() == 600
    with pytest.raises(SettingsError, match="30 minutes.*encryption.*dynamic credentials"):
        s.validate()
    monkeypatch.setenv("BILLKIT_APP_SESSION_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="SESSION_SECRET_FILE: cannot read"):
        Settings.from_env()
    from app_stub.main import create_app

    with pytest.raises(SettingsError):
        create_app()  # the factory refuses to build an unsafe app


@pytest.mark.control("MFA-01", "HRD-02", "EDU-01")
def test_first_admin_must_enrol_change_password_and_train(env: Env) -> None:
    from app_stub.services.staff import AppError, bootstrap_admin

    dsn = env.services.owner_dsn(env.dbname)
    with env.owner() as conn:
        conn.execute("DELETE FROM staff.password_history")
        conn.execute("DELETE FROM staff.users")
    password = bootstrap_admin(dsn, "root-admin", env.settings)
    with pytest.raises(AppError, match="only once"):
        bootstrap_admin(dsn, "second", env.settings)
    uid = env.svc.staff.staff_id("root-admin")
    c = StaffClient(env, env.client(), uid, "root-admin")
    assert c.login(password).json()["stage"] == "enrol"
    uri = c.post("/api/mfa/enrol").json()["otpauth_uri"]
    c.secret = uri.split("secret=")[1].split("&")[0]
    r = c.post("/api/mfa/enrol/confirm", json={"code": c.code()})
    assert r.json()["stage"] == "password"  # the one-time password must be replaced
    c.csrf = r.json()["csrf_token"]
    assert c.get("/api/users").status_code == 401
    c.post("/api/password", json={"old_password": password, "new_password": "Admin-own-pass-2026"}).raise_for_status()
    assert c.get("/api/users").status_code == 403  # training first
    c.post("/api/training/acknowledge").raise_for_status()
    assert c.get("/api/users").status_code == 200
