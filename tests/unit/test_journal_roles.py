"""The central journal's two roles (MON-04, LOG-04): host_monitoring's upload and monitoring's receivers, by their
shape: concerns gated and documented, the units' settings, and `systemd-analyze verify` of every unit. The flow
itself, with the real binaries, is test_journal_central.py."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from billkit.system import ensure_packages
from tests.unit.journal_units import HOST_MONITORING, MONITORING, exec_start, render

pytestmark = pytest.mark.control("MON-04")


@pytest.fixture(scope="module")
def tools() -> None:
    ensure_packages(["systemd-journal-remote"], "the units are verified against the packaged upload unit")


def _tasks(role: Path, name: str) -> list[dict[str, Any]]:
    return yaml.safe_load((role / "tasks" / name).read_text())


@pytest.mark.parametrize(("role", "concern", "gate"), [
    (HOST_MONITORING, "journal_upload.yml", "host_monitoring_journal_upload_enabled"),
    (MONITORING, "journal_remote.yml", "monitoring_journal_enabled"),
])  # fmt: skip
def test_each_role_imports_its_journal_concern_gated_and_documents_its_variables(
    role: Path, concern: str, gate: str
) -> None:
    main = _tasks(role, "main.yml")
    entry = next(t for t in main if t.get("ansible.builtin.import_tasks") == concern)
    assert entry["when"] == f"{gate} | bool" and "MON-04" in entry["name"]
    defaults: dict[str, Any] = yaml.safe_load((role / "defaults/main.yml").read_text())
    specs = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    prefix = "host_monitoring_journal_" if role == HOST_MONITORING else "monitoring_journal_"
    for name, value in defaults.items():
        if name.startswith(prefix):
            assert name in specs and specs[name]["default"] == value, f"{name}: undocumented or a different default"
    assert defaults[gate] is False, "enabled only where the receiver is deployed"
    for task in _tasks(role, concern):
        assert any(f"MON-0{n}" in task["name"] or "LOG-04" in task["name"] for n in (2, 4)), task["name"]


def test_the_upload_is_refused_without_its_url_and_sends_with_a_credential_and_restarts() -> None:
    first = _tasks(HOST_MONITORING, "journal_upload.yml")[0]
    assert "ansible.builtin.assert" in first and "host_monitoring_journal_upload_url" in str(
        first["ansible.builtin.assert"]
    )
    conf = render(HOST_MONITORING, "etc/systemd/journal-upload.conf.d/billkit.conf.j2",
                  host_monitoring_journal_upload_url="https://10.77.40.12:19532")  # fmt: skip
    assert "URL=https://10.77.40.12:19532" in conf
    assert "ServerKeyFile=/run/credentials/systemd-journal-upload.service/host.key" in conf
    assert "TrustedCertificateFile=/etc/billkit/monitoring/ca.pem" in conf
    dropin = render(HOST_MONITORING, "etc/systemd/system/systemd-journal-upload.service.d/billkit.conf.j2")
    assert "LoadCredential=host.key:/etc/billkit/monitoring/host.key" in dropin
    assert "Restart=always" in dropin and "RestartSec=5s" in dropin


@pytest.mark.control("MON-02", "MON-04")
def test_the_systemd_collector_reports_the_upload_unit() -> None:

    units = yaml.safe_load((HOST_MONITORING / "defaults/main.yml").read_text())["host_monitoring_systemd_units"]
    assert re.fullmatch(units, "systemd-journal-upload.service")
    assert not re.fullmatch(units, "systemd-journal-remote.service")


@pytest.mark.control("MON-04", "LOG-04")
def test_each_receiver_seals_keeps_13_months_and_listens_only_behind_the_tls_front() -> None:
    unit = render(MONITORING, "etc/systemd/system/billkit-journal-remote@.service.j2",
                  monitoring_journal_sender="db-1", monitoring_journal_machine_id="0" * 32)  # fmt: skip
    argv = exec_start(unit)
    assert "--seal=yes" in argv and "--listen-http=/run/billkit-journal-remote/db-1/upload.sock" in argv
    assert f"--output=/var/log/journal/remote/{'0' * 32}/remote.journal" in argv
    assert not any(a.startswith(("--listen-https", "--listen-raw")) for a in argv)
    assert "RestrictAddressFamilies=AF_UNIX" in unit and "PrivateNetwork=yes" in unit
    assert "BindReadOnlyPaths=/etc/billkit/journal/senders/db-1/machine-id:/etc/machine-id" in unit
    conf = render(MONITORING, "etc/billkit/journal/stunnel.conf.j2", monitoring_listen_address="10.77.40.12",
                  monitoring_journal_port=19532)  # fmt: skip
    for line in (
        "accept = 10.77.40.12:19532",
        "requireCert = yes",
        "verifyChain = yes",
        "CAfile = /etc/billkit/monitoring/ca.pem",
        "key = /run/credentials/billkit-journal-tls.service/host.key",
        "exec = /usr/local/sbin/billkit-journal-route",
    ):
        assert line in conf
    assert "connect =" not in conf, "every connection goes through the router to its own host's receiver"
    vacuum = render(MONITORING, "etc/systemd/system/billkit-journal-vacuum.service.j2")
    assert "--vacuum-time=13months" in vacuum and "--directory=/var/log/journal/remote" in vacuum
    fetches = [t for t in _tasks(MONITORING, "journal_remote.yml") if "ansible.builtin.fetch" in t]
    assert [t["when"] for t in fetches] == ["monitoring_journal_verify_key_fetch_dir | length > 0"]


VALUES = {
    "monitoring_journal_sender": "db-1",
    "monitoring_journal_machine_id": "0" * 32,
    "monitoring_journal_receivers": {"app-1": "1" * 32, "db-1": "0" * 32},
    "monitoring_journal_legacy_key": {"stat": {"exists": True}},
}


def test_the_verifier_unit_covers_every_receiver_and_the_earlier_single_receivers_files() -> None:
    argv = exec_start(render(MONITORING, "etc/systemd/system/billkit-journal-verify.service.j2", **VALUES))
    receivers = [argv[i + 1] for i, a in enumerate(argv) if a == "--receiver"]
    assert receivers == [
        f"/var/log/journal/remote/{'1' * 32}=/etc/billkit/journal/senders/app-1/verify.key",
        f"/var/log/journal/remote/{'0' * 32}=/etc/billkit/journal/senders/db-1/verify.key",
        "/var/log/journal/remote=/etc/billkit/journal/verify.key",
    ]
    assert argv[argv.index("--root") + 1] == "/var/log/journal/remote"


UNITS = [
    (HOST_MONITORING, "etc/systemd/system/systemd-journal-upload.service.d/billkit.conf.j2", None),
    (MONITORING, "etc/systemd/system/billkit-journal-remote@.service.j2", None),
    (MONITORING, "etc/systemd/system/billkit-journal-tls.service.j2", None),
    (MONITORING, "etc/systemd/system/billkit-journal-verify.service.j2", None),
    (MONITORING, "etc/systemd/system/billkit-journal-verify.timer.j2", "billkit-journal-verify.service"),
    (MONITORING, "etc/systemd/system/billkit-journal-vacuum.service.j2", None),
    (MONITORING, "etc/systemd/system/billkit-journal-vacuum.timer.j2", "billkit-journal-vacuum.service"),
]


@pytest.mark.parametrize(("role", "template", "pair"), UNITS, ids=[Path(t).name for _, t, _ in UNITS])
def test_systemd_analyze_accepts_the_units(
    tools: None, role: Path, template: str, pair: str | None, tmp_path: Path
) -> None:
    values = VALUES
    name = Path(template).name.removesuffix(".j2").replace("@", "@db-1")
    if name == "billkit.conf":  # a drop-in: verified on the packaged unit it extends
        unit_dir = tmp_path / "systemd-journal-upload.service.d"
        unit_dir.mkdir()
        (unit_dir / name).write_text(render(role, template, **values))
        target = tmp_path / "systemd-journal-upload.service"
        target.write_text(Path("/lib/systemd/system/systemd-journal-upload.service").read_text())
    else:
        target = tmp_path / name
        target.write_text(render(role, template, **values))
        if pair:
            (tmp_path / pair).write_text(render(role, f"etc/systemd/system/{pair}.j2", **values))
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(target)], capture_output=True, text=True,
                          check=False, env=dict(os.environ, SYSTEMD_UNIT_PATH=f"{tmp_path}:"))  # fmt: skip
    problems = [line for line in proc.stderr.splitlines() if "billkit" in line or name in line]
    assert proc.returncode == 0 and not problems, proc.stderr
