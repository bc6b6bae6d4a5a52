"""The OpenBao audit reader (playbooks/roles/openbao/files/bao-audit-metrics): pure cases, then a real OpenBao.

The reader runs on the vault hosts with Debian's python3 and the standard library only; it is loaded here
from its file, and run once with that interpreter in isolated mode (-I -S: no site packages at all).
"""

from __future__ import annotations

import datetime as dt
import importlib.machinery
import importlib.util
import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import hvac
import hvac.exceptions
import jinja2
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from billkit.controls import ROOT
from tests.unit.baodev import bao_dev

ROLE = ROOT / "playbooks/roles/openbao"
SCRIPT = ROLE / "files/bao-audit-metrics"
UNIT = ROLE / "templates/etc/systemd/system/billkit-bao-audit-metrics.service.j2"
EVENTS = ("root_token_generation", "policy_change", "audit_device_change", "seal", "unseal")
DEBIAN_PYTHON = Path("/usr/bin/python3")


def _load() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("bao_audit_metrics", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


bam = _load()


def entry(kind: str, path: str, operation: str = "update", *, error: str = "", issued: list[str] | None = None,
          when: str = "2026-12-01T14:34:18.683580023Z") -> str:  # fmt: skip
    """One audit log line shaped like OpenBao 2.7's (HMAC-ed fields left out: the reader never reads them)."""
    request = {"id": "0ad66988-9862-6b7a-6d93-3aa838b3e419", "operation": operation, "namespace": {"id": "root"},
               "path": path, "remote_address": "127.0.0.1"}  # fmt: skip
    e: dict[str, Any] = {"time": when, "type": kind, "auth": {"policies": ["root"]}, "request": request}
    if kind == "response":
        e["response"] = {"auth": {"policies": issued, "token_policies": issued}} if issued is not None else {}
    if error:
        e["error"] = error
    return json.dumps(e)


def read_metrics(textfile_dir: Path) -> dict[str, float]:
    """The reader's textfile as {"events:<event>": n, "last_event": t, "malformed": n}."""
    text = (textfile_dir / bam.METRICS_FILE).read_text(encoding="utf-8")
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "billkit_vault_audit_events_total":
                out[f"events:{s.labels['event']}"] = s.value
            elif s.name == "billkit_vault_audit_log_last_event_timestamp_seconds":
                out["last_event"] = s.value
            elif s.name == "billkit_vault_audit_malformed_lines_total":
                out["malformed"] = s.value
    return out


def events(metrics: dict[str, float]) -> dict[str, float]:
    return {e: metrics[f"events:{e}"] for e in EVENTS}


class Reader:
    """One vault host's files: the audit log, the state file, the textfile directory."""

    def __init__(self, tmp: Path) -> None:
        self.log, self.state, self.textfile = tmp / "audit.log", tmp / "state" / "state.json", tmp / "textfile"
        self.state.parent.mkdir(parents=True)
        self.textfile.mkdir(parents=True)

    def append(self, *lines: str | bytes, newline: bool = True) -> None:
        with self.log.open("ab") as f:
            for line in lines:
                f.write(line.encode() if isinstance(line, str) else line)
                if newline:
                    f.write(b"\n")

    def run(self) -> dict[str, float]:
        bam.run_once(self.log, self.state, self.textfile)
        return read_metrics(self.textfile)


# --- classification ---------------------------------------------------------------------------------


@pytest.mark.control("MON-01", "LOG-09")
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (entry("response", "sys/policies/acl/ops"), "policy_change"),
        (entry("response", "sys/policy/legacy", "delete"), "policy_change"),
        (
            entry("response", "sys/policies/acl/ops", error="1 error occurred:\n\t* permission denied\n\n"),
            "policy_change",
        ),  # fmt: skip
        (entry("request", "sys/policies/acl/ops"), None),  # its response is the one counted
        (entry("response", "sys/policies/acl/ops", "read"), None),
        (entry("response", "sys/policies/acl", "list"), None),
        (entry("response", "secret/data/sys/policies/acl/x"), None),  # a KV path that looks like one
        (entry("response", "sys/generate-root-token/attempt"), "root_token_generation"),
        (entry("response", "sys/generate-root-token/attempt", "delete"), "root_token_generation"),
        (entry("response", "sys/generate-root-token/update"), "root_token_generation"),
        (entry("response", "sys/generate-root-token/attempt", "read"), None),
        (entry("response", "sys/generate-root/attempt", error="unsupported operation"), "root_token_generation"),
        (entry("response", "sys/generate-recovery-token/attempt"), "root_token_generation"),
        (entry("response", "auth/token/create", issued=["root"]), "root_token_generation"),
        (entry("response", "auth/token/create-orphan", issued=["default", "root"]), "root_token_generation"),
        (entry("response", "auth/token/create", issued=["default", "ops"]), None),
        (entry("response", "auth/approle/login", issued=["root"]), None),
        (
            entry("response", "sys/audit/file", "delete", error="1 error occurred:\n\t* invalid request\n\n"),
            "audit_device_change",
        ),  # fmt: skip
        (entry("response", "sys/audit/x"), "audit_device_change"),
        (entry("response", "sys/config/auditing/request-headers/x-forwarded-for"), "audit_device_change"),
        (entry("request", "sys/audit/test"), None),  # OpenBao's own check of a new device
        (entry("response", "sys/audit-hash/file"), None),
        (entry("request", "sys/seal"), "seal"),  # OpenBao writes no response entry for a seal
        (entry("response", "sys/seal"), None),
        (entry("request", "sys/unseal"), "unseal"),
        (entry("response", "sys/mounts/secret"), None),
        (entry("response", "sys/metrics", "read"), None),
    ],
)
def test_classification(line: str, expected: str | None) -> None:
    assert bam.classify(json.loads(line)) == expected


def test_entry_time_keeps_microseconds_of_nanosecond_stamps() -> None:
    at = dt.datetime(2026, 12, 1, 14, 34, 18, tzinfo=dt.UTC).timestamp()
    assert bam.entry_time({"time": "2026-12-01T14:34:18.683580023Z"}) == pytest.approx(at + 0.68358, abs=1e-6)
    assert bam.entry_time({"time": "2026-12-01T15:34:18+01:00"}) == at
    for bad in ("", "yesterday", "2026-13-01T00:00:00Z", None, 12):
        assert bam.entry_time({"time": bad}) is None


# --- reading: malformed lines, partial lines, restarts, rotation ------------------------------------------


@pytest.mark.control("MON-01", "LOG-09")
def test_malformed_lines_are_counted_and_never_stop_the_reader(tmp_path: Path) -> None:
    r = Reader(tmp_path)
    r.append(entry("response", "sys/policies/acl/a"), "not json", '{"time": "2026-', "[1, 2]", '"text"', "null",
             b"\xff\xfe{}", "[" * 100_000, "", "   ", entry("request", "sys/seal"))  # fmt: skip
    m = r.run()
    assert m["malformed"] == 7  # blank lines are not entries
    assert events(m) == {**dict.fromkeys(EVENTS, 0), "policy_change": 1, "seal": 1}


@pytest.mark.control("MON-01", "LOG-09")
def test_a_line_being_written_is_read_once_complete(tmp_path: Path) -> None:
    r = Reader(tmp_path)
    whole = entry("response", "sys/policies/acl/a")
    r.append(whole)
    r.append(whole[:40], newline=False)  # OpenBao is in the middle of writing the next entry
    m = r.run()
    assert (m["events:policy_change"], m["malformed"]) == (1, 0)
    r.append(whole[40:])
    m = r.run()
    assert (m["events:policy_change"], m["malformed"]) == (2, 0)


@pytest.mark.control("MON-01", "LOG-09")
def test_counts_are_cumulative_across_restarts_and_never_counted_twice(tmp_path: Path) -> None:
    r = Reader(tmp_path)
    r.append(entry("response", "sys/policies/acl/a"), entry("request", "sys/seal"))
    first = r.run()
    assert r.run() == first  # a second pass with nothing new changes nothing
    r.append(entry("response", "sys/generate-root-token/attempt", when="2026-12-01T15:00:00.5Z"))
    again = bam.run_once(r.log, r.state, r.textfile)  # as a restarted process: everything from the state file
    assert again.counts == {**dict.fromkeys(EVENTS, 0), "policy_change": 1, "seal": 1, "root_token_generation": 1}
    at = dt.datetime(2026, 12, 1, 15, 0, 0, 500000, tzinfo=dt.UTC).timestamp()
    assert read_metrics(r.textfile)["last_event"] == pytest.approx(at)
    assert stat.S_IMODE(r.state.stat().st_mode) == 0o600
    assert stat.S_IMODE((r.textfile / bam.METRICS_FILE).stat().st_mode) == 0o644
    assert sorted(p.name for p in r.textfile.iterdir()) == [bam.METRICS_FILE]  # no temporary file left
    assert sorted(p.name for p in r.state.parent.iterdir()) == ["state.json"]


@pytest.mark.control("MON-01", "LOG-09")
def test_rotation_by_rename_reads_the_old_file_to_its_end_then_the_new_one(tmp_path: Path) -> None:
    r = Reader(tmp_path)
    r.append(entry("response", "sys/policies/acl/a"))
    assert r.run()["events:policy_change"] == 1
    r.append(entry("response", "sys/policies/acl/b"))  # written before the rotation, not read yet
    r.log.rename(tmp_path / "audit.log.1")  # logrotate; then OpenBao reopens on SIGHUP
    r.append(entry("request", "sys/seal"), entry("response", "sys/audit/x"))
    m = r.run()
    assert events(m) == {**dict.fromkeys(EVENTS, 0), "policy_change": 2, "seal": 1, "audit_device_change": 1}
    assert events(r.run()) == events(m)


@pytest.mark.control("MON-01", "LOG-09")
def test_a_rotated_file_already_gone_costs_only_its_unread_tail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = Reader(tmp_path)
    r.append(entry("response", "sys/policies/acl/a"))
    r.run()
    r.append(entry("response", "sys/policies/acl/lost"))
    r.log.rename(tmp_path / "audit.log.1")
    (tmp_path / "audit.log.1").unlink()  # compressed or deleted before the next pass
    r.append(entry("request", "sys/seal"))
    m = r.run()
    assert (m["events:policy_change"], m["events:seal"]) == (1, 1)
    assert "previous content is gone" in capsys.readouterr().err


@pytest.mark.control("MON-01", "LOG-09")
def test_a_truncated_log_is_read_from_its_start(tmp_path: Path) -> None:
    r = Reader(tmp_path)
    r.append(*[entry("response", "sys/policies/acl/a")] * 3)
    assert r.run()["events:policy_change"] == 3
    with r.log.open("r+b") as f:  # copytruncate
        f.truncate(0)
    r.append(entry("request", "sys/seal"))
    m = r.run()
    assert (m["events:policy_change"], m["events:seal"]) == (3, 1)


@pytest.mark.control("MON-01", "LOG-09")
def test_a_log_truncated_and_refilled_past_the_old_offset_is_read_from_its_start(tmp_path: Path) -> None:
    """Same inode, more bytes than before: only the first bytes show it is another content."""
    r = Reader(tmp_path)
    r.append(entry("response", "sys/policies/acl/a", when="2026-12-01T14:00:00.000000001Z"))
    assert r.run()["events:policy_change"] == 1
    with r.log.open("r+b") as f:
        f.truncate(0)
    r.append(*[entry("request", "sys/seal", when=f"2026-12-01T15:00:0{i}.000000001Z") for i in range(3)])
    m = r.run()
    assert (m["events:policy_change"], m["events:seal"], m["malformed"]) == (1, 3, 0)


@pytest.mark.control("MON-01", "LOG-09")
@pytest.mark.parametrize("content", ["{not json", '{"version": 1}', '{"version": 99}', '["x"]', ""])
def test_a_damaged_state_file_starts_over_without_crashing(tmp_path: Path, content: str) -> None:
    r = Reader(tmp_path)
    r.append(entry("response", "sys/policies/acl/a"))
    r.state.write_text(content)
    assert r.run()["events:policy_change"] == 1
    assert json.loads(r.state.read_text())["offset"] == r.log.stat().st_size


@pytest.mark.control("MON-01", "MON-02")
def test_the_textfile_has_every_series_from_the_start(tmp_path: Path) -> None:
    """Every event series exists at 0 before anything happens: rules see the first increase."""
    r = Reader(tmp_path)
    m = r.run()  # no audit log yet
    assert m == {**{f"events:{e}": 0 for e in EVENTS}, "last_event": 0, "malformed": 0}
    text = (r.textfile / bam.METRICS_FILE).read_text()
    assert "# TYPE billkit_vault_audit_events_total counter" in text
    assert "# TYPE billkit_vault_audit_log_last_event_timestamp_seconds gauge" in text


# --- the script as the hosts run it -------------------------------------------------------------------


def test_the_script_runs_on_debian_python_with_the_standard_library_only(tmp_path: Path) -> None:
    if not DEBIAN_PYTHON.exists():
        pytest.skip("no Debian python3 on this machine")
    r = Reader(tmp_path)
    r.append(entry("response", "sys/policies/acl/a"))
    args = [str(DEBIAN_PYTHON), "-I", "-S", str(SCRIPT), "--audit-log", str(r.log), "--state", str(r.state),
            "--textfile-dir", str(r.textfile)]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert read_metrics(r.textfile)["events:policy_change"] == 1
    bad = subprocess.run([*args[:-1], str(tmp_path / "missing")], capture_output=True, text=True, timeout=30,
                         check=False)  # fmt: skip
    assert bad.returncode == 2 and "is not a directory" in bad.stderr


def test_follow_mode_keeps_counting_and_stops_on_sigterm(tmp_path: Path) -> None:
    r = Reader(tmp_path)
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--follow", "--interval", "0.1", "--audit-log", str(r.log),
                             "--state", str(r.state), "--textfile-dir", str(r.textfile)],
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not (r.textfile / bam.METRICS_FILE).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        r.append(entry("response", "sys/generate-root-token/attempt"))
        while time.monotonic() < deadline:
            if read_metrics(r.textfile)["events:root_token_generation"] == 1:
                break
            time.sleep(0.05)
        assert read_metrics(r.textfile)["events:root_token_generation"] == 1
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def test_the_unit_runs_the_reader_on_the_roles_audit_log() -> None:
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text(encoding="utf-8"))
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701 - not HTML
    unit = env.from_string(UNIT.read_text(encoding="utf-8")).render({**defaults, "ansible_managed": "managed"})
    unit = re.sub(r"\\\n\s*", " ", unit)  # systemd's line continuations
    exec_start = re.search(r"^ExecStart=(.+)$", unit, re.M)
    assert exec_start is not None
    argv = shlex.split(exec_start.group(1))
    assert argv[0] == "/usr/local/sbin/bao-audit-metrics"
    args = bam.parse_args(argv[1:])
    assert args.follow and args.audit_log == Path(defaults["openbao_audit_log"])
    assert args.textfile_dir == Path("/var/lib/prometheus/node-exporter")
    state_dir = re.search(r"^StateDirectory=(\S+)$", unit, re.M)
    assert state_dir is not None and args.state.parent == Path("/var/lib") / state_dir.group(1)
    assert re.search(r"^CapabilityBoundingSet=CAP_DAC_READ_SEARCH$", unit, re.M)
    assert re.search(r"^ReadWritePaths=/var/lib/prometheus/node-exporter$", unit, re.M)


# --- a real OpenBao ------------------------------------------------------------------------------------


def _refused(call: Any) -> None:
    with pytest.raises(hvac.exceptions.VaultError):
        call()


@pytest.mark.control("MON-01", "LOG-09")
def test_a_real_openbao_audit_log(tmp_path: Path) -> None:
    r = Reader(tmp_path / "host")
    with bao_dev(tmp_path / "bao") as bao:
        r.log = bao.audit_log
        c = bao.client()
        before = r.run()
        rule = 'path "secret/data/ops/*" { capabilities = ["read"] }'
        # policy_change: written, read (not counted), deleted, in both APIs; denied to a weak token; +5
        c.sys.create_or_update_acl_policy("ops-extra", rule)
        c.sys.create_or_update_policy("legacy", rule)
        c.sys.read_acl_policy("ops-extra")
        c.sys.delete_policy("legacy")
        c.sys.delete_acl_policy("ops-extra")
        weak = c.auth.token.create(policies=["default"], ttl="10m")["auth"]["client_token"]
        _refused(lambda: bao.client(weak).sys.create_or_update_acl_policy("escalate", rule))
        # root_token_generation: started, read (not counted), cancelled; the legacy unauthenticated endpoint
        # refused; a sudo token minting a root token; +4
        c.adapter.post("/v1/sys/generate-root-token/attempt", json={})
        c.adapter.get("/v1/sys/generate-root-token/attempt")
        c.adapter.delete("/v1/sys/generate-root-token/attempt")
        _refused(lambda: bao.client("").adapter.post("/v1/sys/generate-root/attempt", json={}))
        c.auth.token.create(policies=["root"], ttl="10m")
        # audit_device_change: the API refuses both, the attempts are in the log; +2
        _refused(lambda: c.sys.enable_audit_device("file", options={"file_path": "/dev/null"}, path="extra"))
        _refused(lambda: c.sys.disable_audit_device("file"))
        # seal (+1), unseal (not audited by OpenBao 2.7), then the log goes on: one more policy (+1)
        c.sys.seal()
        c.sys.submit_unseal_key(bao.unseal_key)
        deadline = time.monotonic() + 10
        while c.sys.is_sealed() and time.monotonic() < deadline:
            time.sleep(0.05)
        c.sys.create_or_update_acl_policy("after-unseal", rule)
        after = r.run()
        delta = {e: after[f"events:{e}"] - before[f"events:{e}"] for e in EVENTS}
        # unseal: OpenBao 2.7 writes no audit entry for it (see the reader's doc)
        expected = {"root_token_generation": 4, "policy_change": 6, "audit_device_change": 2, "seal": 1, "unseal": 0}
        assert delta == expected
        assert after["malformed"] == 0
        assert before["last_event"] < after["last_event"] <= time.time() + 1
        assert r.run() == after  # nothing new, nothing counted twice
        # Rotation as logrotate and the unit's reload do it: rename, SIGHUP to the server we started.
        bao.audit_log.rename(bao.audit_log.with_name("audit.log.1"))
        os.kill(bao.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not bao.audit_log.exists() and time.monotonic() < deadline:
            c.sys.read_health_status(method="GET")
            time.sleep(0.05)
        c.sys.create_or_update_acl_policy("after-rotation", rule)
        rotated = r.run()
        assert rotated["events:policy_change"] == after["events:policy_change"] + 1
        assert events(rotated) == {**events(after), "policy_change": after["events:policy_change"] + 1}
