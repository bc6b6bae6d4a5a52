"""Helpers of the tests of the Pulumi program: picking resources out of one captured mock run."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from billkit.plan import Resource


def of(resources: Iterable[Resource], kind: str) -> list[Resource]:
    return [r for r in resources if r.type == kind]


def one(resources: Iterable[Resource], kind: str) -> Resource:
    found = of(resources, kind)
    assert len(found) == 1, f"expected one {kind}, found {[r.name for r in found]}"
    return found[0]


def named(resources: Iterable[Resource], kind: str, name: str) -> Resource:
    found = [r for r in resources if r.type == kind and r.name == name]
    assert len(found) == 1, f"expected one {kind} named {name}, found {len(found)}"
    return found[0]


def doc(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else value
