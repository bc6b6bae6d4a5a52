"""Fixtures of the tests of the Pulumi program: one mock run per stack (billkit.plan.captured)."""

import pytest

from billkit.plan import Resource, captured


@pytest.fixture(scope="module")
def prod() -> tuple[Resource, ...]:
    return captured("prod")


@pytest.fixture(scope="module")
def dev() -> tuple[Resource, ...]:
    return captured("dev")
