"""Host checks run against the lab: a lab-marked test brings the lab up first (idempotent)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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


@pytest.fixture(scope="session")
def lynis_started(lab_up: None) -> Iterator[Future[dict[str, subprocess.CompletedProcess[str]]]]:
    """Lynis on every host, running in the background from the first test that asks for it."""
    from tests.hosts.lynis_support import run_lynis

    with ThreadPoolExecutor(1) as pool:
        yield pool.submit(run_lynis)


@pytest.fixture(autouse=True)
def _lab_for_lab_tests(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("lab"):
        request.getfixturevalue("lab_up")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "lab_first: runs before the other tests of the session (drills that time a path through the "
        "central journal, before other tests' log bursts queue ahead of their events)",
    )  # fmt: skip


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    first = [i for i in items if i.get_closest_marker("lab_first")]
    if first:
        items[:] = first + [i for i in items if not i.get_closest_marker("lab_first")]
