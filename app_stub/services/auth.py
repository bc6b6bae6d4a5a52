"""Staff authentication: password (argon2id), TOTP MFA and recovery codes, step-up MFA, sessions,
password changes, the training acknowledgement, and the one lockout all failures count toward."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import psycopg
import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app_stub import audit
from app_stub import vault_setup as vs
from app_stub.services.base import AppError, Context, Service, Session, Staff, bad


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


class AuthService(Service):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        # argon2id; the defaults are RFC 9106's low-memory profile (t=3, 64 MiB, p=4)
        self.ph = BoundedHasher(
            self.s.argon2_concurrency,
            time_cost=self.s.argon2_time_cost,
            memory_cost=self.s.argon2_memory_kib,
            parallelism=self.s.argon2_lanes,
        )
        self._dummy_hash = self.ph.hash(secrets.token_urlsafe(16))

    LOCKED = "account locked after too many failed attempts; try again later or ask an admin"

    def check_password_policy(self, password: str) -> None:
        """PCI DSS 8.3.6: at least 12 characters with letters and digits."""
        if len(password) < self.s.password_min_length:
            raise bad(f"password must have at least {self.s.password_min_length} characters")
        if len(password) > 256:
            raise bad("password must have at most 256 characters")
        if not re.search(r"[A-Za-z]", password) or not re.search(r"[0-9]", password):
            raise bad("password must contain both letters and digits")

    def identity(self, conn: psycopg.Connection[Any], user_id: int) -> Staff:
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

    def _check_password(
        self,
        conn: psycopg.Connection[Any],
        uid: int,
        phash: str,
        locked_until: dt.datetime | None,
        password: str,
        action: str,
        message: str,
    ) -> AppError | None:
        """None when ``password`` is the account's; else the error to raise once the transaction committed:
        423 while locked (whatever the password: a lock must not become an oracle), or a counted failure."""
        if locked_until is not None and locked_until > self.now():
            audit.append(conn, self.now(), f"user:{uid}", action, f"user:{uid}", "refused-locked")
            return AppError(423, self.LOCKED)
        try:
            self.ph.verify(phash, password)
        except (VerificationError, InvalidHashError):
            return self._count_failure(conn, uid, action, f"user:{uid}", message)
        return None

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
                err = self._check_password(conn, uid, phash, locked_until, password, "auth.login", generic.message)
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
        # the user's dead sessions go now: abandoned ones are otherwise only removed when presented
        conn.execute(
            "DELETE FROM staff.sessions WHERE user_id = %s AND (last_seen < %s OR created_at < %s)",
            (uid, now - self.s.idle_timeout, now - self.s.session_max_age),
        )
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

    def end_sessions(self, conn: psycopg.Connection[Any], uid: int, keep: str = "") -> None:
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
            err = self._check_password(
                conn, uid, phash, locked, old, "auth.password_change", "current password is wrong"
            )
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
            raise bad(f"password was used recently: choose one not among your last {self.s.password_history}")
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
        self.end_sessions(conn, uid, keep=sess.id_hash)
        audit.append(conn, now, f"user:{uid}", "auth.password_change", f"user:{uid}")

    def ack_training(self, staff: Staff) -> None:
        now = self.now()
        with self.tx() as conn:
            conn.execute(
                "UPDATE staff.users SET training_version = %s, training_acked_at = %s WHERE id = %s",
                (self.s.training_version, now, staff.id),
            )
            audit.append(conn, now, staff.actor, "training.acknowledge", staff.actor, version=self.s.training_version)


def _b32(n: int) -> str:
    import base64

    return base64.b32encode(secrets.token_bytes(5)).decode().lower()[:n]
