"""`billkit patch --check`: the host script's parsing, release dates read from .deb ar headers over
HTTP ranges, the PAT-05 gate at its boundary (failing closed), its three formats, and the patch
part of `billkit verify` (PAT-07).

Release dates are read from real packages built with dpkg-deb under SOURCE_DATE_EPOCH (as Debian's
reproducible builds are) and served by a loopback HTTP server that honours Range, as the mirror does.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import socket
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from billkit.cli import app
from billkit.controls import ROOT
from billkit.patching import age, report, status
from billkit.patching.age import AgeError, Dated, ar_mtime, release_dates
from billkit.patching.report import as_json, as_junit, evaluate, print_evidence, print_status_summary, print_table
from billkit.patching.status import Collection, StatusError, parse_host

SCRIPT = ROOT / "playbooks/roles/patching/files/patch_status.py"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _load_script() -> ModuleType:
    """The host script as a module: its parsing runs here without python3-apt (imported only in collect())."""
    spec = importlib.util.spec_from_file_location("patch_status", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


patch_status = _load_script()

# needrestart 3.6 in batch, list-only mode (`needrestart -b -r l`) on a bookworm VM after an openssl
# and a kernel update: the shape it prints (KSTA 3: a newer kernel version is installed).
NEEDRESTART_OUT = """\
NEEDRESTART-VER: 3.6
NEEDRESTART-KCUR: 6.1.0-25-amd64
NEEDRESTART-KEXP: 6.1.0-28-amd64
NEEDRESTART-KSTA: 3
NEEDRESTART-UCSTA: 1
NEEDRESTART-SVC: ssh.service
NEEDRESTART-SVC: cron.service
NEEDRESTART-SVC: billing-app.service
NEEDRESTART-SVC: ssh.service
NEEDRESTART-CONT: LXC web1
Scanning processes...
"""


def _pending(name: str, installed: str, candidate: str, uri: str, *, security: bool) -> dict[str, Any]:
    if security:
        origin = {"label": "Debian-Security", "codename": "bookworm-security", "archive": "oldstable-security"}
    else:
        origin = {"label": "Debian", "codename": "bookworm", "archive": "oldstable"}
    return {"name": name, "installed": installed, "candidate": candidate, "security": security, "origin": "Debian",
            "site": "127.0.0.1", "uri": uri, **origin}  # fmt: skip


def host_json(base: str, *, security_index: str | None = "2026-11-30T20:53:13+00:00") -> dict[str, Any]:
    """What patch_status.py prints for a bookworm app host (versions and pool paths as on the mirror)."""
    return {
        "host": "app-1",
        "boot_id": "7dae9756-ce8f-452d-b067-fe8f456e6c0b",
        "collected_at": "2026-12-01T11:58:02+00:00",
        "indexes": [
            {
                "uri": f"{base}/debian/",
                "dist": "bookworm",
                "fetched": True,
                "date": "2026-07-11T10:16:37+00:00",
                "valid_until": None,
                "label": "Debian",
                "security": False,
            },
            {
                "uri": f"{base}/debian-security/",
                "dist": "bookworm-security",
                "fetched": security_index is not None,
                "date": security_index,
                "valid_until": None,
                "label": "Debian-Security",
                "security": True,
            },
        ],  # fmt: skip
        "pending": [
            _pending(
                "libssl3",
                "3.0.19-1~deb12u2",
                "3.0.22-1~deb12u2",
                security=True,
                uri=f"{base}/debian-security/pool/updates/main/o/openssl/libssl3_3.0.22-1%7edeb12u2_amd64.deb",
            ),
            _pending(
                "openssl",
                "3.0.19-1~deb12u2",
                "3.0.22-1~deb12u2",
                security=True,
                uri=f"{base}/debian-security/pool/updates/main/o/openssl/openssl_3.0.22-1%7edeb12u2_amd64.deb",
            ),
            _pending(
                "base-files",
                "12.4+deb12u11",
                "12.4+deb12u15",
                security=False,
                uri=f"{base}/debian/pool/main/b/base-files/base-files_12.4%2bdeb12u15_amd64.deb",
            ),
        ],  # fmt: skip
        "reboot_required": {"required": True, "packages": ["libc6"]},
        "restart_needed": {"available": True, "error": None, **patch_status.parse_needrestart(NEEDRESTART_OUT)},
        "installed": {"libssl3": "3.0.19-1~deb12u2", "openssl": "3.0.19-1~deb12u2", "base-files": "12.4+deb12u11"},
    }


def quiet_host_json() -> dict[str, Any]:
    """A host with nothing pending and a fresh security index (edge-1 after a rollout)."""
    data = host_json("http://127.0.0.1:9")
    data.update(host="edge-1", pending=[], reboot_required={"required": False, "packages": []})
    data["restart_needed"] = {
        "available": True,
        "error": None,
        **patch_status.parse_needrestart("NEEDRESTART-VER: 3.6\n"),
    }
    return data


def collection(*hosts: tuple[str, dict[str, Any]], errors: dict[str, str] | None = None) -> Collection:
    return Collection(hosts={name: parse_host(name, data) for name, data in hosts}, errors=errors or {})


def dated(data: dict[str, Any], days_old: dict[str, float | None]) -> dict[str, Dated]:
    """Release dates per package name: N days before NOW, or None for an unknown date."""
    out = {}
    for p in data["pending"]:
        days = days_old.get(p["name"], 1)
        out[p["uri"]] = Dated(NOW - timedelta(days=days)) if days is not None else Dated(None, f"{p['uri']}: gone")
    return out


# --- the host script ---------------------------------------------------------------------------


@pytest.mark.control("PAT-05", "PAT-06")
def test_needrestart_batch_output_gives_services_and_kernel_state() -> None:
    parsed = patch_status.parse_needrestart(NEEDRESTART_OUT)
    assert parsed["services"] == ["billing-app.service", "cron.service", "ssh.service"]
    assert parsed["kernel_status"] == 3
    assert (parsed["kernel_current"], parsed["kernel_expected"]) == ("6.1.0-25-amd64", "6.1.0-28-amd64")
    assert parsed["containers"] == ["LXC web1"]
    assert parsed["version"] == "3.6"
    # Inside a container needrestart prints only its version: nothing to restart, kernel state unknown.
    inside = patch_status.parse_needrestart("NEEDRESTART-VER: 3.6\n")
    assert inside["services"] == [] and inside["kernel_status"] is None
    host = parse_host("app-1", host_json("http://127.0.0.1:9"))
    assert host.needs_reboot and host.services == ["billing-app.service", "cron.service", "ssh.service"]


@pytest.mark.control("PAT-05")
def test_the_security_origin_is_recognised_by_label_or_suite() -> None:
    assert patch_status.is_security("Debian-Security", "bookworm-security")
    assert patch_status.is_security(None, "bookworm-security")
    assert patch_status.is_security("Debian-Security", None)
    assert not patch_status.is_security("Debian", "bookworm")
    assert not patch_status.is_security("Debian", "bookworm-updates")


@pytest.mark.control("PAT-05")
def test_release_files_give_their_date(tmp_path: Path) -> None:
    release = tmp_path / "10.77.40.1:3142_debian-security_dists_bookworm-security_InRelease"  # via the lab proxy
    release.write_text(
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: Debian\nLabel: Debian-Security\n"
        "Suite: oldstable-security\nCodename: bookworm-security\nDate: Sun, 29 Nov 2026 00:53:13 UTC\n"
        "Valid-Until: Sun, 06 Dec 2026 00:53:13 UTC\nMD5Sum:\n 0123 100 main/binary-amd64/Packages\n"
        "-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n"
    )
    fields = patch_status.release_fields(str(release))
    assert fields["Label"] == "Debian-Security" and fields["Codename"] == "bookworm-security"
    assert patch_status._iso(fields["Date"]) == "2026-11-29T00:53:13+00:00"
    assert patch_status._iso(fields["Valid-Until"]) == "2026-12-06T00:53:13+00:00"


# --- release dates from the mirror ---------------------------------------------------------------


def ar_header(name: bytes, mtime: int, size: int) -> bytes:
    """One member header of an ar archive as ar(5) defines it (60 bytes)."""
    head = (name.ljust(16) + str(mtime).encode().ljust(12) + b"0".ljust(6) + b"0".ljust(6) + b"100644".ljust(8)
            + str(size).encode().ljust(10) + b"`\n")  # fmt: skip
    assert len(head) == 60
    return head


def deb_head(mtime: int, *, first: bytes = b"debian-binary", second: bytes = b"control.tar.xz") -> bytes:
    """The first 132 bytes of a .deb: the magic, debian-binary ("2.0\\n"), control.tar's header."""
    return b"!<arch>\n" + ar_header(first, mtime, 4) + b"2.0\n" + ar_header(second, mtime, 1128)


@pytest.mark.control("PAT-05")
def test_the_ar_header_of_a_deb_gives_its_build_date() -> None:
    assert ar_mtime(deb_head(1792576464)) == 1792576464
    assert ar_mtime(deb_head(1792576464, first=b"debian-binary/")) == 1792576464  # GNU ar's "/" form
    assert ar_mtime(deb_head(1778185982, second=b"control.tar.zst") + b"(zstd data)") == 1778185982
    with pytest.raises(AgeError, match="not an ar archive"):
        ar_mtime(b"<html>\n" + deb_head(1)[7:])
    with pytest.raises(AgeError, match="first ar member is b'control.tar.xz'"):
        ar_mtime(deb_head(1792576464, first=b"control.tar.xz"))
    with pytest.raises(AgeError, match="second ar member is b'data.tar.xz'"):
        ar_mtime(deb_head(1792576464, second=b"data.tar.xz"))
    with pytest.raises(AgeError, match="is not a decimal number"):
        ar_mtime(deb_head(0).replace(b"0           ", b"yesterday   ", 1))
    with pytest.raises(AgeError, match="only 21 bytes"):
        ar_mtime(b"!<arch>\n" + b"debian-binary")
    with pytest.raises(AgeError, match="malformed"):
        head = deb_head(1792576464)
        ar_mtime(head[:66] + b"xx" + head[68:])


def build_deb(folder: Path, name: str, epoch: int) -> bytes:
    """A real .deb built by dpkg-deb under SOURCE_DATE_EPOCH, as Debian's reproducible builds do."""
    root = folder / name / "DEBIAN"
    root.mkdir(parents=True)
    (root / "control").write_text(f"Package: {name}\nVersion: 1.0-1\nArchitecture: all\n"
                                  "Maintainer: Kit <kit@example.org>\nDescription: probe\n")  # fmt: skip
    out = folder / f"{name}_1.0-1_all.deb"
    dpkg_deb = shutil.which("dpkg-deb")
    assert dpkg_deb, "dpkg-deb (Debian's dpkg) is needed to build the test packages"
    subprocess.run([dpkg_deb, "--root-owner-group", "-Zxz", "--build", str(root.parent), str(out)], check=True,
                   capture_output=True, env={"SOURCE_DATE_EPOCH": str(epoch), "PATH": "/usr/bin:/bin"})  # fmt: skip
    return out.read_bytes()


class Mirror:
    """A loopback HTTP server with the mirror's behaviour: Range honoured (or, optionally, ignored)."""

    def __init__(self, files: dict[str, bytes], *, honour_range: bool = True) -> None:
        self.files = files
        self.honour_range = honour_range
        self.requests: list[tuple[str, str | None]] = []
        self.connections: set[tuple[str, int]] = set()
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the mirror

            def do_GET(self) -> None:
                mirror.requests.append((self.path, self.headers.get("Range")))
                mirror.connections.add(self.client_address)
                body = mirror.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                rng = self.headers.get("Range")
                if rng and mirror.honour_range and rng.startswith("bytes="):
                    first, _, last = rng[6:].partition("-")
                    start, end = int(first), min(int(last), len(body) - 1)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
                    body = body[start : end + 1]
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def debs(tmp_path: Path) -> dict[str, tuple[bytes, int]]:
    epochs = {"openssl": 1792576464, "libssl3": 1792576464, "base-files": 1778185982}
    return {name: (build_deb(tmp_path / "build", name, epoch), epoch) for name, epoch in epochs.items()}


@pytest.fixture
def mirror(debs: dict[str, tuple[bytes, int]]) -> Iterator[Mirror]:
    data = host_json("")
    files = {p["uri"]: debs[p["name"]][0] for p in data["pending"]}
    server = Mirror(files)
    yield server
    server.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.control("PAT-05")
def test_release_dates_come_from_a_ranged_get_of_the_mirror_and_are_cached(
    mirror: Mirror, debs: dict[str, tuple[bytes, int]], tmp_path: Path
) -> None:
    cache = tmp_path / "cache" / "dates.json"
    pending = host_json(mirror.base)["pending"]
    dates = release_dates([p["uri"] for p in pending], cache_file=cache, workers=1, now=NOW)
    for p in pending:
        assert dates[p["uri"]] == Dated(datetime.fromtimestamp(debs[p["name"]][1], UTC)), p["name"]
    assert {r for _, r in mirror.requests} == {"bytes=0-131"}  # 132 bytes per package, never the whole file
    assert len(mirror.requests) == len(pending)
    assert len(mirror.connections) == 1  # each response read to its end: one keep-alive connection for all
    assert json.loads(cache.read_text())[pending[0]["uri"]] == debs[pending[0]["name"]][1]
    # A URI names one build: asked again, the dates come from the cache without a request.
    again = release_dates([p["uri"] for p in pending], cache_file=cache, now=NOW)
    assert again == dates and len(mirror.requests) == len(pending)


@pytest.mark.control("PAT-05")
def test_a_mirror_that_ignores_range_is_read_only_as_far_as_the_header(
    debs: dict[str, tuple[bytes, int]], tmp_path: Path
) -> None:
    body, epoch = debs["openssl"]
    server = Mirror({"/o/openssl.deb": body + b"\0" * 2_000_000}, honour_range=False)
    try:
        dates = release_dates([f"{server.base}/o/openssl.deb"], cache_file=tmp_path / "c.json", now=NOW)
    finally:
        server.close()
    assert dates[f"{server.base}/o/openssl.deb"].released == datetime.fromtimestamp(epoch, UTC)


@pytest.mark.control("PAT-05")
def test_unreadable_dates_say_why_and_are_not_cached(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(age, "RETRY_DELAYS", (0.0, 0.0))
    cache = tmp_path / "dates.json"
    gone = f"{mirror.base}/debian-security/pool/updates/main/o/openssl/openssl_3.0.20-1_amd64.deb"
    mirror.files["/not-a-deb.deb"] = b"<!DOCTYPE html><html>captive portal</html>" + b" " * 200
    html = f"{mirror.base}/not-a-deb.deb"
    dates = release_dates([gone, html, "file:/var/cache/apt/archives/x.deb"], cache_file=cache, now=NOW)
    assert all(d.released is None for d in dates.values())
    assert "no longer on the mirror (404)" in (dates[gone].error or "")
    assert "update them" in (dates[gone].error or "")
    assert "not an ar archive" in (dates[html].error or "")
    assert "not an HTTP(S) URI" in (dates["file:/var/cache/apt/archives/x.deb"].error or "")
    assert not cache.exists()
    # An unreachable mirror: each package is tried three times, and after three packages in a row the
    # mirror counts as down and the rest fail at once.
    port = closed_port()
    dead = [f"http://127.0.0.1:{port}/debian/pool/main/b/bash/{n}_5.2.15-2%2bb13_amd64.deb" for n in "abcde"]
    tried: list[str] = []
    real_fetch = age.fetch_head
    monkeypatch.setattr(age, "fetch_head", lambda client, uri: (tried.append(uri), real_fetch(client, uri))[1])
    dates = release_dates(dead, cache_file=cache, workers=1, now=NOW)
    assert tried == [u for u in dead[:3] for _ in range(3)]
    for uri in dead:
        assert f"{uri} is unreachable from the controller (ConnectError" in (dates[uri].error or "")
        assert "3 attempts" in (dates[uri].error or "") and "check its route" in (dates[uri].error or "")
    assert not cache.exists()


@pytest.mark.control("PAT-05")
def test_an_implausible_build_date_is_refused(tmp_path: Path) -> None:
    body = deb_head(int((NOW + timedelta(days=3)).timestamp())) + b"\0" * 1128
    server = Mirror({"/future.deb": body})
    try:
        dates = release_dates([f"{server.base}/future.deb"], cache_file=tmp_path / "c.json", now=NOW)
    finally:
        server.close()
    assert "implausible build date" in (dates[f"{server.base}/future.deb"].error or "")


# --- the gate ----------------------------------------------------------------------------------


@pytest.mark.control("PAT-05")
@pytest.mark.parametrize(("days", "code"), [(29, 0), (30, 0), (31, 1)])
def test_the_gate_fails_only_past_the_limit(days: int, code: int) -> None:
    data = host_json("http://127.0.0.1:9")
    result = evaluate(collection(("app-1", data)), dated(data, {"openssl": days, "libssl3": 2}),
                      max_age_days=30, now=NOW)  # fmt: skip
    assert result.exit_code == code
    overdue = [v.package for v in result.violations]
    assert overdue == (["openssl"] if code else [])
    if code:
        assert "released 2026-10-31, 31 days ago: over the 30-day limit" in result.violations[0].reason


@pytest.mark.control("PAT-05")
def test_the_gate_counts_only_security_updates() -> None:
    data = host_json("http://127.0.0.1:9")
    result = evaluate(collection(("app-1", data)), dated(data, {"base-files": 400}), max_age_days=30,
                      security_only=False, now=NOW)  # fmt: skip
    assert result.exit_code == 0
    assert [r.pkg.name for r in result.rows["app-1"]] == ["libssl3", "openssl", "base-files"]
    only_security = evaluate(collection(("app-1", data)), dated(data, {}), now=NOW)
    assert [r.pkg.name for r in only_security.rows["app-1"]] == ["libssl3", "openssl"]


@pytest.mark.control("PAT-05")
def test_an_unknown_age_fails_closed_and_says_what_to_do() -> None:
    data = host_json("http://127.0.0.1:9")
    result = evaluate(collection(("app-1", data)), dated(data, {"openssl": None}), max_age_days=100000, now=NOW)
    assert result.exit_code == 1
    (violation,) = result.violations
    assert violation.package == "openssl"
    assert "release date unknown, so it counts as overdue" in violation.reason
    assert ": gone" in violation.reason  # the reason the date could not be read
    no_uri = copy.deepcopy(data)
    no_uri["pending"][0]["uri"] = None
    result = evaluate(collection(("app-1", no_uri)), dated(data, {}), max_age_days=100000, now=NOW)
    assert "apt gave no download URI" in result.violations[0].reason


@pytest.mark.control("PAT-05")
def test_a_host_whose_security_index_is_missing_or_stale_fails_closed() -> None:
    never = host_json("http://127.0.0.1:9", security_index=None)
    never["pending"] = []
    result = evaluate(collection(("app-1", never)), {}, now=NOW)
    assert result.exit_code == 1
    assert "was never fetched, so its pending security updates are unknown" in result.violations[0].reason
    stale = host_json("http://127.0.0.1:9", security_index="2026-10-20T00:00:00+00:00")
    stale["pending"] = []
    result = evaluate(collection(("app-1", stale)), {}, max_age_days=30, now=NOW)
    assert "dates from 2026-10-20 (42 days, over the 30-day limit)" in result.violations[0].reason
    assert evaluate(collection(("app-1", stale)), {}, max_age_days=60, now=NOW).exit_code == 0
    no_suite = host_json("http://127.0.0.1:9")
    no_suite["indexes"] = no_suite["indexes"][:1]
    no_suite["pending"] = []
    result = evaluate(collection(("app-1", no_suite)), {}, now=NOW)
    assert "no security suite in its apt sources" in result.violations[0].reason


# What ansible-playbook prints (YAML results) when a host drops off the network mid-run.
ANSIBLE_OUT = """\
TASK [PAT-05 | Pending updates, reboot flag and services to restart (read only)] ***
fatal: [app-2]: UNREACHABLE! => changed=false
  msg: 'Task failed: Failed to connect to the host via ssh: ssh: connect to host 10.77.20.12 port 22: No route to host'
  unreachable: true
[ERROR]: Task failed: Failed to connect to the host via ssh: ssh: connect to host 10.77.20.13 port 22: No route to host
ok: [app-1]

PLAY RECAP *********************************************************************
app-1                      : ok=3    changed=1    unreachable=0    failed=0    skipped=0    rescued=0    ignored=0
app-2                      : ok=1    changed=0    unreachable=1    failed=0    skipped=0    rescued=0    ignored=0
"""


@pytest.mark.control("PAT-05")
def test_an_unreachable_host_makes_the_check_incomplete_and_says_why() -> None:
    failures = status._failures(ANSIBLE_OUT.splitlines())
    assert set(failures) == {"app-2"}
    assert failures["app-2"].startswith("fatal: [app-2]: UNREACHABLE!") and "No route to host" in failures["app-2"]
    assert failures["app-2"].endswith("unreachable: true")  # nothing of the next host's lines
    data = host_json("http://127.0.0.1:9")
    result = evaluate(collection(("app-1", data), errors=failures), dated(data, {"openssl": 90}), now=NOW)
    assert result.violations and result.exit_code == 2 and result.result == "error"
    err = Console(record=True, width=300)
    report.explain(result, err)
    text = err.export_text()
    assert "error: app-2: fatal: [app-2]: UNREACHABLE!" in text  # Ansible's brackets survive Rich's markup
    assert "The check is incomplete (exit 2)" in text


# --- formats -----------------------------------------------------------------------------------


def overdue_result() -> report.CheckResult:
    data = host_json("http://127.0.0.1:9")
    return evaluate(
        collection(("app-1", data), ("edge-1", quiet_host_json()), errors={"vault-2": "unreachable"}),
        dated(data, {"openssl": 41, "libssl3": None, "base-files": 200}),
        max_age_days=30,
        security_only=False,
        now=NOW,
    )


@pytest.mark.control("PAT-05")
def test_json_is_stable_and_complete() -> None:
    out = as_json(overdue_result())
    assert json.loads(json.dumps(out)) == out
    assert list(out) == ["kind", "control", "checked_at", "max_age_days", "mode", "result", "exit_code", "hosts",
                         "violations", "errors"]  # fmt: skip
    assert (out["kind"], out["control"], out["result"], out["exit_code"]) == ("patch-check", "PAT-05", "error", 2)
    app1, edge1 = out["hosts"]
    assert set(app1) == {"host", "boot_id", "collected_at", "indexes", "pending_total", "pending_security", "pending",
                         "reboot_required", "reboot_reasons", "restart_services", "needrestart_error"}  # fmt: skip
    assert (app1["pending_total"], app1["pending_security"]) == (3, 2)
    by_name = {p["name"]: p for p in app1["pending"]}
    assert by_name["openssl"]["age_days"] == 41.0 and by_name["openssl"]["overdue"]
    assert by_name["openssl"]["released"] == "2026-10-21T12:00:00+00:00"
    assert by_name["libssl3"]["age_days"] is None and by_name["libssl3"]["overdue"]
    assert not by_name["base-files"]["overdue"]  # not a security update: never gated
    assert app1["reboot_required"] and "/run/reboot-required (libc6)" in app1["reboot_reasons"]
    assert "a newer kernel is installed" in app1["reboot_reasons"]
    assert app1["restart_services"] == ["billing-app.service", "cron.service", "ssh.service"]
    assert edge1["pending"] == [] and not edge1["reboot_required"]
    assert {v["package"] for v in out["violations"]} == {"openssl", "libssl3"}
    assert out["errors"] == [{"host": "vault-2", "message": "unreachable"}]


@pytest.mark.control("PAT-05")
def test_junit_has_a_suite_per_host_and_a_failure_per_overdue_security_update() -> None:
    root = ET.fromstring(as_junit(overdue_result()))  # noqa: S314 - XML this test just generated
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"app-1", "edge-1", "vault-2"}
    app1 = suites["app-1"]
    props = {p.get("name"): p.get("value") for p in app1.find("properties") or []}
    assert props["control"] == "PAT-05" and props["pci_dss"] == "6.3.3" and props["max_age_days"] == "30"
    cases = {c.get("name"): c for c in app1.iter("testcase")}
    security = [n for n in cases if "->" in n]
    assert sorted(security) == ["libssl3 3.0.19-1~deb12u2 -> 3.0.22-1~deb12u2",
                                "openssl 3.0.19-1~deb12u2 -> 3.0.22-1~deb12u2"]  # fmt: skip
    failure = cases["openssl 3.0.19-1~deb12u2 -> 3.0.22-1~deb12u2"].find("failure")
    assert failure is not None and "41 days ago: over the 30-day limit" in (failure.get("message") or "")
    assert failure.get("type") == "PAT-05"
    assert cases["libssl3 3.0.19-1~deb12u2 -> 3.0.22-1~deb12u2"].find("failure") is not None  # unknown age
    assert (app1.get("tests"), app1.get("failures")) == ("3", "2")  # two updates and the index check
    assert (suites["edge-1"].get("tests"), suites["edge-1"].get("failures")) == ("1", "0")
    assert suites["vault-2"].find("testcase/error") is not None
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("5", "2", "1")


@pytest.mark.control("PAT-05")
def test_the_table_shows_versions_ages_reboot_and_restarts() -> None:
    console = Console(record=True, width=220)
    print_table(overdue_result(), console)
    text = console.export_text()
    assert "openssl" in text and "3.0.19-1~deb12u2 → 3.0.22-1~deb12u2" in text
    lines = {line.split("│")[2].strip(): line for line in text.splitlines() if line.count("│") > 6}
    assert "│ 41 " in lines["openssl"] and "yes" in lines["openssl"]
    assert "unknown" in lines["libssl3"] and "│ 200 " in lines["base-files"]
    assert "billing-app.service, cron.service, ssh.service" in text
    assert "yes: /run/reboot-required (libc6); a newer kernel is installed" in text
    assert "none pending" in text and "status unreadable" in text


# --- the command -------------------------------------------------------------------------------


@pytest.mark.control("PAT-05")
def test_the_command_passes_its_options_and_exits_with_the_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    data = host_json("http://127.0.0.1:9")

    def fake(inventory: Path | None, hosts: list[str] | None, *, max_age_days: int, security_only: bool):
        seen.update(inventory=inventory, hosts=hosts, max_age_days=max_age_days, security_only=security_only)
        return evaluate(collection(("app-1", data)), dated(data, {"openssl": 31}), max_age_days=max_age_days, now=NOW)

    monkeypatch.setattr(report, "run_check", fake)
    runner = CliRunner()
    args = ["patch", "--check", "--format", "json", "--hosts", "app-1, app-2", "--inventory", "ec2.yml", "--all"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert seen == {"inventory": Path("ec2.yml"), "hosts": ["app-1", "app-2"], "max_age_days": 30,
                    "security_only": False}  # fmt: skip
    assert json.loads(result.stdout)["violations"][0]["package"] == "openssl"
    assert runner.invoke(app, ["patch", "--check", "--format", "json", "--max-age-days", "31"]).exit_code == 0
    refused = runner.invoke(app, ["patch", "--check", "--max-age-days", "-1"])
    assert refused.exit_code == 2 and "--max-age-days must be 0 or more" in refused.output


@pytest.mark.control("PAT-05")
def test_no_inventory_is_an_operational_error(tmp_path: Path) -> None:
    with pytest.raises(StatusError, match=r"no inventory at .*: check the path, or pass --inventory FILE"):
        status.collect(tmp_path / "missing.yml")
    result = CliRunner().invoke(app, ["patch", "--check", "--inventory", str(tmp_path / "missing.yml")])
    assert result.exit_code == 2 and "pass --inventory FILE" in result.output


def _python_apt() -> None:
    probe = subprocess.run(["/usr/bin/python3", "-c", "import apt"], capture_output=True, check=False)
    if probe.returncode != 0:
        from billkit.system import ensure_packages

        ensure_packages(["python3-apt"], "running the patch status script on this machine")


@pytest.mark.control("PAT-05")
def test_the_playbook_reads_a_real_host_and_names_an_unreachable_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real playbook and script against this machine (read only, over a local connection) and a host
    whose SSH port is closed; no lab needed."""
    _python_apt()
    monkeypatch.setattr(status, "LOG_DIR", tmp_path / "log")
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {
        "localhost": {"ansible_connection": "local", "ansible_become": False,
                      "ansible_python_interpreter": "/usr/bin/python3"},
        "ghost": {"ansible_host": "127.0.0.1", "ansible_port": closed_port(), "ansible_user": "nobody",
                  "ansible_python_interpreter": "/usr/bin/python3"},
    }}}))  # fmt: skip
    found = status.collect(inventory, ["localhost", "ghost", "nohost", "all"])  # a pattern matches too
    assert set(found.hosts) == {"localhost"}
    assert "UNREACHABLE" in found.errors["ghost"] and "check that the host is up and reachable" in found.errors["ghost"]
    assert "matches no host of" in found.errors["nohost"] and set(found.errors) == {"ghost", "nohost"}
    host = found.hosts["localhost"]
    assert host.boot_id == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert host.installed.get("dpkg") and host.installed.get("python3")
    for p in host.pending:
        assert p.candidate != p.installed and p.uri


# --- billkit verify (PAT-07) ----------------------------------------------------------------------

EVIDENCE = {
    "kind": "patch", "started": "2026-12-01T02:10:00+00:00", "finished": "2026-12-01T02:31:40+00:00",
    "mode": "security", "result": "ok", "stopped_at": None, "message": "9 hosts patched, one at a time",
    "hosts": [
        {"host": "app-1", "role": "app", "duration_s": 95.4, "boot_id_before": "a", "boot_id_after": "a",
         "rebooted": False, "packages": [{"name": "libssl3", "before": "3.0.19-1~deb12u2",
                                          "after": "3.0.22-1~deb12u2", "origin": "Debian-Security"}],
         "restarted_services": ["billing-app.service", "ssh.service"], "health": {"ok": True, "detail": "200"}},
        {"host": "db-1", "role": "db", "duration_s": 140.0, "boot_id_before": "b", "boot_id_after": "c",
         "rebooted": True, "packages": [], "restarted_services": [], "health": {"ok": True, "detail": "ok"}},
    ],
    "load": {"sent": 4000, "failed": 0, "p50_ms": 21.5, "p99_ms": 180.2, "baseline_p50_ms": 19.0,
             "baseline_p99_ms": 95.1},
}  # fmt: skip


@pytest.mark.control("PAT-07")
def test_verify_shows_the_latest_patch_evidence(tmp_path: Path) -> None:
    older = dict(EVIDENCE, started="2026-11-01T02:10:00+00:00", result="failed", stopped_at="app-2")
    (tmp_path / "patch-20261101T021000Z.json").write_text(json.dumps(older))
    (tmp_path / "patch-20261201T021000Z.json").write_text(json.dumps(EVIDENCE))
    (tmp_path / "patch-20261202T000000Z.json").write_text("{ half-written")
    console = Console(record=True, width=200)
    print_evidence(tmp_path, console)
    text = console.export_text()
    assert "patch-20261201T021000Z.json" in text and "2026-12-01T02:10:00+00:00 → 2026-12-01T02:31:40+00:00" in text
    assert "security updates, ok" in text
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if line.count("│") > 5}
    assert "95s" in lines["app-1"] and "billing-app.service, ssh.service" in lines["app-1"] and "ok" in lines["app-1"]
    assert "│ yes " in lines["db-1"] and "140s" in lines["db-1"]
    assert "4000 requests sent, 0 failed; p50 21.5 ms (before: 19.0 ms), p99 180.2 ms (before: 95.1 ms)" in text
    stopped = dict(EVIDENCE, result="failed", stopped_at="app-2", message="app-2 failed its health check", load=None)
    stopped["hosts"] = [dict(EVIDENCE["hosts"][0], host="app-2", health={"ok": False, "detail": "502 from /healthz"})]
    (tmp_path / "patch-20261203T000000Z.json").write_text(json.dumps(dict(stopped, started="2026-12-03T00:00:00Z")))
    console = Console(record=True, width=200)
    print_evidence(tmp_path, console)
    text = console.export_text()
    assert "failed 502 from /healthz" in text and "stopped at app-2: app-2 failed its health check" in text
    assert "under load" not in text


@pytest.mark.control("PAT-07")
def test_verify_says_when_no_patch_run_was_recorded(tmp_path: Path) -> None:
    console = Console(record=True, width=200)
    print_evidence(tmp_path / "evidence", console)
    assert "none recorded yet" in console.export_text()


@pytest.mark.control("PAT-05", "PAT-07")
def test_verify_shows_the_gate_now_per_host() -> None:
    console = Console(record=True, width=200)
    print_status_summary(overdue_result(), console)
    text = console.export_text()
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if line.count("│") > 4}
    assert "│ 2 " in lines["app-1"] and "41 (some unknown)" in lines["app-1"] and "fail" in lines["app-1"]
    assert "│ 0 " in lines["edge-1"] and "pass" in lines["edge-1"]
    assert "error" in lines["vault-2"]
    assert "PAT-05 gate: incomplete (2 host(s), 2 pending security update(s); oldest 41 days; limit 30 days)" in text
