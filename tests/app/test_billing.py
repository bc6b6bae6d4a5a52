"""Billing: invoices, credit notes, payments (idempotency, crash recovery), bad input."""

import pytest
from apphelpers import CUSTOMER, VISA, Env, StaffClient, issued_invoice

from app_stub.services import Staff

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

    env.svc.ctx.hooks.after_charge = crash
    with env.svc.auth.tx() as conn:
        staff: Staff = env.svc.auth.identity(conn, clerk.uid)
    from app_stub.tokenization import validate_card

    card = validate_card(VISA, 1, 2031, env.clock().date())
    with pytest.raises(Crash):
        env.svc.payments.pay(staff, iid, "crash-key-0001", card, None)
    assert env.gateway.charges == 1  # the gateway charged...
    with env.owner() as conn:  # ...and the payment is recorded as pending, not lost
        assert conn.execute("SELECT status FROM billing.payments").fetchall() == [("pending",)]
    env.svc.ctx.hooks.after_charge = lambda: None
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
        env.svc.ctx.hooks.after_charge = crash
        env.svc.payments.pay(staff, other, "crash-key-0002", card, None)
    env.svc.ctx.hooks.after_charge = lambda: None
    assert env.svc.payments.recover_pending_payments(staff) == 1
    assert env.svc.payments.recover_pending_payments(staff) == 0
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


@pytest.mark.control("APP-03")
def test_concurrent_retries_with_one_key_charge_once(env: Env, clerk: StaffClient) -> None:
    import threading

    from app_stub.services import AppError
    from app_stub.tokenization import validate_card

    iid = issued_invoice(clerk)
    with env.svc.auth.tx() as conn:
        staff = env.svc.auth.identity(conn, clerk.uid)
    card = validate_card(VISA, 1, 2031, env.clock().date())
    outcomes: list[str] = []

    def attempt() -> None:
        try:
            outcomes.append(env.svc.payments.pay(staff, iid, "same-key-racing", card, None)["status"])
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
    env.svc.ctx.gateway = HttpGateway(TestClient(remote, base_url="https://gateway.test"))
    iid = issued_invoice(clerk)
    req = {
        "json": {"card": {"number": VISA, "exp_month": 1, "exp_year": 2031}},
        "headers": {"Idempotency-Key": "http-12345"},
    }
    assert clerk.post(f"/api/invoices/{iid}/payments", **req).json()["status"] == "succeeded"
    assert clerk.post(f"/api/invoices/{iid}/payments", **req).json()["replayed"] is True
    assert remote.state.gateway.charges == 1
