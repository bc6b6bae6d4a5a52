"""Figures for the edge: latency through the WAF (nginx + ModSecurity CRS) to the app hosts.

Run with the lab up: ``BILLKIT_LAB_DIR=... .venv/bin/python bench/edge.py [--requests 200]``. Every
request goes to the machine's published loopback port (127.0.0.1) only, and the loop is bounded.
Prints p50/p95/max per case and requests per second on one keep-alive connection, plus the cost
of a new TLS connection. Nothing here passes or fails: the figures go in the report.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from billkit.lab import app  # noqa: E402

CASES = {
    "GET /healthz (app + database round trip)": ("GET", "/healthz", None),
    "GET /login (HTML page)": ("GET", "/login", None),
    "POST /api/customers, unauthenticated (CRS inspects the JSON body; the app answers 401)": (
        "POST",
        "/api/customers",
        {"name": "Ada Lovelace", "email": "ada@example.org", "address": "12 Analytical Row, London"},
    ),
    "GET with a SQL injection (blocked by the CRS, 403)": ("GET", "/customers?q=1' UNION SELECT 1,2--", None),
}


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200, help="requests per case (bounded: at most 2000)")
    args = parser.parse_args()
    n = max(1, min(args.requests, 2000))
    ca = str(app.tls_staging() / "ca.pem")
    base = app.published_url().rstrip("/")
    print(f"edge benchmark: {n} requests per case to {base} (through edge-1 to app-1/app-2)")
    with httpx.Client(base_url=base, verify=ca, timeout=30) as client:
        for name, (method, path, body) in CASES.items():
            client.request(method, path, json=body)  # warm the connection and the app
            times = []
            start = time.perf_counter()
            for _ in range(n):
                t = time.perf_counter()
                client.request(method, path, json=body)
                times.append((time.perf_counter() - t) * 1000)
            total = time.perf_counter() - start
            print(f"  {name}: p50 {pct(times, 50):.1f} ms, p95 {pct(times, 95):.1f} ms, max {max(times):.1f} ms, "
                  f"{n / total:.0f} req/s")  # fmt: skip
    handshakes = []
    for _ in range(min(n, 50)):
        t = time.perf_counter()
        with httpx.Client(base_url=base, verify=ca, timeout=30) as fresh:
            fresh.get("/login")
        handshakes.append((time.perf_counter() - t) * 1000)
    print(f"  new TLS connection + GET /login: p50 {statistics.median(handshakes):.1f} ms, "
          f"p95 {pct(handshakes, 95):.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
