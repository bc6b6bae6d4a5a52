"""Keys and who may use them: transit, policies, AppRole, dynamic DB credentials, operators' MFA, SSH CA."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path

import hvac.exceptions
import psycopg
import pytest

from billkit.vault import configure
from tests.hosts.keys.conftest import DRILL_TTL
from tests.hosts.keys.support import VaultEnv

PAN = base64.b64encode(b"4111111111111111").decode()


@pytest.mark.control("EAR-05")
@pytest.mark.parametrize("key", configure.TRANSIT_KEYS, ids=lambda k: k.name)
def test_transit_key_type_and_rotation(vault: VaultEnv, key: configure.TransitKey) -> None:
    info = vault.client(vault.auditor_token).secrets.transit.read_key(key.name)["data"]
    assert info["type"] == key.type
    assert info["exportable"] is False and info["deletion_allowed"] is False
    assert info["allow_plaintext_backup"] is False
    if key.name in ("pan", "pii"):
        assert key.type == "aes256-gcm96"
        assert 0 < info["auto_rotate_period"] <= 90 * 24 * 3600, f"{key.name} does not rotate automatically"
    else:
        assert info["auto_rotate_period"] == key.auto_rotate_period


@pytest.mark.control("EAR-05", "RBAC-04")
def test_rotate_rewrap_then_retire_old_versions(vault: VaultEnv) -> None:
    """The forced-rewrap job's policy: rotate, re-wrap, retire; the app's old ciphertext stops working."""
    app = vault.client(vault.app_token).secrets.transit
    rotator = vault.client(vault.rotator_token)
    old = app.encrypt_data("pii", PAN)["data"]["ciphertext"]
    before = int(old.split(":")[1].lstrip("v"))
    rotator.secrets.transit.rotate_key("pii")
    (new,) = configure.rewrap(rotator, "pii", [old])
    assert new.startswith(f"vault:v{before + 1}:")
    with pytest.raises(hvac.exceptions.Forbidden):
        rotator.secrets.transit.decrypt_data("pii", new)  # the rotator never sees plaintext
    with pytest.raises(hvac.exceptions.Forbidden):
        rotator.secrets.transit.rotate_key("lookup-hmac")  # rotating the blind-index key would break lookups
    assert configure.retire_old_versions(rotator, "pii") == before + 1
    assert app.decrypt_data("pii", new)["data"]["plaintext"] == PAN
    with pytest.raises(hvac.exceptions.InvalidRequest):
        app.decrypt_data("pii", old)  # the retired version no longer decrypts


@pytest.mark.control("RBAC-04", "TOK-03")
def test_app_encrypts_pan_but_only_the_payment_processor_decrypts(vault: VaultEnv) -> None:
    app = vault.client(vault.app_token).secrets.transit
    ciphertext = app.encrypt_data("pan", PAN)["data"]["ciphertext"]
    assert ciphertext.startswith("vault:v")
    with pytest.raises(hvac.exceptions.Forbidden):
        app.decrypt_data("pan", ciphertext)
    processor = vault.client(vault.processor_token).secrets.transit
    assert processor.decrypt_data("pan", ciphertext)["data"]["plaintext"] == PAN
    # Every detokenization is in the audit trail, with who did it (and the plaintext HMAC-ed).
    log = vault.cluster.active().paths.audit_file.read_text()
    decrypts = [json.loads(line) for line in log.splitlines() if '"transit/decrypt/pan"' in line]
    responses = [e for e in decrypts if e["type"] == "response" and not e.get("error")]
    assert any("payment-processor" in e["auth"]["policies"] for e in responses)
    assert PAN not in log
    with pytest.raises(hvac.exceptions.Forbidden):
        processor.encrypt_data("pii", PAN)  # the processor gets nothing else
    with pytest.raises(hvac.exceptions.Forbidden):
        app.rotate_key("pan")
    with pytest.raises(hvac.exceptions.Forbidden):
        vault.client(vault.operator_token).secrets.transit.decrypt_data("pan", ciphertext)  # nor do operators


@pytest.mark.control("RBAC-04", "EAR-05")
def test_app_uses_pii_data_keys_and_the_lookup_hmac(vault: VaultEnv) -> None:
    c = vault.client(vault.app_token)
    dk = c.adapter.post("/v1/transit/datakey/plaintext/pii", json={"bits": 256})["data"]
    assert len(base64.b64decode(dk["plaintext"])) == 32
    unwrapped = c.secrets.transit.decrypt_data("pii", dk["ciphertext"])["data"]["plaintext"]
    assert unwrapped == dk["plaintext"]
    h1 = c.secrets.transit.generate_hmac("lookup-hmac", PAN)["data"]["hmac"]
    assert h1 == c.secrets.transit.generate_hmac("lookup-hmac", PAN)["data"]["hmac"]  # deterministic: an index
    with pytest.raises(hvac.exceptions.Forbidden):
        c.secrets.transit.encrypt_data("backup", PAN)
    with pytest.raises(hvac.exceptions.Forbidden):
        c.adapter.get("/v1/secret/data/backup/pgbackrest")


@pytest.mark.control("RBAC-08")
def test_approle_secret_id_is_wrapped_ttl_bound_and_cidr_bound(vault: VaultEnv) -> None:
    role = vault.client(vault.auditor_token).auth.approle.read_role(configure.BILLING_APP)["data"]
    assert 0 < role["secret_id_ttl"] <= 24 * 3600
    assert role["secret_id_bound_cidrs"] and role["token_bound_cidrs"]
    assert role["token_policies"] == [configure.BILLING_APP]
    # The probe role is bound to the lab's app tier: its secret ID is useless from loopback.
    c = vault.client()
    secret_id = configure.unwrap(c, vault.probe_wrapped_secret)["secret_id"]
    with pytest.raises(hvac.exceptions.VaultError):
        configure.unwrap(c, vault.probe_wrapped_secret)  # a wrapping token works once: tampering shows
    with pytest.raises(hvac.exceptions.VaultError):
        c.auth.approle.login(vault.probe_role_id, secret_id, use_token=False)


@pytest.mark.control("RBAC-05", "ENC-05")
def test_dynamic_db_credentials_work_least_privilege(vault: VaultEnv) -> None:
    creds = vault.client(vault.app_token).secrets.database.generate_credentials(configure.BILLING_APP)
    assert 0 < creds["lease_duration"] <= vault.settings.db_default_ttl
    user, password = creds["data"]["username"], creds["data"]["password"]
    with psycopg.connect(vault.pg.dsn(user, password)) as conn:  # verify-full against the lab root CA
        conn.execute("INSERT INTO invoices (customer, amount_cents) VALUES ('c-1', 1200)")
        assert conn.execute("SELECT count(*) FROM invoices").fetchone()[0] >= 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE sneaky (x int)")
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM invoices")
        conn.rollback()
        flags = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolvaliduntil IS NOT NULL FROM pg_roles "
            "WHERE rolname = current_user"
        ).fetchone()
        assert flags == (False, False, False, True)


@pytest.mark.control("RBAC-05")
def test_dynamic_db_credentials_expire(vault: VaultEnv) -> None:
    creds = vault.client(vault.drill_token).secrets.database.generate_credentials("billing-app-drill")
    user, password = creds["data"]["username"], creds["data"]["password"]
    psycopg.connect(vault.pg.dsn(user, password)).close()
    time.sleep(DRILL_TTL + 3)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(vault.pg.dsn(user, password)).close()


@pytest.mark.control("RBAC-05", "EAR-07")
def test_vault_admin_password_was_rotated(vault: VaultEnv) -> None:
    """The password the database was set up with no longer works: only Vault knows the new one."""
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(vault.pg.dsn("vault_admin", vault.db_admin_initial_password)).close()
    config = vault.client(vault.auditor_token).adapter.get("/v1/database/roles/billing-app")["data"]
    assert "DROP ROLE" in " ".join(config["revocation_statements"])


@pytest.mark.control("MFA-03")
def test_operator_login_needs_password_and_totp(vault: VaultEnv) -> None:
    c = vault.client()
    info = vault.client(vault.operator_token).auth.token.lookup_self()["data"]
    assert "operator" in info["policies"] and "root" not in info["policies"]
    # Password alone yields no token, only an MFA requirement.
    first = c.adapter.post("/v1/auth/userpass/login/alice", json={"password": vault.operator.password})
    assert first["auth"]["client_token"] == "" and first["auth"]["mfa_requirement"]
    wrong = f"{(int(vault.operator.totp.now()) + 1) % 1_000_000:06d}"
    with pytest.raises(configure.MFAError):
        configure.operator_login(c, "alice", vault.operator.password, wrong)
    with pytest.raises(configure.MFAError):  # a code is accepted once
        configure.operator_login(c, "alice", vault.operator.password, vault.operator_code_used)
    with pytest.raises(hvac.exceptions.VaultError):
        c.adapter.post("/v1/auth/userpass/login/alice", json={"password": "not-the-password"})


@pytest.mark.control("HRD-01", "MFA-03")
def test_ssh_ca_signs_operator_keys_for_a_short_time(vault: VaultEnv, tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "id")], check=True)
    pub = (tmp_path / "id.pub").read_text()
    c = vault.client(vault.operator_token)
    signed = configure.sign_ssh_key(c, pub, "ops")
    (tmp_path / "id-cert.pub").write_text(signed + "\n")
    out = subprocess.run(["ssh-keygen", "-L", "-f", str(tmp_path / "id-cert.pub")], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert "user certificate" in out and "ops" in out
    valid = next(line for line in out.splitlines() if "Valid:" in line)
    start, end = valid.split("from ")[1].split(" to ")
    span = time.mktime(time.strptime(end.strip(), "%Y-%m-%dT%H:%M:%S")) - time.mktime(
        time.strptime(start.strip(), "%Y-%m-%dT%H:%M:%S")
    )
    assert 0 < span <= vault.settings.ssh_max_ttl + 60
    ca_line = vault.state.ssh_user_ca.read_text().strip()
    assert ca_line.startswith("ssh-ed25519 ")
    with pytest.raises(hvac.exceptions.InvalidRequest):
        configure.sign_ssh_key(c, pub, "root")  # principals are limited
    with pytest.raises(hvac.exceptions.Forbidden):
        configure.sign_ssh_key(vault.client(vault.app_token), pub, "ops")


@pytest.mark.control("RBAC-04", "PAT-04")
def test_the_patch_runs_token_can_only_step_down_and_revoke_itself(vault: VaultEnv) -> None:
    """Stolen from a patch run, the token reads no key, no secret, no policy, and mints no token."""
    c = vault.client(vault.patching_token)
    me = c.auth.token.lookup_self  # lookup-self is in the default policy, which this token lacks
    with pytest.raises(hvac.exceptions.Forbidden):
        me()
    with pytest.raises(hvac.exceptions.Forbidden):
        c.secrets.transit.encrypt_data("pan", PAN)
    with pytest.raises(hvac.exceptions.Forbidden):
        c.sys.read_acl_policy("patching")
    with pytest.raises(hvac.exceptions.Forbidden):
        c.auth.token.create(policies=["patching"])
    with pytest.raises(hvac.exceptions.Forbidden):
        c.write("cubbyhole/stash", value="x")  # not even a cubbyhole: no default policy
    c.auth.token.revoke_self()
    with pytest.raises(hvac.exceptions.Forbidden):  # revoked: the token is gone
        c.auth.token.revoke_self()
