"""The control catalogue loads, is complete enough to be real, and refuses malformed entries."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from billkit.controls import LAYERS, PRACTICES, CatalogError, load_catalog, parse_catalog

GOOD = {
    "id": "ENC-99",
    "title": "A title",
    "rationale": "A reason.",
    "practice": 1,
    "pci_dss": ["4.2.1"],
    "severity": "high",
    "layers": ["cloud"],
}


def catalog_with(*entries: dict) -> dict:
    return {"controls": [copy.deepcopy(e) for e in entries]}


def test_the_real_catalogue_loads_and_covers_every_practice_and_layer() -> None:
    catalog = load_catalog()
    assert len(catalog.controls) >= 45
    assert {c.practice for c in catalog.controls} == set(PRACTICES)
    assert {layer for c in catalog.controls for layer in c.layers} == set(LAYERS)
    # every control serves PCI DSS, or (for privacy) GDPR
    assert all(c.pci_dss or c.gdpr for c in catalog.controls)


@pytest.mark.parametrize(
    "pci_ref",
    ["3.5.1", "10.2.1.2", "12.6"],
)
def test_pci_references_in_v4_format_are_accepted(pci_ref: str) -> None:
    entry = {**GOOD, "pci_dss": [pci_ref]}
    assert parse_catalog(catalog_with(entry))["ENC-99"].pci_dss == (pci_ref,)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"practice": 11}, "control ENC-99 (#1): unknown practice 11; practices are 1–10"),
        ({"practice": True}, "unknown practice True"),
        ({"pci_dss": ["3.5.1", "PCI-3"]}, "bad PCI DSS reference(s) 'PCI-3'; write v4.0 requirement numbers"),
        ({"pci_dss": ["13.1"]}, "bad PCI DSS reference(s) '13.1'"),
        ({"pci_dss": ["3.5.1.2.9.1"]}, "bad PCI DSS reference(s) '3.5.1.2.9.1'"),
        ({"pci_dss": "3.5.1"}, "'pci_dss' must be a list of non-empty strings, got '3.5.1'"),
        ({"pci_dss": []}, "names no PCI DSS, GDPR or HIPAA reference"),
        ({"severity": "urgent"}, "unknown severity 'urgent'; use one of critical, high, medium, low"),
        ({"layers": ["network"]}, "layers ['network'] must be a non-empty list of distinct cloud, host, app"),
        ({"layers": []}, "layers [] must be a non-empty list"),
        ({"layers": ["app", "app"]}, "layers ['app', 'app'] must be a non-empty list of distinct"),
        ({"id": "enc1"}, "control enc1 (#1): bad id 'enc1'; use a family prefix and a number, like 'ENC-01'"),
        ({"title": "  "}, "control ENC-99 (#1): 'title' must be a non-empty string"),
        ({"owner": "me"}, "control ENC-99 (#1): unknown field(s) owner; allowed are"),
        ({"retired": ""}, "'retired' must say why the control was retired"),
    ],
)
def test_a_bad_field_is_refused_with_a_message_that_says_what_to_do(change: dict, message: str) -> None:
    with pytest.raises(CatalogError) as exc:
        parse_catalog(catalog_with({**GOOD, **change}))
    assert message in str(exc.value)


@pytest.mark.parametrize("field", ["id", "title", "rationale", "practice", "pci_dss", "severity", "layers"])
def test_a_missing_field_is_named(field: str) -> None:
    entry = {k: v for k, v in GOOD.items() if k != field}
    with pytest.raises(CatalogError) as exc:
        parse_catalog(catalog_with(entry))
    assert f"missing field(s) {field}; every control needs id, title" in str(exc.value)


def test_a_duplicate_id_is_refused_and_both_places_named() -> None:
    with pytest.raises(CatalogError) as exc:
        parse_catalog(catalog_with(GOOD, {**GOOD, "title": "Another"}))
    assert "duplicate id ENC-99 (controls #1 and #2); IDs are never reused" in str(exc.value)


def test_a_file_that_is_not_a_catalogue_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(CatalogError, match="expected a mapping with a 'controls' list at the top"):
        load_catalog(path)
    path.write_text("controls: [\n")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(path)
    with pytest.raises(CatalogError, match="catalogue not found"):
        load_catalog(tmp_path / "absent.yaml")


def test_retired_controls_stay_but_cannot_be_proven() -> None:
    catalog = parse_catalog(catalog_with(GOOD, {**GOOD, "id": "ENC-98", "retired": "replaced by ENC-99"}))
    assert [c.id for c in catalog.active()] == ["ENC-99"]
    assert catalog.unknown(["ENC-99", "ENC-98", "XYZ-01"]) == ["ENC-98", "XYZ-01"]


def test_the_catalogue_file_is_plain_yaml_with_a_version() -> None:
    data = yaml.safe_load(Path(__file__).resolve().parents[2].joinpath("controls/catalog.yaml").read_text())
    assert data["version"] == 1
