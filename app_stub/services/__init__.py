"""The app's services, one module per domain: auth, staff, customers, invoices, payments, cards, gdpr,
audit. ``Services`` holds one of each, wired to the peers it calls; the app factory builds it and
the routes reach it through ``app_stub.api.deps``."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg_pool import ConnectionPool

from app_stub.core.config import Settings
from app_stub.crypto import Transit
from app_stub.gateway import PaymentGateway
from app_stub.services.audit import AuditService
from app_stub.services.auth import AuthService
from app_stub.services.base import AppError, Context, Session, Staff
from app_stub.services.cards import CardService, TokenVault
from app_stub.services.customers import CustomerService
from app_stub.services.gdpr import GdprService
from app_stub.services.invoices import InvoiceService
from app_stub.services.payments import PaymentService
from app_stub.services.staff import StaffService


@dataclass
class Services:
    ctx: Context
    auth: AuthService
    staff: StaffService
    customers: CustomerService
    invoices: InvoiceService
    payments: PaymentService
    cards: CardService
    gdpr: GdprService
    audit: AuditService

    @classmethod
    def build(
        cls,
        settings: Settings,
        pool: ConnectionPool,
        tokenizer_pool: ConnectionPool,
        transit: Transit,
        processor: Transit,
        gateway: PaymentGateway,
    ) -> Services:
        """``pool``: the billing_app role; ``tokenizer_pool``: the card vault's role; ``transit`` and
        ``processor``: the billing-app and payment-processor Vault identities."""
        ctx = Context(settings, pool, transit, gateway)
        auth = AuthService(ctx)
        customers = CustomerService(ctx)
        invoices = InvoiceService(ctx, customers)
        cards = CardService(ctx, auth, customers, TokenVault(tokenizer_pool, transit, processor))
        return cls(
            ctx,
            auth,
            StaffService(ctx, auth),
            customers,
            invoices,
            PaymentService(ctx, customers, invoices, cards),
            cards,
            GdprService(ctx, customers, invoices, cards),
            AuditService(ctx),
        )

    def close(self) -> None:
        self.ctx.heads.stop()  # signs a last head of the audit chain
        self.ctx.pool.close()
        self.cards.vault.pool.close()


__all__ = ["AppError", "Services", "Session", "Staff"]
