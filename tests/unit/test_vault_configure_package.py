"""billkit.vault.configure is a package of one module per section: its names, policy files and fingerprint."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from billkit.vault import configure, deploy

PACKAGE = Path(configure.__file__).parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def _public_names(module: str) -> set[str]:
    """Top-level functions, classes and constants a module defines (not what it imports)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_")}


@pytest.mark.parametrize("module", MODULES)
def test_every_public_name_is_reexported(module: str) -> None:
    """Callers write ``configure.X``: a name defined in a section module but missing here would break them."""
    sub = importlib.import_module(f"billkit.vault.configure.{module}")
    names = _public_names(module)
    assert names, f"{module} defines nothing public"
    missing = sorted(n for n in names if n not in configure.__all__)
    assert not missing, f"not re-exported from billkit.vault.configure: {missing}"
    assert all(getattr(configure, n) is getattr(sub, n) for n in names)


def test_policy_dir_holds_the_policies_the_app_relies_on() -> None:
    assert configure.POLICY_DIR.resolve() == (PACKAGE.parent / "policies").resolve()
    texts = configure.policy_texts()
    assert {configure.BILLING_APP, configure.PAYMENT_PROCESSOR, "report-signing"} <= set(texts)
    assert all(text.strip() for text in texts.values())


def test_source_covers_every_module() -> None:
    """The lab re-converges when the configuration code changes: every module must count, not only __init__."""
    source = configure.source()
    for path in PACKAGE.glob("*.py"):
        assert path.read_bytes() in source, path.name
    assert configure.source() == source  # stable, so an unchanged tree needs no root session


def test_fingerprint_follows_the_configuration_code(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = configure.Settings()
    before = deploy.fingerprint((), settings, None)
    assert deploy.fingerprint((), settings, None) == before
    original = configure.source
    monkeypatch.setattr(configure, "source", lambda: original() + b"# edited\n")
    assert deploy.fingerprint((), settings, None) != before
