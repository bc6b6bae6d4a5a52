"""Billing: invoices, credit notes, payments (idempotency, crash recovery), bad input."""

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from apphelpers import CUSTOMER, VISA, Env, Services, StaffClient, build_env, close_env, issued_invoice
from fastapi.testclient import TestClient

from app_stub.service import Staff
from app_stub.tokenization import validate_card
from app_stub.web import build_core

LINES = [
    {"description": "Consulting", "quantity": 3, "unit_price_minor": 12_345, "tax_rate_bp": 2000},
    {"description": "Book", "quantity": 1, "unit_price_minor": 999, "tax_rate_bp": 550},
]


def counts(env: Env) -> tuple[int, ...]:
    with env.owner() as conn:
        return tuple(
            conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608
            for t in (
                "billing.customers",
                "billing.invoices",
                "billing.invoice_lines",
                "billing.payments",
                "billing.cards",
                "billing.credit_notes",
                "cardvault.pans",
            )
        )


@pytest.mark.control("APP-02")
def test_invoice_totals_states_and_credit_notes(clerk: StaffClient) -> None:
    cid = clerk.post("/api/customers", json=CUSTOMER).json()["id"]
    inv = clerk.post("/api/invoices", json={"customer_id": cid, "currency": "EUR", "lines": LINES}).json()
    assert inv["subtotal_minor"] == 3 * 12_345 + 999
    assert inv["tax_minor"] == 7407 + 55  # 20 % of 37035 = 7407; 5.5 % of 999 = 54.945 -> 55 (half up)
    assert inv["total_minor"] == inv["subtotal_minor"] + inv["tax_minor"] and inv["state"] == "draft"
    iid = inv["id"]
    r = clerk.post(f"/api/invoices/{iid}/credit-notes", json={"amount_minor": 100, "reason": "goodwill"})
    assert r.status_code == 409 and "draft" in r.json()["detail"]
    clerk.post(f"/api/invoices/{iid}/issue").raise_for_status()
    assert clerk.post(f"/api/invoices/{iid}/issue").status_code == 409
    clerk.post(
        f"/api/invoices/{iid}/credit-notes", json={"amount_minor": 1000, "reason": "goodwill"}
    ).raise_for_status()
    r = clerk.post(f"/api/invoices/{iid}/credit-notes", json={"amount_minor": 10**9, "reason": "too much"})
    assert r.status_code == 409
    pay = clerk.post(
        f"/api/invoices/{iid}/payments",
        json={"card": {"number": VISA, "exp_month": 1, "exp_year": 2031}},
        headers={"Idempotency-Key": "tot-0001-abc"},
    ).json()
    assert pay["amount_minor"] == inv["total_minor"] - 1000
    got = clerk.get(f"/api/invoices/{iid}").json()
    assert got["state"] == "paid" and got["balance_minor"] == 0
    assert clerk.post(f"/api/invoices/{iid}/void").status_code == 409


@pytest.mark.control("APP-02")
@pytest.mark.parametrize(
    ("url", "body", "status", "message"),
    [
        ("/api/customers", {"name": "", "email": "a@b.cd", "address": "x"}, 422, "name"),
        ("/api/customers", {"name": "A", "email": "not-an-email", "address": "x"}, 422, "email"),
        ("/api/customers", {"name": "A\x00B", "email": "a@b.cd", "address": "x"}, 422, "name"),
        ("/api/customers", {"name": "A" * 5000, "email": "a@b.cd", "address": "x"}, 422, "name"),
        ("/api/invoices", {"customer_id": 1, "currency": "euro", "lines": LINES}, 422, "currency"),
        ("/api/invoices", {"customer_id": 1, "currency": "EUR", "lines": []}, 422, "lines"),
        (
            "/api/invoices",
            {"customer_id": 1, "currency": "EUR", "lines": [{**LINES[0], "quantity": -1}]},
            422,
            "quantity",
        ),
        (
            "/api/invoices",
            {"customer_id": 1, "currency": "EUR", "lines": [{**LINES[0], "unit_price_minor": 10**30}]},
            422,
            "unit_price_minor",
        ),
        ("/api/invoices", {"customer_id": 999999, "currency": "EUR", "lines": LINES}, 404, "no customer"),
        ("/api/invoices", "not json at all", 422, "invalid input"),
        ("/api/invoices/999999/issue", None, 404, "no invoice"),
        ("/api/invoices/abc/issue", None, 422, "iid"),
        ("/api/invoices/99999999999999999999999/issue", None, 404, "no invoice"),
    ],
)
def test_bad_input_gets_a_clear_4xx_and_writes_nothing(
    env: Env, clerk: StaffClient, url: str, body: object, status: int, message: str
) -> None:
    clerk.post("/api/customers", json=CUSTOMER).raise_for_status()
    before = counts(env)
    if isinstance(body, str):
        r = clerk.post(url, content=body, headers={"Content-Type": "application/json"})
    else:
        r = clerk.post(url, json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    assert counts(env) == before


@pytest.mark.control("APP-02")
def test_failure_midway_leaves_nothing_half_written(env: Env, clerk: StaffClient) -> None:
    cid = clerk.post("/api/customers", json=CUSTOMER).json()["id"]
    before = counts(env)
    # the second line breaks a database constraint after the invoice row was inserted: all rolls back
    bad = [LINES[0], {**LINES[1], "description": "x" * 150, "tax_rate_bp": 10_000}, LINES[0]]
    with env.owner() as conn:
        conn.execute("ALTER TABLE billing.invoice_lines ADD CONSTRAINT short_desc CHECK (length(description) < 100)")
    r = clerk.post("/api/invoices", json={"customer_id": cid, "currency": "EUR", "lines": bad})
    assert r.status_code == 409 and "conflicts" in r.json()["detail"]
    assert counts(env) == before


@pytest.mark.control("APP-03")
def test_retried_payment_charges_once(env: Env, clerk: StaffClient) -> None:
    iid = issued_invoice(clerk)
    req = {
        "json": {"card": {"number": VISA, "exp_month": 1, "exp_year": 2031}},
        "headers": {"Idempotency-Key": "k-12345678"},
    }
    first = clerk.post(f"/api/invoices/{iid}/payments", **req).json()
    again = clerk.post(f"/api/invoices/{iid}/payments", **req).json()
    assert first["id"] == again["id"] and again["replayed"] is True
    assert env.gateway.charges == 1
    r = clerk.post(f"/api/invoices/{iid}/payments", **{**req, "headers": {"Idempotency-Key": "k-other-123"}})
    assert r.status_code == 409 and "only issued invoices" in r.json()["detail"]
    assert env.gateway.charges == 1
    other = issued_invoice(clerk)
    r = clerk.post(f"/api/invoices/{other}/payments", **req)
    assert r.status_code == 409 and "Idempotency-Key" in r.json()["detail"]
    assert clerk.post(f"/api/invoices/{other}/payments", json=req["json"]).status_code == 400  # no key


@pytest.mark.control("APP-03")
def test_crash_between_charge_and_record_loses_nothing_and_charges_once(env: Env, clerk: StaffClient) -> None:
    iid = issued_invoice(clerk, total=4200)

    class Crash(BaseException):
        pass

    def crash() -> None:
        raise Crash

    env.core.hooks.after_charge = crash
    with env.core.tx() as conn:
        staff: Staff = env.core.staff(conn, clerk.uid)
    from app_stub.tokenization import validate_card

    card = validate_card(VISA, 1, 2031, env.clock().date())
    with pytest.raises(Crash):
        env.core.pay(staff, iid, "crash-key-0001", card, None)
    assert env.gateway.charges == 1  # the gateway charged...
    with env.owner() as conn:  # ...and the payment is recorded as pending, not lost
        assert conn.execute("SELECT status FROM billing.payments").fetchall() == [("pending",)]
    env.core.hooks.after_charge = lambda: None
    # the client retries with the same key: completes, no second charge
    r = clerk.post(
        f"/api/invoices/{iid}/payments",
        json={"card": {"number": VISA, "exp_month": 1, "exp_year": 2031}},
        headers={"Idempotency-Key": "crash-key-0001"},
    )
    assert r.status_code == 200 and r.json()["status"] == "succeeded"
    assert env.gateway.charges == 1
    assert clerk.get(f"/api/invoices/{iid}").json()["state"] == "paid"
    # the recovery sweep finds nothing left to do, and does not charge again
    with pytest.raises(Crash):
        other = issued_invoice(clerk, total=100)
        env.core.hooks.after_charge = crash
        env.core.pay(staff, other, "crash-key-0002", card, None)
    env.core.hooks.after_charge = lambda: None
    assert env.core.recover_pending_payments() == 0  # still within the grace period: maybe in flight
    env.clock.advance(seconds=env.settings.payment_recovery_grace.total_seconds() + 1)
    assert env.core.recover_pending_payments() == 1
    assert env.core.recover_pending_payments() == 0
    assert env.gateway.charges == 2
    assert clerk.get(f"/api/invoices/{other}").json()["state"] == "paid"


@pytest.mark.control("APP-03")
def test_declined_card_records_decline_and_leaves_invoice_open(clerk: StaffClient, env: Env) -> None:
    iid = issued_invoice(clerk)
    r = clerk.post(
        f"/api/invoices/{iid}/payments",
        json={"card": {"number": "4000000000000002", "exp_month": 1, "exp_year": 2031}},
        headers={"Idempotency-Key": "decline-0001"},
    )
    assert r.json()["status"] == "declined"
    assert clerk.get(f"/api/invoices/{iid}").json()["state"] == "issued"
    assert env.gateway.charges == 0
    # a declined payment holds nothing back: another card pays the whole balance
    r = clerk.post(
        f"/api/invoices/{iid}/payments",
        json={"card": {"number": VISA, "exp_month": 1, "exp_year": 2031}},
        headers={"Idempotency-Key": "decline-0002"},
    )
    assert r.json()["status"] == "succeeded" and r.json()["amount_minor"] == 1000
    assert env.gateway.charges == 1


@pytest.mark.control("APP-03")
def test_concurrent_retries_with_one_key_charge_once(env: Env, clerk: StaffClient) -> None:
    import threading

    from app_stub.service import AppError
    from app_stub.tokenization import validate_card

    iid = issued_invoice(clerk)
    with env.core.tx() as conn:
        staff = env.core.staff(conn, clerk.uid)
    card = validate_card(VISA, 1, 2031, env.clock().date())
    outcomes: list[str] = []

    def attempt() -> None:
        try:
            outcomes.append(env.core.pay(staff, iid, "same-key-racing", card, None)["status"])
        except AppError as exc:
            outcomes.append(f"{exc.status}")
        except Exception as exc:  # noqa: BLE001 - any other failure is a bug: record it for the assertion
            outcomes.append(f"error {exc!r}")

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert env.gateway.charges == 1
    assert "succeeded" in outcomes and set(outcomes) <= {"succeeded", "409"}
    with env.owner() as conn:
        assert conn.execute("SELECT count(*), min(status) FROM billing.payments").fetchone() == (1, "succeeded")
        assert conn.execute("SELECT paid_minor FROM billing.invoices WHERE id = %s", (iid,)).fetchone() == (1000,)


@pytest.mark.control("APP-03")
def test_payments_through_the_http_gateway_adapter_charge_once(env: Env, clerk: StaffClient) -> None:
    from fastapi.testclient import TestClient

    from app_stub.gateway import HttpGateway, fake_gateway_app

    remote = fake_gateway_app()
    env.core.gateway = HttpGateway(TestClient(remote, base_url="https://gateway.test"))
    iid = issued_invoice(clerk)
    req = {
        "json": {"card": {"number": VISA, "exp_month": 1, "exp_year": 2031}},
        "headers": {"Idempotency-Key": "http-12345"},
    }
    assert clerk.post(f"/api/invoices/{iid}/payments", **req).json()["status"] == "succeeded"
    assert clerk.post(f"/api/invoices/{iid}/payments", **req).json()["replayed"] is True
    assert remote.state.gateway.charges == 1


# --- pending payments count against the balance (issue 11, APP-03) ---------------------------


class Crash(BaseException):
    """A crash of the app between the gateway's charge and the recorded outcome."""


def as_staff(env: Env, c: StaffClient) -> Staff:
    with env.core.tx() as conn:
        return env.core.staff(conn, c.uid)


def crash_after_charge(env: Env, c: StaffClient, iid: int, key: str) -> None:
    """Pay ``iid`` with key ``key``; the gateway charges, then the app dies before recording the outcome."""

    def crash() -> None:
        raise Crash

    env.core.hooks.after_charge = crash
    try:
        with pytest.raises(Crash):
            env.core.pay(as_staff(env, c), iid, key, validate_card(VISA, 1, 2031, env.clock().date()), None)
    finally:
        env.core.hooks.after_charge = lambda: None


def charged(env: Env) -> int:
    """What the gateway took, in minor units, over every approved charge."""
    return sum(amount for result, _, amount, _ in env.gateway.ledger.values() if result.approved)


def invoice_row(env: Env, iid: int) -> tuple[str, int]:
    with env.owner() as conn:
        return conn.execute("SELECT state, paid_minor FROM billing.invoices WHERE id = %s", (iid,)).fetchone()


PAY_CARD = {"card": {"number": VISA, "exp_month": 1, "exp_year": 2031}}


@pytest.mark.control("APP-03")
def test_a_second_key_while_a_payment_is_pending_is_refused(env: Env, clerk: StaffClient) -> None:
    iid = issued_invoice(clerk, total=1200)
    crash_after_charge(env, clerk, iid, "pending-key-0001")
    assert env.gateway.charges == 1
    # a timed-out client retries with a new key: the first payment may already have charged the card
    r = clerk.post(f"/api/invoices/{iid}/payments", json=PAY_CARD, headers={"Idempotency-Key": "pending-key-0002"})
    assert r.status_code == 409 and "in progress" in r.json()["detail"], r.text
    # a reloaded invoice page carries a new key too: refused with a readable page, the invoice still shown
    form = {"csrf_token": clerk.csrf, "number": VISA, "exp_month": "1", "exp_year": "2031",
            "idempotency_key": "pending-ui-0003"}  # fmt: skip
    ui = clerk.post(f"/invoices/{iid}/pay", data=form)
    assert ui.status_code == 409 and "in progress" in ui.text and f"Invoice {iid}" in ui.text
    page = clerk.get(f"/invoices/{iid}").text
    assert "in progress" in page and 'name="number"' not in page  # no pay form while the charge is pending
    assert env.gateway.charges == 1
    # nor may a credit note or a void make room for the pending charge to overpay
    r = clerk.post(f"/api/invoices/{iid}/credit-notes", json={"amount_minor": 1, "reason": "goodwill"})
    assert r.status_code == 409 and "in progress" in r.json()["detail"], r.text
    assert clerk.post(f"/api/invoices/{iid}/void").status_code == 409
    # the first key's retry completes the payment: one charge, paid exactly once
    r = clerk.post(f"/api/invoices/{iid}/payments", json=PAY_CARD, headers={"Idempotency-Key": "pending-key-0001"})
    assert r.status_code == 200 and r.json()["status"] == "succeeded"
    assert env.gateway.charges == 1 and charged(env) == 1200
    assert invoice_row(env, iid) == ("paid", 1200)


@pytest.mark.control("APP-03")
def test_concurrent_payments_with_distinct_keys_charge_at_most_the_total(env: Env, clerk: StaffClient) -> None:
    iid = issued_invoice(clerk, total=1200)
    env.core.hooks.after_charge = lambda: time.sleep(0.3)  # hold the window between charge and record open
    clients = []
    for _ in range(8):  # eight browser tabs of the same clerk, each with its own key
        http = env.client()
        http.cookies = clerk.http.cookies
        clients.append(http)
    start, statuses = threading.Barrier(len(clients)), []

    def attempt(i: int, http: TestClient) -> None:
        start.wait()
        headers = {"X-CSRF-Token": clerk.csrf, "Idempotency-Key": f"race-key-{i:04d}"}
        try:
            statuses.append(http.post(f"/api/invoices/{iid}/payments", json=PAY_CARD, headers=headers).status_code)
        except Exception as exc:  # noqa: BLE001 - any other failure is a bug: record it for the assertion
            statuses.append(repr(exc))

    threads = [threading.Thread(target=attempt, args=(i, h)) for i, h in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    env.core.hooks.after_charge = lambda: None
    assert charged(env) == 1200 and env.gateway.charges == 1, statuses
    assert sorted(statuses, key=str) == [200] + [409] * 7
    assert invoice_row(env, iid) == ("paid", 1200)
    with env.owner() as conn:
        assert conn.execute("SELECT status, count(*) FROM billing.payments GROUP BY status").fetchall() == [
            ("succeeded", 1)
        ]
        # a refused request keeps no card number: the vault holds the one card that paid
        assert conn.execute("SELECT count(*) FROM cardvault.pans").fetchone() == (1,)


@pytest.mark.control("APP-03")
def test_the_schema_refuses_payments_and_credits_beyond_the_total(env: Env, clerk: StaffClient) -> None:
    iid = issued_invoice(clerk, total=1000)
    with env.owner() as conn:
        (valid,) = conn.execute(
            "SELECT convalidated FROM pg_constraint WHERE conname = 'invoices_paid_within_total'"
        ).fetchone()
        assert valid
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE billing.invoices SET paid_minor = 600, credited_minor = 500 WHERE id = %s", (iid,))


def wait_for(what: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def payment_status(env: Env, key: str) -> str:
    with env.owner() as conn:
        return conn.execute("SELECT status FROM billing.payments WHERE idempotency_key = %s", (key,)).fetchone()[0]


@pytest.fixture
def timer_env(services: Services) -> Iterator[Env]:
    """An app whose recovery timer runs every 0.2 s."""
    e = build_env(services, payment_recovery_interval=dt.timedelta(seconds=0.2))
    yield e
    close_env(e)


@pytest.mark.control("APP-03", "LOG-07")
def test_pending_payments_are_recovered_at_start_and_on_a_timer(timer_env: Env) -> None:
    env = timer_env
    clerk = env.staff("clerk", "billing_clerk")
    grace = env.settings.payment_recovery_grace.total_seconds()
    first = issued_invoice(clerk, total=1200)
    crash_after_charge(env, clerk, first, "start-key-0001")
    env.clock.advance(seconds=grace + 1)
    # the app (re)starts: its lifespan finishes what the crash left pending
    with TestClient(env.app, base_url="https://testserver"):
        recovery = env.app.state.recovery
        wait_for(lambda: payment_status(env, "start-key-0001") == "succeeded")
        # a payment younger than the grace period may still be in flight: the timer leaves it alone
        second = issued_invoice(clerk, total=500)
        crash_after_charge(env, clerk, second, "timer-key-0002")
        sweeps = recovery.sweeps
        wait_for(lambda: recovery.sweeps >= sweeps + 2)
        assert payment_status(env, "timer-key-0002") == "pending"
        env.clock.advance(seconds=grace + 1)
        wait_for(lambda: payment_status(env, "timer-key-0002") == "succeeded")
    assert not recovery.running  # the timer ends with the app
    assert env.gateway.charges == 2 and charged(env) == 1700
    assert invoice_row(env, first) == ("paid", 1200) and invoice_row(env, second) == ("paid", 500)
    with env.owner() as conn:
        events = conn.execute(
            "SELECT actor, detail->>'recovered' FROM audit.events WHERE action = 'payment.succeeded' ORDER BY seq"
        ).fetchall()
    assert events == [("system", "true"), ("system", "true")]


@pytest.mark.control("APP-03")
def test_two_hosts_recovering_at_once_charge_and_record_each_payment_once(env: Env, clerk: StaffClient) -> None:
    keys = [f"two-hosts-{i:04d}" for i in range(3)]
    for key in keys:
        crash_after_charge(env, clerk, issued_invoice(clerk, total=300), key)
    env.clock.advance(seconds=env.settings.payment_recovery_grace.total_seconds() + 1)
    other = build_core(env.settings, env.gateway)  # a second app host on the same database
    try:
        start, results = threading.Barrier(2), []
        for core in (env.core, other):
            core.hooks.after_charge = lambda: time.sleep(0.2)  # each sweep takes a while

        def sweep(core: object) -> None:
            start.wait()
            results.append(core.recover_pending_payments())  # type: ignore[attr-defined]

        threads = [threading.Thread(target=sweep, args=(c,)) for c in (env.core, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        other.pool.close()
        other.tokens.pool.close()
    assert sorted(results) == [0, 3]  # one host swept; the other found the sweep taken and skipped
    assert env.gateway.charges == 3 and all(payment_status(env, k) == "succeeded" for k in keys)
    with env.owner() as conn:
        assert conn.execute("SELECT count(*) FROM audit.events WHERE action = 'payment.succeeded'").fetchone() == (3,)
