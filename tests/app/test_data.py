"""Personal data: envelope encryption, blind index, key rotation with forced rewrap, GDPR export and erasure."""

from collections.abc import Iterator

import pytest
from apphelpers import CUSTOMER, VISA, Env, Services, build_env, close_env, issued_invoice

from app_stub import vault_setup as vs
from app_stub.crypto import Transit, VaultError
from app_stub.rewrap import rewrap_all

ROT_MOUNT, ROT_SUFFIX = "transit-rot", "-rot"


@pytest.mark.control("EAR-04")
def test_personal_fields_are_envelope_encrypted_and_searchable(env: Env) -> None:
    clerk = env.staff("clerk", "billing_clerk")
    calls = env.core.transit.calls
    cid = clerk.post("/api/customers", json=CUSTOMER).json()["id"]
    assert env.core.transit.calls - calls == 2  # one datakey + one batched HMAC, whatever the number of fields
    with env.owner() as conn:
        row = conn.execute(
            "SELECT name_ct, email_ct, address_ct, tax_id_ct, email_bidx FROM billing.customers WHERE id = %s", (cid,)
        ).fetchone()
        (wrapped,) = conn.execute(
            "SELECT wrapped_key FROM billing.customer_keys WHERE customer_id = %s", (cid,)
        ).fetchone()
    for blob, value in zip(row[:4], CUSTOMER.values(), strict=True):
        blob = bytes(blob)
        assert blob[0] == 1 and len(blob) == 1 + 12 + len(value.encode()) + 16  # version, nonce, ciphertext, tag
        assert value.encode() not in blob
    assert wrapped.startswith("vault:v") and row[4].startswith("vault:v")
    # invoices for a known customer cost no Vault round trip (the data key is cached)
    calls = env.core.transit.calls
    issued_invoice_for(clerk, cid)
    assert env.core.transit.calls == calls
    # blind index: exact match, case-insensitive, no plaintext stored
    assert clerk.get("/api/customers/search", params={"email": "ADA@example.org "}).json() == [cid]
    assert clerk.get("/api/customers/search", params={"email": "eve@example.org"}).json() == []
    # a cold cache unwraps the key through Vault and reads the same data
    env.core.cipher.cache.drop(cid)
    assert clerk.get(f"/api/customers/{cid}").json()["email"] == CUSTOMER["email"]
    # ciphertexts are bound to their customer and field: moving one is detected
    with env.owner() as conn:
        conn.execute("UPDATE billing.customers SET name_ct = email_ct WHERE id = %s", (cid,))
    from cryptography.exceptions import InvalidTag

    with env.core.tx() as conn:
        staff = env.core.staff(conn, clerk.uid)
    with pytest.raises(InvalidTag):
        env.core.get_customer(staff, cid)


def issued_invoice_for(clerk, cid: int) -> int:  # noqa: ANN001
    r = clerk.post(
        "/api/invoices",
        json={
            "customer_id": cid,
            "currency": "EUR",
            "lines": [{"description": "Service", "quantity": 1, "unit_price_minor": 500, "tax_rate_bp": 0}],
        },
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.mark.control("CMP-04", "LOG-07")
def test_customer_export_is_complete_json(env: Env) -> None:
    clerk = env.staff("clerk", "billing_clerk")
    admin = env.staff("dpo", "admin")
    iid = issued_invoice(clerk)
    clerk.post(
        f"/api/invoices/{iid}/payments",
        json={"card": {"number": VISA, "exp_month": 1, "exp_year": 2031}},
        headers={"Idempotency-Key": "export-0001"},
    ).raise_for_status()
    cid = clerk.get(f"/api/invoices/{iid}").json()["customer_id"]
    assert clerk.get(f"/api/customers/{cid}/export").status_code == 403
    data = admin.get(f"/api/customers/{cid}/export").json()
    assert data["format"] == "billkit-export-1"
    assert {k: data["customer"][k] for k in CUSTOMER} == CUSTOMER
    assert [i["id"] for i in data["invoices"]] == [iid]
    assert data["payments"][0]["card"]["last4"] == "4242" and VISA not in str(data)
    token = data["payments"][0]["card"]["token"]
    assert data["cards"] == [{"token": token, "brand": "visa", "last4": "4242", "exp_month": 1, "exp_year": 2031}]
    with env.owner() as conn:
        assert conn.execute("SELECT count(*) FROM audit.events WHERE action = 'gdpr.export'").fetchone() == (1,)


@pytest.fixture
def rot_env(services: Services) -> Iterator[Env]:
    """An app on its own transit mount, so rotating keys does not touch the other tests."""
    if ROT_MOUNT not in services.roles:
        services.roles[ROT_MOUNT] = vs.ensure_vault(services.bao.client(), ROT_MOUNT, ROT_SUFFIX)
    e = build_env(services, ROT_MOUNT, ROT_SUFFIX)
    yield e
    close_env(e)


def rotation_transit(env: Env, policy: str = vs.POLICY_ROTATION) -> Transit:
    root = env.services.bao.client()
    token = root.auth.token.create(policies=[policy + ROT_SUFFIX], ttl="10m")["auth"]["client_token"]
    return Transit(lambda: env.services.bao.client(token), ROT_MOUNT)


@pytest.mark.control("EAR-05", "CMP-05")
def test_forced_rewrap_retires_old_versions_and_erasure_shreds_backups(rot_env: Env) -> None:
    env = rot_env
    clerk = env.staff("clerk", "billing_clerk")
    admin = env.staff("dpo", "admin")
    root = env.services.bao.client()
    for key in (vs.KEY_PAN, vs.KEY_PII):
        info = root.adapter.get(f"/v1/{ROT_MOUNT}/keys/{key}")["data"]
        assert info["type"] == "aes256-gcm96" and info["auto_rotate_period"] > 0
    ids = [clerk.post("/api/customers", json={**CUSTOMER, "email": f"c{i}@example.org"}).json()["id"] for i in range(7)]
    for _ in range(3):
        card = {"customer_id": ids[1], "number": VISA, "exp_month": 1, "exp_year": 2031}
        clerk.post("/api/cards", json=card).raise_for_status()
    with env.owner() as conn:
        (backup_key,) = conn.execute(
            "SELECT wrapped_key FROM billing.customer_keys WHERE customer_id = %s", (ids[0],)
        ).fetchone()
    # crypto-shredding: the customer's key is destroyed; the app can no longer read them
    assert clerk.post(f"/api/customers/{ids[0]}/erase").status_code == 403
    assert admin.post(f"/api/customers/{ids[0]}/erase").status_code == 200
    assert admin.get(f"/api/customers/{ids[0]}").status_code == 410
    assert admin.get(f"/api/customers/{ids[0]}/export").status_code == 410
    # the app's own identity may not rewrap or rotate
    with pytest.raises(VaultError, match="permission denied"):
        env.core.transit.rewrap(vs.KEY_PII, [backup_key])
    # interrupted rewrap (after one batch), then resumed
    rot = rotation_transit(env)
    first = rewrap_all(env.services.owner_dsn(env.dbname), rot, batch=2, rotate=True, stop_after=1)
    assert first.min_decryption_version == {}
    stats = rewrap_all(env.services.owner_dsn(env.dbname), rot, batch=2)
    latest = {k: root.adapter.get(f"/v1/{ROT_MOUNT}/keys/{k}")["data"]["latest_version"] for k in ("pan", "pii")}
    assert stats.min_decryption_version == latest and min(latest.values()) >= 2
    assert (
        first.rewrapped["billing.customer_keys.wrapped_key"] + stats.rewrapped["billing.customer_keys.wrapped_key"] == 6
    )
    with env.owner() as conn:
        cts = [
            r[0]
            for r in conn.execute(
                "SELECT wrapped_key FROM billing.customer_keys UNION ALL "
                "SELECT pan_ct FROM cardvault.pans UNION ALL "
                "SELECT totp_secret_ct FROM staff.users"
            )
        ]
    assert latest["pan"] == latest["pii"]  # rotated together
    assert cts and all(c.startswith(f"vault:v{latest['pii']}:") for c in cts)
    # everything still reads (cold cache), and staff can still log in with TOTP
    env.core.cipher.cache = type(env.core.cipher.cache)()
    for cid in ids[1:]:
        assert admin.get(f"/api/customers/{cid}").json()["name"] == CUSTOMER["name"]
    clerk.login()
    assert clerk.mfa(clerk.code()).status_code == 200
    # the old version is retired: the erased customer's key in a backup can no longer be unwrapped
    processor = rotation_transit(env, vs.POLICY_APP)
    with pytest.raises(VaultError, match="decryption version|min_decryption_version|too old|archived|not allowed"):
        processor.decrypt(vs.KEY_PII, [backup_key])
    # running it again is a no-op
    again = rewrap_all(env.services.owner_dsn(env.dbname), rot, batch=2)
    assert sum(again.rewrapped.values()) == 0


@pytest.mark.control("EAR-05", "LOG-08")
def test_operator_commands_rewrap_and_verify(rot_env: Env) -> None:
    import os
    import subprocess
    import sys

    env = rot_env
    clerk = env.staff("clerk", "billing_clerk")
    clerk.post("/api/customers", json=CUSTOMER).raise_for_status()
    root = env.services.bao.client()
    token = root.auth.token.create(policies=[vs.POLICY_ROTATION + ROT_SUFFIX], ttl="10m")["auth"]["client_token"]
    run_env = dict(
        os.environ,
        BILLKIT_APP_OWNER_DATABASE_URL=env.services.owner_dsn(env.dbname),
        BILLKIT_APP_VAULT_URL=env.services.bao.url,
        BILLKIT_APP_VAULT_CA_FILE=str(env.services.bao.ca_file),
        VAULT_TOKEN=token,
    )
    cmd = [sys.executable, "-m", "app_stub"]
    out = subprocess.run([*cmd, "rewrap", "--rotate", "--mount", ROT_MOUNT, "--batch", "50"], env=run_env,
                         capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "min_decryption_version now" in out.stdout and "rewrapped" in out.stderr
    latest = root.adapter.get(f"/v1/{ROT_MOUNT}/keys/pii")["data"]
    assert latest["min_decryption_version"] == latest["latest_version"] >= 2
    out = subprocess.run([*cmd, "verify-audit"], env=run_env, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0 and "audit log intact" in out.stdout
    out = subprocess.run([*cmd, "create-admin"], env=run_env, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1 and "exist already" in out.stderr
