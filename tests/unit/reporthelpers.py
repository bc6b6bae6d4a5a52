"""Small builders for the report tests: synthetic JUnit files and checks, quick bundles."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from billkit.checks import Check
from billkit.report.run import Options, build

# Two app checks the synthetic JUnit reports on: CMP-04 is app-only, LOG-12 too.
APP_CHECKS = [
    Check("tests/app/test_fake.py::test_export", ("CMP-04",), "app"),
    Check("tests/app/test_fake.py::test_no_pan_in_logs[case]", ("LOG-12",), "app"),
]


def junit(path: Path, failing: set[str] = frozenset()) -> Path:  # type: ignore[assignment]
    cases = []
    for c in APP_CHECKS:
        name = c.name.split("::")[-1]
        body = f'<failure message="{name} failed">assert False</failure>' if name in failing else ""
        cases.append(f'<testcase classname="tests.app.test_fake" name="{name}" time="0.1">{body}</testcase>')
    stamp = dt.datetime.now().replace(microsecond=0).isoformat()
    path.write_text(
        f'<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" '
        f'failures="{len(failing)}" skipped="0" tests="{len(cases)}" timestamp="{stamp}">{"".join(cases)}'
        "</testsuite></testsuites>",
        encoding="utf-8",
    )
    return path


def quick(tmp: Path, name: str, failing: set[str] = frozenset(), waivers: Path | None = None, **kw):  # type: ignore[assignment]
    """A bundle without the policy plan (fast): the synthetic app JUnit only, no lab evidence."""
    (tmp / "no-lab").mkdir(exist_ok=True)
    opts = Options(out=tmp / name, junit=[junit(tmp / f"{name}.xml", failing)], evidence_dir=tmp / "no-lab",
                   checks=list(APP_CHECKS), plan=False, waivers=waivers or tmp / "no-waivers.yaml", **kw)  # fmt: skip
    return build(opts)
