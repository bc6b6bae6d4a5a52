"""moto's S3 (and friends) as a WSGI app: the lab's S3-compatible backup store.

Served by uvicorn with TLS (``uvicorn billkit.s3app:app --interface wsgi --ssl-certfile …``):
moto's own development server drops TLS connections without a close_notify, which pgBackRest
(rightly) treats as an error.
"""

from __future__ import annotations

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

app = DomainDispatcherApplication(create_backend_app)
