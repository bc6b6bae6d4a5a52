"""os_hardening's Lynis items (HRD-05, HRD-07, HRD-09): role shape, values Lynis 3.0.8 reads, waivers with reasons.

Debian's real chkrootkit.conf and Lynis test code are read where a value must match them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from billkit.controls import ROOT, load_catalog
from billkit.system import ensure_packages

ROLE = ROOT / "playbooks/roles/os_hardening"
CONCERNS = {"compilers": "HRD-05", "mounts": "HRD-05", "malware": "HRD-09"}


def load(rel: str) -> Any:
    return yaml.safe_load((ROLE / rel).read_text())


def tasks(name: str) -> list[dict[str, Any]]:
    return load(f"tasks/{name}.yml")


@pytest.mark.control("HRD-05", "HRD-09")
@pytest.mark.parametrize(("concern", "control"), CONCERNS.items())
def test_each_new_concern_is_one_gated_tagged_file_whose_tasks_cite_controls(concern: str, control: str) -> None:
    main = {t["ansible.builtin.import_tasks"]: t for t in tasks("main") if "ansible.builtin.import_tasks" in t}
    entry = main[f"{concern}.yml"]
    assert entry["when"] == f"os_hardening_{concern}_enabled | bool"
    assert concern in entry["tags"] and control in entry["name"]
    assert load("defaults/main.yml")[f"os_hardening_{concern}_enabled"] is True
    catalog = load_catalog()
    for task in tasks(concern):
        ids = re.findall(r"\b[A-Z]{2,4}-\d\d\b", task["name"])
        assert control in ids and not catalog.unknown(ids), task["name"]
        module = next(k for k in task if "." in k and k not in ("ansible.builtin.import_tasks",))
        assert module.count(".") == 2, f"{task['name']}: {module} is not fully qualified"


@pytest.mark.control("HRD-07")
def test_every_default_is_documented() -> None:
    specs = load("meta/argument_specs.yml")["argument_specs"]["main"]["options"]
    missing = set(load("defaults/main.yml")) - set(specs)
    assert not missing, f"undocumented variables: {sorted(missing)}"


# --- core dumps: the values Lynis's KRNL-5820 looks for ----------------------------------------------------------


@pytest.mark.control("HRD-05")
def test_systemd_coredump_drop_in_disables_storage_and_processing() -> None:
    task = next(t for t in tasks("limits") if t.get("ansible.builtin.copy", {}).get("dest", "").startswith(
        "/etc/systemd/coredump.conf.d/"))  # fmt: skip
    body = task["ansible.builtin.copy"]["content"]
    assert "[Coredump]" in body and re.search(r"^Storage=none$", body, re.M) and re.search(
        r"^ProcessSizeMax=0$", body, re.M)  # fmt: skip


@pytest.mark.control("HRD-05")
def test_profile_script_sets_no_core_dumps_in_a_real_shell(tmp_path: Path) -> None:
    text = (ROLE / "templates/etc/profile.d/billkit-hardening.sh.j2").read_text()
    script = jinja2.Template(text).render(ansible_managed="test", os_hardening_umask="027",
                                          os_hardening_idle_timeout=900)  # fmt: skip
    (tmp_path / "p.sh").write_text(script)
    for shell in ("sh", "bash"):
        out = subprocess.run([shell, "-c", f". {tmp_path}/p.sh; ulimit -c; umask"], capture_output=True, text=True,
                             check=True).stdout.split()  # fmt: skip
        assert out == ["0", "0027"], (shell, out)


# --- compilers -------------------------------------------------------------------------------------------------


def compiler_targets(results: list[dict[str, Any]]) -> list[str]:
    """The paths the role's last compilers task loops over, its Jinja evaluated on the given stat results."""
    task = tasks("compilers")[-1]
    env = jinja2.Environment(autoescape=False)  # noqa: S701 -- renders Ansible expressions, not HTML

    def expr(text: str) -> Any:
        return env.compile_expression(text.strip().removeprefix("{{").removesuffix("}}"))

    found = expr(task["vars"]["os_hardening_compilers_found"])(os_hardening_compiler_stat={"results": results})
    return list(expr(task["loop"])(os_hardening_compilers_found=found))


@pytest.mark.control("HRD-05")
def test_compiler_symlinks_are_followed_to_the_real_file_and_missing_ones_skipped() -> None:
    results = [
        {"item": "/usr/bin/as", "stat": {"exists": True, "islnk": True, "lnk_source": "/usr/bin/x86_64-linux-gnu-as"}},
        {"item": "/usr/bin/gcc", "stat": {"exists": False}},
        {"item": "/usr/bin/cc", "stat": {"exists": True, "islnk": False}},
        {"item": "/usr/bin/c++", "stat": {"exists": True, "islnk": True, "lnk_source": "/usr/bin/x86_64-linux-gnu-as"}},
    ]
    assert compiler_targets(results) == ["/usr/bin/x86_64-linux-gnu-as", "/usr/bin/cc"]


@pytest.mark.control("HRD-05")
def test_lynis_knows_every_compiler_the_role_restricts() -> None:
    ensure_packages(["lynis"], "the role's compiler list is checked against Lynis's own")
    binaries = Path("/usr/share/lynis/include/binaries").read_text()
    lynis = set(re.findall(r"^\s*([a-z+]+)\)\s+\w+BINARY=\S+;\s+COMPILER_INSTALLED=1", binaries, re.M))
    ours = {Path(p).name for p in load("defaults/main.yml")["os_hardening_compilers"]}
    assert {"as", "cc", "gcc", "clang"} <= ours and ours <= lynis | {"c++"}, (ours, lynis)


# --- chkrootkit ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chkrootkit_conf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ensure_packages(["chkrootkit"], "the role's chkrootkit settings are applied to Debian's own file")
    path = tmp_path_factory.mktemp("ck") / "chkrootkit.conf"
    shutil.copy("/etc/chkrootkit/chkrootkit.conf", path)
    return path


@pytest.mark.control("HRD-09")
def test_chkrootkit_settings_replace_debians_lines_and_take_effect(chkrootkit_conf: Path) -> None:
    task = next(t for t in tasks("malware") if "ansible.builtin.lineinfile" in t)["ansible.builtin.lineinfile"]
    settings: dict[str, str] = load("defaults/main.yml")["os_hardening_chkrootkit_settings"]
    lines = chkrootkit_conf.read_text().splitlines()
    for key, value in settings.items():
        regexp = re.compile(jinja2.Template(task["regexp"]).render(item={"key": key}))
        hits = [i for i, ln in enumerate(lines) if regexp.search(ln)]
        assert hits, f"{key}: no line of Debian's file matches, lineinfile would append"
        lines[hits[-1]] = jinja2.Template(task["line"]).render(item={"key": key, "value": value})
    chkrootkit_conf.write_text("\n".join(lines) + "\n")
    shown = subprocess.run(["sh", "-c", f'. {chkrootkit_conf}; echo "$RUN_DAILY|$RUN_DAILY_OPTS|$MAILTO"'],
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert shown == f"{settings['RUN_DAILY']}|{settings['RUN_DAILY_OPTS']}|", shown


@pytest.mark.control("HRD-09")
def test_debian_ships_the_timer_the_role_enables() -> None:
    ensure_packages(["chkrootkit"], "the role enables Debian's chkrootkit timer")
    listed = subprocess.run(["dpkg", "-L", "chkrootkit"], capture_output=True, text=True, check=True).stdout
    assert "/lib/systemd/system/chkrootkit.timer" in listed.splitlines()
    enabled = next(t for t in tasks("malware") if "ansible.builtin.systemd_service" in t)
    assert enabled["ansible.builtin.systemd_service"]["name"] == "chkrootkit.timer"


@pytest.mark.control("HRD-09")
def test_scan_unit_drop_in_is_low_priority_and_read_only() -> None:
    text = (ROLE / "templates/etc/systemd/system/chkrootkit.service.d/billkit.conf.j2").read_text()
    assert "Nice=19" in text and "IOSchedulingClass=idle" in text
    assert "ProtectSystem=strict" in text and "ReadWritePaths=/var/log/chkrootkit" in text
    assert "PrivateTmp" not in text  # the scan must see the real /tmp


# --- /dev/shm ---------------------------------------------------------------------------------------------------


@pytest.mark.control("HRD-05")
def test_shm_unit_remounts_with_the_three_options() -> None:
    text = (ROLE / "templates/etc/systemd/system/billkit-shm-noexec.service.j2").read_text()
    unit = jinja2.Template(text).render(ansible_managed="x", **{
        "os_hardening_shm_options": load("defaults/main.yml")["os_hardening_shm_options"]})  # fmt: skip
    start = re.search(r"^ExecStart=(.*)$", unit, re.M)
    assert start and start.group(1).split()[:3] == ["/bin/mount", "-o", "remount,nosuid,nodev,noexec"]
    assert "WantedBy=local-fs.target" in unit and "RemainAfterExit=yes" in unit


# --- waivers ----------------------------------------------------------------------------------------------------


@pytest.mark.control("HRD-07", "HRD-05", "HRD-01", "HRD-06", "PAT-01")
@pytest.mark.parametrize("kind", ["os_hardening_kit_waivers", "os_hardening_container_waivers"])
def test_waivers_name_a_known_control_a_lynis_test_and_a_reason(kind: str) -> None:
    catalog = load_catalog()
    items = load("defaults/main.yml")[kind]
    assert items
    for w in items:
        assert set(w) == {"control", "item", "reason"}, w
        assert not catalog.unknown([w["control"]]), w
        assert re.search(r"Lynis [A-Z]{3,4}-\d{4}", w["item"]), w
        assert len(w["reason"]) > 40, w
    text = (ROLE / "tasks/waivers.yml").read_text()
    assert kind in text, f"{kind} is never recorded on a host"
