"""Requests wait out a database restart instead of failing (a patch rollout restarts PostgreSQL).

A new connection already waits: the pool checks each connection it hands out and, while the server is
down, makes the request wait for a fresh one (up to the pool's timeout). What remains is a request
whose connection was cut mid-transaction ("terminating connection due to administrator command"): its
transaction rolled back, so nothing was changed. A read (GET, HEAD) that has not started its answer is
then run again, a bounded number of times; any other request gets 503 with Retry-After, which a
client may safely repeat.
"""

import asyncio
import json
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

SAFE_METHODS = frozenset({"GET", "HEAD"})


class DatabaseRestartRetry:
    """Pure ASGI middleware (outermost of the app's own): sees the exception before the 500 page."""

    def __init__(self, app: Any, attempts: int = 4, delay: float = 0.5) -> None:
        self.app, self.attempts, self.delay = app, attempts, delay

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        tries = self.attempts if scope["method"] in SAFE_METHODS else 1
        for attempt in range(1, tries + 1):
            try:
                await self.app(scope, receive, tracked)
                return
            except (psycopg.OperationalError, PoolTimeout) as exc:
                if started:
                    raise
                # a pool timeout has already waited its full time: answer now
                if attempt == tries or isinstance(exc, PoolTimeout):
                    await _unavailable(send)
                    return
                await asyncio.sleep(self.delay * attempt)


async def _unavailable(send: Any) -> None:
    body = json.dumps({"detail": "the database is restarting; nothing was changed: try again shortly"}).encode()
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"), (b"retry-after", b"2"), (b"cache-control", b"no-store"),
        (b"content-length", str(len(body)).encode()),
    ]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
