"""What every service shares: the refused-request error, the staff and session records, and
``Service``, the base of each domain service (settings, pools, Vault transit, clock, audit).

Every operation runs in one database transaction together with its audit record, so it is
written entirely or not at all. Vault calls happen before the transaction opens.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from app_stub import audit, rbac
from app_stub.core.config import Settings
from app_stub.crypto import PersonalDataCipher, Transit
from app_stub.gateway import PaymentGateway


class AppError(Exception):
    """A refused request: HTTP status and a message that says what is wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def bad(msg: str) -> AppError:
    return AppError(400, msg)


@dataclass
class Staff:
    id: int
    username: str
    roles: frozenset[str]  # effective roles (training gate applied)
    granted_roles: frozenset[str]
    training_current: bool

    @property
    def perms(self) -> frozenset[rbac.Perm]:
        return rbac.permissions(self.roles)

    @property
    def actor(self) -> str:
        return f"user:{self.id}"


@dataclass
class Session:
    id_hash: str
    user_id: int
    stage: str
    csrf: str
    pending_totp_ct: str | None
    new_cookie: str | None = None  # set when the session id was renewed (send it to the client)


@dataclass
class Hooks:
    """Fault injection points (tests): called between charging and recording a payment."""

    after_charge: Callable[[], None] = field(default=lambda: None)


@dataclass
class Context:
    """The app's shared resources, built once by the app factory."""

    settings: Settings
    pool: ConnectionPool[Any]  # the billing_app role
    transit: Transit  # the billing-app Vault identity
    gateway: PaymentGateway
    cipher: PersonalDataCipher = field(init=False)
    heads: audit.HeadSigner = field(init=False)  # signs the audit chain's head (started by the app factory)
    hooks: Hooks = field(default_factory=Hooks)

    def __post_init__(self) -> None:
        self.cipher = PersonalDataCipher(self.transit, enabled=self.settings.pii_encryption)
        self.heads = audit.HeadSigner(self.pool, self.transit, self.settings)


class Service:
    """Base of the domain services: shortcuts to the shared context, the clock, transactions, audit."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.s = ctx.settings
        self.transit = ctx.transit
        self.cipher = ctx.cipher

    def now(self) -> dt.datetime:
        return self.s.clock()

    @contextmanager
    def tx(self) -> Iterator[psycopg.Connection[Any]]:
        # audit records reach the journal only once the transaction committed
        with self.ctx.pool.connection() as conn, audit.journaled(conn, self.ctx.heads.nudge), conn.transaction():
            yield conn

    def audit_apart(self, actor: str, action: str, target: str, outcome: str, **detail: Any) -> None:
        """Audit a refusal in its own transaction (the refused change itself rolls back)."""
        with self.tx() as conn:
            audit.append(conn, self.now(), actor, action, target, outcome, **detail)
