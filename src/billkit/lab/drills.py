"""The drills: lab tests that disrupt or write, each module one named drill (``billkit drill [NAME]``).

A drill is marked ``pytest.mark.drill("name", disrupts="what it stops or writes")``; `billkit verify`
runs only the lab tests without the mark, which read. The list comes from pytest's collection (no lab
needed): this module is also the pytest plugin that reports each collected drill test as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from billkit.checks import Check, layer_of
from billkit.controls import ROOT
from billkit.lab.state import junit_options

MARK = "lab and drill"
_OPTION = "--billkit-drills-json"


class DrillError(Exception):
    """The drills cannot be listed (a malformed mark, a name shared by two modules, a collection error)."""


@dataclass(frozen=True)
class Drill:
    name: str
    disrupts: str
    module: str  # tests/hosts/...py, relative to the checkout
    tests: tuple[Check, ...]

    @property
    def controls(self) -> tuple[str, ...]:
        return tuple(sorted({cid for t in self.tests for cid in t.controls}))


# --- pytest plugin (``-p billkit.lab.drills``) ----------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(_OPTION, dest="billkit_drills_json", default=None, help="write the selected drill tests as JSON")


def _describe(item: pytest.Item) -> dict[str, Any]:
    mark = item.get_closest_marker("drill")
    assert mark is not None  # noqa: S101 - only drill-marked items are described
    ids = list(dict.fromkeys(cid for m in item.iter_markers("control") for cid in m.args))
    layer = next((m.kwargs["layer"] for m in item.iter_markers("control") if m.kwargs.get("layer")), None)
    ok = len(mark.args) == 1 and isinstance(mark.args[0], str) and isinstance(mark.kwargs.get("disrupts"), str)
    return {
        "nodeid": item.nodeid,
        "module": Path(str(item.path)).resolve().relative_to(ROOT).as_posix(),
        "name": mark.args[0] if ok else None,
        "disrupts": mark.kwargs.get("disrupts") if ok else None,
        "controls": ids,
        "layer": layer_of(Path(str(item.path)), layer),
    }


def pytest_collection_finish(session: pytest.Session) -> None:
    out = session.config.getoption("billkit_drills_json", default=None)
    if out:
        items = [_describe(i) for i in session.items if i.get_closest_marker("drill")]
        Path(out).write_text(json.dumps(items), encoding="utf-8")


# --- listing and selecting --------------------------------------------------------------------


def group(items: list[dict[str, Any]]) -> list[Drill]:
    """Drills from the plugin's items: refuses a mark without name or ``disrupts``, and a name in two modules."""
    bad = sorted({i["nodeid"].split("[")[0] for i in items if not i["name"]})
    if bad:
        raise DrillError(
            'a drill mark is pytest.mark.drill("name", disrupts="what it stops or writes"); fix: ' + ", ".join(bad)
        )
    by_name: dict[str, list[dict[str, Any]]] = {}
    for i in items:
        by_name.setdefault(i["name"], []).append(i)
    drills = []
    for name, tests in sorted(by_name.items()):
        modules = sorted({t["module"] for t in tests})
        described = sorted({t["disrupts"] for t in tests})
        if len(modules) > 1 or len(described) > 1:
            raise DrillError(f"drill {name!r} must be one module with one description: {modules} {described}")
        checks = tuple(Check(t["nodeid"], tuple(t["controls"]), t["layer"]) for t in tests)
        drills.append(Drill(name, described[0], modules[0], checks))
    return drills


def collect_drills() -> list[Drill]:
    """Every drill of tests/hosts (pytest --collect-only; the lab need not run)."""
    with tempfile.TemporaryDirectory(prefix="billkit-drills-") as tmp:
        out = Path(tmp) / "drills.json"
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-p", __name__,
             "-m", MARK, f"{_OPTION}={out}", "tests/hosts"],
            cwd=ROOT, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode not in (0, 5) or not out.exists():
            raise DrillError(f"collecting the drills failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
        return group(json.loads(out.read_text(encoding="utf-8")))


def select(drills: list[Drill], names: list[str], every: bool) -> list[Drill]:
    """The drills asked for, in the order given; DrillError names the unknown ones and the valid names."""
    if every and names:
        raise DrillError("give drill names or --all, not both")
    if every:
        return drills
    known = {d.name: d for d in drills}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise DrillError(f"unknown drill {', '.join(unknown)}; the drills are: {', '.join(known)}")
    return [known[n] for n in dict.fromkeys(names)]


def run_args(selected: list[Drill], junit: Path) -> list[str]:
    """pytest's command line for these drills: their modules, drill tests only, JUnit as `billkit verify` writes it."""
    return [sys.executable, "-m", "pytest", "-q", "-m", MARK, *(d.module for d in selected), "-p", "no:cacheprovider",
            *junit_options(junit)]  # fmt: skip


def lab_problem() -> str | None:
    """What stops the drills here, and what to do (None when this checkout's lab is up, every role applied)."""
    from billkit.lab.state import LAB_DIR, lab_owner
    from billkit.lab.testing import lab_is_ready

    owner = lab_owner()
    if owner is None:
        return "no lab is running on this machine: run `./billkit up` first"
    if owner != str(LAB_DIR):
        return (f"the machine's lab belongs to another checkout ({Path(owner).parent}) and drills run only on this "
                "checkout's: run them there, or `billkit down` there and `./billkit up` here")  # fmt: skip
    if not lab_is_ready():
        return "this checkout's lab is not up (a host stopped or a role not applied): run `./billkit up` first"
    return None
