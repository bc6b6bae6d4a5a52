"""OSCAL 1.x documents built with compliance-trestle's pydantic models (validated as they are built and read back).

component-definition: the kit as one component, each control's implementation statement; assessment-plan:
the controls reviewed and how; assessment-results: one observation per evidence file (method, collected
time, link, hash) and one finding per control. OSCAL findings are only satisfied or not-satisfied: a control
not assessed, manual or waived gets a finding without an objective status and a ``billkit-status`` prop.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any, TypeVar

from trestle.oscal import OSCAL_VERSION, common
from trestle.oscal import assessment_plan as ap
from trestle.oscal import assessment_results as ar
from trestle.oscal import component as cd

from billkit.report.model import NOT_SATISFIED, SATISFIED, Report

T = TypeVar("T")
NS = "urn:billkit:report"
FILES = {
    "component-definition.json": cd.ComponentDefinition,
    "assessment-plan.json": ap.AssessmentPlan,
    "assessment-results.json": ar.AssessmentResults,
}


class OscalError(ValueError):
    """An OSCAL document of the bundle does not validate."""


def _m(cls: type[T], **fields: Any) -> T:
    """Build a trestle model by field name (its signature only knows OSCAL's hyphenated aliases)."""
    return cls(**fields)


def _u() -> str:
    return str(uuid.uuid4())


def _prop(name: str, value: str) -> common.Property:
    return _m(common.Property, name=name, value=value, ns=NS)


def _metadata(title: str, when: dt.datetime) -> common.Metadata:
    return _m(common.Metadata, title=title, last_modified=when, version="1.0", oscal_version=OSCAL_VERSION)


def _reviewed(report: Report) -> common.ReviewedControls:
    ids = [_m(common.SelectControlById, control_id=cid) for cid in report.statuses]
    return _m(common.ReviewedControls, control_selections=[_m(common.ControlSelections, include_controls=ids)])


def component_definition(report: Report, when: dt.datetime) -> cd.ComponentDefinition:
    reqs = [
        _m(
            cd.ImplementedRequirement,
            uuid=_u(),
            control_id=s.control.id,
            description=f"{s.control.title}. {s.control.rationale}",
            props=[
                _prop("practice", str(s.control.practice)),
                _prop("severity", s.control.severity),
                *(_prop("pci-dss", p) for p in s.control.pci_dss),
                *(_prop("layer", layer) for layer in s.control.layers),
            ],
        )
        for s in report.statuses.values()
    ]
    impl = _m(
        cd.ControlImplementation,
        uuid=_u(),
        source="controls/catalog.yaml",
        description="billkit's control catalogue",
        implemented_requirements=reqs,
    )
    comp = _m(
        cd.DefinedComponent,
        uuid=_u(),
        type="software",
        title="billkit",
        description="Deployment kit for billing software: AWS stack, policy pack, hardened hosts, reference app",
        control_implementations=[impl],
    )
    return _m(
        cd.ComponentDefinition, uuid=_u(), metadata=_metadata("billkit component definition", when), components=[comp]
    )


def assessment_plan(report: Report, when: dt.datetime) -> ap.AssessmentPlan:
    return _m(
        ap.AssessmentPlan,
        uuid=_u(),
        metadata=_metadata(f"billkit assessment plan, stack {report.stack}", when),
        import_ssp=_m(common.ImportSsp, href="component-definition.json", remarks="The kit's component definition"),
        reviewed_controls=_reviewed(report),
    )


def _finding_status(status: str) -> common.ObjectiveStatus | None:
    if status == SATISFIED:
        return _m(common.ObjectiveStatus, state=common.ObjectiveStatusStateValidValues.satisfied, reason="pass")
    if status == NOT_SATISFIED:
        return _m(common.ObjectiveStatus, state=common.ObjectiveStatusStateValidValues.not_satisfied, reason="fail")
    return None


def assessment_results(report: Report, when: dt.datetime) -> ar.AssessmentResults:
    obs_uuid: dict[str, str] = {}
    observations: list[common.Observation] = []
    for ev in report.evidence:
        obs_uuid[ev.id] = _u()
        observations.append(
            _m(
                common.Observation,
                uuid=obs_uuid[ev.id],
                title=ev.id,
                description=ev.description,
                methods=[ev.method.upper()],
                collected=dt.datetime.fromisoformat(ev.collected),
                props=[_prop("tool", ev.tool), _prop("tool-version", ev.version), _prop("sha256", ev.sha256)],
                relevant_evidence=[
                    _m(common.RelevantEvidence, href=ev.path, description=f"{ev.path} sha256:{ev.sha256}")
                ],
            )
        )
    findings = [
        _m(
            common.Finding,
            uuid=_u(),
            title=f"{cid}: {s.status}",
            description="; ".join(s.reasons) or "every layer passed",
            target=_m(
                common.FindingTarget,
                type="objective-id",
                target_id=cid,
                status=_finding_status(s.status),
                props=[_prop("billkit-status", s.status.replace(" ", "-"))],
            ),
            related_observations=[
                _m(common.RelatedObservation, observation_uuid=obs_uuid[e])
                for e in sorted({r.evidence for r in s.results})
            ]
            or None,
        )
        for cid, s in report.statuses.items()
    ]
    result = _m(
        ar.Result,
        uuid=_u(),
        title=f"billkit report, stack {report.stack}",
        description="; ".join(report.notes) or "billkit",
        start=when,
        end=when,
        reviewed_controls=_reviewed(report),
        observations=observations or None,
        findings=findings,
    )
    return _m(
        ar.AssessmentResults,
        uuid=_u(),
        metadata=_metadata(f"billkit assessment results, stack {report.stack}", when),
        import_ap=_m(ar.ImportAp, href="assessment-plan.json"),
        results=[result],
    )


def write_all(report: Report, out: Path) -> list[str]:
    when = dt.datetime.fromisoformat(report.generated)
    docs: dict[str, Any] = {
        "component-definition.json": component_definition(report, when),
        "assessment-plan.json": assessment_plan(report, when),
        "assessment-results.json": assessment_results(report, when),
    }
    for name, doc in docs.items():
        doc.oscal_write(out / name)
    validate(out)
    return list(docs)


def validate(folder: Path) -> None:
    """Read every OSCAL document back through trestle's models; OscalError names the file and the fault."""
    for name, model in FILES.items():
        try:
            model.oscal_read(folder / name)
        except Exception as exc:  # noqa: BLE001 - trestle raises pydantic, JSON and its own errors
            raise OscalError(f"{name}: not a valid OSCAL {model.__name__}: {str(exc)[:600]}") from exc
