"""The aide role's baseline flow (MON-05, HRD-08), run by ansible-playbook on this machine over a local
connection: the baseline taken once and kept on the controller and a store host, a second run that changes
nothing but an accepted change, and a database replaced on the host refused.

The role's paths point at a throwaway tree; Debian's aide does the work. The packages and the systemd timer
(no systemd runs on this machine) are left to the lab's host checks.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from billkit.controls import ROOT
from billkit.lab.ansible import ansible_env, parse_recap
from billkit.system import ensure_packages, require_command

PYTHON = "/usr/bin/python3"
TREE = {
    "etc/ssh/sshd_config": "PermitRootLogin no\n",
    "etc/sudoers.d/billkit": "%billkit-admins ALL=(ALL:ALL) ALL\n",
    "etc/nginx/nginx.conf": "user waf;\n",
    "usr/bin/sudo": "#!/bin/sh\n",
    "var/log/syslog": "boot\n",
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def aide() -> str:
    ensure_packages(["aide"], "the aide role's playbook test runs Debian's aide")
    return require_command("aide", "aide")


def run(tmp_path: Path, *extra: str) -> tuple[int, str, dict[str, int]]:
    local = {"ansible_connection": "local", "ansible_become": False, "ansible_python_interpreter": PYTHON}
    inventory = {"all": {"hosts": {"fim-1": local, "store-1": local},
                         "children": {"role_waf": {"hosts": {"fim-1": None}}}}}  # fmt: skip
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "sbin").mkdir(exist_ok=True)
    variables = {
        "aide_install_enabled": False,  # the fixture installs aide; the timer needs systemd
        "aide_schedule_enabled": False,
        "aide_root": str(tmp_path / "root"),
        "aide_config_file": str(tmp_path / "etc-aide/billkit-aide.conf"),
        "aide_db_dir": str(tmp_path / "var-lib-aide"),
        "aide_bin_dir": str(tmp_path / "sbin"),
        "aide_textfile_dir": str(tmp_path / "textfile"),
        "aide_baseline_fetch_dir": str(tmp_path / "controller"),
        "aide_baseline_store_host": "store-1",
        "aide_baseline_store_dir": str(tmp_path / "store"),
    }
    (tmp_path / "vars.yml").write_text(yaml.safe_dump(variables))
    env = ansible_env(mitogen=True) | {"ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp")}
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "inventory.yml"),
           str(ROOT / "playbooks/aide.yml"), "--limit", "fim-1", "-e", f"@{tmp_path / 'vars.yml'}", *extra]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT / "playbooks", check=False)
    return proc.returncode, proc.stdout + proc.stderr, parse_recap(proc.stdout).hosts.get("fim-1", {})


@pytest.mark.control("MON-05", "HRD-08")
def test_the_baseline_is_kept_off_the_host_accepted_changes_refresh_it_and_a_replaced_one_is_refused(
    tmp_path: Path, aide: str
) -> None:
    for rel, text in TREE.items():
        (tmp_path / "root" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "root" / rel).write_text(text)
    db = tmp_path / "var-lib-aide/billkit-aide.db"
    digest = Path(f"{db}.sha256")
    controller, store = tmp_path / "controller/fim-1/billkit-aide.db", tmp_path / "store/fim-1/billkit-aide.db"

    rc, out, _ = run(tmp_path)
    assert rc == 0, out[-3000:]
    assert sha256(db) == sha256(controller) == sha256(store) == digest.read_text().split()[0]
    rules = (tmp_path / "etc-aide/billkit-aide.conf").read_text()
    assert f"{tmp_path}/root/etc/nginx(" in rules and "/etc/openbao(" not in rules  # this host's paths only
    proc = subprocess.run([PYTHON, str(tmp_path / "sbin/billkit-aide-check"), "--config",
                           str(tmp_path / "etc-aide/billkit-aide.conf"), "--textfile-dir", str(tmp_path / "textfile")],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 0 and json.loads(proc.stdout.splitlines()[-1])["result"] == "ok", proc.stdout

    # A planned change, accepted through the playbook: the only changes of this second run are the
    # acceptance and the refreshed copies (every other task is idempotent).
    (tmp_path / "root/usr/bin/sudo").write_text("#!/bin/sh\n# 1.9.13p3-1+deb12u2\n")
    stored = sha256(controller)
    rc, out, recap = run(tmp_path, "-e", "aide_accept_reason='patch run 7: sudo'")
    assert rc == 0, out[-3000:]
    assert recap["changed"] == 3, out[-3000:]  # accepted, fetched, copied to the store host
    record = json.loads((db.parent / "acceptances.jsonl").read_text())
    assert record["reason"] == "patch run 7: sudo" and record["who"].endswith("(ansible)") and record["changed"] == 1
    assert record["old_sha256"] == stored != record["new_sha256"]
    assert sha256(db) == sha256(controller) == sha256(store) == record["new_sha256"] == digest.read_text().split()[0]

    # An intruder changes a file and re-initialises the local database: refused, the stored copies kept.
    (tmp_path / "root/etc/sudoers.d/billkit").write_text("ALL ALL=(ALL) NOPASSWD: ALL\n")
    subprocess.run([aide, "--config", str(tmp_path / "etc-aide/billkit-aide.conf"), "--init"], capture_output=True,
                   check=True)  # fmt: skip
    db.with_suffix(".db.new").replace(db)
    rc, out, recap = run(tmp_path)
    assert rc == 2 and recap["failed"] == 1, out[-3000:]
    assert "is not the stored baseline" in out and "aide_baseline_adopt=true" in out
    assert sha256(controller) == sha256(store) == record["new_sha256"] != sha256(db)
