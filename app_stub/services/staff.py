"""Staff accounts and roles: creation, disabling, and separation of duties (RBAC-02): nobody changes
their own roles, and ``admin`` and ``payment_processor`` need a second person."""

from __future__ import annotations

import datetime as dt
import re
import secrets
from typing import TYPE_CHECKING, Any

import psycopg
from argon2 import PasswordHasher

from app_stub import audit, rbac
from app_stub.core.config import Settings
from app_stub.services.base import AppError, Context, Service, Staff, bad

if TYPE_CHECKING:
    from app_stub.services.auth import AuthService


class StaffService(Service):
    def __init__(self, ctx: Context, auth: AuthService) -> None:
        super().__init__(ctx)
        self.auth = auth

    def create_user(self, username: str, password: str, actor: str = "system", must_change: bool = True) -> int:
        """A new staff account without roles. ``must_change``: the password someone else chose is
        created expired, so the user replaces it right after MFA at first login (PCI DSS 8.3.5)."""
        if not re.fullmatch(r"[a-z0-9_.-]{3,64}", username):
            raise bad("username must be 3-64 characters: lowercase letters, digits, '.', '_' or '-'")
        self.auth.check_password_policy(password)
        now, h = self.now(), self.auth.ph.hash(password)
        changed = now - self.s.password_max_age - dt.timedelta(seconds=1) if must_change else now
        with self.tx() as conn:
            if conn.execute("SELECT 1 FROM staff.users WHERE username = %s", (username,)).fetchone():
                raise AppError(409, f"user {username!r} already exists")
            (uid,) = conn.execute(
                "INSERT INTO staff.users (username, password_hash, password_changed_at, created_at) "
                "VALUES (%s, %s, %s, %s) RETURNING id",
                (username, h, changed, now),
            ).fetchone()  # type: ignore[misc]
            conn.execute(
                "INSERT INTO staff.password_history (user_id, password_hash, changed_at) VALUES (%s, %s, %s)",
                (uid, h, now),
            )
            audit.append(conn, now, actor, "user.create", f"user:{uid}")
        return uid

    def staff_id(self, username: str) -> int:
        with self.tx() as conn:
            row = conn.execute("SELECT id FROM staff.users WHERE username = %s", (username,)).fetchone()
        if row is None:
            raise AppError(404, f"no user {username!r}")
        return row[0]

    def _not_self(self, staff: Staff, user_id: int, action: str, **detail: Any) -> None:
        if user_id == staff.id:
            self.audit_apart(staff.actor, action, f"user:{user_id}", "refused", reason="own account", **detail)
            raise AppError(403, "you cannot change the roles or state of your own account: ask another admin")

    def _user_exists(self, user_id: int) -> None:
        with self.tx() as conn:
            if not conn.execute("SELECT 1 FROM staff.users WHERE id = %s", (user_id,)).fetchone():
                raise AppError(404, f"no user {user_id}")

    def grant_role(
        self, staff: Staff, user_id: int, role: str, code: str | None, revoke: bool = False
    ) -> dict[str, Any]:
        """Grant or revoke a role with step-up MFA, never on oneself. ``admin`` and ``payment_processor``
        need a second admin: granting them files a request that another admin approves."""
        if role not in rbac.ROLES:
            raise bad(f"unknown role {role!r}; roles: {', '.join(rbac.ROLES)}")
        action = "role.revoke" if revoke else "role.grant"
        self._not_self(staff, user_id, action, role=role)
        self._user_exists(user_id)
        self.auth.step_up(staff, code, action)
        now = self.now()
        with self.tx() as conn:
            conn.execute("SELECT 1 FROM staff.users WHERE id = %s FOR UPDATE", (user_id,))
            if revoke:
                conn.execute("DELETE FROM staff.user_roles WHERE user_id = %s AND role = %s", (user_id, role))
                self.auth.end_sessions(conn, user_id)
                audit.append(conn, now, staff.actor, action, f"user:{user_id}", role=role)
                return {"status": "revoked"}
            held = conn.execute(
                "SELECT 1 FROM staff.user_roles WHERE user_id = %s AND role = %s", (user_id, role)
            ).fetchone()
            if held is None and role in rbac.TWO_PERSON_ROLES:
                row = conn.execute(
                    "INSERT INTO staff.role_requests (user_id, role, requested_by, requested_at) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id",
                    (user_id, role, staff.id, now),
                ).fetchone()
                if row is None:
                    raise AppError(409, f"a request for {role} already waits for approval: see the pending requests")
                audit.append(conn, now, staff.actor, "role.request", f"user:{user_id}", role=role, request=row[0])
                return {"status": "pending", "request_id": row[0]}
            if held is None:
                conn.execute(
                    "INSERT INTO staff.user_roles (user_id, role, granted_by, granted_at) VALUES (%s, %s, %s, %s)",
                    (user_id, role, staff.id, now),
                )
                self.auth.end_sessions(conn, user_id)
            audit.append(conn, now, staff.actor, action, f"user:{user_id}", role=role)
        return {"status": "granted"}

    def role_requests(self, staff: Staff) -> list[dict[str, Any]]:
        """Requests waiting for a second admin (expired ones are not shown: they cannot be approved)."""
        with self.tx() as conn:
            rows = conn.execute(
                "SELECT r.id, r.user_id, u.username, r.role, r.requested_by, q.username, r.requested_at "
                "FROM staff.role_requests r JOIN staff.users u ON u.id = r.user_id "
                "JOIN staff.users q ON q.id = r.requested_by WHERE r.outcome IS NULL AND r.requested_at > %s "
                "ORDER BY r.id",
                (self.now() - self.s.role_request_ttl,),
            ).fetchall()
        keys = ("id", "user_id", "username", "role", "requested_by", "requested_by_username", "requested_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def decide_role_request(self, staff: Staff, request_id: int, approve: bool, code: str | None) -> dict[str, Any]:
        """Approve (a second admin, with step-up MFA) or reject a pending role request."""
        action = "role.approve" if approve else "role.reject"

        def pending(conn: psycopg.Connection[Any], lock: bool) -> tuple[int, str, int]:
            query = "SELECT user_id, role, requested_by, outcome, requested_at FROM staff.role_requests WHERE id = %s"
            row = conn.execute(query + " FOR UPDATE" if lock else query, (request_id,)).fetchone()
            if row is None:
                raise AppError(404, f"no role request {request_id}")
            if row[3] is not None:
                raise AppError(409, f"role request {request_id} was already {row[3]}")
            if row[4] + self.s.role_request_ttl < self.now():
                raise AppError(409, f"role request {request_id} expired: file a new one")
            return row[0], row[1], row[2]

        with self.tx() as conn:
            user_id, role, requested_by = pending(conn, lock=False)
        if approve and staff.id in (requested_by, user_id):
            self.audit_apart(staff.actor, action, f"user:{user_id}", "refused", role=role, request=request_id)
            raise AppError(403, "a second admin must approve: not the one who asked, nor the one who gets the role")
        if approve:
            self.auth.step_up(staff, code, action)
        now = self.now()
        with self.tx() as conn:
            user_id, role, requested_by = pending(conn, lock=True)  # a racing decision may have come first
            conn.execute(
                "UPDATE staff.role_requests SET outcome = %s, decided_by = %s, decided_at = %s WHERE id = %s",
                ("approved" if approve else "rejected", staff.id, now, request_id),
            )
            if approve:
                conn.execute(
                    "INSERT INTO staff.user_roles (user_id, role, granted_by, granted_at) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT DO NOTHING",
                    (user_id, role, requested_by, now),
                )
                self.auth.end_sessions(conn, user_id)
            audit.append(conn, now, staff.actor, action, f"user:{user_id}", role=role, request=request_id)
        return {"status": "granted" if approve else "rejected"}

    def set_disabled(self, staff: Staff, user_id: int, disabled: bool) -> dict[str, str]:
        """Disable (ends every session; login refused) or enable an account; never one's own."""
        action = "user.disable" if disabled else "user.enable"
        self._not_self(staff, user_id, action)
        now = self.now()
        with self.tx() as conn:
            row = conn.execute(
                "UPDATE staff.users SET disabled_at = %s WHERE id = %s RETURNING id",
                (now if disabled else None, user_id),
            ).fetchone()
            if row is None:
                raise AppError(404, f"no user {user_id}")
            self.auth.end_sessions(conn, user_id)
            audit.append(conn, now, staff.actor, action, f"user:{user_id}")
        return {"status": "disabled" if disabled else "enabled"}

    def list_users(self, staff: Staff) -> list[dict[str, Any]]:
        with self.tx() as conn:
            rows = conn.execute(
                "SELECT u.id, u.username, u.locked_until, u.training_version, "
                "COALESCE(array_agg(r.role ORDER BY r.role) FILTER (WHERE r.role IS NOT NULL), '{}'), "
                "u.disabled_at IS NOT NULL "
                "FROM staff.users u LEFT JOIN staff.user_roles r ON r.user_id = u.id GROUP BY u.id ORDER BY u.id"
            ).fetchall()
            audit.append(conn, self.now(), staff.actor, "user.list", "users")
        return [
            {
                "id": r[0],
                "username": r[1],
                "locked_until": r[2],
                "training_version": r[3],
                "roles": r[4],
                "disabled": r[5],
            }
            for r in rows
        ]


def bootstrap_admin(dsn: str, username: str, settings: Settings | None = None) -> str:
    """Create the first admin (role granted, training and MFA still to do at first login); return its
    one-time password. Refuses when any staff account exists already."""
    s = settings or Settings()
    if not re.fullmatch(r"[a-z0-9_.-]{3,64}", username):
        raise bad("username must be 3-64 characters: lowercase letters, digits, '.', '_' or '-'")
    password = secrets.token_urlsafe(18) + "7a"  # 146 random bits; meets the letters-and-digits rule
    ph = PasswordHasher(time_cost=s.argon2_time_cost, memory_cost=s.argon2_memory_kib, parallelism=s.argon2_lanes)
    h, now = ph.hash(password), s.clock()
    with psycopg.connect(dsn) as conn, audit.journaled(conn), conn.transaction():
        conn.execute("LOCK TABLE staff.users IN EXCLUSIVE MODE")
        if conn.execute("SELECT 1 FROM staff.users LIMIT 1").fetchone():
            raise AppError(409, "staff accounts exist already: the first admin is created only once")
        # the password is set as expired, so the admin must choose their own at first login
        row = conn.execute(
            "INSERT INTO staff.users (username, password_hash, password_changed_at, created_at) "
            "VALUES (%s, %s, %s, %s) RETURNING id",
            (username, h, now - s.password_max_age - dt.timedelta(seconds=1), now),
        ).fetchone()
        if row is None:
            raise AppError(500, "could not create the admin")
        conn.execute("INSERT INTO staff.user_roles (user_id, role, granted_at) VALUES (%s, 'admin', %s)", (row[0], now))
        audit.append(conn, now, "system", "user.bootstrap_admin", f"user:{row[0]}", role="admin")
    return password


def operator_approve_role_request(dsn: str, request_id: int, operator: str, settings: Settings | None = None) -> str:
    """The second person when only one admin exists (after bootstrap): an operator holding the schema
    owner's credentials approves a pending request, audited under their name. Returns the role granted."""
    s = settings or Settings()
    if not re.fullmatch(r"[a-z0-9_.-]{1,64}", operator):
        raise bad("operator name must be 1-64 characters: lowercase letters, digits, '.', '_' or '-'")
    now = s.clock()
    with psycopg.connect(dsn) as conn, audit.journaled(conn), conn.transaction():
        row = conn.execute(
            "SELECT user_id, role, requested_by, requested_at FROM staff.role_requests WHERE id = %s "
            "AND outcome IS NULL FOR UPDATE",
            (request_id,),
        ).fetchone()
        if row is None:
            raise AppError(404, f"no pending role request {request_id}: list them in the app or staff.role_requests")
        if row[3] + s.role_request_ttl < now:
            raise AppError(409, f"role request {request_id} expired: file a new one")
        conn.execute(
            "UPDATE staff.role_requests SET outcome = 'approved', decided_at = %s WHERE id = %s", (now, request_id)
        )
        conn.execute(
            "INSERT INTO staff.user_roles (user_id, role, granted_by, granted_at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            (row[0], row[1], row[2], now),
        )
        conn.execute("DELETE FROM staff.sessions WHERE user_id = %s", (row[0],))
        audit.append(
            conn, now, f"operator:{operator}", "role.approve", f"user:{row[0]}", role=row[1], request=request_id
        )
    return str(row[1])
