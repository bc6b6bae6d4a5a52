"""The link between checks and controls: the pytest plugin and the coverage computation.

A check is a test marked ``@pytest.mark.control("ID", ...)`` or a CrossGuard policy whose
metadata names control IDs. The layer a test proves is taken from where it lives
(tests/policies and tests/infra: cloud; tests/hosts and tests/lab: host; tests/app: app),
or from ``layer=`` on the marker.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from billkit.controls import LAYERS, ROOT, Catalog, load_catalog

# Every control must have a check in each of its layers: the suite fails otherwise (and
# `billkit controls --coverage` exits 1). Turn it off only while a new control is being built,
# never to hide a gap.
STRICT_COVERAGE = True

LAYER_BY_DIR = {"policies": "cloud", "infra": "cloud", "hosts": "host", "lab": "host", "app": "app"}


@dataclass(frozen=True)
class Check:
    name: str  # pytest node id, or "policy:<name>"
    controls: tuple[str, ...]
    layer: str | None


def layer_of(path: Path, marker_layer: str | None) -> str | None:
    if marker_layer:
        return marker_layer
    try:
        rel = path.resolve().relative_to(ROOT / "tests")
    except ValueError:
        return None
    return LAYER_BY_DIR.get(rel.parts[0]) if rel.parts else None


# --- pytest plugin (registered by tests/conftest.py) ------------------------------------

_catalog: Catalog | None = None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "control(*ids, layer=None): the catalogue control IDs this test proves")
    config.addinivalue_line("markers", "lab: needs the running local lab (billkit up); excluded by -m 'not lab'")
    config.addinivalue_line(
        "markers", "drill(name, disrupts=...): disrupts or writes (stops a service, seals a node, pays a canary): "
        "lab and tests only, run by `billkit drill NAME`, never by `billkit verify`, whose checks only read",
    )  # fmt: skip


def _item_check(item: pytest.Item) -> Check | None:
    ids: list[str] = []
    layer: str | None = None
    for mark in item.iter_markers("control"):
        ids.extend(mark.args)
        layer = layer or mark.kwargs.get("layer")
    if not ids:
        return None
    return Check(item.nodeid, tuple(dict.fromkeys(ids)), layer_of(Path(str(item.path)), layer))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a check that names an unknown control ID or layer (before any deselection)."""
    global _catalog
    _catalog = _catalog or load_catalog()
    errors: list[str] = []
    checks: list[Check] = []
    for item in items:
        check = _item_check(item)
        if check is None:
            continue
        checks.append(check)
        unknown = _catalog.unknown(check.controls)
        if unknown:
            errors.append(f"{item.nodeid}: unknown or retired control ID(s) {', '.join(unknown)}")
        if check.layer is not None and check.layer not in LAYERS:
            errors.append(f"{item.nodeid}: unknown layer {check.layer!r}; use one of {', '.join(LAYERS)}")
    if errors:
        raise pytest.UsageError(
            "checks name controls that are not in controls/catalog.yaml:\n  "
            + "\n  ".join(errors)
            + "\nFix the marker, or add the control to the catalogue."
        )
    dump = config.getoption("billkit_checks_json", default=None)
    if dump:
        Path(dump).write_text(json.dumps([c.__dict__ for c in checks]), encoding="utf-8")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--billkit-checks-json", dest="billkit_checks_json", default=None, help="write collected checks as JSON"
    )


# --- coverage -----------------------------------------------------------------------------


def collect_test_checks() -> list[Check]:
    """Collect (without running) every test of the suite and return those that name controls."""
    out = ROOT / ".billkit-checks.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         f"--billkit-checks-json={out}", "tests"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode not in (0, 5) or not out.exists():
        raise RuntimeError(f"collecting the test suite failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    try:
        data = json.loads(out.read_text(encoding="utf-8"))
    finally:
        out.unlink(missing_ok=True)
    return [Check(d["name"], tuple(d["controls"]), d["layer"]) for d in data]


def collect_policy_checks() -> list[Check]:
    """Every policy of the CrossGuard pack, as a cloud-layer check (policies.rules.control_links)."""
    try:
        from policies.rules import control_links  # type: ignore[attr-defined]
    except ImportError:
        return []
    links: dict[str, tuple[str, ...]] = control_links()
    return [Check(f"policy:{name}", tuple(ids), "cloud") for name, ids in sorted(links.items())]


@dataclass
class Coverage:
    # control id -> layer -> names of checks
    table: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)  # "check: ID"
    off_layer: list[str] = field(default_factory=list)  # a check in a layer the control doesn't list

    def missing(self, catalog: Catalog) -> list[tuple[str, str]]:
        """(control, layer) pairs without any check."""
        return [(c.id, layer) for c in catalog.active() for layer in c.layers if not self.table[c.id].get(layer)]


def compute_coverage(catalog: Catalog, checks: list[Check]) -> Coverage:
    cov = Coverage(table={c.id: {layer: [] for layer in c.layers} for c in catalog.active()})
    for check in checks:
        for cid in check.controls:
            if cid not in cov.table:
                cov.unknown.append(f"{check.name}: {cid}")
                continue
            if check.layer is None:
                continue
            if check.layer not in cov.table[cid]:
                cov.off_layer.append(f"{check.name}: {cid} has no '{check.layer}' layer")
                continue
            cov.table[cid][check.layer].append(check.name)
    return cov


def coverage_report(catalog: Catalog | None = None) -> tuple[Catalog, Coverage]:
    catalog = catalog or load_catalog()
    return catalog, compute_coverage(catalog, collect_test_checks() + collect_policy_checks())


def as_json(catalog: Catalog, cov: Coverage) -> dict[str, Any]:
    return {
        "strict": STRICT_COVERAGE,
        "controls": cov.table,
        "missing": [{"control": c, "layer": layer} for c, layer in cov.missing(catalog)],
        "unknown": cov.unknown,
        "off_layer": cov.off_layer,
    }
