"""The app factory: ``create_app(settings, gateway)`` builds the services and lists every router.

Start it with ``uvicorn --factory app_stub.main:create_app``; tests pass their own settings and gateway.
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import hvac
import hvac.exceptions
from fastapi import FastAPI

from app_stub import audit, db, metrics
from app_stub.api import handlers
from app_stub.api.retry import DatabaseRestartRetry
from app_stub.api.routes import audit as audit_routes
from app_stub.api.routes import auth, cards, customers, gdpr, invoices, ops, payments, staff
from app_stub.core.config import Settings, SettingsError
from app_stub.crypto import Transit
from app_stub.gateway import FakeGateway, PaymentGateway
from app_stub.services import Services
from app_stub.services.payments import PaymentRecovery
from app_stub.ui import auth as ui_auth
from app_stub.ui import billing as ui_billing
from app_stub.ui import staff as ui_staff


def _approle_factory(s: Settings, role_id: str, secret_id: str) -> Callable[[], Any]:
    def make() -> Any:
        client = hvac.Client(url=s.vault_url, verify=s.vault_ca_file or True, timeout=10)
        client.auth.approle.login(role_id=role_id, secret_id=secret_id)
        return client

    return make


def _unwrap(s: Settings, wrapping_token: str) -> str:
    """The secret ID inside a response-wrapping token (which Vault then destroys: single use)."""
    client = hvac.Client(url=s.vault_url, verify=s.vault_ca_file or True, timeout=10)
    try:
        resp = client.adapter.post("/v1/sys/wrapping/unwrap", headers={"X-Vault-Token": wrapping_token})
    except hvac.exceptions.VaultError as exc:
        raise SettingsError(
            f"cannot unwrap the AppRole secret ID ({exc}); it was used or expired: deliver a new wrapped secret ID "
            "(in the lab: `billkit up`)"
        ) from None
    return str(resp["data"]["secret_id"])


def build_services(s: Settings, gateway: PaymentGateway | None = None) -> Services:
    s.validate()
    secret_id, processor_secret_id = s.vault_secret_id, s.vault_processor_secret_id
    if s.vault_secret_ids_wrapped:
        secret_id, processor_secret_id = _unwrap(s, secret_id), _unwrap(s, processor_secret_id)
    app_login = _approle_factory(s, s.vault_role_id, secret_id)
    creds = tcreds = None
    if s.database_vault_role:
        creds = db.VaultCredentials(app_login, s.database_vault_role, s.database_vault_mount)
    if s.tokenizer_vault_role:
        tcreds = db.VaultCredentials(app_login, s.tokenizer_vault_role, s.database_vault_mount)
    pool = db.make_pool(s.database_url, "billing", s.db_pool_size, creds)
    tpool = db.make_pool(s.tokenizer_database_url, "tokenizer", 4, tcreds)
    transit = Transit(app_login, s.transit_mount)
    processor = Transit(_approle_factory(s, s.vault_processor_role_id, processor_secret_id), s.transit_mount)
    return Services.build(s, pool, tpool, transit, processor, gateway or FakeGateway())


def create_app(settings: Settings | None = None, gateway: PaymentGateway | None = None) -> FastAPI:
    s = settings or Settings.from_env()
    audit.configure_logging()
    services = build_services(s, gateway)
    recovery = PaymentRecovery(services.payments)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        recovery.start()  # finishes what a crash left pending, then on a timer (APP-03)
        stop_metrics = (
            metrics.serve(
                s.metrics_port,
                s.metrics_address,
                s.metrics_cert_file,
                s.metrics_key_file,
                s.metrics_ca_file,
                s.metrics_tls_ciphers,
            )
            if s.metrics_port
            else None
        )  # MON-03, ENC-07
        yield
        if stop_metrics:
            stop_metrics()
        await asyncio.to_thread(recovery.stop)
        services.close()

    # OpenAPI is published at /openapi.json; the interactive docs are off (they load scripts from a CDN)
    app = FastAPI(title="billkit billing app", version="1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.services = services
    app.state.recovery = recovery
    app.add_middleware(audit.RequestOrigin, trusted=s.trusted_networks())  # audit records' origin
    services.ctx.heads.start()
    handlers.install(app)
    include_routers(app)
    app.add_middleware(DatabaseRestartRetry)  # last added, so outermost: before Starlette's 500 page
    return app


def include_routers(app: FastAPI) -> None:
    """The table of contents: every router of the app, in one place."""
    # the JSON API, one router per resource (each route names its permission once: api.deps.guarded)
    app.include_router(auth.router)  # sign-in, MFA, password, training
    app.include_router(staff.router)  # staff accounts, roles, two-person role requests
    app.include_router(customers.router)  # customers (encrypted personal data)
    app.include_router(gdpr.router)  # data-subject export and erasure
    app.include_router(invoices.router)  # invoices and credit notes
    app.include_router(payments.router)  # payments
    app.include_router(cards.router)  # card tokens
    app.include_router(audit_routes.router)  # the audit log
    app.include_router(ops.router)  # health
    # the staff web UI
    app.include_router(ui_auth.router)  # sign-in pages
    app.include_router(ui_billing.router)  # working pages
    app.include_router(ui_staff.router)  # staff management
