"""What an attacker tries against staff authentication: guessing step-up codes and old passwords,
changing the password before the second factor, racing one code twice, keeping a session alive
for ever or after the password changed, and telling accounts apart by the answers."""

import threading
import time

import pytest
from apphelpers import PASSWORD, Env, StaffClient
from fastapi.testclient import TestClient


def audit_actions(env: Env) -> list[tuple[str, str, str]]:
    with env.owner() as conn:
        return [tuple(r) for r in conn.execute("SELECT action, target, outcome FROM audit.events ORDER BY seq")]


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def failed_attempts(env: Env, uid: int) -> int:
    with env.owner() as conn:
        return conn.execute("SELECT failed_attempts FROM staff.users WHERE id = %s", (uid,)).fetchone()[0]


@pytest.mark.control("MFA-04", "HRD-03", "LOG-07")
def test_step_up_codes_cannot_be_guessed_without_limit(env: Env) -> None:
    admin = env.staff("admin", "admin")
    target = env.svc.staff.create_user("target", PASSWORD, must_change=False)
    grant = f"/api/users/{target}/roles"
    for i in range(10):
        r = admin.post(grant, json={"role": "auditor"}, headers={"X-Step-Up-Code": wrong(admin.code())})
        assert r.status_code in (401, 423), r.text
        assert failed_attempts(env, admin.uid) == i + 1 or r.status_code == 423
    # locked: even the valid code is refused, and nothing was granted
    r = admin.post(grant, json={"role": "auditor"}, headers={"X-Step-Up-Code": admin.code()})
    assert r.status_code == 423 and "locked" in r.json()["detail"]
    with env.owner() as conn:
        assert conn.execute("SELECT count(*) FROM staff.user_roles WHERE user_id = %s", (target,)).fetchone() == (0,)
    assert admin.login().status_code == 423  # the same lockout as the login's
    actions = audit_actions(env)
    assert actions.count(("auth.step_up", "role.grant", "failure")) >= 9
    assert ("auth.lockout", f"user:{admin.uid}", "ok") in actions


@pytest.mark.control("MFA-04", "HRD-03")
def test_login_and_step_up_failures_share_one_counter(env: Env) -> None:
    admin = env.staff("admin", "admin")
    target = env.svc.staff.create_user("target", PASSWORD, must_change=False)
    probe = StaffClient(env, env.client(), admin.uid, "admin")
    for _ in range(5):
        assert probe.login("Wrong-password-1").status_code == 401
    for _ in range(5):
        admin.post(f"/api/users/{target}/roles", json={"role": "auditor"}, headers={"X-Step-Up-Code": "000000"})
    assert probe.login().status_code == 423


@pytest.mark.control("MFA-04")
def test_one_step_up_code_raced_twice_is_accepted_once(env: Env) -> None:
    admin = env.staff("admin", "admin")
    targets = [env.svc.staff.create_user(f"target{i}", PASSWORD) for i in range(4)]
    code = admin.code()
    results: list[int] = []
    barrier = threading.Barrier(len(targets))

    def go(uid: int) -> None:
        c = TestClient(env.app, base_url="https://testserver", cookies=dict(admin.http.cookies))
        barrier.wait()
        r = c.post(
            f"/api/users/{uid}/roles",
            json={"role": "auditor"},
            headers={"X-CSRF-Token": admin.csrf, "X-Step-Up-Code": code},
        )
        results.append(r.status_code)

    threads = [threading.Thread(target=go, args=(uid,)) for uid in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results).count(200) == 1, results
    with env.owner() as conn:
        assert conn.execute("SELECT count(*) FROM staff.user_roles WHERE user_id = ANY(%s)", (targets,)).fetchone() == (
            1,
        )


@pytest.mark.control("MFA-01")
@pytest.mark.parametrize("stage", ["enrol", "mfa"])
def test_password_cannot_change_before_the_second_factor(env: Env, stage: str) -> None:
    c = env.staff("victim", "auditor")
    if stage == "enrol":
        uid = env.svc.staff.create_user("fresh", PASSWORD, must_change=False)
        c = StaffClient(env, env.client(), uid, "fresh")
    r = c.login()  # a stolen password: stage mfa (or enrol), never past it
    assert r.json()["stage"] == stage
    new = "Attacker-chosen-77"
    r = c.post("/api/password", json={"old_password": PASSWORD, "new_password": new})
    assert r.status_code == 401 and "MFA" in r.json()["detail"]
    # the same through the UI's form
    r = c.http.post(
        "/password",
        data={"old_password": PASSWORD, "new_password": new, "csrf_token": c.csrf},
        follow_redirects=False,
    )
    assert r.status_code in (303, 401) and r.headers.get("location", "/login") != "/"
    assert StaffClient(env, env.client(), c.uid, c.username).login(new).status_code == 401
    assert StaffClient(env, env.client(), c.uid, c.username).login(PASSWORD).status_code == 200


@pytest.mark.control("HRD-03", "LOG-07")
def test_wrong_old_passwords_count_toward_lockout_and_are_audited(env: Env) -> None:
    c = env.staff("victim", "auditor")
    for _ in range(10):
        r = c.post("/api/password", json={"old_password": "Guessed-wrong-11", "new_password": "Attacker-chosen-77"})
        assert r.status_code in (401, 423)
    r = c.post("/api/password", json={"old_password": PASSWORD, "new_password": "Attacker-chosen-77"})
    assert r.status_code == 423
    assert c.login().status_code == 423
    actions = audit_actions(env)
    assert actions.count(("auth.password_change", f"user:{c.uid}", "failure")) >= 9
    assert ("auth.lockout", f"user:{c.uid}", "ok") in actions


@pytest.mark.control("APP-01", "HRD-04")
def test_sessions_have_an_absolute_lifetime(env: Env) -> None:
    c = env.staff("worker", "auditor")
    limit = env.settings.session_max_age
    elapsed = 0.0
    while elapsed + 600 < limit.total_seconds():
        env.clock.advance(seconds=600)  # active every 10 minutes: never idle
        elapsed += 600
        assert c.get("/api/me").status_code == 200
    env.clock.advance(seconds=limit.total_seconds() - elapsed + 1)
    assert c.get("/api/me").status_code == 401
    assert ("auth.session_expired", f"user:{c.uid}", "ok") in audit_actions(env)


@pytest.mark.control("APP-01", "HRD-02")
def test_a_password_change_ends_the_other_sessions(env: Env) -> None:
    c = env.staff("owner", "auditor")
    thief = StaffClient(env, TestClient(env.app, base_url="https://testserver"), c.uid, c.username)
    thief.secret = c.secret
    thief.login()
    thief.mfa(thief.code())
    assert thief.get("/api/me").status_code == 200
    r = c.post("/api/password", json={"old_password": PASSWORD, "new_password": "Brand-new-pass-31"})
    assert r.status_code == 200, r.text
    assert thief.get("/api/me").status_code == 401
    assert c.get("/api/me").status_code == 200  # the session that changed it goes on, with a new id
    assert c.post("/api/training/acknowledge").status_code == 200


@pytest.mark.control("HRD-03")
def test_locked_and_unknown_accounts_answer_alike(env: Env) -> None:
    """After ten failures an unknown name answers exactly as a locked account does (no enumeration)."""
    c = env.staff("real", "auditor")
    ghost = StaffClient(env, env.client(), 0, "no-such-user")
    answers = {}
    for who in (c, ghost):
        codes = [who.login("Wrong-password-1").status_code for _ in range(10)]
        after = who.login("Wrong-password-1")
        answers[who.username] = (codes, after.status_code, after.json()["detail"])
    assert answers["real"] == answers["no-such-user"]
    # timing: the unknown name costs the same argon2 work as a real one (best of five, interleaved,
    # so the machine's load falls on both alike)
    env.svc.staff.create_user("real3", PASSWORD)
    unknown, known = [], []
    for _ in range(5):
        for name, out in (("other-ghost", unknown), ("real3", known)):
            t0 = time.perf_counter()
            StaffClient(env, env.client(), 0, name).login("Wrong-password-1")
            out.append(time.perf_counter() - t0)
    assert 0.5 < min(unknown) / min(known) < 2, (unknown, known)


@pytest.mark.control("HRD-03")
def test_a_flood_of_logins_waits_for_a_hashing_slot_then_gets_503(env: Env) -> None:
    """Each argon2id hash holds its memory: unauthenticated clients cannot make the app hash without bound."""
    env.staff("busy", "auditor")
    hasher = env.svc.auth.ph
    hasher._wait = 0.2
    taken = 0
    while hasher._slots.acquire(blocking=False):
        taken += 1
    try:
        assert taken == env.settings.argon2_concurrency
        r = StaffClient(env, env.client(), 0, "busy").login()
        assert r.status_code == 503 and "try again" in r.json()["detail"]
    finally:
        for _ in range(taken):
            hasher._slots.release()
    assert StaffClient(env, env.client(), 0, "busy").login().status_code == 200


@pytest.mark.control("HRD-04", "APP-01")
def test_abandoned_sessions_do_not_pile_up(env: Env) -> None:
    """Sessions never presented again (closed tabs, an attacker's logins stopped at MFA) go at the next login."""
    c = env.staff("tabs", "auditor")
    for _ in range(5):
        assert c.login().status_code == 200  # stage mfa, then abandoned
    env.clock.advance(minutes=16)
    assert c.login().status_code == 200
    with env.owner() as conn:
        assert conn.execute("SELECT count(*) FROM staff.sessions WHERE user_id = %s", (c.uid,)).fetchone() == (1,)
