"""The whole configuration, converged in one pass."""

from __future__ import annotations

from dataclasses import dataclass

import hvac

from billkit.vault.configure.approle import ensure_approles
from billkit.vault.configure.database import Database, ensure_database
from billkit.vault.configure.operators import ensure_operator_mfa
from billkit.vault.configure.pki import ensure_pki
from billkit.vault.configure.policies import ensure_policies
from billkit.vault.configure.settings import Settings
from billkit.vault.configure.ssh import ensure_ssh_ca
from billkit.vault.configure.transit import ensure_transit
from billkit.vault.configure.volumes import ensure_kv
from billkit.vault.pki import RootCA


@dataclass
class Applied:
    changes: list[str]
    ssh_ca_public_key: str
    mfa_method_id: str


def apply(c: hvac.Client, root: RootCA, settings: Settings, db: Database | None = None) -> Applied:
    """Converge the whole configuration (needs a root token). Returns what changed."""
    changes: list[str] = []
    ensure_policies(c, changes)
    ensure_transit(c, settings, changes)
    ensure_pki(c, root, settings, changes)
    ssh_key = ensure_ssh_ca(c, settings, changes)
    ensure_approles(c, settings, changes)
    method_id = ensure_operator_mfa(c, settings, changes)
    ensure_kv(c, changes)
    if db is not None:
        ensure_database(c, db, settings, changes)
    return Applied(changes, ssh_key, method_id)
