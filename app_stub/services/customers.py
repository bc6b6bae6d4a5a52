"""Customers: personal data envelope-encrypted under a data key per customer, found by blind index."""

from __future__ import annotations

from typing import Any

import psycopg

from app_stub import audit
from app_stub import vault_setup as vs
from app_stub.services.base import AppError, Service, Staff


class CustomerService(Service):
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

    def customer_key(self, conn: psycopg.Connection[Any], cid: int) -> bytes:
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

    def read_customer(self, conn: psycopg.Connection[Any], cid: int) -> dict[str, Any]:
        """One customer, decrypted (404 if absent, 410 if erased)."""
        key = self.customer_key(conn, cid)
        row = conn.execute(
            "SELECT id, name_ct, email_ct, address_ct, tax_id_ct, created_at FROM billing.customers WHERE id = %s",
            (cid,),
        ).fetchone()
        if row is None:
            raise AppError(404, "not found")
        return self.open_customer(key, row)

    def open_customer(self, key: bytes, row: tuple[Any, ...]) -> dict[str, Any]:
        cid = row[0]
        out: dict[str, Any] = {"id": cid}
        for i, f in enumerate(self.PII_FIELDS):
            out[f] = self.cipher.open(key, cid, f, row[1 + i]) if row[1 + i] is not None else None
        out["created_at"] = row[5]
        return out

    def get_customer(self, staff: Staff, cid: int) -> dict[str, Any]:
        with self.tx() as conn:
            customer = self.read_customer(conn, cid)
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
        self.warm_keys([(r[0], r[6]) for r in rows])
        return [self.open_customer(self.cipher.key_for(r[0], r[6]), r[:6]) for r in rows]

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
        self.warm_keys([(r[0], r[2]) for r in rows])
        return {r[0]: self.cipher.open(self.cipher.key_for(r[0], r[2]), r[0], "name", r[1]) for r in rows}

    def warm_keys(self, pairs: list[tuple[int, str]]) -> None:
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

    def customer_open(self, conn: psycopg.Connection[Any], cid: int, lock: bool = False) -> None:
        """404 without the customer, 410 once erased; ``lock`` (FOR SHARE) holds off a concurrent erasure."""
        row = conn.execute(
            "SELECT erased_at FROM billing.customers WHERE id = %s" + (" FOR SHARE" if lock else ""),  # noqa: S608
            (cid,),
        ).fetchone()
        if row is None:
            raise AppError(404, f"no customer {cid}")
        if row[0] is not None:
            raise AppError(410, f"customer {cid} was erased: no new cards or payments for them")
