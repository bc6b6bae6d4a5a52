"""`billkit verify` only reads: no lab check outside the drills stops, kills, writes or trips a limit.

A static scan (tests/unit/drillscan.py) of every lab test not marked ``drill``, of the fixtures it asks for and of
the test folders' helpers it reaches. A drill is ``pytest.mark.drill("name", disrupts="...")``: one name per module.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from tests.unit.drillscan import Finding, Index, drill_marks, scan

# Flagged by the patterns, yet reads: what they send is refused before anything is changed.
REFUSED = {
    "tests/hosts/edge/test_waf.py::test_attacks_are_blocked_before_the_app":
        "each attack is answered 403 by the WAF: none reaches the app",
    "tests/hosts/edge/test_waf.py::test_audit_log_keeps_no_request_headers_or_bodies":
        "both requests are answered 403 by the WAF: none reaches the app",
    "tests/hosts/edge/test_units.py::test_the_delivered_wrapping_token_was_used_once_and_is_dead":
        "Vault refuses to unwrap a token that was already unwrapped",
}  # fmt: skip


@pytest.fixture(scope="module")
def index() -> Index:
    return Index()


@pytest.mark.control("CMP-07")
def test_no_lab_check_outside_the_drills_acts(index: Index) -> None:
    acting: dict[str, list[Finding]] = {}
    for f in scan(index):
        if f.test not in REFUSED:
            acting.setdefault(f.test, []).append(f)
    assert not acting, (
        f"{len(acting)} lab tests that `billkit verify` runs act on the lab; mark them "
        '`pytest.mark.drill("<name>", disrupts="...")` (the module\'s drill name) or make them read:\n  '
        + "\n  ".join(
            f"{test}: {'; '.join(dict.fromkeys(f.what for f in fs))} (first: {fs[0].where.rsplit('::', 1)[1]}"
            f": {fs[0].text[:80]})"
            for test, fs in acting.items()
        )  # fmt: skip
    )


@pytest.mark.control("CMP-07")
def test_every_refused_exception_is_a_read_check_still_flagged(index: Index) -> None:
    """An exception that no longer applies (renamed, now a drill, no longer flagged) is removed, not kept."""
    flagged = {f.test for f in scan(index)}
    assert set(REFUSED) <= flagged, f"stale exceptions: {sorted(set(REFUSED) - flagged)}"


@pytest.mark.control("CMP-07")
def test_the_scan_catches_every_known_drill(index: Index) -> None:
    """The patterns are not vacuous: with the drill marks ignored, every drill would be flagged."""
    drills = {test for test, _ in drill_marks(index)}
    assert len(drills) >= 20, drills
    flagged = {f.test for f in scan(index, ignore_drill=True)}
    assert drills <= flagged, f"drills the patterns would not catch: {sorted(drills - flagged)}"


@pytest.mark.control("CMP-07")
def test_every_drill_mark_has_a_name_and_what_it_disrupts_one_name_per_module(index: Index) -> None:
    by_module: dict[str, set[str]] = {}
    bad = []
    for test, mark in drill_marks(index):
        ok = (
            isinstance(mark, ast.Call)
            and len(mark.args) == 1
            and isinstance(mark.args[0], ast.Constant)
            and isinstance(mark.args[0].value, str)
            and [k.arg for k in mark.keywords] == ["disrupts"]
        )
        if not ok:
            bad.append(f"{test}: {ast.unparse(mark)}")
            continue
        by_module.setdefault(test.split("::")[0], set()).add(mark.args[0].value)  # type: ignore[union-attr]
    assert not bad, 'a drill is pytest.mark.drill("name", disrupts="what it stops or writes"):\n' + "\n".join(bad)
    assert all(len(names) == 1 for names in by_module.values()), by_module
    names = [next(iter(n)) for n in by_module.values()]
    assert len(names) == len(set(names)), f"a drill name is used by two modules: {by_module}"


SYNTHETIC = {
    "conftest.py": """
        import pytest

        @pytest.fixture(scope="module")
        def restarted(lab_up):
            ssh("db-1", "sudo systemctl restart postgresql")

        def plant(host):
            run(host, ["sudo", "tee", "/run/x"])
    """,
    "sub/test_mixed.py": """
        import pytest
        from conftest import plant

        pytestmark = pytest.mark.lab
        DRILL = pytest.mark.drill("mixed", disrupts="restarts PostgreSQL")

        def test_reads(host):
            assert host.service("postgresql").is_running
            assert "DROP" not in "a docstring or a word"

        def test_needs_the_restart(restarted):
            pass

        def test_plants_through_a_helper():
            plant("app-1")

        def test_rows(conn):
            conn.execute("INSERT INTO t VALUES (1)")

        def test_floods(web):
            assert 429 in [web.get("/login").status_code for _ in range(40)]

        @DRILL
        def test_marked_drill(restarted):
            pass

        @pytest.mark.drill("mixed", disrupts="kills")
        def test_marked_inline():
            run("db-1", ["sudo", "systemctl", "kill", "postgresql"])
    """,
    "test_not_lab.py": """
        def test_local(tmp_path):
            (tmp_path / "x").write_text("local scratch")
            run("x", ["systemctl", "stop", "y"])
    """,
}


@pytest.mark.control("CMP-07")
def test_the_guard_fails_on_an_unmarked_acting_check(tmp_path: Path) -> None:
    """A synthetic tests folder: acting through a conftest fixture, an imported helper, SQL or a flood is
    caught; a read, a drill and a test that is not a lab test are not."""
    root = tmp_path / "hosts"
    for rel, text in SYNTHETIC.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    found = {f.test.rsplit("::", 1)[1]: f.what for f in scan(Index(root))}
    assert found == {
        "test_needs_the_restart": "starts, stops or restarts a unit",
        "test_plants_through_a_helper": "writes a file on a host",
        "test_rows": "writes to a database",
        "test_floods": "expects a rate limit (429)",
    }, found
