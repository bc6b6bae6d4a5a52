"""The lab's lifecycle: a dead session's lab is reconciled, re-runs converge, `down` restores the machine."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from billkit.controls import ROOT
from billkit.lab import app, cgroups, hosts
from billkit.lab.net import bridges
from billkit.lab.pipeline import BACKUP, BILLING_APP, MONITORING, OPENBAO, PLAYBOOKS, POSTGRESQL, WAF
from billkit.lab.procs import is_ours
from billkit.lab.state import HOSTS_DIR, LAB_DIR, LOG_DIR, NFT_TABLE, lab_owner, load_state
from infra.topology import lab_hosts

pytestmark = pytest.mark.lab


def billkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "billkit", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=1800, check=False)  # fmt: skip


def lab_processes() -> list[int]:
    """Every process of every host: by its cgroup, or by its root directory."""
    return [pid for h in lab_hosts() for pid in hosts.strays(h.name)]


def _changed_tasks(playbook: str) -> list[str]:
    """`TASK [name]: changed: [host]` lines of the playbook's last log, to say what did not converge."""
    task, out = "", []
    for line in (LOG_DIR / f"ansible-{playbook.removesuffix('.yml')}.log").read_text().splitlines():
        if line.startswith("TASK ["):
            task = line[6:].split("]", 1)[0]
        elif line.startswith("changed: ["):
            out.append(f"{task}: {line.split(']', 1)[0]}]")
    return out


def test_status_lists_every_host_running():
    proc = billkit("status")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for h in lab_hosts():
        assert h.name in proc.stdout and h.address in proc.stdout
    assert "os_hardening" in proc.stdout


@pytest.mark.control("HRD-08")
def test_up_reconciles_a_dead_session_and_changes_nothing():
    """Kill every process of the lab (as a session's end does), then `up` again.

    Mounts, bridges, the nft table and the state file stay behind; `up` must reuse or repair
    them, boot every host again, and the hardening playbooks must report zero changed tasks.
    """
    state = load_state()
    victims = lab_processes() + list(state.nspawn.values()) + list(state.helpers.values())
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and lab_processes():
        time.sleep(0.2)
    assert not lab_processes(), "could not kill the lab's processes"
    assert all(hosts.is_mounted(hosts.merged(h.name)) for h in lab_hosts()), "the overlay mounts should survive"

    proc = billkit("up")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = load_state()
    assert all(hosts.is_running(state, h.name) for h in lab_hosts())
    for pb in PLAYBOOKS:
        recap = json.loads((LOG_DIR / f"recap-{pb.file.removesuffix('.yml')}.json").read_text())
        assert set(recap) == {h.name for h in lab_hosts()}
    for pb in (*PLAYBOOKS, OPENBAO, POSTGRESQL, BACKUP, BILLING_APP, WAF, MONITORING):
        recap = json.loads((LOG_DIR / f"recap-{pb.file.removesuffix('.yml')}.json").read_text())
        changed = {name: r["changed"] for name, r in recap.items() if r["changed"]}
        assert not changed, f"{pb.file} changed tasks on a converged lab: {changed}: {_changed_tasks(pb.file)}"
    # `up` ends with where the app answers and how its first admin starts; the app answers again
    # through the WAF (a restarted app host needs the new wrapped secret IDs `up` delivers)
    assert f"The billing app: {app.published_url()}" in proc.stdout, proc.stdout[-2000:]
    assert "First admin:" in proc.stdout or "first admin has enrolled" in proc.stdout, proc.stdout[-2000:]
    ctx = ssl.create_default_context(cafile=str(app.tls_staging() / "ca.pem"))
    with urllib.request.urlopen(app.published_url() + "healthz", context=ctx, timeout=30) as resp:  # noqa: S310
        assert resp.status == 200


@pytest.mark.lab_last
def test_down_restores_the_machine():
    state = load_state()
    sysctl_before_lab = dict(state.sysctl)
    pids = list(state.nspawn.values()) + list(state.helpers.values())
    proc = billkit("down")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    assert not lab_processes(), "processes still run in the hosts' root filesystems"
    assert not any(is_ours(pid, str(LAB_DIR)) or is_ours(pid, "billkit.lab") for pid in pids)
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(HOSTS_DIR) not in mounts, "an overlay mount is left"
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    for name in bridges():
        assert f" {name}:" not in links, f"bridge {name} is left"
    assert " vb-" not in links, "a container's veth is left"
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True, check=True).stdout
    assert "10.77." not in routes, "a route to the lab is left"
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    assert NFT_TABLE not in tables
    for key, value in sysctl_before_lab.items():
        assert (Path("/proc/sys") / key.replace(".", "/")).read_text().strip() == value
    for h in lab_hosts():
        assert not any(cg.exists() for cg in cgroups.host_cgroups(h.name)), f"cgroups of {h.name} are left"
    assert lab_owner() != str(LAB_DIR), "the machine is still marked as this checkout's lab"
    after = load_state()
    assert not after.nspawn and not after.helpers and not after.bridges and not after.sysctl and not after.nft_table
