"""The app hosts install only APP_REQUIREMENTS from the wheelhouse: it must hold every distribution
app_stub imports, or an app host fails to start (found when a UI library was added to the lock only)."""

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from billkit.lab.app import APP_REQUIREMENTS

APP = Path(__file__).resolve().parents[2] / "app_stub"


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _third_party_imports() -> set[str]:
    tops: set[str] = set()
    for path in APP.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                tops |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                tops.add(node.module.split(".")[0])
    return {t for t in tops if t not in sys.stdlib_module_names and t not in ("app_stub", "__future__")}


def _installed_with(requirements: tuple[str, ...]) -> set[str]:
    """The distributions the requirements bring, their own requirements (and requested extras) included."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = _normalise(req.name)
        if name in seen:
            continue
        seen.add(name)
        for line in importlib.metadata.requires(req.name) or []:
            dep = Requirement(line)
            extras = req.extras or {""}
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in extras):
                todo.append(dep)
    return seen


@pytest.mark.control("HRD-08")
def test_every_library_the_app_imports_is_shipped_to_the_app_hosts() -> None:
    shipped = _installed_with(APP_REQUIREMENTS)
    dists = importlib.metadata.packages_distributions()
    missing = {}
    for module in _third_party_imports():
        names = {_normalise(d) for d in dists.get(module, [module])}
        if not names & shipped:
            missing[module] = sorted(names)
    assert not missing, f"add to billkit.lab.app.APP_REQUIREMENTS: {missing}"
