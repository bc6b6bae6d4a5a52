"""Personal data: envelope encryption, blind index, key rotation with forced rewrap, GDPR export and erasure."""

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from apphelpers import CUSTOMER, VISA, Env, Services, build_env, close_env, issued_invoice

from app_stub import vault_setup as vs
from app_stub.crypto import Transit, VaultError
from app_stub.rewrap import rewrap_all

ROT_MOUNT, ROT_SUFFIX = "transit-rot", "-rot"


@pytest.mark.control("EAR-04")
def test_personal_fields_are_envelope_encrypted_and_searchable(env: Env) -> None:
    clerk = env.staff("clerk", "billing_clerk")
    calls = env.svc.ctx.transit.calls
    cid = clerk.post("/api/customers", json=CUSTOMER).json()["id"]
    assert env.svc.ctx.transit.calls - calls == 2  # one datakey + one batched HMAC, whatever the number of fields
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
    calls = env.svc.ctx.transit.calls
    issued_invoice_for(clerk, cid)
    assert env.svc.ctx.transit.calls == calls
    # blind index: exact match, case-insensitive, no plaintext stored
    assert clerk.get("/api/customers/search", params={"email": "ADA@example.org "}).json() == [cid]
    assert clerk.get("/api/customers/search", params={"email": "eve@example.org"}).json() == []
    # a cold cache unwraps the key through Vault and reads the same data
    env.svc.ctx.cipher.cache.drop(cid)
    assert clerk.get(f"/api/customers/{cid}").json()["email"] == CUSTOMER["email"]
    # ciphertexts are bound to their customer and field: moving one is detected
    with env.owner() as conn:
        conn.execute("UPDATE billing.customers SET name_ct = email_ct WHERE id = %s", (cid,))
    from cryptography.exceptions import InvalidTag

    with env.svc.auth.tx() as conn:
        staff = env.svc.auth.identity(conn, clerk.uid)
    with pytest.raises(InvalidTag):
        env.svc.customers.get_customer(staff, cid)


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
        env.svc.ctx.transit.rewrap(vs.KEY_PII, [backup_key])
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
    env.svc.ctx.cipher.cache = type(env.svc.ctx.cipher.cache)()
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
    policies = [vs.POLICY_ROTATION + ROT_SUFFIX, vs.POLICY_AUDITOR + ROT_SUFFIX]  # the auditor's: the heads' key
    token = root.auth.token.create(policies=policies, ttl="10m")["auth"]["client_token"]
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
    out = subprocess.run([*cmd, "verify-audit", "--mount", ROT_MOUNT], env=run_env, capture_output=True, text=True,
                         timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0 and "audit log intact" in out.stdout, out.stdout + out.stderr
    out = subprocess.run([*cmd, "create-admin"], env=run_env, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1 and "exist already" in out.stderr


def _versions(env: Env) -> dict[str, list[int]]:
    """The transit key version of every stored ciphertext, per key."""
    with env.owner() as conn:
        rows = conn.execute(
            "SELECT 'pii', wrapped_key FROM billing.customer_keys UNION ALL "
            "SELECT 'pii', totp_secret_ct FROM staff.users WHERE totp_secret_ct IS NOT NULL UNION ALL "
            "SELECT 'pan', pan_ct FROM cardvault.pans"
        ).fetchall()
    out: dict[str, list[int]] = {"pii": [], "pan": []}
    for key, ct in rows:
        out[key].append(int(ct.split(":")[1][1:]))
    return out


def _everything_decrypts(env: Env) -> None:
    """Every stored ciphertext still decrypts: pii with the app's identity, pan with the payment processor's."""
    with env.owner() as conn:
        pii = [r[0] for r in conn.execute(
            "SELECT wrapped_key FROM billing.customer_keys UNION ALL "
            "SELECT totp_secret_ct FROM staff.users WHERE totp_secret_ct IS NOT NULL"
        )]  # fmt: skip
        pan = [r[0] for r in conn.execute("SELECT pan_ct FROM cardvault.pans")]
    assert pii and pan
    assert len(rotation_transit(env, vs.POLICY_APP).decrypt(vs.KEY_PII, pii)) == len(pii)
    assert len(rotation_transit(env, vs.POLICY_PROCESSOR).decrypt(vs.KEY_PAN, pan)) == len(pan)


def _some_data(env: Env) -> None:
    clerk = env.staff("clerk", "billing_clerk")
    ids = [clerk.post("/api/customers", json={**CUSTOMER, "email": f"c{i}@example.org"}).json()["id"] for i in range(5)]
    for cid in ids[:3]:
        card = {"customer_id": cid, "number": VISA, "exp_month": 1, "exp_year": 2031}
        clerk.post("/api/cards", json=card).raise_for_status()


@pytest.mark.control("EAR-05")
def test_rewrap_waits_for_a_locked_row_instead_of_leaving_it_behind(rot_env: Env) -> None:
    env = rot_env
    _some_data(env)
    dsn = env.services.owner_dsn(env.dbname)
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["stats"] = rewrap_all(dsn, rotation_transit(env), batch=2, rotate=True)
        except Exception as exc:  # noqa: BLE001 - reported by the test below
            result["error"] = exc

    # another transaction (a customer being written) holds the first wrapped key while the rewrap runs
    with psycopg.connect(dsn) as locker:
        locker.execute("SELECT 1 FROM billing.customer_keys ORDER BY customer_id LIMIT 1 FOR UPDATE")
        worker = threading.Thread(target=run)
        worker.start()
        deadline, waited = time.monotonic() + 30, False
        with env.owner() as watch:
            while worker.is_alive() and time.monotonic() < deadline and not waited:
                waited = watch.execute("SELECT count(*) > 0 FROM pg_locks WHERE NOT granted").fetchone()[0]
                time.sleep(0.05)
        locker.rollback()
    worker.join(120)
    assert not worker.is_alive() and "error" not in result, result
    assert waited, "the rewrap finished while a row was held: it skipped it"
    root = env.services.bao.client()
    latest = {k: int(root.adapter.get(f"/v1/{ROT_MOUNT}/keys/{k}")["data"]["latest_version"]) for k in ("pan", "pii")}
    assert result["stats"].min_decryption_version == latest
    assert all(v == latest[k] for k, vs_ in _versions(env).items() for v in vs_)  # the locked row too
    _everything_decrypts(env)


@pytest.mark.control("EAR-05")
def test_a_rotation_during_the_rewrap_leaves_every_row_readable(rot_env: Env) -> None:
    env = rot_env
    _some_data(env)
    dsn = env.services.owner_dsn(env.dbname)
    root = env.services.bao.client()
    rotated: list[str] = []

    def progress(what: str, _n: int) -> None:
        if not rotated:  # the scheduled rotation (auto_rotate_period) strikes after the first batch
            for key in (vs.KEY_PAN, vs.KEY_PII):
                root.adapter.post(f"/v1/{ROT_MOUNT}/keys/{key}/rotate")
            rotated.append(what)

    stats = rewrap_all(dsn, rotation_transit(env), batch=500, rotate=True, progress=progress, stop_after=50)
    assert rotated
    latest = {k: int(root.adapter.get(f"/v1/{ROT_MOUNT}/keys/{k}")["data"]["latest_version"]) for k in ("pan", "pii")}
    # raised to the version the run started from (proven for every row), not to the one rotated in meanwhile
    assert stats.min_decryption_version == {k: v - 1 for k, v in latest.items()}
    versions = _versions(env)
    assert all(stats.min_decryption_version[k] <= v for k, vs_ in versions.items() for v in vs_)
    _everything_decrypts(env)
    # the next run finishes the job
    again = rewrap_all(dsn, rotation_transit(env), batch=500)
    assert again.min_decryption_version == latest
    _everything_decrypts(env)
