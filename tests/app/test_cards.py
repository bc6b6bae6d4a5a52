"""Card tokenization: the card vault, tokens, detokenization, card input and display."""

import base64
import re
import subprocess

import psycopg
import pytest
from apphelpers import CUSTOMER, PASSWORD, VISA, Env, Services, StaffClient, drop_database, issued_invoice
from psycopg import sql

from app_stub import db
from app_stub.tokenization import TOKEN_RE, luhn_ok, new_token

CARDS = [VISA, "5555555555554444", "378282246310005"]


def new_card(c: StaffClient, pan: str = VISA, customer_id: int | None = None) -> str:
    """A stored card of ``customer_id`` (a new customer when None); returns its token."""
    cid = customer_id or c.post("/api/customers", json=CUSTOMER).json()["id"]
    r = c.post("/api/cards", json={"customer_id": cid, "number": pan, "exp_month": 5, "exp_year": 2030})
    assert r.status_code == 201, r.text
    return r.json()["token"]


def pg_dump(env: Env) -> str:
    pg = env.services.pg
    proc = subprocess.run(
        ["/usr/lib/postgresql/15/bin/pg_dump", "--no-owner", env.services.owner_dsn(env.dbname)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "cardvault.pans" in proc.stdout and pg.port
    return proc.stdout


@pytest.mark.control("TOK-01", "TOK-05")
def test_card_numbers_are_stored_only_as_ciphertext_in_the_card_vault(env: Env, clerk: StaffClient) -> None:
    tokens = []
    for i, pan in enumerate(CARDS):
        iid = issued_invoice(clerk)
        r = clerk.post(
            f"/api/invoices/{iid}/payments",
            json={"card": {"number": pan, "exp_month": 1, "exp_year": 2031}},
            headers={"Idempotency-Key": f"pay-{i}-xxxxxxxx"},
        )
        assert r.status_code == 200, r.text
        tokens.append(r.json()["card"]["token"])
    dump = pg_dump(env)
    for pan in CARDS:
        assert pan not in dump
        assert pan not in dump.replace(" ", "")
    with env.owner() as conn:
        rows = conn.execute("SELECT token, pan_ct FROM cardvault.pans").fetchall()
    assert {t for t, _ in rows} == set(tokens)
    assert all(ct.startswith("vault:v") for _, ct in rows)
    # Vault's own audit log never holds a card number either (request values are HMAC'd)
    vault_log = env.services.bao.audit_log.read_text()
    assert "transit/encrypt/pan" in vault_log
    for pan in CARDS:
        assert pan not in vault_log and base64.b64encode(pan.encode()).decode() not in vault_log
    # nor the database server's log
    pg_log = env.services.pg.log_file.read_text(errors="replace")
    assert not any(pan in pg_log for pan in CARDS)
    # the fake gateway keeps last four only
    assert all(len(last4) == 4 for _, last4, _, _ in env.gateway.ledger.values())


@pytest.mark.control("TOK-02")
def test_tokens_are_random_and_never_card_like() -> None:
    tokens = [new_token() for _ in range(5000)]
    assert len(set(tokens)) == len(tokens)
    for t in tokens:
        assert TOKEN_RE.match(t)
        assert not re.search(r"\d", t)  # not one digit: nothing a card-number scanner or a person could mistake
    assert not luhn_ok("4242424242424241") and luhn_ok(VISA)


@pytest.mark.control("TOK-03", "MFA-04", "LOG-07")
def test_only_payment_processor_detokenizes_with_step_up_and_audit(env: Env, clerk: StaffClient) -> None:
    token = new_card(clerk)
    r = clerk.post(f"/api/cards/{token}/detokenize", headers={"X-Step-Up-Code": clerk.code()})
    assert r.status_code == 403
    pp = env.staff("processor", "payment_processor")
    r = pp.post(f"/api/cards/{token}/detokenize")
    assert r.status_code == 401 and "step-up" in r.json()["detail"]
    r = pp.post(f"/api/cards/{token}/detokenize", headers={"X-Step-Up-Code": pp.code()})
    assert r.status_code == 200 and r.json()["pan"] == VISA
    assert r.headers["cache-control"] == "no-store"
    with env.owner() as conn:
        events = conn.execute("SELECT actor, action, target, detail::text FROM audit.events").fetchall()
    assert (f"user:{pp.uid}", "card.detokenize", f"card:{token}") in [e[:3] for e in events]
    assert (f"user:{clerk.uid}", "access.denied", "cards.detokenize") in [e[:3] for e in events]
    assert not any(VISA in str(e) for e in events)


@pytest.mark.control("TOK-03")
def test_app_vault_identity_cannot_decrypt_card_numbers(env: Env, clerk: StaffClient) -> None:
    from app_stub.crypto import VaultError

    new_card(clerk)
    with env.owner() as conn:
        (ct,) = conn.execute("SELECT pan_ct FROM cardvault.pans").fetchone()
    with pytest.raises(VaultError, match="permission denied"):
        env.core.transit.decrypt("pan", [ct])


@pytest.mark.control("TOK-04")
def test_only_the_tokenizer_role_reads_the_card_vault(env: Env, clerk: StaffClient) -> None:
    new_card(clerk)
    s = env.services
    with (
        psycopg.connect(s.pg.dsn(env.dbname, db.APP_ROLE, s.app_pw)) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("SELECT pan_ct FROM cardvault.pans")
    with psycopg.connect(s.pg.dsn(env.dbname, db.TOKENIZER_ROLE, s.tok_pw)) as conn:
        assert conn.execute("SELECT count(*) FROM cardvault.pans").fetchone() == (1,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM billing.customers")


@pytest.mark.control("TOK-06", "APP-02")
@pytest.mark.parametrize(
    ("card", "message"),
    [
        ({"number": "4242424242424241", "exp_month": 5, "exp_year": 2030}, "Luhn"),
        ({"number": "4242-4242-4242", "exp_month": 5, "exp_year": 2030}, "13 to 19"),
        ({"number": "4242abcd42424242", "exp_month": 5, "exp_year": 2030}, "only digits"),
        ({"number": VISA, "exp_month": 1, "exp_year": 2001}, "expired"),
        ({"number": VISA, "exp_month": 13, "exp_year": 2030}, "exp_month"),
        ({"number": "9999999999999995", "exp_month": 1, "exp_year": 2030}, "brand"),
    ],
)
def test_card_input_is_validated(env: Env, clerk: StaffClient, card: dict, message: str) -> None:
    cid = clerk.post("/api/customers", json=CUSTOMER).json()["id"]
    r = clerk.post("/api/cards", json={**card, "customer_id": cid})
    assert r.status_code == 422 and message in r.json()["detail"]
    assert card["number"] not in r.text
    with env.owner() as conn:
        assert conn.execute("SELECT count(*) FROM cardvault.pans").fetchone() == (0,)


@pytest.mark.control("TOK-06")
def test_only_brand_last_four_and_expiry_are_displayed(env: Env, clerk: StaffClient) -> None:
    iid = issued_invoice(clerk)
    r = clerk.post(
        f"/api/invoices/{iid}/payments",
        json={"card": {"number": VISA, "exp_month": 7, "exp_year": 2032}},
        headers={"Idempotency-Key": "display-0001"},
    )
    card = r.json()["card"]
    assert card["brand"] == "visa" and card["last4"] == "4242" and card["exp_month"] == 7
    for url in (f"/api/invoices/{iid}", "/api/payments", f"/invoices/{iid}"):
        body = clerk.get(url).text
        assert VISA not in body and "4242" in body and card["token"] in body


@pytest.mark.control("LOG-12", "TOK-05")
def test_no_card_number_personal_field_or_secret_in_logs(
    env: Env, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    clerk = env.staff("clerk", "billing_clerk")
    iid = issued_invoice(clerk)
    clerk.post(
        f"/api/invoices/{iid}/payments",
        json={"card": {"number": VISA, "exp_month": 7, "exp_year": 2032}},
        headers={"Idempotency-Key": "log-0001-abc"},
    ).raise_for_status()
    clerk.post("/api/cards", json={"customer_id": 1, "number": "4242424242424241", "exp_month": 5, "exp_year": 2030})
    pp = env.staff("processor", "payment_processor")
    token = clerk.get("/api/payments").json()[0]["card"]["token"]
    pp.post(f"/api/cards/{token}/detokenize", headers={"X-Step-Up-Code": pp.code()}).raise_for_status()
    pp.login("Wrong-password-123")
    out = capsys.readouterr()
    logs = out.out + out.err + "\n".join(r.getMessage() + str(getattr(r, "event", "")) for r in caplog.records)
    assert "card.detokenize" in logs  # events are there...
    secrets_seen = [
        VISA,
        "4242424242424241",
        PASSWORD,
        "Wrong-password-123",
        clerk.secret,
        pp.secret,
        env.settings.session_secret,
        *CUSTOMER.values(),
        *clerk.recovery,
    ]
    for s in secrets_seen:
        assert s not in logs, "a card number, personal field or secret reached the log"


# --- cards belong to their customer (issue 11, TOK-03, CMP-05) --------------------------------


def invoice_of(c: StaffClient, cid: int, total: int = 1000) -> int:
    iid = c.post(
        "/api/invoices",
        json={"customer_id": cid, "currency": "EUR",
              "lines": [{"description": "Service", "quantity": 1, "unit_price_minor": total, "tax_rate_bp": 0}]},
    ).json()["id"]  # fmt: skip
    c.post(f"/api/invoices/{iid}/issue").raise_for_status()
    return iid


def card_owner(env: Env, token: str) -> int | None:
    with env.owner() as conn:
        return conn.execute("SELECT customer_id FROM billing.cards WHERE token = %s", (token,)).fetchone()[0]


@pytest.mark.control("TOK-03", "LOG-07")
def test_a_card_pays_only_its_own_customers_invoices(env: Env, clerk: StaffClient) -> None:
    a = clerk.post("/api/customers", json=CUSTOMER).json()["id"]
    b = clerk.post("/api/customers", json={**CUSTOMER, "email": "bob@example.org"}).json()["id"]
    token_a = new_card(clerk, customer_id=a)
    assert card_owner(env, token_a) == a
    # a stored card names its customer, and only an existing one
    r = clerk.post("/api/cards", json={"number": VISA, "exp_month": 5, "exp_year": 2030})
    assert r.status_code == 422 and "customer_id" in r.json()["detail"]
    r = clerk.post("/api/cards", json={"customer_id": 999999, "number": VISA, "exp_month": 5, "exp_year": 2030})
    assert r.status_code == 404
    # B's invoice, A's card: refused and audited, nothing charged or written
    inv_b = invoice_of(clerk, b)
    r = clerk.post(
        f"/api/invoices/{inv_b}/payments", json={"token": token_a}, headers={"Idempotency-Key": "other-0001"}
    )
    assert r.status_code == 403 and "another customer" in r.json()["detail"], r.text
    assert env.gateway.charges == 0
    with env.owner() as conn:
        assert conn.execute("SELECT count(*) FROM billing.payments").fetchone() == (0,)
        refused = conn.execute(
            "SELECT actor, target, outcome, detail->>'card' FROM audit.events WHERE action = 'payment.start'"
        ).fetchall()
    assert refused == [(f"user:{clerk.uid}", f"invoice:{inv_b}", "refused", token_a)]
    # A's own invoice: paid with A's card
    inv_a = invoice_of(clerk, a)
    r = clerk.post(f"/api/invoices/{inv_a}/payments", json={"token": token_a}, headers={"Idempotency-Key": "own-00001"})
    assert r.status_code == 200 and r.json()["status"] == "succeeded"
    # a card given inline for B's invoice becomes B's card
    inv_b2 = invoice_of(clerk, b)
    r = clerk.post(f"/api/invoices/{inv_b2}/payments", json={"card": {"number": "5555555555554444", "exp_month": 1,
                   "exp_year": 2031}}, headers={"Idempotency-Key": "inline-0001"})  # fmt: skip
    assert card_owner(env, r.json()["card"]["token"]) == b
    # and the clerk cannot move it to A by paying A's invoice with it
    r = clerk.post(f"/api/invoices/{invoice_of(clerk, a)}/payments", json={"token": r.json()["card"]["token"]},
                   headers={"Idempotency-Key": "inline-0002"})  # fmt: skip
    assert r.status_code == 403


@pytest.mark.control("CMP-05", "TOK-01", "TOK-03")
def test_erasure_destroys_the_customers_cards_and_keeps_payment_history(env: Env, clerk: StaffClient) -> None:
    admin = env.staff("dpo", "admin")
    pp = env.staff("processor", "payment_processor")
    a = clerk.post("/api/customers", json=CUSTOMER).json()["id"]
    b = clerk.post("/api/customers", json={**CUSTOMER, "email": "bob@example.org"}).json()["id"]
    stored = new_card(clerk, customer_id=a)
    iid = invoice_of(clerk, a)
    paid = clerk.post(f"/api/invoices/{iid}/payments", json={"card": {"number": "5555555555554444", "exp_month": 1,
                      "exp_year": 2031}}, headers={"Idempotency-Key": "erase-0001"}).json()  # fmt: skip
    token_b = new_card(clerk, customer_id=b)
    tokens_a = {stored, paid["card"]["token"]}
    unpaid = invoice_of(clerk, a)
    assert admin.post(f"/api/customers/{a}/erase").status_code == 200
    with env.owner() as conn:
        vault = {t for (t,) in conn.execute("SELECT token FROM cardvault.pans")}
        cards = conn.execute(
            "SELECT token, brand, last4, exp_month, erased_at IS NOT NULL FROM billing.cards WHERE customer_id = %s",
            (a,),
        ).fetchall()
    assert vault == {token_b}  # no ciphertext of A's cards remains; B's card is untouched
    assert {(t, e) for t, _, _, _, e in cards} == {(t, True) for t in tokens_a}
    assert all(exp is None for *_, exp, _ in cards)  # a tombstone: brand and last four only
    for token in tokens_a:
        r = pp.post(f"/api/cards/{token}/detokenize", headers={"X-Step-Up-Code": pp.code()})
        assert r.status_code == 410, r.text
    assert pp.post(f"/api/cards/{token_b}/detokenize", headers={"X-Step-Up-Code": pp.code()}).json()["pan"] == VISA
    # the payment history keeps what identifies the card to accounting: brand and last four
    (p,) = clerk.get(f"/api/invoices/{iid}").json()["payments"]
    assert p["card"]["brand"] == "mastercard" and p["card"]["last4"] == "4444" and p["status"] == "succeeded"
    assert "4444" in clerk.get(f"/invoices/{iid}").text
    # an erased card pays nothing any more
    r = clerk.post(
        f"/api/invoices/{unpaid}/payments", json={"token": stored}, headers={"Idempotency-Key": "erase-0002"}
    )
    assert r.status_code == 410
    card = {"number": VISA, "exp_month": 1, "exp_year": 2031}  # nor does a new card for an erased customer
    r = clerk.post(f"/api/invoices/{unpaid}/payments", json={"card": card}, headers={"Idempotency-Key": "erase-0003"})
    assert r.status_code == 410
    assert clerk.post("/api/cards", json={**card, "customer_id": a}).status_code == 410
    with env.owner() as conn:
        assert {t for (t,) in conn.execute("SELECT token FROM cardvault.pans")} == {token_b}
    assert env.gateway.charges == 1
    with env.owner() as conn:
        (detail,) = conn.execute("SELECT detail FROM audit.events WHERE action = 'gdpr.erase'").fetchone()
    assert detail == {"cards": 2}


@pytest.mark.control("CMP-05", "APP-03")
def test_erasure_waits_for_a_pending_payment(env: Env, clerk: StaffClient) -> None:
    from test_billing import crash_after_charge

    admin = env.staff("dpo", "admin")
    iid = issued_invoice(clerk)
    cid = clerk.get(f"/api/invoices/{iid}").json()["customer_id"]
    crash_after_charge(env, clerk, iid, "erase-pending-01")
    r = admin.post(f"/api/customers/{cid}/erase")
    assert r.status_code == 409 and "in progress" in r.json()["detail"]
    with env.owner() as conn:
        assert conn.execute("SELECT count(*) FROM cardvault.pans").fetchone() == (1,)
    env.clock.advance(seconds=env.settings.payment_recovery_grace.total_seconds() + 1)
    assert env.core.recover_pending_payments() == 1
    assert admin.post(f"/api/customers/{cid}/erase").status_code == 200
    with env.owner() as conn:
        assert conn.execute("SELECT count(*) FROM cardvault.pans").fetchone() == (0,)


@pytest.mark.control("TOK-03", "CMP-05")
def test_migration_binds_existing_cards_to_the_customer_their_payments_show(services: Services) -> None:
    """0002 on a database with data: a card gets the one customer whose invoices it paid; others stay unbound."""
    name = "t_app_migrate_0002"
    drop_database(services, name)
    with psycopg.connect(services.pg.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = services.owner_dsn(name)
    try:
        tok = {k: new_token() for k in ("one", "shared", "unused")}
        with psycopg.connect(dsn) as conn:
            conn.execute((db.MIGRATIONS / "0001_schema.sql").read_text())  # type: ignore[arg-type]
            conn.execute("CREATE TABLE public.schema_migrations (name text PRIMARY KEY, applied_at timestamptz "
                         "NOT NULL DEFAULT now())")  # fmt: skip
            conn.execute("INSERT INTO public.schema_migrations (name) VALUES ('0001_schema.sql')")
            conn.execute("INSERT INTO billing.customers (id, created_at) VALUES (1, now()), (2, now())")
            conn.execute(
                "INSERT INTO billing.invoices (id, customer_id, currency, state, subtotal_minor, tax_minor, "
                "total_minor, paid_minor, created_at) VALUES (1, 1, 'EUR', 'paid', 1200, 0, 1200, 2400, now()), "
                "(2, 2, 'EUR', 'paid', 500, 0, 500, 500, now())"
            )
            for t in tok.values():
                conn.execute(
                    "INSERT INTO billing.cards (token, brand, last4, exp_month, exp_year, created_at) "
                    "VALUES (%s, 'visa', '4242', 1, 2031, now())",
                    (t,),
                )
            for key, iid, t in (("k-one-1", 1, "one"), ("k-one-2", 1, "one"), ("k-sh-1", 1, "shared"),
                                ("k-sh-2", 2, "shared")):  # fmt: skip
                conn.execute(
                    "INSERT INTO billing.payments (idempotency_key, request_hash, invoice_id, amount_minor, currency, "
                    "card_token, status, created_at) VALUES (%s, '-', %s, 600, 'EUR', %s, 'succeeded', now())",
                    (key, iid, tok[t]),
                )
        applied = db.migrate(dsn)
        assert "0002_payments_cards.sql" in applied
        with psycopg.connect(dsn) as conn:
            owners = dict(conn.execute("SELECT token, customer_id FROM billing.cards").fetchall())
            assert owners == {tok["one"]: 1, tok["shared"]: None, tok["unused"]: None}
            valid = dict(conn.execute(
                "SELECT conname, convalidated FROM pg_constraint WHERE conname IN "
                "('invoices_paid_within_total', 'cards_customer_required')"
            ).fetchall())  # fmt: skip
            # the over-paid legacy invoice and the unbound legacy cards keep the checks from validating...
            assert valid == {"invoices_paid_within_total": False, "cards_customer_required": False}
            # ...but every new or changed row is checked
            with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
                conn.execute(
                    "INSERT INTO billing.cards (token, brand, last4, exp_month, exp_year, created_at) "
                    "VALUES (%s, 'visa', '4242', 1, 2031, now())",
                    (new_token(),),
                )
            with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
                conn.execute("UPDATE billing.invoices SET paid_minor = 501 WHERE id = 2")
    finally:
        drop_database(services, name)
