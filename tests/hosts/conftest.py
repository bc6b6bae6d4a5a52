"""Host checks run against the lab: a lab-marked test brings the lab up first (idempotent)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def lab_up() -> None:
    from billkit.lab.testing import ensure_lab

    ensure_lab()


@pytest.fixture(autouse=True)
def _lab_for_lab_tests(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("lab"):
        request.getfixturevalue("lab_up")
