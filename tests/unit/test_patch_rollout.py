"""The rollout's controller side without a lab: progress from Ansible's output, the evidence record,
the load loop's browser-like retry (against a real TLS server on loopback)."""

from __future__ import annotations

import http.server
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from billkit.patching.load import LoadLoop
from billkit.patching.rollout import Progress, host_record, packages_changed

OUTPUT = """\
TASK [patching : PAT-04 | start | Record the phase clock] ***
ok: [app-1]
TASK [patching : PAT-04 | drain | Every edge host takes this app host out of its upstream pool] ***
changed: [app-1] => (item=edge-1)
TASK [patching : PAT-05 | upgrade | Install exactly those versions] ***
changed: [app-1]
TASK [patching : PAT-04 | failed | Back into service when nothing was installed yet] ***
skipping: [app-1]
TASK [patching : PAT-07 | evidence | This host's record, on the controller] ***
ok: [app-1]
TASK [patching : PAT-04 | precheck | No package operation is half done on this host] ***
fatal: [app-2]: FAILED! => changed=false
"""


@pytest.mark.control("PAT-04")
def test_progress_follows_each_host_through_its_phases() -> None:
    p = Progress(["app-1", "app-2", "edge-1"])
    seen = []
    for line in OUTPUT.splitlines():
        p.line(line)
        seen.append(p.rows["app-1"]["phase"])
    assert "drain" in seen and "upgrade" in seen
    assert p.rows["app-1"]["phase"] == "done"  # a skipped rescue task does not mark it failed
    assert p.rows["app-2"]["phase"] == "failed in precheck"
    assert p.rows["edge-1"]["phase"] == "waiting"


@pytest.mark.control("PAT-07")
def test_the_evidence_record_lists_each_changed_package_with_its_origin() -> None:
    before = {"boot_id": "b1", "installed": {"libssl3": "3.0.1", "bash": "5.2"},
              "pending": [{"name": "libssl3", "security": True, "label": "Debian-Security"}]}  # fmt: skip
    after = {"boot_id": "b2", "installed": {"libssl3": "3.0.2", "bash": "5.2"}, "pending": []}
    assert packages_changed(before, after) == [
        {"name": "libssl3", "before": "3.0.1", "after": "3.0.2", "origin": "Debian-Security"}
    ]
    raw = {"host": "db-1", "kind": "db", "phases": {"start": 100.0, "upgrade": 103.5, "done": 130.0},
           "phase": "done", "failure": "", "before": before, "after": after, "rebooted": True,
           "boot_id_after": "b2", "installed": True}  # fmt: skip
    rec = host_record(raw)
    assert rec["duration_s"] == 30.0 and rec["phases_s"]["upgrade"] == 3.5
    assert rec["boot_id_before"] == "b1" and rec["boot_id_after"] == "b2" and rec["rebooted"]
    assert rec["health"]["ok"] and rec["security_pending_after"] == 0
    failed = host_record({**raw, "phase": "smoke", "failure": "db-1 failed in phase smoke: down"})
    assert not failed["health"]["ok"] and "smoke" in failed["health"]["detail"]


@pytest.fixture()
def tls_server(tmp_path: Path):
    """A real HTTPS server on loopback that closes every keep-alive connection after its first answer
    without saying so (as an edge host that went away does)."""
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)  # fmt: skip

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            body = b"ok"
            self.send_response(200 if self.path != "/fail" else 500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True  # silently: no Connection: close header

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], str(cert)
    server.shutdown()


@pytest.mark.control("PAT-04")
def test_the_load_loop_retries_only_a_reused_connection_closed_before_it_answered(tls_server) -> None:
    port, ca = tls_server
    loop = LoadLoop("127.0.0.1", port, ca, rate=20, workers=1, limit=10).start()
    loop._threads[0].join(15)  # the worker ends at the limit
    result = loop.stop()
    assert result.sent == 10 and result.failed == 0
    assert result.retried >= 1  # each reuse met a closed connection and was retried once, as a browser does


@pytest.mark.control("PAT-04")
def test_the_load_loop_counts_a_refused_connection_as_a_failure(tls_server) -> None:
    _, ca = tls_server
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loop = LoadLoop("127.0.0.1", port, ca, rate=20, workers=1, limit=5).start()
    loop._threads[0].join(15)
    result = loop.stop()
    assert result.sent == 5 and result.failed == 5 and result.retried == 0
