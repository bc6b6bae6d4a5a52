"""The catalogue's regulatory references are real: PCI DSS v4.0 numbers exist, GDPR and HIPAA refs are well-formed."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from billkit.controls import (
    ROOT,
    CatalogError,
    gdpr_error,
    hipaa_error,
    load_catalog,
    load_pci_requirements,
    parse_catalog,
    pci_list_errors,
    pci_parents,
    reference_errors,
)

pytestmark = pytest.mark.control("CMP-02")

RULES = ROOT / "playbooks/roles/monitoring/files/rules"

GOOD: dict[str, Any] = {
    "id": "NET-99",
    "title": "A title",
    "rationale": "A reason.",
    "practice": 10,
    "pci_dss": ["1.3.1"],
    "gdpr": ["Art. 32(1)(b)"],
    "hipaa": ["164.312(e)(1)"],
    "severity": "high",
    "layers": ["cloud"],
}


def one_control(**changes: Any) -> list[str]:
    entry = copy.deepcopy(GOOD) | changes
    return reference_errors(parse_catalog({"controls": [entry]}))


# --- the list of requirements ---------------------------------------------------------------


def test_the_list_has_the_twelve_requirements_and_every_sub_requirement_heading() -> None:
    reqs = load_pci_requirements()
    assert [n for n in reqs if "." not in n] == [str(i) for i in range(1, 13)]
    headings = {n for n in reqs if n.count(".") == 1}
    # v4.0 has 63 sub-requirement headings: 5, 3, 7, 2, 4, 5, 3, 6, 5, 7, 6 and 10 under 1-12.
    per_requirement = [sum(1 for h in headings if h.split(".")[0] == str(i)) for i in range(1, 13)]
    assert per_requirement == [5, 3, 7, 2, 4, 5, 3, 6, 5, 7, 6, 10]
    # every heading is numbered without gaps, and carries at least one defined requirement
    for i, count in enumerate(per_requirement, start=1):
        assert {f"{i}.{k}" for k in range(1, count + 1)} <= headings
    assert all(any(n.startswith(h + ".") for n in reqs) for h in headings)
    assert all(title and len(title) <= 120 for title in reqs.values())


def test_every_number_in_the_list_has_its_parent_in_the_list() -> None:
    reqs = load_pci_requirements()
    assert pci_list_errors(reqs) == []
    assert all(set(pci_parents(n)) <= set(reqs) for n in reqs)


@pytest.mark.parametrize(
    ("number", "parents"),
    [
        ("10", []),
        ("10.4", ["10"]),
        ("10.4.1.1", ["10", "10.4", "10.4.1"]),
        ("9.5.1.2.1", ["9", "9.5", "9.5.1", "9.5.1.2"]),
    ],
)
def test_parent_chain(number: str, parents: list[str]) -> None:
    assert pci_parents(number) == parents


@pytest.mark.parametrize(
    ("number", "title_word"),
    # spot checks against the standard: numbers that tools have got wrong, and their subject
    [("3.5.1", "PAN"), ("8.4.1", "administrative"), ("8.3.10.1", "Service providers"), ("10.4.1.1", "Automated"),
     ("10.7.2", "Failures"), ("11.5.2", "change-detection"), ("12.6.3.1", "phishing"), ("6.4.3", "Payment page")],
)  # fmt: skip
def test_known_requirements_are_listed_with_their_subject(number: str, title_word: str) -> None:
    assert title_word.lower() in load_pci_requirements()[number].lower()


@pytest.mark.parametrize("number", ["10.9.9", "3.4.3", "8.3.12", "12.11", "1.6", "11.5.3", "8.1.3", "3.5.2", "10.8"])
def test_numbers_from_older_versions_or_invented_are_not_listed(number: str) -> None:
    # v3.2.1 numbers (8.1.3, 10.8, 3.4.x …) and invented ones must not pass as v4.0
    assert number not in load_pci_requirements()


def test_a_broken_list_is_refused_with_the_place_named(tmp_path: Path) -> None:
    unquoted = tmp_path / "unquoted.yaml"
    unquoted.write_text('requirements:\n  "1": Install\n  1.1: Processes\n')
    with pytest.raises(CatalogError, match="bad requirement number 1.1"):
        load_pci_requirements(unquoted)
    orphan = tmp_path / "orphan.yaml"
    orphan.write_text(yaml.safe_dump({"requirements": {"1": "a", "1.2.1": "b"}}))
    assert pci_list_errors(load_pci_requirements(orphan)) == ["PCI DSS 1.2.1: its parent 1.2 is not in the list"]
    with pytest.raises(CatalogError, match="not found"):
        load_pci_requirements(tmp_path / "missing.yaml")


# --- the catalogue against the list ---------------------------------------------------------


def test_every_catalogue_reference_is_real_and_well_formed() -> None:
    assert reference_errors(load_catalog()) == []


def test_every_catalogue_control_that_cites_pci_dss_cites_a_defined_requirement_not_a_heading() -> None:
    # an assessor tests defined requirements (X.Y.Z); a heading or a principal requirement is too vague to trace
    vague = [(c.id, p) for c in load_catalog().controls for p in c.pci_dss if p.count(".") < 2]
    assert vague == []


def test_policies_and_alert_rules_cite_only_real_requirements() -> None:
    from policies.rules import all_metadata

    reqs = load_pci_requirements()
    bad = [(m.name, p) for m in all_metadata() for p in m.pci_dss if p not in reqs]
    for path in sorted(RULES.glob("*.yml")):
        if path.name.endswith(".test.yml"):
            continue
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in (r for r in group["rules"] if "alert" in r):  # recording rules carry no labels
                pci = str(rule.get("labels", {}).get("pci", ""))
                bad += [
                    (f"{path.name}:{rule.get('alert')}", p.strip()) for p in pci.split(",") if p.strip() not in reqs
                ]
    assert bad == []


# --- attacker-style: what a careless or dishonest edit looks like ----------------------------


def test_the_good_control_passes() -> None:
    assert one_control() == []


@pytest.mark.parametrize("number", ["10.9.9", "8.1.3", "12.11.1", "3.4.3"])
def test_a_made_up_pci_number_fails_naming_control_and_number(number: str) -> None:
    assert one_control(pci_dss=["1.3.1", number]) == [
        f"NET-99: PCI DSS {number!r} is not a requirement of PCI DSS v4.0 (controls/pci_dss_v4.yaml)"
    ]


def test_a_made_up_number_in_the_real_catalogue_is_caught() -> None:
    data = yaml.safe_load((ROOT / "controls/catalog.yaml").read_text())
    target = next(c for c in data["controls"] if c["id"] == "LOG-06")
    target["pci_dss"].append("10.9.9")
    errors = reference_errors(parse_catalog(data))
    assert errors == ["LOG-06: PCI DSS '10.9.9' is not a requirement of PCI DSS v4.0 (controls/pci_dss_v4.yaml)"]


@pytest.mark.parametrize(
    "ref",
    ["Art 32", "Article 32", "Art. 0", "Art. 100", "Art. 32(1)(A)", "Art. 32(a)", "Art. 32 (1)", "art. 15",
     "Art. 32(1)(a)(i)", "Art. 32(1)(a) ", "GDPR 32"],
)  # fmt: skip
def test_a_malformed_gdpr_reference_fails_naming_control_and_reference(ref: str) -> None:
    errors = one_control(gdpr=[ref])
    assert len(errors) == 1 and errors[0].startswith("NET-99: ") and repr(ref) in errors[0]


@pytest.mark.parametrize("ref", ["Art. 5", "Art. 99", "Art. 32(1)", "Art. 32(1)(d)", "Art. 6(1)(f)", "Art. 17"])
def test_well_formed_gdpr_references_pass(ref: str) -> None:
    assert gdpr_error(ref) is None


@pytest.mark.parametrize(
    "ref",
    ["164.312", "164.308(a)(1)(ii)(D)", "164.316(b)(2)(i)", "164.404(a)", "164.530(c)(1)", "164.312(a)(2)(iv)",
     "164.308(a)(7)(ii)(B)", "164.314(a)(2)(i)(A)"],
)  # fmt: skip
def test_well_formed_hipaa_references_pass(ref: str) -> None:
    assert hipaa_error(ref) is None


@pytest.mark.parametrize(
    "ref",
    [
        "164.312(A)",  # paragraph levels out of order
        "164.312(a)(ii)",  # skips the numbered level
        "164.308(a)(1)(iiii)",  # not a roman numeral
        "164.308(a)(1)(ii)(D)(1)",  # deeper than the rule goes
        "45 CFR 164.312(b)",  # no prefix: the catalogue cites sections bare
        "164.312 (b)",
        "160.103",  # Part 160, not 164
        "164.12(b)",
        "164.200",  # between the rules
        "164.320(a)",  # after the Security Rule ends (164.318)
        "164.535",  # after the Privacy Rule ends (164.534)
        "164.104",  # general provisions, not a rule
    ],
)
def test_a_malformed_or_out_of_range_hipaa_reference_fails_naming_control_and_reference(ref: str) -> None:
    errors = one_control(hipaa=[ref])
    assert len(errors) == 1 and errors[0].startswith("NET-99: ") and repr(ref) in errors[0]


def test_every_bad_reference_of_a_control_is_reported_not_only_the_first() -> None:
    errors = one_control(pci_dss=["10.9.9", "4.2.1"], gdpr=["Art. 132"], hipaa=["164.999"])
    assert [e.split(":")[0] for e in errors] == ["NET-99"] * 3
    assert any("'10.9.9'" in e for e in errors) and any("'Art. 132'" in e for e in errors)
    assert any("'164.999'" in e for e in errors)
