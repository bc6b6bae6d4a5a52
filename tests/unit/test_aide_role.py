"""File integrity monitoring (MON-05, PCI DSS 11.5.2): the aide role's rules, check and acceptance scripts
with Debian's real aide on a throwaway tree, and the rules each lab role gets (test_aide_playbook.py runs the
role's baseline flow itself).

The rules file is the role's template rendered with the role's defaults (their Jinja expressions evaluated as
Ansible does), pointed at the tree (aide_root) and a database folder under tmp_path.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from jinja2 import meta
from jinja2.nativetypes import NativeEnvironment
from prometheus_client.parser import text_string_to_metric_families

from billkit.controls import ROOT
from billkit.system import ensure_packages, require_command
from infra.topology import ROLES

ROLE = ROOT / "playbooks/roles/aide"
CHECK = ROLE / "files/billkit-aide-check"
ACCEPT = ROLE / "files/billkit-aide-accept"
PYTHON = "/usr/bin/python3"  # Debian's, as on the hosts
KINDS = ("added", "removed", "changed")

pytestmark = pytest.mark.control("MON-05")


@pytest.fixture(scope="module")
def aide() -> str:
    ensure_packages(["aide"], "the aide role's unit tests run Debian's aide")
    return require_command("aide", "aide")


# --- the role's defaults and template ------------------------------------------------------------------------


def role_vars(role: str, **overrides: Any) -> dict[str, Any]:
    """A role's defaults, overrides applied, with every expression whose inputs are known evaluated natively."""
    values: dict[str, Any] = yaml.safe_load((ROOT / "playbooks/roles" / role / "defaults/main.yml").read_text())
    values |= overrides
    env = NativeEnvironment(undefined=jinja2.StrictUndefined)
    needs: dict[str, set[str]] = {}
    for k, v in values.items():
        if isinstance(v, str) and "{{" in v:
            try:
                needs[k] = meta.find_undeclared_variables(env.parse(v))
            except jinja2.TemplateError:
                continue  # Ansible's own filters (regex_replace, extract): left as written
    pending = set(needs)
    while True:
        ready = {k for k in pending if not needs[k] & pending and needs[k] <= values.keys()}
        if not ready:
            return values  # what is left needs facts or lookups (ansible_host, lookup('env'))
        for k in ready:
            values[k] = env.from_string(values[k]).render(values)
        pending -= ready


def present_paths(v: dict[str, Any]) -> list[str]:
    """The role's own existence probe (tasks/rules.yml), run as the role runs it."""
    tasks = yaml.safe_load((ROLE / "tasks/rules.yml").read_text())
    probe = next(t for t in tasks if t.get("register") == "aide_present")
    script = probe["vars"]["aide_exists_script"]
    candidates = list(dict.fromkeys(v["aide_watch_candidates"]))
    out = subprocess.run([PYTHON, "-c", script, v["aide_root"], *candidates], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    return out.split()


def templates() -> jinja2.Environment:
    """The role's templates with Ansible's settings (configuration files, not HTML: no escaping)."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(ROLE / "templates"), undefined=jinja2.StrictUndefined,
                              trim_blocks=True, keep_trailing_newline=True, autoescape=False)  # noqa: S701  # fmt: skip


def render_rules(v: dict[str, Any], present: list[str]) -> str:
    template = templates().get_template("etc/aide/billkit-aide.conf.j2")
    return template.render(v | {"aide_watch_present": present, "ansible_managed": "Ansible managed"})


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- a throwaway host tree -------------------------------------------------------------------------------------

TREE = {
    "etc/ssh/sshd_config": "PermitRootLogin no\n",
    "etc/ssh/ssh_host_ed25519_key": "private\n",
    "etc/sudoers": "root ALL=(ALL:ALL) ALL\n",
    "etc/sudoers.d/billkit": "%billkit-admins ALL=(ALL:ALL) ALL\n",
    "etc/security/faillock.conf": "deny = 10\n",
    "etc/security/opasswd": "admin:1000:1:$y$j9T$old\n",
    "etc/pam.d/common-auth": "auth required pam_unix.so\n",
    "etc/systemd/system/billing-app.service": "[Service]\nUser=billing-app\n",
    "etc/nginx/nginx.conf": "user waf;\n",
    "etc/nginx/billkit-upstream.d/10.77.20.11.conf": "server 10.77.20.11:8443 max_fails=2 fail_timeout=10s;\n",
    "usr/bin/sudo": "#!/bin/sh\n",
    "usr/sbin/sshd": "#!/bin/sh\n",
    "var/lib/billkit-state/seen": "1\n",  # under /var, watched here through aide_watch_extra
    "var/log/syslog": "boot\n",
    "var/lib/apt/lists/deb_dists_bookworm_main_Packages": "Package: a\n",
    "var/lib/prometheus/node-exporter/patch.prom": "billkit_patch_reboot_required 0\n",
    "var/lib/postgresql/15/main/PG_VERSION": "15\n",
}


@dataclass
class Host:
    root: Path
    config: Path
    database: Path
    textfile: Path
    journal: Path
    env: dict[str, str]

    def path(self, rel: str) -> Path:
        return self.root / rel

    def run(self, script: Path, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [PYTHON, str(script), "--config", str(self.config), "--textfile-dir", str(self.textfile), *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env, check=False)

    def check(self) -> tuple[int, dict[str, Any], dict[str, float]]:
        proc = self.run(CHECK)
        assert proc.stdout.strip(), proc.stderr
        return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1]), self.metrics()

    def metrics(self) -> dict[str, float]:
        text = (self.textfile / "aide.prom").read_text()
        return {
            s.name + "".join(f"{{{k}={v}}}" for k, v in sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def journal_lines(self) -> list[tuple[list[str], dict[str, Any]]]:
        """(logger options, JSON record) for each line the scripts sent to the journal."""
        out = []
        for line in self.journal.read_text().splitlines() if self.journal.exists() else []:
            args = json.loads(line)
            out.append((args[:-1], json.loads(args[-1])))
        return out

    def initialise(self, aide: str) -> str:
        """As the role does: aide --init, the new database moved in, its digest written (the stored copy's)."""
        subprocess.run([aide, "--config", str(self.config), "--init"], capture_output=True, check=True)
        self.database.with_suffix(".db.new").replace(self.database)
        digest = sha256(self.database)
        Path(f"{self.database}.sha256").write_text(f"{digest}  {self.database.name}\n")
        return digest


@pytest.fixture
def host(tmp_path: Path, aide: str) -> Host:
    root = tmp_path / "root"
    for rel, text in TREE.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "etc/security/opasswd").chmod(0o600)
    # logger stands in for the journal: it records its arguments, one JSON array per call.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    journal = tmp_path / "journal.jsonl"
    (bindir / "logger").write_text(
        f"#!{PYTHON}\nimport json, sys\nopen({str(journal)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    (bindir / "logger").chmod(0o755)
    dbdir = tmp_path / "db"
    dbdir.mkdir(mode=0o700)
    v = role_vars("aide", aide_root=str(root), aide_db_dir=str(dbdir), group_names=["role_waf", "tier_edge"],
                  aide_watch_extra=["/var"])  # fmt: skip
    config = tmp_path / "billkit-aide.conf"
    config.write_text(render_rules(v, present_paths(v)))
    subprocess.run([aide, "--config-check", "--config", str(config)], check=True, capture_output=True)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    h = Host(root, config, Path(v["aide_database"]), tmp_path / "textfile", journal, env)
    h.initialise(aide)
    return h


def counts(metrics: dict[str, float]) -> dict[str, float]:
    return {k: metrics[f"billkit_aide_changed_entries{{kind={k}}}"] for k in KINDS}


# --- the check ---------------------------------------------------------------------------------------------------


def test_a_clean_host_checks_clean_and_says_so_in_metrics_and_journal(host: Host) -> None:
    before = time.time()
    rc, record, metrics = host.check()
    assert rc == 0 and record["result"] == "ok", record
    assert metrics["billkit_aide_check_success"] == 1 and metrics["billkit_aide_baseline_match"] == 1
    assert counts(metrics) == {"added": 0, "removed": 0, "changed": 0}
    assert before - 1 <= metrics["billkit_aide_last_check_timestamp_seconds"] <= time.time()
    assert record["total"] > len(TREE) - 4  # files and their folders, minus the excluded ones
    # the metrics file is replaced whole (no temporary file left) and readable by the node exporter
    assert [p.name for p in host.textfile.iterdir()] == ["aide.prom"]
    assert (host.textfile / "aide.prom").stat().st_mode & 0o777 == 0o644
    [(opts, logged)] = host.journal_lines()
    assert opts[:4] == ["-t", "billkit-aide", "-p", "auth.info"] and logged == record


def _modify(h: Host) -> None:
    with h.path("etc/ssh/sshd_config").open("a") as fh:
        fh.write("PermitRootLogin yes\n")


def _add(h: Host) -> None:
    h.path("usr/bin/backdoor").write_text("#!/bin/sh\n")


def _remove(h: Host) -> None:
    h.path("etc/sudoers.d/billkit").unlink()


def _same_size_times_restored(h: Host) -> None:
    # an intruder who keeps the size and puts the times back (the change time and digest still differ)
    p = h.path("etc/sudoers")
    st = p.stat()
    p.write_text(p.read_text().replace("root", "evil"))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


def _setuid(h: Host) -> None:
    h.path("usr/bin/sudo").chmod(0o4755)


def _var_watched(h: Host) -> None:
    h.path("var/lib/billkit-state/seen").write_text("2\n")


def _upstream_redirected(h: Host) -> None:
    h.path("etc/nginx/billkit-upstream.d/10.77.20.11.conf").write_text("server 203.0.113.9:8443;\n")


def _password_history_opened(h: Host) -> None:
    h.path("etc/security/opasswd").chmod(0o644)


def _odd_name(h: Host) -> None:
    # a name that is not UTF-8 and holds a newline: reported all the same, and the journal line stays one line
    h.path("usr/bin/\udcffodd\nname").write_text("#!/bin/sh\n")


def _added_removed_and_changed(h: Host) -> None:
    _modify(h)
    _add(h)
    _remove(h)


ATTACKS: dict[str, tuple[Callable[[Host], None], dict[str, list[str]]]] = {
    "modified": (_modify, {"changed": ["etc/ssh/sshd_config"]}),
    "added": (_add, {"added": ["usr/bin/backdoor"]}),
    "removed": (_remove, {"removed": ["etc/sudoers.d/billkit"]}),
    "same size, times restored": (_same_size_times_restored, {"changed": ["etc/sudoers"]}),
    "setuid bit": (_setuid, {"changed": ["usr/bin/sudo"]}),
    "under a watched /var": (_var_watched, {"changed": ["var/lib/billkit-state/seen"]}),
    "upstream redirected": (_upstream_redirected, {"changed": ["etc/nginx/billkit-upstream.d/10.77.20.11.conf"]}),
    "password history opened": (_password_history_opened, {"changed": ["etc/security/opasswd"]}),
    "odd file name": (_odd_name, {"added": ["usr/bin/\udcffodd\nname"]}),
    "all three": (_added_removed_and_changed, {"added": ["usr/bin/backdoor"], "removed": ["etc/sudoers.d/billkit"],
                                               "changed": ["etc/ssh/sshd_config"]}),
}  # fmt: skip


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_change_to_a_watched_file_is_counted_exactly(host: Host, attack: str) -> None:
    act, expected = ATTACKS[attack]
    act(host)
    rc, record, metrics = host.check()
    assert rc == 1 and record["result"] == "changed", record
    assert metrics["billkit_aide_check_success"] == 0 and metrics["billkit_aide_baseline_match"] == 1
    assert counts(metrics) == {k: len(expected.get(k, [])) for k in KINDS}
    assert record["entries"] == {k: [str(host.root / p) for p in paths] for k, paths in expected.items()}
    [(opts, logged)] = host.journal_lines()
    assert opts[3] == "auth.warning" and logged["entries"] == record["entries"]


def test_many_changes_are_all_counted_and_the_journal_line_stays_short(host: Host) -> None:
    for i in range(45):
        host.path(f"usr/bin/dropped-{i:02}").write_text("x\n")
    rc, record, metrics = host.check()
    assert rc == 1 and counts(metrics) == {"added": 45, "removed": 0, "changed": 0}
    assert len(record["entries"]["added"]) == 45  # stdout (read by billkit-aide-accept) has them all
    [(_, logged)] = host.journal_lines()
    assert logged["added"] == 45 and len(logged["entries"]["added"]) == 20 and logged["entries_cut"] is True


def test_a_narrowed_rules_file_fails_the_check(host: Host) -> None:
    """aide itself silently skips baseline entries no rule covers: the check does not."""
    rules = host.config.read_text()
    narrowed = "\n".join(line for line in rules.splitlines() if "/etc/ssh(" not in line)
    host.config.write_text(f"!{host.root}/etc/ssh($|/)\n{narrowed}\n")
    _modify(host)  # hidden from aide by the narrowed rules
    rc, record, metrics = host.check()
    assert rc == 2 and record["result"] == "rules_narrowed" and "no longer covered" in record["message"]
    assert metrics["billkit_aide_check_success"] == 0


def test_legitimate_changes_and_excluded_paths_change_nothing(host: Host) -> None:
    with host.path("var/log/syslog").open("a") as fh:
        fh.write("more\n")
    host.path("var/lib/apt/lists/deb_dists_bookworm-security_main_Packages").write_text("Package: b\n")
    host.path("var/lib/prometheus/node-exporter/aide.prom").write_text("x 1\n")
    host.path("var/lib/postgresql/15/main/PG_VERSION").write_text("16\n")
    # a rollout drains and restores an app host: the same content in a new file, with new times
    upstream = host.path("etc/nginx/billkit-upstream.d/10.77.20.11.conf")
    content = upstream.read_text()
    upstream.write_text("server 10.77.20.11:8443 down;\n")
    fresh = upstream.with_name(".fresh")
    fresh.write_text(content)
    fresh.chmod(upstream.stat().st_mode & 0o777)
    fresh.replace(upstream)
    # a password change rewrites the password history, with its mode kept
    host.path("etc/security/opasswd").write_text("admin:1000:2:$y$j9T$old,$y$j9T$new\n")
    rc, record, metrics = host.check()
    assert rc == 0 and record["result"] == "ok", record
    assert metrics["billkit_aide_check_success"] == 1 and counts(metrics) == {"added": 0, "removed": 0, "changed": 0}


def test_only_the_paths_the_host_has_are_in_its_rules(host: Host) -> None:
    rules = host.config.read_text()
    assert f"{host.root}/etc/nginx(" in rules and f"{host.root}/etc/ssh(" in rules
    # candidates of this host's group that the tree lacks, and paths of other groups, are not in the rules
    for absent in ("/usr/share/modsecurity-crs", "/etc/modsecurity", "/etc/openbao", "/opt/billing-app", "/etc/mtail"):
        assert f"{host.root}{absent}(" not in rules
    assert f"!{host.root}/var/log(" in rules  # exclusions are always there


# --- planned changes -----------------------------------------------------------------------------------------


def test_an_accepted_change_is_recorded_with_its_reason_and_the_next_check_is_clean(host: Host) -> None:
    old = sha256(host.database)
    _added_removed_and_changed(host)
    proc = host.run(ACCEPT, "--reason", "patch run 42:  packages\nopenssl libssl3", "--who", "alice")
    assert proc.returncode == 0, proc.stderr
    [line] = (host.database.parent / "acceptances.jsonl").read_text().splitlines()
    record = json.loads(line)
    new = sha256(host.database)
    assert new != old
    assert record["reason"] == "patch run 42: packages openssl libssl3"  # one line, whatever was typed
    assert record["who"] == "alice" and record["old_sha256"] == old and record["new_sha256"] == new
    assert (record["added"], record["removed"], record["changed"]) == (1, 1, 1)
    assert record["entries"]["added"] == [str(host.path("usr/bin/backdoor"))]
    assert Path(f"{host.database}.sha256").read_text().split()[0] == new
    assert host.metrics()["billkit_aide_check_success"] == 1  # refreshed by the acceptance
    assert any(logged.get("event") == "aide_accept" and logged["reason"] == record["reason"]
               for _, logged in host.journal_lines())  # fmt: skip
    rc, result, metrics = host.check()
    assert rc == 0 and result["result"] == "ok" and counts(metrics) == {"added": 0, "removed": 0, "changed": 0}
    # nothing left to accept: nothing recorded, the baseline untouched
    again = host.run(ACCEPT, "--reason", "patch run 42")
    assert again.returncode == 0 and json.loads(again.stdout)["accepted"] is False
    assert len((host.database.parent / "acceptances.jsonl").read_text().splitlines()) == 1
    assert sha256(host.database) == new


def test_an_acceptance_needs_a_reason(host: Host) -> None:
    _modify(host)
    proc = host.run(ACCEPT, "--reason", "  \n ")
    assert proc.returncode == 2 and "--reason must say why" in proc.stderr
    assert not (host.database.parent / "acceptances.jsonl").exists()
    assert host.check()[0] == 1


# --- a baseline replaced on the host -----------------------------------------------------------------------------


def test_a_database_reinitialised_by_an_intruder_fails_the_check(host: Host, aide: str) -> None:
    stored = sha256(host.database)
    _setuid(host)
    # the intruder re-initialises the database: aide alone now sees nothing
    subprocess.run([aide, "--config", str(host.config), "--init"], capture_output=True, check=True)
    host.database.with_suffix(".db.new").replace(host.database)
    assert subprocess.run([aide, "--config", str(host.config), "--check"], capture_output=True).returncode == 0
    rc, record, metrics = host.check()
    assert rc == 2 and record["result"] == "baseline_mismatch"
    assert "is not the stored baseline" in record["message"] and record["reference_sha256"] == stored
    assert metrics["billkit_aide_check_success"] == 0 and metrics["billkit_aide_baseline_match"] == 0
    assert not any(name.startswith("billkit_aide_changed_entries") for name in metrics)  # no counts from it
    # and it cannot be blessed quietly
    replaced = sha256(host.database)
    refused = host.run(ACCEPT, "--reason", "looks fine")
    assert refused.returncode == 2 and "refused" in refused.stderr and sha256(host.database) == replaced
    assert not (host.database.parent / "acceptances.jsonl").exists()


def test_a_database_swapped_for_an_older_one_fails_the_check(host: Host) -> None:
    older = host.database.read_bytes()
    _modify(host)
    assert host.run(ACCEPT, "--reason", "change 7").returncode == 0
    host.database.write_bytes(older)  # the baseline from before the accepted change
    rc, record, _ = host.check()
    assert rc == 2 and record["result"] == "baseline_mismatch"


def test_no_stored_digest_fails_the_check(host: Host) -> None:
    Path(f"{host.database}.sha256").unlink()
    rc, record, metrics = host.check()
    assert rc == 2 and record["result"] == "no_baseline" and metrics["billkit_aide_check_success"] == 0


def test_after_investigating_a_mismatch_can_be_accepted_on_the_record(host: Host, aide: str) -> None:
    _add(host)
    subprocess.run([aide, "--config", str(host.config), "--init"], capture_output=True, check=True)
    host.database.with_suffix(".db.new").replace(host.database)
    proc = host.run(ACCEPT, "--reason", "incident 3: host cleaned, new baseline", "--allow-mismatch")
    assert proc.returncode == 0, proc.stderr
    record = json.loads((host.database.parent / "acceptances.jsonl").read_text())
    assert record["allowed_mismatch"] is True and record["result_before"] == "baseline_mismatch"
    assert host.check()[0] == 0


# --- the rules of each lab role --------------------------------------------------------------------------------


def _kit_paths() -> tuple[dict[str, list[str]], list[str]]:
    """Files the kit's roles install, per lab role (from their defaults), and data it must never watch."""
    ob, app, waf = role_vars("openbao"), role_vars("billing_app"), role_vars("waf")
    pg, bak, fim = role_vars("postgresql"), role_vars("backup"), role_vars("aide")
    common = ["/etc/ssh/sshd_config", "/etc/pam.d/common-auth", "/etc/security/faillock.conf", "/etc/sudoers",
              "/etc/sudoers.d/billkit", "/etc/systemd/system/billing-app.service",
              "/usr/lib/systemd/system/ssh.service", "/usr/bin/sudo", "/usr/sbin/sshd",
              "/usr/local/sbin/billkit-aide-check", fim["aide_config_file"], "/etc/nftables.conf", "/etc/passwd",
              "/etc/shadow", "/etc/billkit/waivers/os_hardening.json"]  # fmt: skip
    per_role = {
        "waf": ["/etc/nginx/nginx.conf", f"{waf['waf_modsecurity_dir']}/main.conf", f"{waf['waf_tls_dir']}/server.key",
                f"{waf['waf_crs_rules_dir']}/REQUEST-901-INITIALIZATION.conf", "/etc/modsecurity/crs/crs-setup.conf",
                f"{waf['waf_upstream_dir']}/10.77.20.11.conf", "/etc/keepalived/keepalived.conf"],
        "app": [f"{app['billing_app_venv']}/bin/python", f"{app['billing_app_home']}/wheelhouse.tar",
                f"{app['billing_app_config_dir']}/app.env"],
        "vault": [ob["openbao_binary_path"], ob["openbao_config_file"], ob["openbao_tls_key"]],
        "db": [f"{pg['postgresql_conf_dir']}/pg_hba.conf", "/usr/lib/postgresql/15/bin/postgres",
               f"{pg['postgresql_tls_dir']}/server.key", "/usr/local/sbin/billkit-volume", bak["backup_ca_file"]],
        "backup": [f"{bak['backup_store_dir']}/current/billkit_s3app.py", f"{bak['backup_store_conf_dir']}/server.pem",
                   "/usr/local/lib/billkit-backup/vault-snapshot.py", "/etc/billkit-backup/vault-agent.token",
                   bak["backup_ca_file"], "/usr/lib/postgresql/15/bin/pg_ctl"],
        "mon": ["/etc/prometheus/prometheus.yml", "/etc/mtail/billkit.mtail", "/etc/exim4/update-exim4.conf.conf"],
    }  # fmt: skip
    never = [f"{ob['openbao_data_dir']}/raft.db", ob["openbao_audit_log"],
             f"{pg['postgresql_data_directory']}/PG_VERSION", "/var/lib/postgresql/15/main/base/1/1259",
             waf["waf_audit_log"], "/var/log/nginx/access.log",
             "/var/lib/apt/lists/deb_dists_bookworm_InRelease", f"{fim['aide_textfile_dir']}/aide.prom",
             fim["aide_database"], f"{fim['aide_database']}.sha256", f"{bak['backup_store_state_dir']}/bucket/key",
             f"{bak['backup_restore_dir']}/data/PG_VERSION", "/var/lib/billkit/aide-baselines/app-1/billkit-aide.db",
             "/var/lib/prometheus/metrics2/wal/00000001"]  # fmt: skip
    return {r: common + paths for r, paths in per_role.items()}, never


def _rule(aide: str, config: Path, path: str) -> str | None:
    """The rule aide itself selects for a file (its --path-check), or None."""
    proc = subprocess.run([aide, "--config", str(config), f"--path-check=f:{path}"], capture_output=True, text=True)
    return proc.stdout.rsplit(" ", 1)[-1].rstrip("')\n") if proc.returncode == 0 else None


@pytest.mark.parametrize("role", [r.name for r in ROLES])
def test_each_lab_role_watches_what_the_kit_installs_there_and_no_data(role: str, aide: str, tmp_path: Path) -> None:
    expected, never = _kit_paths()
    decoys = ["/etc/sudoers.d.bak/x", "/etc/sshguard", "/usr/binx/tool"]  # the rules are anchored regexes
    samples = sorted({p for paths in expected.values() for p in paths} | set(never) | set(decoys))
    root = tmp_path / "root"
    for path in samples:
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text("x\n")
    v = role_vars("aide", aide_root=str(root), aide_db_dir=str(tmp_path / "db"), group_names=[f"role_{role}"])
    assert f"role_{role}" in v["aide_watch_by_group"], f"no aide paths for the lab role {role}"
    # as if the host had every tree of its lists; a content- or perms-only path only inside one of them
    special = set(v["aide_watch_content_only"] + v["aide_watch_perms_only"])
    trees = [c for c in v["aide_watch_candidates"] if c not in special]
    present = trees + [p for p in special if any(p.startswith(t + "/") for t in trees)]
    config = tmp_path / "billkit-aide.conf"
    config.write_text(render_rules(v, present))
    (tmp_path / "db").mkdir()
    # one aide --init over the samples lists every file the rules take
    init = subprocess.run([aide, "--config", str(config), "--init", "-B", "report_detailed_init=yes"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    watched = {p.removeprefix(str(root)) for p in json.loads(init.stdout).get("added", {})}
    for path in expected[role]:
        assert path in watched, f"{role}: {path} is not watched"
    for path in never:
        assert path not in watched, f"{role}: {path} changes legitimately yet is watched"
    # anywhere else, exactly what lies under this host's trees is watched (not another role's files)
    for path in samples:
        under = any(path == t or path.startswith(t + "/") for t in trees) and path not in never
        assert (path in watched) == under, f"{role}: {path} (under one of its trees: {under})"
    assert _rule(aide, config, f"{root}/usr/sbin/sshd") == "BillkitStatic"
    if role == "waf":
        assert _rule(aide, config, f"{root}/etc/nginx/billkit-upstream.d/10.77.20.11.conf") == "BillkitContent"


# --- the schedule ------------------------------------------------------------------------------------------------


@pytest.mark.control("MON-05", "HRD-06")
def test_the_check_units_verify_and_the_service_is_sandboxed(tmp_path: Path) -> None:
    analyze = require_command("systemd-analyze", "systemd")
    v = role_vars("aide", aide_bin_dir=str(ROLE / "files"))  # ExecStart must name an existing program
    env = templates()
    for unit in ("billkit-aide-check.service", "billkit-aide-check.timer"):
        text = env.get_template(f"etc/systemd/system/{unit}.j2").render(v | {"ansible_managed": "Ansible managed"})
        (tmp_path / unit).write_text(text)
    timer = (tmp_path / "billkit-aide-check.timer").read_text()
    assert "OnCalendar=*-*-* 04:10:00" in timer and "OnBootSec=15min" in timer and "Persistent=true" in timer
    service = tmp_path / "billkit-aide-check.service"
    verify = subprocess.run([analyze, "verify", str(service), str(tmp_path / "billkit-aide-check.timer")],
                            capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    assert f"ReadWritePaths={v['aide_db_dir']} {v['aide_textfile_dir']}" in service.read_text()
    # systemd's own exposure score (0 best, 10 worst): at most 2.0, "OK"
    security = subprocess.run([analyze, "security", "--offline=yes", "--threshold=20", str(service)],
                              capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert security.returncode == 0, security.stdout[-1500:]
