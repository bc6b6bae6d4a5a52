"""The check <-> control link: the marker, the collection hook, and coverage."""

from __future__ import annotations

import pytest

from billkit import checks
from billkit.checks import Check, compute_coverage, coverage_report
from billkit.controls import ROOT, load_catalog, parse_catalog

CATALOG = parse_catalog(
    {
        "controls": [
            {"id": "ENC-01", "title": "t", "rationale": "r", "practice": 1, "pci_dss": ["4.2.1"],
             "severity": "high", "layers": ["cloud", "host"]},
            {"id": "APP-01", "title": "t", "rationale": "r", "practice": 10, "pci_dss": ["6.2.4"],
             "severity": "high", "layers": ["app"]},
        ]
    }
)  # fmt: skip


def test_coverage_lists_checks_per_control_and_layer_and_what_is_missing() -> None:
    cov = compute_coverage(
        CATALOG,
        [
            Check("tests/policies/test_x.py::test_tls", ("ENC-01",), "cloud"),
            Check("policy:aws-alb-listener-configure-tls", ("ENC-01",), "cloud"),
            Check("tests/app/test_y.py::test_cookie", ("APP-01", "ENC-01"), "app"),
            Check("tests/unit/test_z.py::test_ghost", ("GHO-01",), None),
        ],
    )
    assert cov.table["ENC-01"]["cloud"] == [
        "tests/policies/test_x.py::test_tls",
        "policy:aws-alb-listener-configure-tls",
    ]
    assert cov.missing(CATALOG) == [("ENC-01", "host")]
    assert cov.unknown == ["tests/unit/test_z.py::test_ghost: GHO-01"]
    assert cov.off_layer == ["tests/app/test_y.py::test_cookie: ENC-01 has no 'app' layer"]


@pytest.mark.parametrize(
    ("rel", "marker_layer", "expected"),
    [
        ("tests/policies/test_a.py", None, "cloud"),
        ("tests/infra/test_a.py", None, "cloud"),
        ("tests/hosts/test_a.py", None, "host"),
        ("tests/lab/test_a.py", None, "host"),
        ("tests/app/test_a.py", None, "app"),
        ("tests/unit/test_a.py", None, None),
        ("tests/unit/test_a.py", "host", "host"),
    ],
)
def test_the_layer_of_a_check_comes_from_its_folder_or_its_marker(rel: str, marker_layer, expected) -> None:
    assert checks.layer_of(ROOT / rel, marker_layer) == expected


def test_a_test_naming_an_unknown_control_is_refused_at_collection(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bad="""
        import pytest

        @pytest.mark.control("ENC-01", "NOPE-42")
        def test_something():
            pass
        """
    )
    result = pytester.runpytest("-p", "billkit.checks")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown or retired control ID(s) NOPE-42*", "*add the control to the catalogue*"])


def test_a_test_naming_known_controls_is_collected(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_good="""
        import pytest

        @pytest.mark.control("ENC-01", "APP-01")
        def test_something():
            pass
        """
    )
    result = pytester.runpytest("-p", "billkit.checks", "--strict-markers")
    result.assert_outcomes(passed=1)


def test_every_check_of_the_suite_names_known_controls_in_their_own_layers() -> None:
    """The suite-wide coverage gate. Strict (every control checked in each layer) is one flag."""
    catalog, cov = coverage_report(load_catalog())
    assert cov.unknown == []
    assert cov.off_layer == []
    if checks.STRICT_COVERAGE:
        assert cov.missing(catalog) == []
