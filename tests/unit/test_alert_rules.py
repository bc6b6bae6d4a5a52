"""The monitoring host's alert rules: promtool checks and runs every group's unit tests, every rule names
catalogue controls, PCI DSS requirements of those controls, a severity and a runbook, every alert has a
promtool case that fires it and one where it stays quiet, and docs/alerts.md lists them all.

promtool comes from Debian's prometheus package (2.42, the version mon-1 runs); each run works on copies
in its own temporary directory, so the cases run in parallel.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from billkit.controls import PCI_RE, ROOT, Catalog, load_catalog
from billkit.system import ensure_packages, require_command

RULES = ROOT / "playbooks/roles/monitoring/files/rules"
DOC = ROOT / "docs/alerts.md"
# The groups of the monitoring contract: the deployed sources, then the later parts written ahead.
GROUPS = ("app", "vault", "hosts", "tls", "backup", "patch", "logs", "vault_audit", "fim", "journal")
SEVERITIES = ("critical", "warning", "info")
# A rule that alerts on a scrape or probe being down (`up{…} == 0`, `max(probe_success{…}) == 0`).
STATE_ALERT = re.compile(r"\b(?:up|probe_success)\{[^}]*\}\)?\s*==\s*0")


@dataclass(frozen=True)
class Rule:
    group: str
    alert: str
    expr: str
    duration: str | None
    labels: dict[str, str]
    annotations: dict[str, str]

    @property
    def controls(self) -> list[str]:
        return [c.strip() for c in self.labels.get("control", "").split(",") if c.strip()]

    @property
    def pci(self) -> list[str]:
        return [p.strip() for p in self.labels.get("pci", "").split(",") if p.strip()]


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rule_file(group: str) -> Path:
    return RULES / f"{group}.yml"


def unit_tests(group: str) -> list[Path]:
    """The group's promtool test files: <group>.test.yml, and <group>.<part>.test.yml for costly simulations."""
    return sorted(RULES.glob(f"{group}.test.yml")) + sorted(RULES.glob(f"{group}.*.test.yml"))


def rules_of(group: str) -> list[Rule]:
    data = _load(rule_file(group))
    assert [g["name"] for g in data["groups"]] == [group], f"{group}.yml must hold one rule group named {group!r}"
    out = []
    for raw in data["groups"][0]["rules"]:
        if "record" in raw:  # a building block of the group's alerts: the kit's prefix, no labels of its own
            assert raw["record"].startswith("billkit:") and not raw.get("labels"), f"{group}.yml: {raw['record']}"
            continue
        out.append(Rule(group, raw["alert"], raw["expr"], raw.get("for"), raw.get("labels") or {},
                        raw.get("annotations") or {}))  # fmt: skip
    return out


ALL_RULES = [r for g in GROUPS for r in rules_of(g)]


@functools.cache
def catalog() -> Catalog:
    return load_catalog()


@functools.cache
def expected_alerts(group: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """(alertname, expected alerts) for every alert_rule_test case of the group's promtool tests."""
    cases = []
    for path in unit_tests(group):
        for test in _load(path)["tests"]:
            for case in test.get("alert_rule_test", []):
                cases.append((case["alertname"], [a.get("exp_labels") or {} for a in case.get("exp_alerts") or []]))
    return cases


def _control_mark(group: str) -> pytest.MarkDecorator:
    ids = {"MON-01"} | {c for r in rules_of(group) for c in r.controls if c in ("MON-01", "MON-02")}
    return pytest.mark.control(*sorted(ids))


GROUP_PARAMS = [pytest.param(g, marks=_control_mark(g), id=g) for g in GROUPS]
RULE_PARAMS = [pytest.param(r, id=f"{r.group}:{r.alert}:{r.labels.get('control', '')}") for r in ALL_RULES]


@pytest.fixture(scope="session")
def promtool() -> str:
    ensure_packages(["prometheus"], "promtool, to check and unit-test the alert rules")
    return require_command("promtool", "prometheus")


def _promtool(promtool: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def _copy_group(group: str, dest: Path) -> list[str]:
    shutil.copy(rule_file(group), dest)
    names = []
    for path in unit_tests(group):
        shutil.copy(path, dest)
        names.append(path.name)
    return names


# --- promtool -------------------------------------------------------------------------------------------


def test_every_group_of_the_contract_has_its_rules_and_tests() -> None:
    on_disk = {p.name.split(".")[0] for p in RULES.glob("*.yml")}
    assert on_disk == set(GROUPS), "rule files and GROUPS disagree: add the group to GROUPS or remove the file"
    for group in GROUPS:
        assert rule_file(group).is_file() and unit_tests(group), f"{group}: needs {group}.yml and {group}.test.yml"


@pytest.mark.parametrize("group", GROUP_PARAMS)
def test_promtool_accepts_the_rules_and_their_unit_tests_pass(group: str, promtool: str, tmp_path: Path) -> None:
    tests = _copy_group(group, tmp_path)
    check = _promtool(promtool, tmp_path, "check", "rules", f"{group}.yml")
    assert check.returncode == 0, check.stdout + check.stderr
    run = _promtool(promtool, tmp_path, "test", "rules", *tests)
    assert run.returncode == 0, run.stdout + run.stderr


def _mutate(group: str, tmp_path: Path, alerts: tuple[str, ...], old: str, new: str) -> list[str]:
    """Copy the group and replace `old` with `new` inside the named alerts' rules only."""
    tests = _copy_group(group, tmp_path)
    path = tmp_path / f"{group}.yml"
    parts = re.split(r"(?m)^(?=      - alert: )", path.read_text(encoding="utf-8"))
    for i, part in enumerate(parts):
        if any(part.startswith(f"      - alert: {a}\n") for a in alerts):
            assert old in part, f"{old!r} not in the rule"
            parts[i] = part.replace(old, new)
    path.write_text("".join(parts), encoding="utf-8")
    return tests


@pytest.mark.control("MON-01", "HRD-03")
def test_the_unit_tests_catch_a_raised_brute_force_threshold(promtool: str, tmp_path: Path) -> None:
    """An attacker who may try 10 passwords before anyone hears must be heard: a threshold of 11 fails the tests."""
    tests = _mutate("app", tmp_path, ("AppSignInFailureBurst",), ") >= 10", ") >= 11")
    run = _promtool(promtool, tmp_path, "test", "rules", *tests)
    assert run.returncode != 0 and "AppSignInFailureBurst" in run.stdout + run.stderr


@pytest.mark.control("MON-01", "TOK-03")
def test_the_unit_tests_catch_a_detokenization_rule_that_misses_a_new_actor(promtool: str, tmp_path: Path) -> None:
    """increase() alone misses a counter's first event (a new actor's first reveal): the tests notice if the
    series born inside the window are dropped."""
    alerts = ("AppDetokenizationBurst", "AppDetokenizationOutOfHours")
    tests = _mutate("app", tmp_path, alerts, "unless billkit_app_detokenizations_total offset",
                    "and billkit_app_detokenizations_total offset")  # fmt: skip
    run = _promtool(promtool, tmp_path, "test", "rules", *tests)
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "AppDetokenizationBurst" in out and "AppDetokenizationOutOfHours" in out


@pytest.mark.control("MON-02")
def test_the_unit_tests_catch_a_vault_seal_rule_that_stops_reading_the_probe(promtool: str, tmp_path: Path) -> None:
    tests = _mutate("vault", tmp_path, ("VaultNodeSealed",), "(probe_success{job=\"vault_health\"}) == 0",
                    "(probe_success{job=\"vault_health\"}) == -1")  # fmt: skip
    run = _promtool(promtool, tmp_path, "test", "rules", *tests)
    assert run.returncode != 0 and "VaultNodeSealed" in run.stdout + run.stderr


# --- what every rule carries ----------------------------------------------------------------------------


@pytest.mark.control("MON-01")
@pytest.mark.parametrize("rule", RULE_PARAMS)
def test_every_rule_names_catalogue_controls_their_pci_requirements_a_severity_and_a_runbook(rule: Rule) -> None:
    cat = catalog()
    assert rule.controls, f"{rule.alert}: label `control` names no catalogue ID"
    assert not cat.unknown(rule.controls), f"{rule.alert}: unknown or retired control(s) {cat.unknown(rule.controls)}"
    assert any(c.startswith("MON-") for c in rule.controls), f"{rule.alert}: an alert rule proves MON-01 or MON-02"
    allowed = {p for c in rule.controls for p in cat[c].pci_dss}
    assert rule.pci, f"{rule.alert}: label `pci` names no PCI DSS requirement"
    for number in rule.pci:
        assert PCI_RE.match(number), f"{rule.alert}: {number!r} is not a PCI DSS v4.0 requirement number"
        assert number in allowed, (
            f"{rule.alert}: PCI {number} is not listed by its controls {rule.controls} ({sorted(allowed)})"
        )
    assert rule.labels.get("severity") in SEVERITIES, f"{rule.alert}: severity must be one of {SEVERITIES}"
    runbook = rule.annotations.get("runbook", "")
    assert runbook.strip() and "\n" not in runbook.strip(), f"{rule.alert}: the runbook is one line of what to do"
    assert rule.annotations.get("summary", "").strip(), f"{rule.alert}: no summary"
    assert set(rule.labels) == {"severity", "control", "pci"}, f"{rule.alert}: labels are severity, control, pci"
    assert set(rule.annotations) == {"summary", "runbook"}, f"{rule.alert}: annotations are summary and runbook"


@pytest.mark.control("MON-01")
@pytest.mark.parametrize("rule", RULE_PARAMS)
def test_the_summary_names_the_host_whenever_the_alert_carries_one(rule: Rule) -> None:
    fired = [labels for name, alerts in expected_alerts(rule.group) if name == rule.alert for labels in alerts]
    with_host = {"host" in labels for labels in fired}
    assert len(with_host) == 1, f"{rule.alert}: some of its alerts carry `host`, some do not"
    if with_host == {True}:
        assert "$labels.host" in rule.annotations["summary"], f"{rule.alert}: the summary must name the host"
    else:
        assert "$labels.host" not in rule.annotations["summary"], f"{rule.alert}: carries no host label to name"


@pytest.mark.control("MON-02")
@pytest.mark.parametrize("rule", [p for p in RULE_PARAMS if STATE_ALERT.search(p.values[0].expr)])
def test_alerts_on_a_target_or_probe_state_wait_out_a_restart(rule: Rule) -> None:
    """A scrape or probe failing for one evaluation is a restart or a blip; these rules wait (`for:`)."""
    assert rule.duration, f"{rule.alert}: a state alert on scrape or probe health needs a `for:` duration"


def test_alert_names_are_unique_across_groups() -> None:
    groups_of: dict[str, set[str]] = {}
    for r in ALL_RULES:
        groups_of.setdefault(r.alert, set()).add(r.group)
    assert {a: g for a, g in groups_of.items() if len(g) > 1} == {}


# --- every alert is proven both ways --------------------------------------------------------------------


@pytest.mark.control("MON-01")
@pytest.mark.parametrize("rule", RULE_PARAMS)
def test_every_alert_has_a_test_that_fires_it_and_one_where_it_stays_quiet(rule: Rule) -> None:
    cases = [alerts for name, alerts in expected_alerts(rule.group) if name == rule.alert]
    own = {k: rule.labels[k] for k in ("severity", "control", "pci")}
    fires = [a for alerts in cases for a in alerts if all(str(a.get(k)) == v for k, v in own.items())]
    assert fires, f"{rule.alert} ({rule.labels['control']}): no promtool case expects it to fire with its labels"
    assert any(alerts == [] for alerts in cases), f"{rule.alert}: no promtool case shows it quiet on normal traffic"


# --- the operator's table -------------------------------------------------------------------------------


def _doc_rows() -> list[dict[str, str]]:
    lines = [line for line in DOC.read_text(encoding="utf-8").splitlines() if line.startswith("|")]
    header = [c.strip().lower() for c in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


@pytest.mark.control("MON-01")
def test_docs_list_every_alert_with_its_group_controls_pci_severity_and_runbook() -> None:
    rows = _doc_rows()
    for rule in ALL_RULES:
        match = [r for r in rows if r["alert"].strip("`") == rule.alert and r["control"] == rule.labels["control"]]
        assert match, f"docs/alerts.md has no row for {rule.alert} ({rule.labels['control']})"
        row = match[0]
        assert row["group"] == rule.group, f"{rule.alert}: docs say group {row['group']!r}"
        assert row["pci"] == rule.labels["pci"] and row["severity"] == rule.labels["severity"], rule.alert
        assert row["meaning"], f"{rule.alert}: docs say nothing of what it means"
        assert row["runbook"] == rule.annotations["runbook"].strip(), f"{rule.alert}: docs' runbook differs"
    documented = {(r["alert"].strip("`"), r["control"]) for r in rows}
    assert documented == {(r.alert, r.labels["control"]) for r in ALL_RULES}, "docs list alerts the rules lack"
