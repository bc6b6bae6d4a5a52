"""One real 3-node Vault cluster (TLS, raft, audit) and one PostgreSQL on loopback per session.

Host-layer checks that need no lab: they run in the fast suite too. The cluster is converged by
the same code that configures the lab and an AWS cluster (billkit.vault.deploy.converge).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import hvac
import pyotp
import pytest

from billkit.patching.rollout import step_down_token
from billkit.vault import configure
from billkit.vault.bootstrap import Cluster, root_session
from billkit.vault.deploy import Result, StateLayout, converge, open_cluster
from billkit.vault.local import LocalCluster, cert_installer, start_local_cluster
from billkit.vault.pki import RootCA, ensure_root_ca
from tests.hosts.keys.support import Operator, VaultEnv, postgres, prepare_billing

# A role whose secret IDs only work from the lab's app tier: a login from loopback must fail.
CIDR_PROBE_ROLE = "cidr-probe"
# A dynamic database role with a 4-second lease, for the expiry check.
DRILL_DB_ROLE = "billing-app-drill"
DRILL_TTL = 4


@pytest.fixture(scope="session")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultEnv]:
    base: Path = tmp_path_factory.mktemp("vault")
    state = StateLayout(base / "state")
    local = start_local_cluster(base / "nodes", ensure_root_ca(state.pki))
    with contextlib.ExitStack() as stack:
        stack.callback(local.close)
        settings = configure.Settings(
            service_names=tuple(n.name for n in local.nodes), allow_localhost=True, app_cidrs=("127.0.0.0/8",),
        )  # fmt: skip
        first = converge(local.nodes, state, settings, cert_installer(local))
        cluster, root = open_cluster(local.nodes, state)
        with root_session(cluster) as c:
            env = _setup(c, stack, local, cluster, root, state, settings, first)
        code = env.operator.totp.now()
        env.operator_token = configure.operator_login(env.client(), "alice", env.operator.password, code)
        env.operator_code_used = code
        yield env


def _setup(c: hvac.Client, stack: contextlib.ExitStack, local: LocalCluster, cluster: Cluster, root: RootCA,
           state: StateLayout, settings: configure.Settings, first: Result) -> VaultEnv:  # fmt: skip
    # PostgreSQL with a certificate from the PKI engine; then the database secrets engine on it.
    pg_cert = configure.issue_cert(c, "localhost", ips=("127.0.0.1",))
    pg = stack.enter_context(postgres(pg_cert.fullchain, pg_cert.private_key, root.cert_path))
    admin_pw = prepare_billing(pg)
    db = configure.Database("127.0.0.1", pg.port, "billing", "vault_admin", admin_pw, str(root.cert_path))
    configure.ensure_database(c, db, settings, [])
    # A drill role with a 4-second lease, and a token that may only use it.
    c.adapter.post(f"/v1/database/roles/{DRILL_DB_ROLE}", json={
        "db_name": configure.DB_CONNECTION, "creation_statements": configure.creation_statements("billing_app"),
        "revocation_statements": configure.REVOCATION, "default_ttl": DRILL_TTL, "max_ttl": DRILL_TTL,
    })  # fmt: skip
    c.adapter.post(f"/v1/database/config/{configure.DB_CONNECTION}",
                   json={"allowed_roles": [configure.BILLING_APP, "auditor", DRILL_DB_ROLE]})  # fmt: skip
    c.sys.create_or_update_acl_policy(
        "test-drill",
        f'path "database/creds/{DRILL_DB_ROLE}" {{ capabilities = ["read"] }}\n'
        'path "secret/data/drill/*" { capabilities = ["create", "update", "read"] }\n',
    )
    drill_token = c.auth.token.create_orphan(policies=["test-drill"], ttl="30m")["auth"]["client_token"]
    # The app and the payment processor log in the way they do in production: wrapped secret IDs.
    tokens = {}
    for role in (configure.BILLING_APP, configure.PAYMENT_PROCESSOR):
        wrapped = configure.wrapped_secret_id(c, role)
        tokens[role] = configure.approle_login(c, configure.role_id(c, role), wrapped)
    c.adapter.post(f"/v1/auth/approle/role/{CIDR_PROBE_ROLE}", json={
        "token_policies": [configure.BILLING_APP], "secret_id_ttl": "10m",
        "secret_id_bound_cidrs": ["10.77.20.0/24"], "token_bound_cidrs": ["10.77.20.0/24"],
    })  # fmt: skip
    password = secrets.token_urlsafe(20)
    op = configure.add_operator(c, "alice", password)

    def orphan(policy: str) -> str:
        return c.auth.token.create_orphan(policies=[policy], ttl="30m")["auth"]["client_token"]

    return VaultEnv(
        local=local, cluster=cluster, root=root, state=state, settings=settings, first=first, pg=pg,
        app_token=tokens[configure.BILLING_APP], processor_token=tokens[configure.PAYMENT_PROCESSOR],
        auditor_token=orphan("auditor"), drill_token=drill_token,
        operator=Operator("alice", password, pyotp.TOTP(op.totp_secret)),
        app_role_id=configure.role_id(c, configure.BILLING_APP),
        probe_role_id=configure.role_id(c, CIDR_PROBE_ROLE),
        probe_wrapped_secret=configure.wrapped_secret_id(c, CIDR_PROBE_ROLE),
        db_admin_initial_password=admin_pw, service_cert_token=orphan("service-certs"),
        rotator_token=orphan("key-rotation"), backup_token=orphan("backup-agent"),
        patching_token=step_down_token(c),
    )  # fmt: skip
