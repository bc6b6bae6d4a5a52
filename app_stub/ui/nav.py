"""The navigation bar: the sections a staff member's permissions let them open, and no others."""

from __future__ import annotations

from typing import Any

from app_stub.rbac import Perm

# (label, path, permission needed to open it); None: every signed-in staff member
SECTIONS: tuple[tuple[str, str, Perm | None], ...] = (
    ("Home", "/", None),
    ("Customers", "/customers", Perm.CUSTOMERS_READ),
    ("Invoices", "/invoices", Perm.INVOICES_READ),
    ("Audit log", "/audit", Perm.AUDIT_READ),
    ("Staff", "/staff", Perm.USERS_READ),
)


def links(staff: Any) -> list[tuple[str, str]]:
    """(label, path) of every section ``staff`` may open (its effective permissions: training applied)."""
    perms = staff.perms
    return [(label, path) for label, path, perm in SECTIONS if perm is None or perm in perms]
