"""Benchmarks of the billing app against a real PostgreSQL and a real OpenBao (loopback, TLS).

Prints figures; asserts nothing. Run: .venv/bin/python bench/app.py [--n 400]

- invoice creation, personal-data encryption on vs off, measured side by side (interleaved rounds);
- customer creation on vs off (the two Vault round trips of a new data key and its blind indexes);
- tokenization (one card per call, and batched) vs raw transit batch encryption;
- forced rewrap throughput (rotate, rewrap every wrapped key and card ciphertext, retire old versions).
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import hvac  # noqa: E402
import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from app_stub import db  # noqa: E402
from app_stub import vault_setup as vs  # noqa: E402
from app_stub.core.config import Settings  # noqa: E402
from app_stub.crypto import Transit  # noqa: E402
from app_stub.gateway import FakeGateway  # noqa: E402
from app_stub.main import build_services  # noqa: E402
from app_stub.rewrap import rewrap_all  # noqa: E402
from app_stub.services import Services, Staff  # noqa: E402
from app_stub.tokenization import validate_card  # noqa: E402
from billkit.localsvc import openbao, postgres  # noqa: E402

CUSTOMER = {
    "name": "Ada Lovelace",
    "email": "ada@example.org",
    "address": "12 Analytical Row, London",
    "tax_id": "GB123456789",
}
LINES = [
    {"description": "Consulting", "quantity": 3, "unit_price_minor": 12_345, "tax_rate_bp": 2000},
    {"description": "Book", "quantity": 1, "unit_price_minor": 999, "tax_rate_bp": 550},
]


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds else float("inf")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400, help="invoices per round and mode")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with postgres() as pg, openbao() as bao:
        root = bao.client()
        ids = vs.ensure_vault(root)
        app_pw, tok_pw = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
        db.ensure_roles(pg.dsn(), app_pw, tok_pw)
        cores: dict[str, Services] = {}
        for mode in ("on", "off"):
            name = f"bench_{mode}"
            with psycopg.connect(pg.dsn(), autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            db.migrate(pg.dsn(name))
            s = Settings(
                environment="test" if mode == "on" else "development",
                session_secret=secrets.token_urlsafe(48),
                database_url=pg.dsn(name, db.APP_ROLE, app_pw),
                tokenizer_database_url=pg.dsn(name, db.TOKENIZER_ROLE, tok_pw),
                vault_url=bao.url,
                vault_ca_file=str(bao.ca_file),
                vault_role_id=ids.app_role_id,
                vault_secret_id=vs.new_secret_id(root, vs.POLICY_APP),
                vault_processor_role_id=ids.processor_role_id,
                vault_processor_secret_id=vs.new_secret_id(root, vs.POLICY_PROCESSOR),
                pii_encryption=mode == "on",
            )
            cores[mode] = build_services(s, FakeGateway())
        staff = Staff(0, "bench", frozenset({"billing_clerk"}), frozenset({"billing_clerk"}), True)
        print(f"PostgreSQL 15 and OpenBao on loopback with TLS; {args.rounds} interleaved rounds of {args.n}\n")

        # customers (each one: a new data key and its blind indexes when encryption is on)
        cust = {m: [] for m in cores}
        times = dict.fromkeys(cores, 0.0)
        for _ in range(2):
            for m, core in cores.items():
                t = time.perf_counter()
                for i in range(50):
                    cust[m].append(core.customers.create_customer(staff, {**CUSTOMER, "email": f"c{i}@example.org"}))
                times[m] += time.perf_counter() - t
        con, coff = rate(100, times["on"]), rate(100, times["off"])
        print(f"customer creation     on {con:8.1f}/s   off {coff:8.1f}/s   ratio {con / coff:.2f}")

        # invoices, interleaved rounds, over known customers (their data keys cached)
        per = {m: [] for m in cores}
        for r in range(args.rounds):
            for m in ("on", "off") if r % 2 == 0 else ("off", "on"):
                core = cores[m]
                t = time.perf_counter()
                for i in range(args.n):
                    core.invoices.create_invoice(staff, cust[m][i % len(cust[m])], "EUR", LINES)
                per[m].append(rate(args.n, time.perf_counter() - t))
        on, off = statistics.median(per["on"]), statistics.median(per["off"])
        calls = cores["on"].ctx.transit.calls
        print(f"invoice creation      on {on:8.1f}/s   off {off:8.1f}/s   ratio {on / off:.2f}  (goal >= 0.9)")
        print(f"  Vault round trips of all on-mode invoices: {cores['on'].ctx.transit.calls - calls}")

        # tokenization vs raw transit batch encryption
        core = cores["on"]
        card = validate_card("4242424242424242", 12, 2031, core.auth.now().date())
        n = 300
        t = time.perf_counter()
        for _ in range(n):
            core.cards.vault.tokenize(card, core.auth.now())
        single = rate(n, time.perf_counter() - t)
        t = time.perf_counter()
        core.cards.vault.tokenize_many([card] * n, core.auth.now())
        batched = rate(n, time.perf_counter() - t)
        t = time.perf_counter()
        core.ctx.transit.encrypt(vs.KEY_PAN, [card.pan.encode()] * n)
        raw = rate(n, time.perf_counter() - t)
        print(
            f"tokenization          one per call {single:8.1f}/s   batched {batched:8.1f}/s   "
            f"raw transit batch encrypt {raw:8.1f}/s"
        )

        # forced rewrap of everything in the 'on' database (plus 5000 more cards, to rewrap a sizeable vault)
        core.cards.vault.tokenize_many([card] * 5000, core.auth.now())
        token = root.auth.token.create(policies=[vs.POLICY_ROTATION], ttl="1h")["auth"]["client_token"]
        rot = Transit(lambda: hvac.Client(url=bao.url, token=token, verify=str(bao.ca_file)))
        t = time.perf_counter()
        stats = rewrap_all(pg.dsn("bench_on"), rot, batch=500, rotate=True)
        dt = time.perf_counter() - t
        total = sum(stats.rewrapped.values())
        print(
            f"forced rewrap         {total} ciphertexts in {dt:.2f} s = {rate(total, dt):8.1f}/s "
            f"(batches of 500; min_decryption_version now {stats.min_decryption_version})"
        )
        for c in cores.values():
            c.close()


if __name__ == "__main__":
    main()
