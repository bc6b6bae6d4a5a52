"""The billing app's core: staff authentication, billing, payments and data-subject requests.

Every operation runs in one database transaction together with its audit record, so it is
written entirely or not at all. Vault calls happen before the transaction opens.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, LiteralString

import psycopg
import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from psycopg import sql
from psycopg_pool import ConnectionPool

from app_stub import audit, rbac
from app_stub import vault_setup as vs
from app_stub.config import Settings
from app_stub.crypto import PersonalDataCipher, Transit
from app_stub.gateway import PaymentGateway
from app_stub.tokenization import TOKEN_RE, Card, CardError, TokenVault, token_details

log = logging.getLogger("billkit.app.payments")
_RECOVERY_LOCK = 7_341_101  # advisory lock: one payment-recovery sweep at a time across app hosts


class _SameKeyCommitted(Exception):
    """A concurrent request with the same idempotency key committed its payment first."""


class AppError(Exception):
    """A refused request: HTTP status and a message that says what is wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _bad(msg: str) -> AppError:
    return AppError(400, msg)


class BoundedHasher(PasswordHasher):
    """argon2id with at most ``slots`` hashes at once: each costs its memory (64 MiB in production), so
    a flood of unauthenticated logins waits here (then gets 503) instead of exhausting the host's memory."""

    def __init__(self, slots: int, wait_seconds: float = 10.0, **params: Any) -> None:
        super().__init__(**params)
        self._slots, self._wait = threading.BoundedSemaphore(slots), wait_seconds

    @contextmanager
    def _slot(self) -> Iterator[None]:
        if not self._slots.acquire(timeout=self._wait):
            raise AppError(503, "too many sign-ins at once: try again in a moment")
        try:
            yield
        finally:
            self._slots.release()

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        with self._slot():
            return super().hash(password, salt=salt)

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:  # noqa: A002 - the base class's name
        with self._slot():
            return super().verify(hash, password)


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


class Core:
    def __init__(
        self,
        settings: Settings,
        pool: ConnectionPool,
        tokenizer_pool: ConnectionPool,
        transit: Transit,
        processor: Transit,
        gateway: PaymentGateway,
    ) -> None:
        self.s = settings
        self.pool = pool
        self.transit = transit
        self.cipher = PersonalDataCipher(transit, enabled=settings.pii_encryption)
        self.tokens = TokenVault(tokenizer_pool, transit, processor)
        self.gateway = gateway
        self.hooks = Hooks()
        # argon2id; the defaults are RFC 9106's low-memory profile (t=3, 64 MiB, p=4)
        self.ph = BoundedHasher(
            settings.argon2_concurrency,
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_lanes,
        )
        self._dummy_hash = self.ph.hash(secrets.token_urlsafe(16))

    def now(self) -> dt.datetime:
        return self.s.clock()

    @contextmanager
    def tx(self) -> Iterator[psycopg.Connection[Any]]:
        with self.pool.connection() as conn, conn.transaction():
            yield conn

    def audit_apart(self, actor: str, action: str, target: str, outcome: str, **detail: Any) -> None:
        """Audit a refusal in its own transaction (the refused change itself rolls back)."""
        with self.tx() as conn:
            audit.append(conn, self.now(), actor, action, target, outcome, **detail)

    # --- staff accounts ---------------------------------------------------------------

    def check_password_policy(self, password: str) -> None:
        """PCI DSS 8.3.6: at least 12 characters with letters and digits."""
        if len(password) < self.s.password_min_length:
            raise _bad(f"password must have at least {self.s.password_min_length} characters")
        if len(password) > 256:
            raise _bad("password must have at most 256 characters")
        if not re.search(r"[A-Za-z]", password) or not re.search(r"[0-9]", password):
            raise _bad("password must contain both letters and digits")

    def create_user(self, username: str, password: str, actor: str = "system", must_change: bool = True) -> int:
        """A new staff account without roles. ``must_change``: the password someone else chose is
        created expired, so the user replaces it right after MFA at first login (PCI DSS 8.3.5)."""
        if not re.fullmatch(r"[a-z0-9_.-]{3,64}", username):
            raise _bad("username must be 3-64 characters: lowercase letters, digits, '.', '_' or '-'")
        self.check_password_policy(password)
        now, h = self.now(), self.ph.hash(password)
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

    def staff(self, conn: psycopg.Connection[Any], user_id: int) -> Staff:
        row = conn.execute(
            "SELECT id, username, training_version, training_acked_at, disabled_at FROM staff.users WHERE id = %s",
            (user_id,),
        ).fetchone()
        if row is None or row[4] is not None:
            raise AppError(401, "unknown or disabled user: log in again")
        granted = frozenset(
            r[0] for r in conn.execute("SELECT role FROM staff.user_roles WHERE user_id = %s", (user_id,))
        )
        current = (
            row[2] == self.s.training_version and row[3] is not None and row[3] + self.s.training_validity > self.now()
        )
        return Staff(row[0], row[1], granted if current else frozenset(), granted, current)

    LOCKED = "account locked after too many failed attempts; try again later or ask an admin"

    def _count_failure(
        self, conn: psycopg.Connection[Any], uid: int, action: str, target: str, message: str
    ) -> AppError:
        """One more failed proof of identity (password, MFA or step-up code): all count toward one lockout
        (HRD-03). Committed with the caller's transaction, which must not roll back; returns the error to raise."""
        now = self.now()
        failed, last = conn.execute(
            "SELECT failed_attempts, last_failed_at FROM staff.users WHERE id = %s FOR UPDATE", (uid,)
        ).fetchone()  # type: ignore[misc]
        failed = 1 if last is None or last + self.s.failure_window < now else failed + 1
        locked = now + self.s.lockout if failed >= self.s.max_failed_logins else None
        conn.execute(
            "UPDATE staff.users SET failed_attempts = %s, last_failed_at = %s, "
            "locked_until = COALESCE(%s, locked_until) WHERE id = %s",
            (failed, now, locked, uid),
        )
        audit.append(conn, now, f"user:{uid}", action, target, "failure", failed_attempts=failed)
        if locked:
            audit.append(conn, now, "system", "auth.lockout", f"user:{uid}", locked_until=locked.isoformat())
        return AppError(401, message)

    def _unknown_login(self, conn: psycopg.Connection[Any], name: str, password: str) -> AppError:
        """A login for a name that is no account: same work, same answers and same lockout as a real one."""
        now = self.now()
        h = hmac.new(self.s.session_secret.encode(), b"login-name:" + name.encode(), hashlib.sha256).hexdigest()
        conn.execute("DELETE FROM staff.unknown_logins WHERE last_failed_at < %s", (now - self.s.failure_window,))
        row = conn.execute(
            "SELECT locked_until FROM staff.unknown_logins WHERE name_hash = %s FOR UPDATE", (h,)
        ).fetchone()
        if row is not None and row[0] is not None and row[0] > now:
            audit.append(conn, now, "anonymous", "auth.login", "user:unknown", "refused-locked")
            return AppError(423, self.LOCKED)
        with contextlib.suppress(VerificationError, InvalidHashError):
            self.ph.verify(self._dummy_hash, password)  # same cost whether or not the user exists
        (failed,) = conn.execute(
            "INSERT INTO staff.unknown_logins (name_hash, failed_attempts, last_failed_at) VALUES (%s, 1, %s) "
            "ON CONFLICT (name_hash) DO UPDATE SET failed_attempts = staff.unknown_logins.failed_attempts + 1, "
            "last_failed_at = EXCLUDED.last_failed_at RETURNING failed_attempts",
            (h, now),
        ).fetchone()  # type: ignore[misc]
        if failed >= self.s.max_failed_logins:
            conn.execute(
                "UPDATE staff.unknown_logins SET locked_until = %s WHERE name_hash = %s", (now + self.s.lockout, h)
            )
        audit.append(conn, now, "anonymous", "auth.login", "user:unknown", "failure")
        return AppError(401, "invalid username or password")

    def login(self, username: str, password: str) -> tuple[str, Session]:
        """Check the password; return a new (cookie, session) at stage mfa or enrol.

        Every refusal is committed with its audit record before it is raised."""
        now = self.now()
        generic = AppError(401, "invalid username or password")
        err: AppError | None = None
        result: tuple[str, Session] | None = None
        with self.tx() as conn:
            row = conn.execute(
                "SELECT id, password_hash, locked_until, totp_secret_ct, disabled_at "
                "FROM staff.users WHERE username = %s FOR UPDATE",
                (username[:64],),
            ).fetchone()
            if row is None:
                err = self._unknown_login(conn, username[:64], password)
            else:
                uid, phash, locked_until, totp_ct, disabled = row
                try:
                    if locked_until is not None and locked_until > now:
                        audit.append(conn, now, f"user:{uid}", "auth.login", f"user:{uid}", "refused-locked")
                        err = AppError(423, self.LOCKED)
                    else:
                        self.ph.verify(phash, password)
                except (VerificationError, InvalidHashError):
                    err = self._count_failure(conn, uid, "auth.login", f"user:{uid}", generic.message)
                if err is None and disabled is not None:
                    # no hint that the password was right or that the account exists but is disabled
                    audit.append(conn, now, f"user:{uid}", "auth.login", f"user:{uid}", "refused-disabled")
                    err = generic
                if err is None:
                    if self.ph.check_needs_rehash(phash):
                        conn.execute(
                            "UPDATE staff.users SET password_hash = %s WHERE id = %s", (self.ph.hash(password), uid)
                        )
                    stage = "mfa" if totp_ct else "enrol"
                    result = self._new_session(conn, uid, stage)
                    audit.append(conn, now, f"user:{uid}", "auth.password", f"user:{uid}", next_stage=stage)
        if err is not None or result is None:
            raise err or generic
        return result

    def _new_session(self, conn: psycopg.Connection[Any], uid: int, stage: str) -> tuple[str, Session]:
        cookie = secrets.token_urlsafe(32)
        sess = Session(self._sid_hash(cookie), uid, stage, secrets.token_urlsafe(32), None)
        now = self.now()
        conn.execute(
            "INSERT INTO staff.sessions (id_hash, user_id, stage, csrf, created_at, last_seen) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (sess.id_hash, uid, stage, sess.csrf, now, now),
        )
        return cookie, sess

    def _sid_hash(self, cookie: str) -> str:
        return hmac.new(self.s.session_secret.encode(), cookie.encode(), hashlib.sha256).hexdigest()

    def session(self, cookie: str | None) -> Session | None:
        """The live session for a cookie; ends it (audited) when idle longer than the timeout."""
        if not cookie or len(cookie) > 100:
            return None
        now, h = self.now(), self._sid_hash(cookie)
        with self.tx() as conn:
            row = conn.execute(
                "SELECT user_id, stage, csrf, pending_totp_ct, last_seen, created_at FROM staff.sessions "
                "WHERE id_hash = %s FOR UPDATE",
                (h,),
            ).fetchone()
            if row is None:
                return None
            if row[5] + self.s.session_max_age < now:
                conn.execute("DELETE FROM staff.sessions WHERE id_hash = %s", (h,))
                audit.append(conn, now, f"user:{row[0]}", "auth.session_expired", f"user:{row[0]}")
                return None
            if row[4] + self.s.idle_timeout < now:
                conn.execute("DELETE FROM staff.sessions WHERE id_hash = %s", (h,))
                audit.append(conn, now, f"user:{row[0]}", "auth.session_timeout", f"user:{row[0]}")
                return None
            conn.execute("UPDATE staff.sessions SET last_seen = %s WHERE id_hash = %s", (now, h))
        return Session(h, row[0], row[1], row[2], row[3])

    def logout(self, sess: Session) -> None:
        with self.tx() as conn:
            conn.execute("DELETE FROM staff.sessions WHERE id_hash = %s", (sess.id_hash,))
            audit.append(conn, self.now(), f"user:{sess.user_id}", "auth.logout", f"user:{sess.user_id}")

    def _set_stage(self, conn: psycopg.Connection[Any], sess: Session, uid: int) -> str:
        (changed,) = conn.execute("SELECT password_changed_at FROM staff.users WHERE id = %s", (uid,)).fetchone()  # type: ignore[misc]
        stage = "password" if changed + self.s.password_max_age < self.now() else "full"
        # full authentication gets a fresh session id (and CSRF token): no session fixation across the MFA step
        self._renew_session(conn, sess, stage, new_csrf=True)
        return stage

    def _renew_session(self, conn: psycopg.Connection[Any], sess: Session, stage: str, new_csrf: bool) -> None:
        cookie = secrets.token_urlsafe(32)
        new_hash, csrf = self._sid_hash(cookie), secrets.token_urlsafe(32) if new_csrf else sess.csrf
        conn.execute(
            "UPDATE staff.sessions SET id_hash = %s, csrf = %s, stage = %s, pending_totp_ct = NULL WHERE id_hash = %s",
            (new_hash, csrf, stage, sess.id_hash),
        )
        sess.id_hash, sess.csrf, sess.stage, sess.new_cookie = new_hash, csrf, stage, cookie

    def _end_sessions(self, conn: psycopg.Connection[Any], uid: int, keep: str = "") -> None:
        """End a user's sessions (but ``keep``): after a change of password, roles or account state."""
        conn.execute("DELETE FROM staff.sessions WHERE user_id = %s AND id_hash <> %s", (uid, keep))

    def _totp_ok(self, secret: str, code: str, last_step: int) -> int | None:
        """The accepted time step, or None. Codes of a step already used are refused (no replay)."""
        code = (code or "").strip().replace(" ", "")
        if not re.fullmatch(r"\d{6}", code):
            return None
        totp = pyotp.totp.TOTP(secret)
        now = self.now()
        step_now = int(now.timestamp()) // 30
        for step in (step_now - 1, step_now, step_now + 1):
            if step > last_step and hmac.compare_digest(totp.at(step * 30), code):
                return step
        return None

    def _user_totp(self, conn: psycopg.Connection[Any], uid: int) -> tuple[str, int, int, dt.datetime | None]:
        row = conn.execute(
            "SELECT totp_secret_ct, totp_last_step, failed_attempts, locked_until FROM staff.users WHERE id = %s "
            "FOR UPDATE",
            (uid,),
        ).fetchone()
        if row is None or row[0] is None:
            raise AppError(403, "no MFA enrolled")
        secret = self.transit.decrypt(vs.KEY_PII, [row[0]])[0].decode()
        return secret, row[1], row[2], row[3]

    def verify_mfa(self, sess: Session, code: str) -> str:
        """Second factor at login: a TOTP code or a single-use recovery code. Returns the new stage."""
        if sess.stage != "mfa":
            raise AppError(409, "no MFA step pending for this session")
        now, uid = self.now(), sess.user_id
        ok, err, method, stage = False, None, "", sess.stage
        with self.tx() as conn:
            secret, last, _, locked = self._user_totp(conn, uid)
            if locked is not None and locked > now:
                raise AppError(423, self.LOCKED)
            step = self._totp_ok(secret, code, last)
            if step is not None:
                conn.execute("UPDATE staff.users SET totp_last_step = %s WHERE id = %s", (step, uid))
                ok, method = True, "totp"
            elif self._use_recovery_code(conn, uid, code):
                ok, method = True, "recovery-code"
            if ok:
                conn.execute("UPDATE staff.users SET failed_attempts = 0, locked_until = NULL WHERE id = %s", (uid,))
                stage = self._set_stage(conn, sess, uid)
                audit.append(conn, now, f"user:{uid}", "auth.mfa", f"user:{uid}", method=method)
            else:
                err = self._count_failure(conn, uid, "auth.mfa", f"user:{uid}", "invalid MFA code")
        if err:
            raise err
        return stage

    def _use_recovery_code(self, conn: psycopg.Connection[Any], uid: int, code: str) -> bool:
        code = (code or "").strip().lower()
        if not re.fullmatch(r"[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}", code):
            return False
        h = hashlib.sha256(code.encode()).hexdigest()
        row = conn.execute(
            "UPDATE staff.recovery_codes SET used_at = %s WHERE user_id = %s AND code_hash = %s AND used_at IS NULL "
            "RETURNING id",
            (self.now(), uid, h),
        ).fetchone()
        return row is not None

    def start_enrolment(self, sess: Session) -> str:
        """A new TOTP secret for this session's user; returns its otpauth:// URI (shown once, as a QR/text)."""
        if sess.stage != "enrol":
            raise AppError(409, "MFA is already enrolled for this account")
        secret = pyotp.random_base32()
        ct = self.transit.encrypt(vs.KEY_PII, [secret.encode()])[0]
        with self.tx() as conn:
            conn.execute("UPDATE staff.sessions SET pending_totp_ct = %s WHERE id_hash = %s", (ct, sess.id_hash))
            (username,) = conn.execute("SELECT username FROM staff.users WHERE id = %s", (sess.user_id,)).fetchone()  # type: ignore[misc]
        sess.pending_totp_ct = ct
        return pyotp.totp.TOTP(secret).provisioning_uri(name=username, issuer_name=self.s.issuer)

    def finish_enrolment(self, sess: Session, code: str) -> tuple[str, list[str]]:
        """Confirm the pending secret with a code; returns (stage, recovery codes shown once)."""
        if sess.stage != "enrol" or not sess.pending_totp_ct:
            raise AppError(409, "start MFA enrolment first")
        secret = self.transit.decrypt(vs.KEY_PII, [sess.pending_totp_ct])[0].decode()
        step = self._totp_ok(secret, code, 0)
        if step is None:
            raise AppError(400, "the code does not match: check the authenticator's clock and try again")
        codes = ["-".join(_b32(4) for _ in range(4)) for _ in range(10)]
        with self.tx() as conn:
            conn.execute(
                "UPDATE staff.users SET totp_secret_ct = %s, totp_last_step = %s WHERE id = %s",
                (sess.pending_totp_ct, step, sess.user_id),
            )
            conn.execute("DELETE FROM staff.recovery_codes WHERE user_id = %s", (sess.user_id,))
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO staff.recovery_codes (user_id, code_hash) VALUES (%s, %s)",
                    [(sess.user_id, hashlib.sha256(c.encode()).hexdigest()) for c in codes],
                )
            stage = self._set_stage(conn, sess, sess.user_id)
            audit.append(conn, self.now(), f"user:{sess.user_id}", "auth.mfa_enrol", f"user:{sess.user_id}")
        return stage, codes

    def step_up(self, staff: Staff, code: str | None, purpose: str) -> None:
        """Step-up MFA: a fresh TOTP code for this one sensitive action (MFA-04).

        Runs in its own committed transaction before the action: a spent code stays spent and a wrong
        one counts toward the same lockout as a wrong password (HRD-03), whatever the action does next."""
        now = self.now()
        err: AppError | None = None
        with self.tx() as conn:
            if not code:
                audit.append(conn, now, staff.actor, "auth.step_up", purpose, "missing")
                err = AppError(401, f"step-up MFA required for {purpose}: send a current TOTP code")
            else:
                secret, last, _, locked = self._user_totp(conn, staff.id)
                step = self._totp_ok(secret, code, last)
                if locked is not None and locked > now:
                    audit.append(conn, now, staff.actor, "auth.step_up", purpose, "refused-locked")
                    err = AppError(423, self.LOCKED)
                elif step is None:
                    msg = "step-up MFA code invalid or already used"
                    err = self._count_failure(conn, staff.id, "auth.step_up", purpose, msg)
                else:
                    conn.execute(
                        "UPDATE staff.users SET totp_last_step = %s, failed_attempts = 0 WHERE id = %s",
                        (step, staff.id),
                    )
                    audit.append(conn, now, staff.actor, "auth.step_up", purpose)
        if err is not None:
            raise err

    def change_password(self, sess: Session, old: str, new: str) -> None:
        """Only after the second factor (MFA-01); a wrong current password counts toward the lockout (HRD-03).
        Ends the user's other sessions and renews this one's id."""
        if sess.stage not in ("password", "full"):
            raise AppError(401, "finish MFA first: the password can be changed only after the second factor")
        self.check_password_policy(new)
        now, uid = self.now(), sess.user_id
        err: AppError | None = None
        with self.tx() as conn:
            phash, locked = conn.execute(
                "SELECT password_hash, locked_until FROM staff.users WHERE id = %s FOR UPDATE", (uid,)
            ).fetchone()  # type: ignore[misc]
            try:
                if locked is not None and locked > now:
                    audit.append(conn, now, f"user:{uid}", "auth.password_change", f"user:{uid}", "refused-locked")
                    err = AppError(423, self.LOCKED)
                else:
                    self.ph.verify(phash, old)
            except (VerificationError, InvalidHashError):
                err = self._count_failure(conn, uid, "auth.password_change", f"user:{uid}", "current password is wrong")
            if err is None:
                self._store_password(conn, sess, new, now)
        if err is not None:
            raise err

    def _store_password(self, conn: psycopg.Connection[Any], sess: Session, new: str, now: dt.datetime) -> None:
        uid = sess.user_id
        history = conn.execute(
            "SELECT password_hash FROM staff.password_history WHERE user_id = %s ORDER BY changed_at DESC LIMIT %s",
            (uid, self.s.password_history),
        ).fetchall()
        for (old_hash,) in history:
            try:
                self.ph.verify(old_hash, new)
            except (VerificationError, InvalidHashError):
                continue
            raise _bad(f"password was used recently: choose one not among your last {self.s.password_history}")
        h = self.ph.hash(new)
        conn.execute(
            "UPDATE staff.users SET password_hash = %s, password_changed_at = %s, failed_attempts = 0 WHERE id = %s",
            (h, now, uid),
        )
        conn.execute(
            "INSERT INTO staff.password_history (user_id, password_hash, changed_at) VALUES (%s,%s,%s)",
            (uid, h, now),
        )
        self._renew_session(conn, sess, "full", new_csrf=False)
        self._end_sessions(conn, uid, keep=sess.id_hash)
        audit.append(conn, now, f"user:{uid}", "auth.password_change", f"user:{uid}")

    def ack_training(self, staff: Staff) -> None:
        now = self.now()
        with self.tx() as conn:
            conn.execute(
                "UPDATE staff.users SET training_version = %s, training_acked_at = %s WHERE id = %s",
                (self.s.training_version, now, staff.id),
            )
            audit.append(conn, now, staff.actor, "training.acknowledge", staff.actor, version=self.s.training_version)

    # --- separation of duties (RBAC-02) -------------------------------------------------

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
            raise _bad(f"unknown role {role!r}; roles: {', '.join(rbac.ROLES)}")
        action = "role.revoke" if revoke else "role.grant"
        self._not_self(staff, user_id, action, role=role)
        self._user_exists(user_id)
        self.step_up(staff, code, action)
        now = self.now()
        with self.tx() as conn:
            conn.execute("SELECT 1 FROM staff.users WHERE id = %s FOR UPDATE", (user_id,))
            if revoke:
                conn.execute("DELETE FROM staff.user_roles WHERE user_id = %s AND role = %s", (user_id, role))
                self._end_sessions(conn, user_id)
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
                self._end_sessions(conn, user_id)
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
            self.step_up(staff, code, action)
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
                self._end_sessions(conn, user_id)
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
            self._end_sessions(conn, user_id)
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

    # --- customers (personal data: envelope-encrypted) ---------------------------------

    PII_FIELDS = ("name", "email", "address", "tax_id")

    def create_customer(self, staff: Staff, fields: dict[str, str]) -> int:
        key, wrapped = self.cipher.new_key()  # Vault round trip 1
        email_idx, tax_idx = self.cipher.blind_indexes([fields["email"], fields.get("tax_id") or ""])  # trip 2
        now = self.now()
        with self.tx() as conn:
            (cid,) = conn.execute("SELECT nextval('billing.customers_id_seq')").fetchone()  # type: ignore[misc]
            sealed = {f: self.cipher.seal(key, cid, f, fields.get(f) or "") for f in self.PII_FIELDS}
            conn.execute(
                "INSERT INTO billing.customers (id, name_ct, email_ct, address_ct, tax_id_ct, email_bidx, "
                "tax_id_bidx, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    cid,
                    sealed["name"],
                    sealed["email"],
                    sealed["address"],
                    sealed["tax_id"],
                    email_idx,
                    tax_idx if fields.get("tax_id") else None,
                    now,
                ),
            )
            conn.execute(
                "INSERT INTO billing.customer_keys (customer_id, wrapped_key, created_at) VALUES (%s, %s, %s)",
                (cid, wrapped, now),
            )
            audit.append(conn, now, staff.actor, "customer.create", f"customer:{cid}")
        if self.cipher.enabled:
            self.cipher.cache.put(cid, key)
        return cid

    def _customer_key(self, conn: psycopg.Connection[Any], cid: int) -> bytes:
        row = conn.execute(
            "SELECT c.erased_at, k.wrapped_key FROM billing.customers c "
            "LEFT JOIN billing.customer_keys k ON k.customer_id = c.id WHERE c.id = %s",
            (cid,),
        ).fetchone()
        if row is None:
            raise AppError(404, f"no customer {cid}")
        if row[0] is not None or row[1] is None:
            raise AppError(410, f"customer {cid} was erased")
        return self.cipher.key_for(cid, row[1])

    def _read_customer(self, conn: psycopg.Connection[Any], cid: int) -> dict[str, Any]:
        """One customer, decrypted (404 if absent, 410 if erased)."""
        key = self._customer_key(conn, cid)
        row = conn.execute(
            "SELECT id, name_ct, email_ct, address_ct, tax_id_ct, created_at FROM billing.customers WHERE id = %s",
            (cid,),
        ).fetchone()
        if row is None:
            raise AppError(404, "not found")
        return self._open_customer(key, row)

    def _open_customer(self, key: bytes, row: tuple[Any, ...]) -> dict[str, Any]:
        cid = row[0]
        out: dict[str, Any] = {"id": cid}
        for i, f in enumerate(self.PII_FIELDS):
            out[f] = self.cipher.open(key, cid, f, row[1 + i]) if row[1 + i] is not None else None
        out["created_at"] = row[5]
        return out

    def get_customer(self, staff: Staff, cid: int) -> dict[str, Any]:
        with self.tx() as conn:
            customer = self._read_customer(conn, cid)
            audit.append(conn, self.now(), staff.actor, "customer.read", f"customer:{cid}")
        return customer

    def list_customers(self, staff: Staff, limit: int = 100) -> list[dict[str, Any]]:
        with self.tx() as conn:
            rows = conn.execute(
                "SELECT c.id, c.name_ct, c.email_ct, c.address_ct, c.tax_id_ct, c.created_at, k.wrapped_key "
                "FROM billing.customers c JOIN billing.customer_keys k ON k.customer_id = c.id "
                "WHERE c.erased_at IS NULL ORDER BY c.id DESC LIMIT %s",
                (limit,),
            ).fetchall()
            audit.append(conn, self.now(), staff.actor, "customer.list", "customers", count=len(rows))
        self._warm_keys([(r[0], r[6]) for r in rows])
        return [self._open_customer(self.cipher.key_for(r[0], r[6]), r[:6]) for r in rows]

    def customer_names(self, staff: Staff, cids: list[int]) -> dict[int, str]:
        """Customer id -> name for a page that lists them (erased customers are absent); one batched Vault call."""
        ids = sorted(set(cids))
        if not ids:
            return {}
        with self.tx() as conn:
            rows = conn.execute(
                "SELECT c.id, c.name_ct, k.wrapped_key FROM billing.customers c "
                "JOIN billing.customer_keys k ON k.customer_id = c.id WHERE c.id = ANY(%s) AND c.erased_at IS NULL",
                (ids,),
            ).fetchall()
            audit.append(conn, self.now(), staff.actor, "customer.names", "customers", count=len(rows))
        self._warm_keys([(r[0], r[2]) for r in rows])
        return {r[0]: self.cipher.open(self.cipher.key_for(r[0], r[2]), r[0], "name", r[1]) for r in rows}

    def _warm_keys(self, pairs: list[tuple[int, str]]) -> None:
        """Unwrap every uncached data key of a page in one batched Vault call."""
        if not self.cipher.enabled:
            return
        missing = [(cid, w) for cid, w in pairs if self.cipher.cache.get(cid) is None]
        if missing:
            keys = self.transit.decrypt(vs.KEY_PII, [w for _, w in missing])
            for (cid, _), k in zip(missing, keys, strict=True):
                self.cipher.cache.put(cid, k)

    def find_customers(self, staff: Staff, email: str) -> list[int]:
        (idx,) = self.cipher.blind_indexes([email])
        with self.tx() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM billing.customers WHERE email_bidx = %s AND erased_at IS NULL ORDER BY id", (idx,)
                )
            ]
            audit.append(conn, self.now(), staff.actor, "customer.search", "customers", matches=len(ids))
        return ids

    # --- invoices ---------------------------------------------------------------------

    def create_invoice(self, staff: Staff, customer_id: int, currency: str, lines: list[dict[str, Any]]) -> int:
        if not lines:
            raise _bad("an invoice needs at least one line item")
        computed = []
        for i, ln in enumerate(lines, 1):
            net = ln["quantity"] * ln["unit_price_minor"]
            tax = (net * ln["tax_rate_bp"] + 5000) // 10000  # round half up, in minor units
            computed.append((i, ln["description"], ln["quantity"], ln["unit_price_minor"], ln["tax_rate_bp"], net, tax))
        subtotal, tax_total = sum(c[5] for c in computed), sum(c[6] for c in computed)
        if subtotal + tax_total > 10**15:
            raise _bad("invoice total too large")
        now = self.now()
        with self.tx() as conn:
            key = self._customer_key(conn, customer_id)
            row = conn.execute(
                "SELECT name_ct, address_ct FROM billing.customers WHERE id = %s", (customer_id,)
            ).fetchone()
            if row is None:
                raise AppError(404, "not found")
            bill_to = json.dumps(
                {
                    "name": self.cipher.open(key, customer_id, "name", row[0]),
                    "address": self.cipher.open(key, customer_id, "address", row[1]),
                }
            )
            (iid,) = conn.execute(
                "INSERT INTO billing.invoices (customer_id, currency, subtotal_minor, tax_minor, total_minor, "
                "created_by, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (customer_id, currency, subtotal, tax_total, subtotal + tax_total, staff.id, now),
            ).fetchone()  # type: ignore[misc]
            conn.execute(
                "UPDATE billing.invoices SET bill_to_ct = %s WHERE id = %s",
                (self.cipher.seal(key, customer_id, f"invoice:{iid}:bill_to", bill_to), iid),
            )
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO billing.invoice_lines (invoice_id, position, description, quantity, "
                    "unit_price_minor, tax_rate_bp, net_minor, tax_minor) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    [(iid, *c) for c in computed],
                )
            audit.append(conn, now, staff.actor, "invoice.create", f"invoice:{iid}", total_minor=subtotal + tax_total)
        return iid

    def _invoice_row(self, conn: psycopg.Connection[Any], iid: int, lock: bool = False) -> dict[str, Any]:
        row = conn.execute(
            "SELECT id, customer_id, currency, state, subtotal_minor, tax_minor, total_minor, credited_minor, "  # noqa: S608
            "paid_minor, created_at, issued_at, paid_at, voided_at FROM billing.invoices WHERE id = %s"
            + (" FOR UPDATE" if lock else ""),
            (iid,),
        ).fetchone()
        if row is None:
            raise AppError(404, f"no invoice {iid}")
        keys = (
            "id",
            "customer_id",
            "currency",
            "state",
            "subtotal_minor",
            "tax_minor",
            "total_minor",
            "credited_minor",
            "paid_minor",
            "created_at",
            "issued_at",
            "paid_at",
            "voided_at",
        )
        inv: dict[str, Any] = dict(zip(keys, row, strict=True))
        inv["balance_minor"] = inv["total_minor"] - inv["credited_minor"] - inv["paid_minor"]
        return inv

    def get_invoice(self, staff: Staff, iid: int) -> dict[str, Any]:
        with self.tx() as conn:
            inv = self._invoice_row(conn, iid)
            inv["lines"] = [
                dict(
                    zip(
                        (
                            "position",
                            "description",
                            "quantity",
                            "unit_price_minor",
                            "tax_rate_bp",
                            "net_minor",
                            "tax_minor",
                        ),
                        r,
                        strict=True,
                    )
                )
                for r in conn.execute(
                    "SELECT position, description, quantity, unit_price_minor, tax_rate_bp, net_minor, tax_minor "
                    "FROM billing.invoice_lines WHERE invoice_id = %s ORDER BY position",
                    (iid,),
                )
            ]
            inv["payments"] = self._payments(conn, "p.invoice_id = %s", (iid,))
            inv["credit_notes"] = [
                {"id": r[0], "amount_minor": r[1], "reason": r[2]}
                for r in conn.execute(
                    "SELECT id, amount_minor, reason FROM billing.credit_notes WHERE invoice_id = %s ORDER BY id",
                    (iid,),
                )
            ]
        return inv

    def list_invoices(self, staff: Staff, limit: int = 100) -> list[dict[str, Any]]:
        with self.tx() as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM billing.invoices ORDER BY id DESC LIMIT %s", (limit,))]
            return [self._invoice_row(conn, i) for i in ids]

    def transition(self, staff: Staff, iid: int, to: str) -> dict[str, Any]:
        allowed = {"issued": ("draft",), "void": ("draft", "issued")}[to]
        now = self.now()
        with self.tx() as conn:
            inv = self._invoice_row(conn, iid, lock=True)
            if inv["state"] not in allowed:
                raise AppError(409, f"invoice {iid} is {inv['state']}; only {' or '.join(allowed)} can become {to}")
            if to == "void" and inv["paid_minor"] > 0:
                raise AppError(409, f"invoice {iid} has payments; issue a credit note instead")
            if to == "void" and self._pending_minor(conn, iid):
                raise AppError(409, f"a payment for invoice {iid} is in progress: void it once the payment completes")
            if to == "issued":
                conn.execute("UPDATE billing.invoices SET state = 'issued', issued_at = %s WHERE id = %s", (now, iid))
            else:
                conn.execute("UPDATE billing.invoices SET state = 'void', voided_at = %s WHERE id = %s", (now, iid))
            audit.append(conn, now, staff.actor, f"invoice.{'issue' if to == 'issued' else 'void'}", f"invoice:{iid}")
            return self._invoice_row(conn, iid)

    def credit_note(self, staff: Staff, iid: int, amount: int, reason: str) -> int:
        now = self.now()
        with self.tx() as conn:
            inv = self._invoice_row(conn, iid, lock=True)
            if inv["state"] not in ("issued", "paid"):
                raise AppError(409, f"invoice {iid} is {inv['state']}: credit notes apply to issued or paid invoices")
            # payments, pending ones included, and credits together never exceed the total (APP-03)
            pending = self._pending_minor(conn, iid)
            if amount > inv["balance_minor"] - pending:
                if pending and amount <= inv["balance_minor"]:
                    raise AppError(
                        409,
                        f"a payment of {pending} for invoice {iid} is in progress: credit at most "
                        f"{inv['balance_minor'] - pending} until it completes",
                    )
                raise AppError(409, f"credit exceeds the invoice's unpaid, uncredited balance ({inv['balance_minor']})")
            (nid,) = conn.execute(
                "INSERT INTO billing.credit_notes (invoice_id, amount_minor, reason, created_by, created_at) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (iid, amount, reason, staff.id, now),
            ).fetchone()  # type: ignore[misc]
            conn.execute(
                "UPDATE billing.invoices SET credited_minor = credited_minor + %s WHERE id = %s", (amount, iid)
            )
            inv = self._invoice_row(conn, iid)
            if inv["state"] == "issued" and inv["balance_minor"] <= 0:
                conn.execute("UPDATE billing.invoices SET state = 'paid', paid_at = %s WHERE id = %s", (now, iid))
            audit.append(conn, now, staff.actor, "credit_note.create", f"invoice:{iid}", amount_minor=amount)
        return nid

    # --- cards and payments -----------------------------------------------------------

    def _customer_open(self, conn: psycopg.Connection[Any], cid: int, lock: bool = False) -> None:
        """404 without the customer, 410 once erased; ``lock`` (FOR SHARE) holds off a concurrent erasure."""
        row = conn.execute(
            "SELECT erased_at FROM billing.customers WHERE id = %s" + (" FOR SHARE" if lock else ""),  # noqa: S608
            (cid,),
        ).fetchone()
        if row is None:
            raise AppError(404, f"no customer {cid}")
        if row[0] is not None:
            raise AppError(410, f"customer {cid} was erased: no new cards or payments for them")

    def _insert_card(
        self, conn: psycopg.Connection[Any], staff: Staff, token: str, card: Card, cid: int, now: dt.datetime
    ) -> None:
        conn.execute(
            "INSERT INTO billing.cards (token, customer_id, brand, last4, exp_month, exp_year, created_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (token, cid, card.brand, card.last4, card.exp_month, card.exp_year, now),
        )
        audit.append(
            conn, now, staff.actor, "card.tokenize", f"card:{token}", customer=cid, brand=card.brand, last4=card.last4
        )

    def _forget_unrecorded(self, token: str) -> None:
        """Destroy a new card's ciphertext when its card record was not committed (a refused request).

        Checked rather than assumed: after a failed COMMIT the record may exist, with a payment needing it.
        """
        with self.tx() as conn:
            recorded = conn.execute("SELECT 1 FROM billing.cards WHERE token = %s", (token,)).fetchone()
        if recorded is None:
            self.tokens.destroy([token])

    def tokenize(self, staff: Staff, card: Card, customer_id: int) -> dict[str, Any]:
        """Store a card for ``customer_id`` (TOK-03: a card pays only its own customer's invoices)."""
        with self.tx() as conn:
            self._customer_open(conn, customer_id)  # before the Vault call: no ciphertext for no one
        now = self.now()
        token = self.tokens.tokenize(card, now)
        try:
            with self.tx() as conn:
                self._customer_open(conn, customer_id, lock=True)
                self._insert_card(conn, staff, token, card, customer_id, now)
                details = token_details(conn, token)
        except BaseException:
            self._forget_unrecorded(token)
            raise
        if details is None:
            raise AppError(500, "card was not stored")
        return details

    def detokenize(self, staff: Staff, token: str, code: str | None) -> dict[str, Any]:
        if not TOKEN_RE.match(token):
            raise _bad("not a card token")
        with self.tx() as conn:
            card = token_details(conn, token)
            if card is None:
                raise AppError(404, "unknown card token")
            if card["erased_at"] is not None:
                raise AppError(410, "this card was erased with its customer: its number no longer exists")
        self.step_up(staff, code, "card.detokenize")
        # the step-up is committed (its code is spent) before the number is revealed
        try:
            pan = self.tokens.detokenize(token)
        except KeyError:
            raise AppError(410, "this card's number no longer exists (erased)") from None
        with self.tx() as conn:
            audit.append(conn, self.now(), staff.actor, "card.detokenize", f"card:{token}")
        return {"token": token, "pan": pan}

    def _payments(
        self, conn: psycopg.Connection[Any], where: LiteralString, args: tuple[Any, ...]
    ) -> list[dict[str, Any]]:
        query = sql.SQL(
            "SELECT p.id, p.invoice_id, p.amount_minor, p.currency, p.status, p.gateway_charge_id, p.decline_reason, "
            "p.created_at, c.token, c.brand, c.last4, c.exp_month, c.exp_year FROM billing.payments p "
            "JOIN billing.cards c ON c.token = p.card_token WHERE {} ORDER BY p.id"
        ).format(sql.SQL(where))
        rows = conn.execute(query, args).fetchall()
        keys = ("id", "invoice_id", "amount_minor", "currency", "status", "charge_id", "decline_reason", "created_at")
        out = []
        for r in rows:
            d: dict[str, Any] = dict(zip(keys, r[:8], strict=True))
            d["card"] = {"token": r[8], "brand": r[9], "last4": r[10], "exp_month": r[11], "exp_year": r[12]}
            out.append(d)
        return out

    def list_payments(self, staff: Staff) -> list[dict[str, Any]]:
        with self.tx() as conn:
            return self._payments(conn, "TRUE", ())

    def _pending_minor(self, conn: psycopg.Connection[Any], iid: int) -> int:
        """What payments in progress may still take from the invoice (read it under the invoice's row lock)."""
        row = conn.execute(
            "SELECT COALESCE(sum(amount_minor), 0) FROM billing.payments WHERE invoice_id = %s AND status = 'pending'",
            (iid,),
        ).fetchone()
        return int(row[0]) if row else 0

    def _payable(self, inv: dict[str, Any], pending: int) -> int:
        """The amount a new payment may charge: the balance less what payments in progress hold (APP-03)."""
        iid = inv["id"]
        if inv["state"] != "issued":
            raise AppError(409, f"invoice {iid} is {inv['state']}: only issued invoices can be paid")
        amount = inv["balance_minor"] - pending
        if amount <= 0 and pending:
            raise AppError(
                409,
                f"a payment of {pending} for invoice {iid} is in progress (its card may be charged already): "
                "do not take it again; retry that payment with its own Idempotency-Key, or wait: it is completed "
                "or released automatically",
            )
        if amount <= 0:
            raise AppError(409, f"invoice {iid} has nothing left to pay")
        return amount

    def _check_card(self, conn: psycopg.Connection[Any], staff: Staff, inv: dict[str, Any], token: str) -> None:
        """A stored card pays only its own customer's invoices (TOK-03); a refusal is audited."""
        card = token_details(conn, token)
        if card is None:
            raise AppError(404, "unknown card token")
        if card["erased_at"] is not None:
            raise AppError(410, "this card was erased with its customer: take a new card")
        if card["customer_id"] != inv["customer_id"]:
            self.audit_apart(
                staff.actor,
                "payment.start",
                f"invoice:{inv['id']}",
                "refused",
                card=token,
                reason="card of another customer",
            )
            if card["customer_id"] is None:
                raise AppError(403, "this card was stored before cards had customers: take it again for this customer")
            raise AppError(403, "this card belongs to another customer: pay with a card of the invoice's customer")

    def pay(self, staff: Staff, iid: int, idempotency_key: str, card: Card | None, token: str | None) -> dict[str, Any]:
        """Charge an invoice's balance at most once per idempotency key, and never beyond the total (APP-03).

        1. record a pending payment (committed) — or find the one this key already recorded; pending
           payments hold their amount, so a second key finds nothing left to pay while one is in progress;
        2. charge through the gateway with the same idempotency key (the gateway never charges a key twice);
        3. record the outcome. A crash or retry anywhere resumes from the recorded state, and the
           recovery timer (``PaymentRecovery``) finishes what no one retries.
        """
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{8,100}", idempotency_key or ""):
            raise _bad("Idempotency-Key header required: 8-100 characters of letters, digits, '_', '.', ':' or '-'")
        if (card is None) == (token is None):
            raise _bad("pay with either a new card or a card token")
        req_hash = hashlib.sha256(f"{iid}".encode()).hexdigest()
        now = self.now()
        pan: str | None = card.pan if card else None
        with self.tx() as conn:
            existing = conn.execute(
                "SELECT id, invoice_id, status, card_token FROM billing.payments WHERE idempotency_key = %s",
                (idempotency_key,),
            ).fetchone()
        if existing is not None:
            if existing[1] != iid:
                raise AppError(409, "this Idempotency-Key was used for another request; use a new key")
            if existing[2] != "pending":
                return self._payment_result(existing[0], replayed=True)
            pid, card_token, pan = existing[0], existing[3], None
        else:
            if token is not None and not TOKEN_RE.match(token):
                raise _bad("not a card token")
            with self.tx() as conn:  # refuse early, before a card number is stored
                inv = self._invoice_row(conn, iid)
                self._payable(inv, self._pending_minor(conn, iid))
                self._customer_open(conn, inv["customer_id"])
                if token is not None:
                    self._check_card(conn, staff, inv, token)
            card_token = self.tokens.tokenize(card, now) if card is not None else token or ""
            try:
                with self.tx() as conn:
                    pid = self._start_payment(conn, staff, iid, idempotency_key, req_hash, card, card_token, now)
            except BaseException as exc:
                if card is not None:
                    self._forget_unrecorded(card_token)
                if isinstance(exc, _SameKeyCommitted):
                    return self.pay(staff, iid, idempotency_key, card, token)  # the other request won: replay it
                raise
        return self._charge_and_record(staff.actor, pid, card_token, idempotency_key, pan)

    def _start_payment(
        self,
        conn: psycopg.Connection[Any],
        staff: Staff,
        iid: int,
        idempotency_key: str,
        req_hash: str,
        card: Card | None,
        card_token: str,
        now: dt.datetime,
    ) -> int:
        """Record the pending payment under the invoice's row lock, re-checking what a racing request changed."""
        inv = self._invoice_row(conn, iid, lock=True)
        if conn.execute("SELECT 1 FROM billing.payments WHERE idempotency_key = %s", (idempotency_key,)).fetchone():
            raise _SameKeyCommitted
        amount = self._payable(inv, self._pending_minor(conn, iid))
        self._customer_open(conn, inv["customer_id"], lock=True)  # an erasure runs before or after, never between
        if card is not None:
            self._insert_card(conn, staff, card_token, card, inv["customer_id"], now)  # the invoice's customer's card
        row = conn.execute(
            "INSERT INTO billing.payments (idempotency_key, request_hash, invoice_id, amount_minor, currency, "
            "card_token, status, created_by, created_at) VALUES (%s, %s, %s, %s, %s, %s, 'pending', %s, %s) "
            "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
            (idempotency_key, req_hash, iid, amount, inv["currency"], card_token, staff.id, now),
        ).fetchone()
        if row is None:
            raise AppError(409, "a concurrent request with this Idempotency-Key is in progress; retry it")
        pid = row[0]
        audit.append(conn, now, staff.actor, "payment.start", f"payment:{pid}", invoice=iid, amount_minor=amount)
        return pid

    def _charge_and_record(
        self, actor: str, pid: int, card_token: str, key: str, pan: str | None, **detail: Any
    ) -> dict[str, Any]:
        with self.tx() as conn:
            amount, currency, iid = conn.execute(
                "SELECT amount_minor, currency, invoice_id FROM billing.payments WHERE id = %s", (pid,)
            ).fetchone()  # type: ignore[misc]
        if pan is None:
            pan = self.tokens.detokenize(card_token)  # system use for the charge; never shown or logged
        result = self.gateway.charge(key, pan, amount, currency.strip())
        del pan
        self.hooks.after_charge()
        now = self.now()
        with self.tx() as conn:
            inv = self._invoice_row(conn, iid, lock=True)
            status = "succeeded" if result.approved else "declined"
            updated = conn.execute(
                "UPDATE billing.payments SET status = %s, gateway_charge_id = %s, decline_reason = %s, "
                "completed_at = %s WHERE id = %s AND status = 'pending' RETURNING id",
                (status, result.charge_id, result.reason or None, now, pid),
            ).fetchone()
            if updated is not None and result.approved:
                paid = inv["paid_minor"] + amount
                done = paid + inv["credited_minor"] >= inv["total_minor"]
                conn.execute(
                    "UPDATE billing.invoices SET paid_minor = %s, state = CASE WHEN %s THEN 'paid' ELSE state END, "
                    "paid_at = CASE WHEN %s THEN %s ELSE paid_at END WHERE id = %s",
                    (paid, done, done, now, iid),
                )
            if updated is not None:
                audit.append(
                    conn,
                    now,
                    actor,
                    f"payment.{status}",
                    f"payment:{pid}",
                    invoice=iid,
                    charge=result.charge_id,
                    outcome_reason=result.reason,
                    **detail,
                )
        return self._payment_result(pid, replayed=updated is None)

    def _payment_result(self, pid: int, replayed: bool) -> dict[str, Any]:
        with self.tx() as conn:
            (p,) = self._payments(conn, "p.id = %s", (pid,))
        p["replayed"] = replayed
        return p

    def recover_pending_payments(self, grace: dt.timedelta | None = None) -> int:
        """Finish the payments pending longer than ``grace`` (a crash, a lost response); return how many.

        The same idempotency key goes to the gateway, which never charges a key twice, and an outcome
        is recorded only while the payment is still pending, so racing the original request's retry is
        harmless; the grace period keeps requests still in flight out of it. One app host sweeps at a
        time (an advisory lock held for the sweep); another host finding it taken skips its turn.
        """
        cutoff = self.now() - (self.s.payment_recovery_grace if grace is None else grace)
        done = 0
        with self.tx() as conn:
            (mine,) = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_RECOVERY_LOCK,)).fetchone()  # type: ignore[misc]
            if not mine:
                return 0
            rows = conn.execute(
                "SELECT id, card_token, idempotency_key FROM billing.payments WHERE status = 'pending' "
                "AND created_at < %s ORDER BY id",
                (cutoff,),
            ).fetchall()
            for pid, token, key in rows:
                try:
                    self._charge_and_record("system", pid, token, key, None, recovered=True)
                except Exception:  # one payment's failure (gateway down) must not stop the others
                    log.exception("payment %s: recovery failed; retried at the next sweep", pid)
                else:
                    done += 1
        return done

    # --- data-subject requests (GDPR) ---------------------------------------------------

    def export_customer(self, staff: Staff, cid: int) -> dict[str, Any]:
        with self.tx() as conn:
            customer = self._read_customer(conn, cid)
            invoices = []
            for (iid,) in conn.execute("SELECT id FROM billing.invoices WHERE customer_id = %s ORDER BY id", (cid,)):
                invoices.append(iid)
            inv_data = [self._invoice_row(conn, i) for i in invoices]
            payments = self._payments(conn, "p.invoice_id = ANY(%s)", (invoices,)) if invoices else []
            cards = [
                dict(zip(("token", "brand", "last4", "exp_month", "exp_year"), r, strict=True))
                for r in conn.execute(
                    "SELECT token, brand, last4, exp_month, exp_year FROM billing.cards "
                    "WHERE customer_id = %s AND erased_at IS NULL ORDER BY created_at, token",
                    (cid,),
                )
            ]
            audit.append(conn, self.now(), staff.actor, "gdpr.export", f"customer:{cid}")
        return {
            "format": "billkit-export-1",
            "customer": customer,
            "invoices": inv_data,
            "payments": payments,
            "cards": cards,
        }

    def erase_customer(self, staff: Staff, cid: int) -> None:
        """Crypto-shredding: destroy the customer's data key; every copy of their data becomes unreadable.

        Backups still hold the wrapped key, under a transit ``pii`` version; the next forced
        rewrap (rotate, rewrap, raise min_decryption_version) retires that version, after which
        no backup can unwrap it either.

        The customer's cards go too: their ciphertexts are deleted from the card vault, and each card
        row stays as a tombstone (brand and last four, no expiry) for the payments that refer to it.
        """
        now = self.now()
        with self.tx() as conn:
            row = conn.execute("SELECT erased_at FROM billing.customers WHERE id = %s FOR UPDATE", (cid,)).fetchone()
            if row is None:
                raise AppError(404, f"no customer {cid}")
            if row[0] is not None:
                raise AppError(410, f"customer {cid} was already erased")
            pending = [
                r[0]
                for r in conn.execute(
                    "SELECT p.id FROM billing.payments p JOIN billing.invoices i ON i.id = p.invoice_id "
                    "WHERE i.customer_id = %s AND p.status = 'pending' ORDER BY p.id",
                    (cid,),
                )
            ]
            if pending:
                raise AppError(
                    409,
                    f"payment {', '.join(map(str, pending))} of customer {cid} is in progress and needs its card: "
                    "erase once it completes (pending payments are finished automatically within minutes)",
                )
            # their own cards, and cards stored before cards had customers that paid their invoices
            tokens = [
                r[0]
                for r in conn.execute(
                    "SELECT token FROM billing.cards WHERE erased_at IS NULL AND (customer_id = %s OR "
                    "(customer_id IS NULL AND token IN (SELECT p.card_token FROM billing.payments p "
                    "JOIN billing.invoices i ON i.id = p.invoice_id WHERE i.customer_id = %s))) FOR UPDATE",
                    (cid, cid),
                )
            ]
            # the numbers go first (the card vault commits on its own): should the rest fail, a retry finishes it
            self.tokens.destroy(tokens)
            conn.execute(
                "UPDATE billing.cards SET customer_id = %s, exp_month = NULL, exp_year = NULL, erased_at = %s "
                "WHERE token = ANY(%s)",
                (cid, now, tokens),
            )
            conn.execute("DELETE FROM billing.customer_keys WHERE customer_id = %s", (cid,))
            conn.execute(
                "UPDATE billing.customers SET name_ct = NULL, email_ct = NULL, address_ct = NULL, tax_id_ct = NULL, "
                "email_bidx = NULL, tax_id_bidx = NULL, erased_at = %s WHERE id = %s",
                (now, cid),
            )
            audit.append(conn, now, staff.actor, "gdpr.erase", f"customer:{cid}", cards=len(tokens))
        self.cipher.cache.drop(cid)

    def audit_events(self, staff: Staff, limit: int = 200) -> list[dict[str, Any]]:
        with self.tx() as conn:
            rows = conn.execute(
                "SELECT seq, at, actor, action, target, outcome, detail, hash FROM audit.events ORDER BY seq DESC "
                "LIMIT %s",
                (limit,),
            ).fetchall()
            audit.append(conn, self.now(), staff.actor, "audit.read", "audit", count=len(rows))
        keys = ("seq", "at", "actor", "action", "target", "outcome", "detail", "hash")
        return [dict(zip(keys, r, strict=True)) for r in rows]


class PaymentRecovery:
    """Finishes pending payments when the app starts, then every ``payment_recovery_interval`` (APP-03)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.sweeps = 0  # sweeps run (tests wait on it)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="payment-recovery", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        interval = self.core.s.payment_recovery_interval.total_seconds()
        while True:
            try:
                if n := self.core.recover_pending_payments():
                    log.info("payment recovery: %d pending payment(s) completed", n)
            except Exception:  # the database may be down for a while: the timer keeps going
                log.exception("payment recovery sweep failed; retrying in %.0f s", interval)
            self.sweeps += 1
            if self._stop.wait(interval):
                return


def bootstrap_admin(dsn: str, username: str, settings: Settings | None = None) -> str:
    """Create the first admin (role granted, training and MFA still to do at first login); return its
    one-time password. Refuses when any staff account exists already."""
    s = settings or Settings()
    if not re.fullmatch(r"[a-z0-9_.-]{3,64}", username):
        raise _bad("username must be 3-64 characters: lowercase letters, digits, '.', '_' or '-'")
    password = secrets.token_urlsafe(18) + "7a"  # 146 random bits; meets the letters-and-digits rule
    ph = PasswordHasher(time_cost=s.argon2_time_cost, memory_cost=s.argon2_memory_kib, parallelism=s.argon2_lanes)
    h, now = ph.hash(password), s.clock()
    with psycopg.connect(dsn) as conn:
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
        raise _bad("operator name must be 1-64 characters: lowercase letters, digits, '.', '_' or '-'")
    now = s.clock()
    with psycopg.connect(dsn) as conn:
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


def _b32(n: int) -> str:
    import base64

    return base64.b32encode(secrets.token_bytes(5)).decode().lower()[:n]


__all__ = ["AppError", "Card", "CardError", "Core", "PaymentRecovery", "Session", "Staff"]
