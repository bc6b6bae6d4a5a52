"""The card sweep's package filter (TOK-01): a file exactly as its Debian package shipped it is not a leak,
while the same file changed, or a file no package owns, is still reported."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from billkit.lab.sweep import packaged_unchanged

DIGITS = b'{"zones": ["36227206271667 4111111111111111"]}'


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "var/lib/dpkg/info").mkdir(parents=True)
    (root / "usr/share/tz").mkdir(parents=True)
    (root / "usr/share/tz/data.json").write_bytes(DIGITS)
    digest = hashlib.md5(DIGITS, usedforsecurity=False).hexdigest()
    (root / "var/lib/dpkg/info/tzdata-js.md5sums").write_text(f"{digest}  usr/share/tz/data.json\n")
    (root / "srv").mkdir()
    (root / "srv/export.csv").write_bytes(DIGITS)  # the same bytes, but no package installed them
    return root


@pytest.mark.control("TOK-01")
def test_a_packaged_file_as_shipped_is_skipped_and_anything_else_is_kept(tmp_path: Path) -> None:
    root = _root(tmp_path)
    found = ["/usr/share/tz/data.json", "/srv/export.csv"]
    assert packaged_unchanged(root, found) == {"/usr/share/tz/data.json"}


@pytest.mark.control("TOK-01")
def test_a_packaged_file_someone_changed_is_still_reported(tmp_path: Path) -> None:
    root = _root(tmp_path)
    (root / "usr/share/tz/data.json").write_bytes(DIGITS + b"\n4242424242424242\n")
    assert packaged_unchanged(root, ["/usr/share/tz/data.json"]) == set()
