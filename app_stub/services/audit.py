"""Reading the audit log (the log itself: ``app_stub.audit``)."""

from __future__ import annotations

from typing import Any

from app_stub import audit
from app_stub.services.base import Service, Staff


class AuditService(Service):
    def audit_events(self, staff: Staff, limit: int = 200) -> list[dict[str, Any]]:
        with self.tx() as conn:
            rows = conn.execute(
                "SELECT seq, at, actor, action, target, outcome, detail, origin, hash FROM audit.events "
                "ORDER BY seq DESC LIMIT %s",
                (limit,),
            ).fetchall()
            audit.append(conn, self.now(), staff.actor, "audit.read", "audit", count=len(rows))
        keys = ("seq", "at", "actor", "action", "target", "outcome", "detail", "origin", "hash")
        return [dict(zip(keys, r, strict=True)) for r in rows]
