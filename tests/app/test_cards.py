"""Card tokenization: the card vault, tokens, detokenization, card input and display."""

import base64
import re
import subprocess

import psycopg
import pytest
from apphelpers import CUSTOMER, PASSWORD, VISA, Env, StaffClient, issued_invoice

from app_stub import db
from app_stub.tokenization import TOKEN_RE, luhn_ok, new_token

CARDS = [VISA, "5555555555554444", "378282246310005"]


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
    token = clerk.post("/api/cards", json={"number": VISA, "exp_month": 5, "exp_year": 2030}).json()["token"]
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

    clerk.post("/api/cards", json={"number": VISA, "exp_month": 5, "exp_year": 2030}).raise_for_status()
    with env.owner() as conn:
        (ct,) = conn.execute("SELECT pan_ct FROM cardvault.pans").fetchone()
    with pytest.raises(VaultError, match="permission denied"):
        env.svc.ctx.transit.decrypt("pan", [ct])


@pytest.mark.control("TOK-04")
def test_only_the_tokenizer_role_reads_the_card_vault(env: Env, clerk: StaffClient) -> None:
    clerk.post("/api/cards", json={"number": VISA, "exp_month": 5, "exp_year": 2030}).raise_for_status()
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
    r = clerk.post("/api/cards", json=card)
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
    clerk.post("/api/cards", json={"number": "4242424242424241", "exp_month": 5, "exp_year": 2030})
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
