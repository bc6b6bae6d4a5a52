"""The throwaway servers of billkit.localsvc are real and locked down: TLS only, loopback only, sealed storage."""

import os

import psycopg
import pytest
import requests
from apphelpers import Services


def test_postgres_accepts_only_tls_on_loopback(services: Services) -> None:
    pg = services.pg
    assert pg.host == "127.0.0.1"
    with psycopg.connect(pg.dsn()) as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
    plain = pg.dsn().replace("sslmode=verify-full", "sslmode=disable")
    with pytest.raises(psycopg.OperationalError, match="no encryption|pg_hba"):
        psycopg.connect(plain, connect_timeout=5)
    os.kill(pg.pid, 0)  # started by PID, alive


def test_openbao_is_a_real_initialised_server_with_tls(services: Services) -> None:
    bao = services.bao
    health = bao.client().sys.read_health_status(method="GET")
    assert health["initialized"] and not health["sealed"]
    assert bao.url.startswith("https://127.0.0.1:")
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{bao.url}/v1/sys/health", timeout=5)  # the default trust store does not know the test CA
    assert bao.audit_log.exists()
    os.kill(bao.pid, 0)
