"""A bounded load loop through the edge, as browsers send it (`billkit patch --under-load`).

A few requests per second on keep-alive connections, for as long as the rollout runs (bounded by a
maximum count). A request is retried only where a browser would retry it: a reused keep-alive
connection that the server closed before answering (the edge host that held it moved away). Any
other error, or a status other than 200, is a failed request.
"""

from __future__ import annotations

import http.client
import ssl
import statistics
import threading
import time
from dataclasses import dataclass, field

# A read through the edge, the app and the database, and one the app answers alone (the sign-in page
# shares the login rate limit, NET-07, so a loop would only measure that).
PATHS = ("/healthz", "/openapi.json")
# How long a browser waits for an answer before giving up (theirs are minutes; this is a minute).
BROWSER_TIMEOUT = 60


@dataclass
class LoadResult:
    sent: int = 0
    failed: int = 0
    retried: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def percentile(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        if len(self.latencies_ms) == 1:
            return round(self.latencies_ms[0], 1)
        return round(statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[int(q) - 1], 1)

    def summary(self) -> dict[str, object]:
        return {
            "sent": self.sent,
            "failed": self.failed,
            "retried_idle_connections": self.retried,
            "p50_ms": self.percentile(50),
            "p99_ms": self.percentile(99),
            "errors": self.errors[:20],
        }


class LoadLoop:
    """``workers`` keep-alive clients, each sending ``rate`` requests per second, at most ``limit`` in all."""

    def __init__(
        self, host: str, port: int, ca_file: str, *, rate: float = 2.0, workers: int = 2, limit: int = 20000
    ) -> None:
        self.host, self.port = host, port
        self.ctx = ssl.create_default_context(cafile=ca_file)
        self.rate, self.workers, self.limit = rate, workers, limit
        self.result = LoadResult()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _one(self, conn: http.client.HTTPSConnection | None, path: str) -> tuple[http.client.HTTPSConnection, int]:
        """One request; a reused connection closed before any answer is reopened once (a browser's retry)."""
        reused = conn is not None
        for attempt in (1, 2):
            if conn is None:
                conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=BROWSER_TIMEOUT)
            try:
                conn.request(
                    "GET",
                    path,
                    headers={
                        "Host": f"{self.host}:{self.port}",
                        "Connection": "keep-alive",
                        "User-Agent": "billkit-patch-load/1",
                    },
                )
                resp = conn.getresponse()
                resp.read()
                if resp.will_close:
                    conn.close()
                    return _Closed(), resp.status  # type: ignore[return-value]
                return conn, resp.status
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ssl.SSLEOFError) as exc:
                conn.close()
                conn = None
                if attempt == 1 and reused:
                    with self._lock:
                        self.result.retried += 1
                    continue
                raise exc
        raise AssertionError("unreachable")

    def _worker(self) -> None:
        conn: http.client.HTTPSConnection | None = None
        period = 1.0 / self.rate
        i = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                if self.result.sent >= self.limit:
                    return
                self.result.sent += 1
            path = PATHS[i % len(PATHS)]
            i += 1
            start = time.monotonic()
            try:
                new, status = self._one(None if isinstance(conn, _Closed) else conn, path)
                conn = new
                ok = status == 200
                detail = f"{path}: HTTP {status}"
            except (OSError, http.client.HTTPException) as exc:
                conn, ok, detail = None, False, f"{path}: {type(exc).__name__}: {exc}"
            elapsed = (time.monotonic() - start) * 1000
            with self._lock:
                if ok:
                    self.result.latencies_ms.append(elapsed)
                else:
                    self.result.failed += 1
                    self.result.errors.append(f"{time.strftime('%H:%M:%S')} {detail}")
            next_at += period
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        if conn is not None and not isinstance(conn, _Closed):
            conn.close()

    def start(self) -> LoadLoop:
        for n in range(self.workers):
            t = threading.Thread(target=self._worker, name=f"load-{n}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> LoadResult:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        return self.result


class _Closed:
    """Marks a connection the server announced it would close (the next request opens a new one)."""


def measure(host: str, port: int, ca_file: str, seconds: float) -> LoadResult:
    """The same loop for a fixed time: the baseline before a rollout."""
    loop = LoadLoop(host, port, ca_file).start()
    time.sleep(seconds)
    return loop.stop()
