"""Roles and their explicit permission lists (least privilege; RBAC-01).

A staff account's roles are effective only while it has acknowledged the current security
training version and the acknowledgement has not expired (EDU-01, PCI DSS 12.6).
"""

from __future__ import annotations

from enum import StrEnum


class Perm(StrEnum):
    CUSTOMERS_READ = "customers.read"
    CUSTOMERS_WRITE = "customers.write"
    INVOICES_READ = "invoices.read"
    INVOICES_WRITE = "invoices.write"
    INVOICES_ISSUE = "invoices.issue"
    INVOICES_VOID = "invoices.void"
    CREDIT_NOTES_WRITE = "credit_notes.write"
    PAYMENTS_READ = "payments.read"
    PAYMENTS_CHARGE = "payments.charge"
    CARDS_TOKENIZE = "cards.tokenize"
    CARDS_DETOKENIZE = "cards.detokenize"
    AUDIT_READ = "audit.read"
    USERS_READ = "users.read"
    USERS_MANAGE = "users.manage"
    ROLES_GRANT = "roles.grant"
    GDPR_EXPORT = "gdpr.export"
    GDPR_ERASE = "gdpr.erase"


ROLE_PERMISSIONS: dict[str, frozenset[Perm]] = {
    # Administers staff accounts, roles and data-subject requests; no billing or card work.
    "admin": frozenset(
        {
            Perm.USERS_READ,
            Perm.USERS_MANAGE,
            Perm.ROLES_GRANT,
            Perm.AUDIT_READ,
            Perm.GDPR_EXPORT,
            Perm.GDPR_ERASE,
            Perm.CUSTOMERS_READ,
        }
    ),
    # Day-to-day billing: customers, invoices, credit notes, taking card payments (never sees a PAN).
    "billing_clerk": frozenset(
        {
            Perm.CUSTOMERS_READ,
            Perm.CUSTOMERS_WRITE,
            Perm.INVOICES_READ,
            Perm.INVOICES_WRITE,
            Perm.INVOICES_ISSUE,
            Perm.INVOICES_VOID,
            Perm.CREDIT_NOTES_WRITE,
            Perm.PAYMENTS_READ,
            Perm.PAYMENTS_CHARGE,
            Perm.CARDS_TOKENIZE,
        }
    ),
    # Payments and the only role that may detokenize (with step-up MFA).
    "payment_processor": frozenset(
        {Perm.INVOICES_READ, Perm.PAYMENTS_READ, Perm.PAYMENTS_CHARGE, Perm.CARDS_TOKENIZE, Perm.CARDS_DETOKENIZE}
    ),
    # Read only, including the audit log.
    "auditor": frozenset(
        {Perm.CUSTOMERS_READ, Perm.INVOICES_READ, Perm.PAYMENTS_READ, Perm.AUDIT_READ, Perm.USERS_READ}
    ),
}
ROLES = tuple(ROLE_PERMISSIONS)
# Two-person rule (RBAC-02): one admin requests these roles, another approves. Between them they
# reach card numbers (payment_processor) or every other power (admin).
TWO_PERSON_ROLES = frozenset({"admin", "payment_processor"})


def permissions(roles: set[str] | frozenset[str]) -> frozenset[Perm]:
    out: set[Perm] = set()
    for r in roles:
        out |= ROLE_PERMISSIONS.get(r, frozenset())
    return frozenset(out)
