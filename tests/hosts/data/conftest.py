"""PostgreSQL on db-1, checked from the controller over the data network (the operator flow to the
database) with Vault's dynamic credentials, and on db-1 itself through testinfra.

One root session of the lab's Vault for the whole folder (15 minutes at most, revoked at the end):
it reads dynamic credentials and sets up a short-lived role for the expiry check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import hvac
import psycopg
import pytest

from billkit.lab import data
from billkit.vault import configure
from billkit.vault import lab as vault_lab
from billkit.vault.deploy import open_cluster
from billkit.vault.server import lab_nodes
from infra.topology import POSTGRES, LabHost


@dataclass(frozen=True)
class Creds:
    user: str
    password: str
    lease_id: str


@dataclass
class DataEnv:
    vault: hvac.Client  # root, for this folder only
    host: LabHost
    ca_file: Path
    leases: list[str] = field(default_factory=list)

    def creds(self, role: str) -> Creds:
        resp = self.vault.adapter.get(f"/v1/{configure.DATABASE}/creds/{role}")
        assert isinstance(resp, dict)
        self.leases.append(resp["lease_id"])
        return Creds(resp["data"]["username"], resp["data"]["password"], resp["lease_id"])

    def dsn(self, creds: Creds | None = None, **extra: str) -> str:
        opts = {
            "host": self.host.address, "port": str(POSTGRES), "dbname": "billing", "sslmode": "verify-full",
            "sslrootcert": str(self.ca_file), "connect_timeout": "10",
        }  # fmt: skip
        if creds:
            opts |= {"user": creds.user, "password": creds.password}
        opts |= extra
        return " ".join(f"{k}={v}" for k, v in opts.items())

    def connect(self, creds: Creds, **extra: str) -> psycopg.Connection:
        return psycopg.connect(self.dsn(creds, **extra), autocommit=True)


# Per module, not per session: the root session (15 minutes at most) must end, and its leases be
# revoked, while the lab still runs (the session's last test takes the lab down).
@pytest.fixture(scope="module")
def db(lab_up: None) -> Iterator[DataEnv]:
    _, root = open_cluster(lab_nodes(), vault_lab.state())
    with data.lab_root_session() as c:
        env = DataEnv(c, data.db_host(), root.cert_path)
        try:
            yield env
        finally:
            for lease in env.leases:
                with contextlib.suppress(hvac.exceptions.VaultError):
                    c.sys.revoke_lease(lease)
