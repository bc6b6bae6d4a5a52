"""Waivers as data (controls/waivers.yaml): who accepted which gap, why, and until when."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from billkit.controls import ROOT, Catalog

WAIVERS_PATH = ROOT / "controls" / "waivers.yaml"
WAIVER_ID = re.compile(r"^WVR-\d{2,3}$")
FIELDS = ("id", "controls", "justification", "approver", "expires")


class WaiverError(ValueError):
    """controls/waivers.yaml is malformed; the message names the waiver and the fix."""


@dataclass(frozen=True)
class Waiver:
    id: str
    controls: tuple[str, ...]
    justification: str
    approver: str
    expires: dt.date

    def expired(self, today: dt.date) -> bool:
        return today > self.expires


def _parse(entry: Any, i: int, catalog: Catalog) -> Waiver:
    where = f"waiver #{i + 1}"
    if not isinstance(entry, dict):
        raise WaiverError(f"{where}: expected a mapping with {', '.join(FIELDS)}")
    if isinstance(entry.get("id"), str):
        where = f"waiver {entry['id']}"
    missing = [k for k in FIELDS if k not in entry]
    extra = sorted(set(entry) - set(FIELDS))
    if missing or extra:
        raise WaiverError(f"{where}: missing {missing or 'nothing'}, unknown {extra or 'nothing'}; fields are {FIELDS}")
    if not isinstance(entry["id"], str) or not WAIVER_ID.match(entry["id"]):
        raise WaiverError(f"{where}: bad id {entry['id']!r}; write WVR-01, WVR-02, …")
    controls = entry["controls"]
    if not isinstance(controls, list) or not controls or not all(isinstance(c, str) for c in controls):
        raise WaiverError(f"{where}: 'controls' must be a non-empty list of control IDs")
    unknown = catalog.unknown(controls)
    if unknown:
        raise WaiverError(f"{where}: unknown or retired control(s) {', '.join(unknown)}; waive catalogue controls only")
    for key in ("justification", "approver"):
        if not isinstance(entry[key], str) or not entry[key].strip():
            raise WaiverError(f"{where}: '{key}' must say who and why (a non-empty string)")
    expires = entry["expires"]
    if not isinstance(expires, dt.date) or isinstance(expires, dt.datetime):
        raise WaiverError(f"{where}: 'expires' must be a date like 2027-03-31, got {expires!r}")
    return Waiver(entry["id"], tuple(controls), entry["justification"].strip(), entry["approver"].strip(), expires)


def parse_waivers(data: Any, catalog: Catalog, source: str = "waivers") -> tuple[Waiver, ...]:
    if data is None:
        return ()
    if not isinstance(data, dict) or not isinstance(data.get("waivers", []), list):
        raise WaiverError(f"{source}: expected a mapping with a 'waivers' list")
    waivers = tuple(_parse(e, i, catalog) for i, e in enumerate(data.get("waivers") or []))
    ids = [w.id for w in waivers]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise WaiverError(f"{source}: duplicate waiver id(s) {', '.join(dup)}")
    return waivers


def load_waivers(catalog: Catalog, path: Path = WAIVERS_PATH) -> tuple[Waiver, ...]:
    if not path.exists():
        return ()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise WaiverError(f"{path}: not valid YAML: {exc}") from None
    return parse_waivers(data, catalog, str(path))
