"""Host checks run against the lab: a lab-marked test brings the lab up first (idempotent)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# testinfra's ansible:// backend runs ansible-inventory: the environment's own, first on PATH.
_bin = str(Path(sys.executable).parent)
if _bin not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")


@pytest.fixture(scope="session")
def lab_up() -> None:
    from billkit.lab.testing import ensure_lab

    ensure_lab()


@pytest.fixture(autouse=True)
def _lab_for_lab_tests(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("lab"):
        request.getfixturevalue("lab_up")
