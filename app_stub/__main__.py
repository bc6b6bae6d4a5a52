"""Operator commands of the billing app: migrate, create the first admin, rewrap, verify the audit log."""

from __future__ import annotations

import argparse
import getpass
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app_stub")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("migrate", help="apply SQL migrations (BILLKIT_APP_OWNER_DATABASE_URL)")
    rw = sub.add_parser("rewrap", help="forced rewrap to the newest key versions, then retire old versions")
    rw.add_argument("--rotate", action="store_true", help="rotate the transit keys first")
    rw.add_argument("--batch", type=int, default=500)
    rw.add_argument("--mount", default="transit", help="the transit engine's mount path")
    sub.add_parser("verify-audit", help="verify the audit log's hash chain")
    ca = sub.add_parser("create-admin", help="create the first admin and print its one-time password")
    ca.add_argument("--username", default="admin")
    ap = sub.add_parser(
        "approve-role-request", help="approve a pending admin/payment_processor request as the second person"
    )
    ap.add_argument("request_id", type=int)
    ap.add_argument("--operator", required=True, help="your name, recorded in the audit log")
    args = parser.parse_args(argv)
    owner = os.environ.get("BILLKIT_APP_OWNER_DATABASE_URL", "")
    if not owner:
        print("set BILLKIT_APP_OWNER_DATABASE_URL (a libpq DSN for the schema owner)", file=sys.stderr)
        return 2
    if args.cmd == "migrate":
        from app_stub.db import migrate

        print("applied:", ", ".join(migrate(owner)) or "nothing (up to date)")
        return 0
    if args.cmd == "create-admin":
        from app_stub.service import AppError, bootstrap_admin

        try:
            password = bootstrap_admin(owner, args.username)
        except AppError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 1
        print(f"first admin '{args.username}' created. One-time password (shown once): {password}")
        print("Log in at /login: you will enrol TOTP (mandatory), choose a new password, then acknowledge the")
        print("security training before the admin role takes effect.")
        return 0
    if args.cmd == "approve-role-request":
        from app_stub.service import AppError, operator_approve_role_request

        try:
            role = operator_approve_role_request(owner, args.request_id, args.operator)
        except AppError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 1
        print(f"request {args.request_id} approved: {role} granted; the user logs in again to use it")
        return 0
    if args.cmd == "verify-audit":
        from app_stub.audit_cli import verify_dsn

        return verify_dsn(owner)
    import hvac

    from app_stub.crypto import Transit
    from app_stub.rewrap import rewrap_all

    url = os.environ.get("BILLKIT_APP_VAULT_URL", "https://127.0.0.1:8200")
    token = os.environ.get("VAULT_TOKEN") or getpass.getpass("Vault token with the key-rotation policy: ")
    ca = os.environ.get("BILLKIT_APP_VAULT_CA_FILE")
    transit = Transit(lambda: hvac.Client(url=url, token=token, verify=ca or True), args.mount)
    stats = rewrap_all(
        owner,
        transit,
        batch=args.batch,
        rotate=args.rotate,
        progress=lambda what, n: print(f"  {what}: {n} rewrapped", file=sys.stderr),
    )
    print(f"rewrapped {stats.rewrapped}; min_decryption_version now {stats.min_decryption_version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
