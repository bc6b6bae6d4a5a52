"""The report's data: evidence files, check results, and the status of every control.

A control is satisfied only when every layer it lists has passing results and none fails. A layer
without results is "not assessed", never passed. Waivers and manual assessment take precedence.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from billkit.controls import Catalog, Control
from billkit.report.waivers import Waiver

SATISFIED = "satisfied"
NOT_SATISFIED = "not satisfied"
WAIVED = "waived"
MANUAL = "manual"
NOT_ASSESSED = "not assessed"
STATUSES = (SATISFIED, NOT_SATISFIED, WAIVED, MANUAL, NOT_ASSESSED)

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass(frozen=True)
class Evidence:
    id: str  # "ev-NNN"
    path: str  # inside the bundle: evidence/<name>
    sha256: str
    collected: str  # ISO 8601, UTC: when the tool produced it (file time or its own field)
    method: str  # test | examine
    tool: str
    version: str
    description: str
    size: int = 0


@dataclass(frozen=True)
class Result:
    check: str  # pytest node id, "policy:<stack>:<control>" or an evidence name
    controls: tuple[str, ...]
    layer: str
    outcome: str  # passed | failed | skipped
    evidence: str  # Evidence.id
    host: str | None = None
    message: str = ""


@dataclass
class ControlStatus:
    control: Control
    status: str
    reasons: list[str] = field(default_factory=list)
    layers: dict[str, str] = field(default_factory=dict)  # layer -> passed | failed | not assessed
    results: list[Result] = field(default_factory=list)
    waiver: Waiver | None = None


@dataclass
class Report:
    generated: str
    stack: str
    catalog: Catalog
    evidence: list[Evidence]
    results: list[Result]
    statuses: dict[str, ControlStatus]
    lab_assessed: bool
    notes: list[str] = field(default_factory=list)
    stale_days: int = 30

    def evidence_by_id(self) -> dict[str, Evidence]:
        return {e.id: e for e in self.evidence}

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = dict.fromkeys(STATUSES, 0)
        for s in self.statuses.values():
            out[s.status] += 1
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "generated": self.generated,
            "stack": self.stack,
            "lab_assessed": self.lab_assessed,
            "stale_days": self.stale_days,
            "counts": self.counts(),
            "notes": self.notes,
            "controls": {
                cid: {
                    "status": s.status,
                    "practice": s.control.practice,
                    "pci_dss": list(s.control.pci_dss),
                    "layers": s.layers,
                    "reasons": s.reasons,
                    "waiver": None
                    if s.waiver is None
                    else {"id": s.waiver.id, "expires": s.waiver.expires.isoformat()},
                    "manual": s.control.manual,
                    "evidence": sorted({r.evidence for r in s.results}),
                }
                for cid, s in self.statuses.items()
            },
        }


def layer_outcome(results: list[Result]) -> str:
    outcomes = {r.outcome for r in results}
    if FAILED in outcomes:
        return FAILED
    return PASSED if PASSED in outcomes else NOT_ASSESSED


def control_status(control: Control, results: list[Result], waivers: list[Waiver], today: dt.date) -> ControlStatus:
    mine = [r for r in results if control.id in r.controls]
    layers = {layer: layer_outcome([r for r in mine if r.layer == layer]) for layer in control.layers}
    st = ControlStatus(control, NOT_ASSESSED, layers=layers, results=mine)
    failed = [r for r in mine if r.outcome == FAILED and r.layer in control.layers]
    for w in waivers:
        if control.id not in w.controls:
            continue
        st.waiver = w
        if w.expired(today):
            st.status = NOT_SATISFIED
            st.reasons.append(f"waiver {w.id} expired on {w.expires.isoformat()} (approved by {w.approver})")
            return st
        st.status = WAIVED
        st.reasons.append(f"waiver {w.id} until {w.expires.isoformat()} (approved by {w.approver}): {w.justification}")
        return st
    if control.manual:
        st.status = MANUAL
        st.reasons.append(f"assessed by people; the assessor records the result in: {control.manual}")
        return st
    if failed:
        st.status = NOT_SATISFIED
        st.reasons += [f"{r.layer}: {r.check} failed" + (f": {r.message[:200]}" if r.message else "") for r in failed]
        return st
    missing = [layer for layer, outcome in layers.items() if outcome != PASSED]
    if missing:
        st.reasons += [f"{layer} layer not assessed (no result in this run)" for layer in missing]
        return st
    st.status = SATISFIED
    return st


def statuses(
    catalog: Catalog, results: list[Result], waivers: list[Waiver], today: dt.date
) -> dict[str, ControlStatus]:
    return {c.id: control_status(c, results, waivers, today) for c in catalog.active()}


def regressions(baseline: dict[str, Any], current: dict[str, ControlStatus]) -> list[str]:
    """Controls satisfied in the baseline's summary.json and not now (gone counts as regressed)."""
    before = baseline.get("controls", {})
    return sorted(
        f"{cid}: {SATISFIED} → {current[cid].status if cid in current else 'absent'}"
        for cid, s in before.items()
        if s.get("status") == SATISFIED and (cid not in current or current[cid].status != SATISFIED)
    )
