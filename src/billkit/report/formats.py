"""summary.json, junit.xml (one case per control) and results.sarif (policy violations + failed host checks)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET  # noqa: S405 - building, not parsing
from pathlib import Path
from typing import Any

from billkit.report.model import FAILED, MANUAL, NOT_ASSESSED, NOT_SATISFIED, WAIVED, Report


def write_summary(report: Report, out: Path) -> None:
    (out / "summary.json").write_text(json.dumps(report.summary(), indent=2), encoding="utf-8")


def write_junit(report: Report, out: Path) -> None:
    counts = report.counts()
    suite = ET.Element(
        "testsuite",
        name=f"billkit-report-{report.stack}",
        tests=str(len(report.statuses)),
        failures=str(counts[NOT_SATISFIED]),
        errors="0",
        skipped=str(counts[NOT_ASSESSED] + counts[MANUAL] + counts[WAIVED]),
        timestamp=report.generated,
    )
    for cid, s in report.statuses.items():
        case = ET.SubElement(suite, "testcase", classname=f"practice-{s.control.practice}", name=cid)
        text = "; ".join(s.reasons)
        if s.status == NOT_SATISFIED:
            ET.SubElement(case, "failure", message=text[:1000] or "not satisfied")
        elif s.status != "satisfied":
            ET.SubElement(case, "skipped", message=f"{s.status}: {text}"[:1000])
    root = ET.Element("testsuites")
    root.append(suite)
    ET.ElementTree(root).write(out / "junit.xml", encoding="utf-8", xml_declaration=True)


def write_sarif(report: Report, policy_sarif: dict[str, Any] | None, out: Path) -> None:
    runs: list[dict[str, Any]] = [policy_sarif["runs"][0]] if policy_sarif else []
    failed = [r for r in report.results if r.outcome == FAILED and r.layer == "host"]
    rules = sorted({r.check.split("[")[0] for r in failed})
    runs.append(
        {
            "tool": {
                "driver": {
                    "name": "billkit-verify",
                    "version": "0.1.0",
                    "rules": [{"id": rid, "name": rid.rsplit("::", 1)[-1]} for rid in rules],
                }
            },
            "automationDetails": {"id": f"billkit-verify/{report.stack}"},
            "results": [
                {
                    "ruleId": r.check.split("[")[0],
                    "ruleIndex": rules.index(r.check.split("[")[0]),
                    "level": "error",
                    "message": {
                        "text": f"{r.check} ({', '.join(r.controls)}) failed on {r.host or 'the hosts'}: "
                        f"{r.message[:500]}"
                    },
                    "locations": [
                        {
                            "physicalLocation": {
                                "artifactLocation": {"uri": r.check.split("::")[0], "uriBaseId": "%SRCROOT%"}
                            }
                        }
                    ],
                    "properties": {"controls": list(r.controls), "host": r.host},
                }
                for r in failed
            ],
        }
    )
    doc = {"$schema": "https://json.schemastore.org/sarif-2.1.0.json", "version": "2.1.0", "runs": runs}
    (out / "results.sarif").write_text(json.dumps(doc, indent=2), encoding="utf-8")
