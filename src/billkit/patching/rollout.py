"""The rolling patch run behind `billkit patch` (without --check): not built yet."""

from __future__ import annotations

from pathlib import Path


def rollout(*, hosts: list[str] | None, security_only: bool, under_load: bool, inventory: Path | None) -> int:
    """Patch the hosts one at a time; returns the exit code."""
    raise NotImplementedError("the rolling patch run is not built yet")
