"""The app's security counters (MON): they move only with committed audit records, through the real
audit path, and an attacker's actions show up in them."""

from __future__ import annotations

from typing import Any

import pytest
from apphelpers import PASSWORD, Env
from prometheus_client import generate_latest

from app_stub import metrics


def _value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def _record(action: str, outcome: str = "ok", **extra: Any) -> dict[str, Any]:
    return {"actor": extra.pop("actor", "user:7"), "action": action, "target": extra.pop("target", "-"),
            "outcome": outcome, "detail": extra}  # fmt: skip


# One series per counter: what each event of the test below must move by exactly one.
WATCHED = {
    "login": ("billkit_app_login_failures_total", {"stage": "login", "outcome": "failure"}),
    "mfa": ("billkit_app_login_failures_total", {"stage": "mfa", "outcome": "failure"}),
    "lock": ("billkit_app_lockouts_total", {}),
    "step": ("billkit_app_step_up_failures_total", {"outcome": "missing"}),
    "detok": ("billkit_app_detokenizations_total", {"actor": "user:9"}),
    "grant": ("billkit_app_role_changes_total", {"change": "grant", "role": "billing-admin", "outcome": "ok"}),
    "denied": ("billkit_app_access_denied_total", {"permission": "card.detokenize"}),
    "pay_refused": ("billkit_app_payments_total", {"outcome": "refused"}),
    "pay_ok": ("billkit_app_payments_total", {"outcome": "succeeded"}),
}


def _watched() -> dict[str, float]:
    return {key: _value(name, **labels) for key, (name, labels) in WATCHED.items()}


@pytest.mark.control("MON-03", "LOG-07")
def test_each_security_event_moves_its_counter() -> None:
    before = _watched()
    metrics.observe([
        _record("auth.login", "failure"), _record("auth.mfa", "failure"), _record("auth.lockout"),
        _record("auth.step_up", "missing"), _record("card.detokenize", actor="user:9"),
        _record("role.grant", role="billing-admin"), _record("access.denied", "refused", target="card.detokenize"),
        _record("payment.start", "refused"), _record("payment.succeeded"),
    ])  # fmt: skip
    after = _watched()
    assert {k: after[k] - before[k] for k in before} == dict.fromkeys(before, 1.0)


@pytest.mark.control("MON-03")
def test_successes_are_not_counted_as_failures() -> None:
    before = (_value("billkit_app_login_failures_total", stage="login", outcome="ok"),
              _value("billkit_app_step_up_failures_total", outcome="ok"))  # fmt: skip
    metrics.observe([_record("auth.login"), _record("auth.step_up")])
    after = (_value("billkit_app_login_failures_total", stage="login", outcome="ok"),
             _value("billkit_app_step_up_failures_total", outcome="ok"))  # fmt: skip
    assert before == after == (0.0, 0.0)


@pytest.mark.control("MON-03", "TOK-01")
def test_the_exposition_names_no_card_number_or_password() -> None:
    metrics.observe([_record("card.detokenize", actor="user:3", target="card:tok_x", pan="4111111111111111")])
    text = generate_latest(metrics.REGISTRY).decode()
    assert "billkit_app_detokenizations_total" in text
    assert "4111111111111111" not in text and "tok_x" not in text


@pytest.mark.control("MFA-04", "MON-01", "MON-03")
def test_guessing_step_up_codes_through_the_api_moves_the_counters_as_the_audit_log_does(env: Env) -> None:
    fails, locks = _value("billkit_app_step_up_failures_total", outcome="failure"), _value("billkit_app_lockouts_total")
    guesser = env.staff("guesser", "admin")
    target = env.svc.staff.create_user("guessed-for", PASSWORD, must_change=False)
    for _ in range(12):
        code = f"{(int(guesser.code()) + 1) % 10**6:06d}"  # never the right one
        guesser.post(f"/api/users/{target}/roles", json={"role": "auditor"}, headers={"X-Step-Up-Code": code})
    with env.owner() as conn:
        logged = conn.execute(
            "SELECT count(*) FILTER (WHERE action = 'auth.step_up' AND outcome = 'failure'), "
            "count(*) FILTER (WHERE action = 'auth.lockout') FROM audit.events WHERE actor IN (%s, 'system') "
            "AND (actor = %s OR target = %s)",
            (f"user:{guesser.uid}", f"user:{guesser.uid}", f"user:{guesser.uid}"),
        ).fetchone()
    assert logged is not None and logged[0] > 0 and logged[1] == 1, logged
    assert _value("billkit_app_step_up_failures_total", outcome="failure") - fails == logged[0]
    assert _value("billkit_app_lockouts_total") - locks == logged[1]
