"""PostgreSQL on db-1 against the running lab: TLS only, scram only, pgaudit, encrypted volume, dynamic roles."""

from __future__ import annotations

import base64
import re
import secrets
import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
import requests
from psycopg import sql

from billkit.lab import data
from billkit.lab.hosts import ssh_command
from billkit.lab.testing import host_urls
from billkit.vault import configure
from billkit.vault.pki import issuer_cn
from billkit.vault.server import lab_nodes
from infra.topology import POSTGRES, lab_gateway
from tests.hosts.data.conftest import DataEnv

pytestmark = pytest.mark.lab
DRILL = pytest.mark.drill(
    "postgresql",
    disrupts="creates and drops tables and a schema on db-1, adds a short-lived Vault database role, issues a "
    "certificate",
)
testinfra_hosts = host_urls("db")

CONF = "/etc/postgresql/15/main"
LOG = "/var/log/postgresql/postgresql-15-main.log"
SSL_REQUEST = struct.pack("!ii", 8, 80877103)


def _tls_handshake(address: str, version: ssl.TLSVersion, ca_file: str) -> tuple[str | None, str]:
    """PostgreSQL's SSLRequest, then a TLS handshake capped at `version`: (negotiated version or None, error)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca_file)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.0/1.1: the server must refuse them
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = version
    with socket.create_connection((address, POSTGRES), timeout=10) as raw:
        raw.sendall(SSL_REQUEST)
        assert raw.recv(1) == b"S", "the server does not offer TLS"
        try:
            with ctx.wrap_socket(raw, server_hostname=address) as tls:
                return tls.version(), ""
        except ssl.SSLError as exc:
            return None, str(exc)


# --- ENC-02: TLS only, scram only, no trust, data address only ---------------------------------


@pytest.mark.control("ENC-02")
def test_tls_below_1_2_is_refused_by_the_server(db: DataEnv):
    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        version, error = _tls_handshake(db.host.address, old, str(db.ca_file))
        assert version is None, f"the server accepted {version}"
        assert "PROTOCOL_VERSION" in error.upper() or "UNSUPPORTED_PROTOCOL" in error.upper(), error
    version, error = _tls_handshake(db.host.address, ssl.TLSVersion.TLSv1_2, str(db.ca_file))
    assert version == "TLSv1.2", error


@pytest.mark.control("ENC-02", "ENC-05")
def test_server_certificate_comes_from_the_vault_pki_and_verifies(db: DataEnv):
    creds = db.creds(configure.DB_APP)
    with db.connect(creds) as conn:
        row = conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert row is not None and row[0] is True and row[1] in ("TLSv1.2", "TLSv1.3")
    pem = data.cert_path(db.host).read_bytes()
    assert issuer_cn(pem) == "billkit lab intermediate CA"


@pytest.mark.control("ENC-02")
def test_plain_tcp_is_refused_even_with_valid_credentials(db: DataEnv):
    creds = db.creds(configure.DB_APP)
    with pytest.raises(psycopg.OperationalError, match="no encryption|reject"):
        psycopg.connect(db.dsn(creds, sslmode="disable")).close()


@pytest.mark.control("ENC-02")
def test_password_less_and_wrong_password_logins_are_refused(db: DataEnv):
    creds = db.creds(configure.DB_APP)
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(db.dsn(creds, password="''")).close()  # noqa: S106 - an empty password
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(db.dsn(creds, password=secrets.token_urlsafe(16))).close()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(db.dsn(user="postgres", password=data.admin_password())).close()


@pytest.mark.control("RBAC-05")
def test_vault_admin_password_was_rotated_by_vault(db: DataEnv):
    """The only static login (Vault's admin role) no longer has the password the deployment set."""
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(db.dsn(user="vault_admin", password=data.admin_password())).close()
    conn = db.vault.adapter.get(f"/v1/{configure.DATABASE}/config/{configure.DB_CONNECTION}")
    assert isinstance(conn, dict)
    details = conn["data"]["connection_details"]
    assert details["username"] == "vault_admin" and "password" not in details
    assert "sslmode=verify-full" in details["connection_url"]


@pytest.mark.control("ENC-02")
def test_pg_hba_is_hostssl_scram_only(host):
    rules = [ln.split("#", 1)[0].split() for ln in host.file(f"{CONF}/pg_hba.conf").content_string.splitlines()]
    rules = [r for r in rules if r]
    assert rules, "pg_hba.conf has no rule"
    assert not any("trust" in r or "password" in r or "md5" in r for r in rules)
    assert rules[0] == ["local", "all", "postgres", "peer"]
    # the database exporter: its own database only, over the socket (MON-01)
    assert rules[1] == ["local", "postgres", "prometheus", "peer"]
    assert rules[-1] == ["hostnossl", "all", "all", "0.0.0.0/0", "reject"]
    for r in rules[2:-1]:
        assert r[0] == "hostssl" and r[-1] == "scram-sha-256", r
    # Exactly the clients the topology lets in: the app hosts, the Vault nodes, the operator (gateway).
    sources = {r[3] for r in rules[2:-1]}
    assert f"{lab_gateway('data')}/32" in sources
    assert all(s.endswith("/32") for s in sources)


@pytest.mark.control("ENC-02")
def test_listens_only_on_the_data_address(host):
    addr = host.ansible.get_variables()["ansible_host"]
    assert host.socket(f"tcp://{addr}:{POSTGRES}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{POSTGRES}").is_listening
    assert not host.socket(f"tcp://127.0.0.1:{POSTGRES}").is_listening
    settings = host.check_output(
        "sudo -u postgres psql -XAtc \"SELECT name || '=' || setting FROM pg_settings WHERE name IN "
        "('ssl', 'ssl_min_protocol_version', 'password_encryption', 'listen_addresses', 'log_connections', "
        "'log_disconnections', 'fsync', 'synchronous_commit', 'data_checksums')\""
    ).split()
    assert sorted(settings) == sorted([
        "ssl=on", "ssl_min_protocol_version=TLSv1.2", "password_encryption=scram-sha-256",
        f"listen_addresses={addr}", "log_connections=on", "log_disconnections=on", "fsync=on",
        "synchronous_commit=on", "data_checksums=on",
    ])  # fmt: skip
    key = host.file("/etc/billkit/postgresql-tls/server.key")
    assert key.user == "root" and key.group == "postgres" and key.mode == 0o640


# --- EAR-01: the data directory on the encrypted volume ----------------------------------------


@pytest.mark.control("EAR-01")
def test_data_directory_is_on_the_fscrypt_volume(host):
    datadir = host.check_output("sudo -u postgres psql -XAtc 'SHOW data_directory'")
    assert datadir == "/srv/pgvol/data/15/main"
    status = host.check_output("fscrypt status /srv/pgvol/data")
    assert "is encrypted with fscrypt" in status
    assert "policy_version:2" in status and "contents:AES_256_XTS" in status and "filenames:AES_256_CTS" in status
    assert re.search(r'raw key protector "db-1-data"', status)
    mount = host.check_output("findmnt -no SOURCE,FSTYPE,OPTIONS /srv/pgvol").split()
    assert mount[0].startswith("/dev/loop") and mount[1] == "ext4"
    assert {"nodev", "nosuid", "noexec"} <= set(mount[2].split(","))
    backing = host.check_output(f"losetup -nO BACK-FILE {mount[0]}")
    assert backing == data.VOLUME_IMAGE
    assert "encrypt" in host.check_output(f"dumpe2fs -h {data.VOLUME_IMAGE} 2>/dev/null | grep -i features")
    unit = host.service("billkit-volume")
    assert unit.is_enabled and unit.is_running
    dropin = host.file("/etc/systemd/system/postgresql@15-main.service.d/billkit-volume.conf").content_string
    assert "Requires=billkit-volume.service" in dropin and "After=billkit-volume.service" in dropin


@pytest.mark.control("EAR-01")
def test_the_key_is_only_in_vault(host, db: DataEnv):
    """The volume key is in Vault KV; db-1 keeps neither it nor a token, only its certificate identity."""
    key = db.vault.adapter.get(f"/v1/{configure.volume_key_path(db.host.name)}")
    assert isinstance(key, dict)
    raw = key["data"]["data"]["key"]
    assert len(base64.b64decode(raw)) == 32
    settings = host.file("/etc/billkit/volume.json")
    assert settings.mode == 0o600 and settings.user == "root"
    # Search db-1's disk for the key (base64 and hex); the patterns go through stdin, never a command line.
    patterns = f"{raw}\n{base64.b64decode(raw).hex()}\n"
    cmd = "sudo grep -rlaF -f /dev/stdin /etc /srv /root /home /var/lib /var/log /usr/local /tmp /var/tmp"
    found = subprocess.run(ssh_command(db.host, cmd), input=patterns, capture_output=True, text=True, timeout=300,
                           check=False)  # fmt: skip
    assert found.returncode == 1 and not found.stdout.strip(), f"the volume key is on disk: {found.stdout}"
    role = db.vault.adapter.get(f"/v1/auth/{configure.CERT_AUTH}/certs/{db.host.name}")
    assert isinstance(role, dict)
    assert role["data"]["allowed_common_names"] == [db.host.name]
    assert role["data"]["token_policies"] == [f"volume-{db.host.name}"]
    assert [c.removesuffix("/32") for c in role["data"]["token_bound_cidrs"]] == [db.host.address]


@DRILL
@pytest.mark.control("EAR-01")
def test_the_loop_image_holds_no_plaintext_of_a_row(host):
    marker = "billkit-ear01-" + secrets.token_hex(12)
    insert = f"INSERT INTO billkit_ear01_check VALUES ('{marker}')"  # noqa: S608 - the marker is hex digits
    sql_text = f"CREATE TABLE IF NOT EXISTS billkit_ear01_check (marker text); {insert}; CHECKPOINT;"
    host.check_output(f'sudo -u postgres psql -X -d postgres -c "{sql_text}"')
    host.check_output("sync")
    try:
        # Positive control: the row reached the files (read through the unlocked folder)...
        assert host.run(f"grep -rqaF {marker} /srv/pgvol/data/15/main/base").rc == 0
        # ...but the volume's image (what a stolen disk holds) has no trace of it.
        assert host.run(f"grep -qaF {marker} {data.VOLUME_IMAGE}").rc == 1
    finally:
        host.run('sudo -u postgres psql -X -d postgres -c "DROP TABLE IF EXISTS billkit_ear01_check"')


# --- LOG-10: pgaudit and connection logging ------------------------------------------------------


@DRILL
@pytest.mark.control("LOG-10")
def test_pgaudit_records_ddl_role_changes_and_sensitive_writes(host, db: DataEnv):
    table = "billkit_log10_" + secrets.token_hex(4)
    creds = db.creds(configure.DB_MIGRATE)  # Vault creates the role: CREATE ROLE + GRANT (role class)
    with db.connect(creds) as conn:
        conn.execute("SET ROLE billing_owner")
        conn.execute(sql.SQL("CREATE TABLE public.{} (id int, pan_ct text)").format(sql.Identifier(table)))
        conn.execute(sql.SQL("INSERT INTO public.{} VALUES (1, 'vault:v1:x')").format(sql.Identifier(table)))
        conn.execute(sql.SQL("SELECT * FROM public.{}").format(sql.Identifier(table)))
        conn.execute(sql.SQL("DROP TABLE public.{}").format(sql.Identifier(table)))
    deadline = time.monotonic() + 10
    while True:
        log = host.check_output(f"grep -aF -e {creds.user} -e {table} {LOG}")
        if f"DROP TABLE public.{table}" in log or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    lines = log.splitlines()

    def has(*parts: str) -> bool:
        return any(all(p in ln for p in parts) for ln in lines)

    assert has("AUDIT: SESSION", ",ROLE,CREATE ROLE,", creds.user), "role creation not audited"
    assert has("AUDIT: SESSION", ",ROLE,GRANT ROLE,", creds.user), "role grant not audited"
    assert not any(creds.password in ln for ln in lines), "a password reached the server log"
    assert has("AUDIT: SESSION", ",DDL,CREATE TABLE,", table)
    assert has("AUDIT: OBJECT", ",WRITE,INSERT,TABLE,", f"public.{table}")
    assert not has("AUDIT:", ",READ,SELECT,", table), "reads are not meant to be audited"
    assert has("AUDIT: SESSION", ",DDL,DROP TABLE,", table)
    assert has("connection authorized:", f"user={creds.user}", "SSL enabled")
    assert has("disconnection:", f"user={creds.user}")


# --- RBAC-05: least privilege, dynamic credentials -----------------------------------------------


@pytest.mark.control("RBAC-05")
def test_roles_are_least_privilege(db: DataEnv):
    creds = db.creds(configure.DB_AUDITOR)
    with db.connect(creds) as conn:
        rows = dict(conn.execute(
            "SELECT rolname, rolsuper OR rolcreatedb OR rolreplication OR rolbypassrls FROM pg_roles "
            "WHERE rolname IN ('billing_owner', 'billing_app', 'billing_tokenizer', 'billing_auditor', "
            "'billing_pgaudit', 'vault_admin')"
        ).fetchall())  # fmt: skip
        login = dict(
            conn.execute("SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname LIKE 'billing_%'").fetchall()
        )
        owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'billing'").fetchone()
        admin = conn.execute("SELECT rolcreaterole FROM pg_roles WHERE rolname = 'vault_admin'").fetchone()
    assert set(rows) == {"billing_owner", "billing_app", "billing_tokenizer", "billing_auditor", "billing_pgaudit",
                         "vault_admin"}  # fmt: skip
    assert not any(rows.values()), f"a role has superuser, createdb, replication or bypassrls: {rows}"
    assert not any(login.values()), f"a group role can log in: {login}"
    assert owner == ("billing_owner",)
    assert admin == (True,)


@pytest.mark.control("RBAC-05")
def test_each_dynamic_credential_has_only_its_group(db: DataEnv):
    expected = {configure.DB_APP: "billing_app", configure.DB_TOKENIZER: "billing_tokenizer",
                configure.DB_MIGRATE: "billing_owner", configure.DB_AUDITOR: "billing_auditor"}  # fmt: skip
    for role, group in expected.items():
        creds = db.creds(role)
        assert re.match(r"^v-", creds.user), creds.user
        with db.connect(creds) as conn:
            groups = [r[0] for r in conn.execute(
                "SELECT b.rolname FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid "
                "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = current_user"
            ).fetchall()]  # fmt: skip
            until = conn.execute("SELECT rolvaliduntil FROM pg_roles WHERE rolname = current_user").fetchone()
        assert groups == [group], f"{role}: {groups}"
        assert until is not None and until[0] is not None, f"{role}: no expiry on the login"


@DRILL
@pytest.mark.control("RBAC-05")
def test_auditor_reads_but_cannot_write_and_migrate_must_set_role(db: DataEnv):
    """A schema and table made by the owner (as migrations do): the auditor reads them through the
    owner's default privileges, and can change nothing; the app cannot create anything."""
    schema = "billkit_rbac05_" + secrets.token_hex(4)
    table = sql.Identifier(schema, "t")
    migrate = db.creds(configure.DB_MIGRATE)
    with db.connect(migrate) as conn:
        # Without SET ROLE the credential has none of the owner's rights (NOINHERIT).
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute("SET ROLE billing_owner")
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("CREATE TABLE {} (v text)").format(table))
        conn.execute(sql.SQL("INSERT INTO {} VALUES ('row')").format(table))
    try:
        auditor = db.creds(configure.DB_AUDITOR)
        with db.connect(auditor) as conn:
            assert conn.execute(sql.SQL("SELECT v FROM {}").format(table)).fetchall() == [("row",)]
            for stmt in ("INSERT INTO {} VALUES ('x')", "UPDATE {} SET v = 'x'", "DELETE FROM {}", "DROP TABLE {}",
                         "TRUNCATE {}"):  # fmt: skip
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(sql.SQL(stmt).format(table))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql.SQL("CREATE TABLE {} (v text)").format(sql.Identifier(schema, "auditor_was_here")))
        app = db.creds(configure.DB_APP)
        with db.connect(app) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("CREATE TABLE {} (v text)").format(sql.Identifier(schema, "app_was_here")))
    finally:
        with db.connect(migrate) as conn:
            conn.execute("SET ROLE billing_owner")
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


EXPIRY_ROLE = "billkit-check-expiry"
EXPIRY_TTL = 3


@DRILL
@pytest.mark.control("RBAC-05")
def test_dynamic_credentials_expire(db: DataEnv):
    c = db.vault
    conn_path = f"{configure.DATABASE}/config/{configure.DB_CONNECTION}"
    allowed = list(c.adapter.get(f"/v1/{conn_path}")["data"]["allowed_roles"])
    c.adapter.post(f"/v1/{configure.DATABASE}/roles/{EXPIRY_ROLE}", json={
        "db_name": configure.DB_CONNECTION, "creation_statements": configure.creation_statements("billing_app"),
        "revocation_statements": configure.REVOCATION, "default_ttl": EXPIRY_TTL, "max_ttl": EXPIRY_TTL,
    })  # fmt: skip
    c.adapter.post(f"/v1/{conn_path}", json={"allowed_roles": [*allowed, EXPIRY_ROLE]})
    try:
        creds = db.creds(EXPIRY_ROLE)
        with db.connect(creds) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (creds.user,)
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(db.dsn(creds)).close()
            except psycopg.OperationalError as exc:
                assert "password authentication failed" in str(exc)
                break
            assert time.monotonic() < deadline, "an expired credential still logs in after 60 s"
            time.sleep(1)
    finally:
        c.adapter.post(f"/v1/{conn_path}", json={"allowed_roles": allowed})
        c.adapter.delete(f"/v1/{configure.DATABASE}/roles/{EXPIRY_ROLE}")


def _cert_login(db: DataEnv, cert: Path, key: Path) -> requests.Response:
    node = lab_nodes()[0]
    return requests.post(f"{node.api_addr}/v1/auth/{configure.CERT_AUTH}/login", json={"name": db.host.name},
                         cert=(str(cert), str(key)), verify=str(db.ca_file), timeout=10)  # fmt: skip


@DRILL
@pytest.mark.control("EAR-01")
def test_only_db_1_from_its_own_address_reads_the_volume_key(db: DataEnv, tmp_path: Path):
    """Another host's PKI certificate cannot log in as db-1; db-1's own certificate used from anywhere
    else (here: the controller) gets a token that cannot read the key (bound to db-1's address)."""
    other = configure.issue_cert(db.vault, "app-1", ttl=300)
    (tmp_path / "other.pem").write_text(other.fullchain)
    (tmp_path / "other.key").write_text(other.private_key)
    refused = _cert_login(db, tmp_path / "other.pem", tmp_path / "other.key")
    assert refused.status_code in (400, 403), refused.text
    own = data.cert_path(db.host)
    resp = _cert_login(db, own, own.with_name("server.key"))
    if resp.status_code == 200:
        token = resp.json()["auth"]["client_token"]
        try:
            read = requests.get(f"{lab_nodes()[0].api_addr}/v1/{configure.volume_key_path(db.host.name)}",
                                headers={"X-Vault-Token": token}, verify=str(db.ca_file), timeout=10)  # fmt: skip
            assert read.status_code == 403, "db-1's volume key was read from the controller's address"
        finally:
            db.vault.auth.token.revoke(token)
    else:
        assert resp.status_code in (400, 403), resp.text
