"""The control catalogue (controls/catalog.yaml): typed, validated, with clear errors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CATALOG_PATH = ROOT / "controls" / "catalog.yaml"
PCI_REQUIREMENTS_PATH = ROOT / "controls" / "pci_dss_v4.yaml"

PRACTICES: dict[int, str] = {
    1: "Encryption in transit",
    2: "MFA and authentication",
    3: "Updates and patches",
    4: "Payment tokenization",
    5: "Role-based access",
    6: "Encryption at rest",
    7: "Backups",
    8: "Monitoring and audit logs",
    9: "Staff education",
    10: "Compliance",
}
LAYERS = ("cloud", "host", "app")
SEVERITIES = ("critical", "high", "medium", "low")
REQUIRED = ("id", "title", "rationale", "practice", "pci_dss", "severity", "layers")
OPTIONAL = ("gdpr", "hipaa", "retired", "manual")

ID_RE = re.compile(r"^[A-Z]{2,5}-\d{2,3}$")
# PCI DSS v4.0 requirement numbers: 1–12, then up to four sub-levels ("8.3.6", "10.2.1.2", "9.5.1.2.1").
# The format only; whether a number exists is checked against controls/pci_dss_v4.yaml.
PCI_RE = re.compile(r"^(?:[1-9]|1[0-2])(?:\.\d{1,2}){0,4}$")
# GDPR: "Art. 32", "Art. 32(1)", "Art. 32(1)(a)"; the regulation has 99 articles.
GDPR_RE = re.compile(r"^Art\. (?P<article>[1-9]\d?)(?:\(\d{1,2}\)(?:\([a-z]\))?)?$")
# HIPAA: a section of 45 CFR Part 164 with its paragraph chain, e.g. "164.308(a)(7)(ii)(A)".
HIPAA_RE = re.compile(
    r"^164\.(?P<section>\d{3})"
    r"(?:\([a-z]\)(?:\(\d{1,2}\)(?:\((?:i{1,3}|iv|vi{0,3}|ix|x)\)(?:\([A-Z]\))?)?)?)?$"
)
# Subparts C (Security Rule), D (Breach Notification Rule) and E (Privacy Rule) of Part 164.
HIPAA_SECTIONS = {"Security Rule": range(302, 319), "Breach Notification Rule": range(400, 415),
                  "Privacy Rule": range(500, 535)}  # fmt: skip


class CatalogError(ValueError):
    """The catalogue is malformed; the message says where and how to fix it."""


@dataclass(frozen=True)
class Control:
    id: str
    title: str
    rationale: str
    practice: int
    pci_dss: tuple[str, ...]
    severity: str
    layers: tuple[str, ...]
    gdpr: tuple[str, ...] = ()
    hipaa: tuple[str, ...] = ()
    retired: str | None = None
    # Assessed by people (training records, procedures): where the assessor records the result.
    manual: str | None = None

    @property
    def practice_name(self) -> str:
        return PRACTICES[self.practice]

    @property
    def active(self) -> bool:
        return self.retired is None


@dataclass(frozen=True)
class Catalog:
    controls: tuple[Control, ...]
    by_id: dict[str, Control] = field(repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.by_id.update({c.id: c for c in self.controls})

    def __getitem__(self, control_id: str) -> Control:
        return self.by_id[control_id]

    def __contains__(self, control_id: object) -> bool:
        return control_id in self.by_id

    def active(self) -> tuple[Control, ...]:
        return tuple(c for c in self.controls if c.active)

    def unknown(self, ids: list[str] | tuple[str, ...]) -> list[str]:
        """IDs that name no control, or a retired one (a check must not prove a retired control)."""
        return [i for i in ids if i not in self.by_id or not self.by_id[i].active]


def _str_list(entry: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise CatalogError(f"{where}: '{key}' must be a list of non-empty strings, got {value!r}")
    return tuple(value)


def _parse(entry: Any, index: int) -> Control:
    where = f"control #{index + 1}"
    if not isinstance(entry, dict):
        raise CatalogError(f"{where}: expected a mapping with keys {', '.join(REQUIRED)}, got {type(entry).__name__}")
    if isinstance(entry.get("id"), str):
        where = f"control {entry['id']} (#{index + 1})"
    missing = [k for k in REQUIRED if k not in entry]
    if missing:
        raise CatalogError(f"{where}: missing field(s) {', '.join(missing)}; every control needs {', '.join(REQUIRED)}")
    extra = sorted(set(entry) - set(REQUIRED) - set(OPTIONAL))
    if extra:
        allowed = ", ".join(REQUIRED + OPTIONAL)
        raise CatalogError(f"{where}: unknown field(s) {', '.join(extra)}; allowed are {allowed}")
    cid = entry["id"]
    if not isinstance(cid, str) or not ID_RE.match(cid):
        raise CatalogError(f"{where}: bad id {cid!r}; use a family prefix and a number, like 'ENC-01'")
    for key in ("title", "rationale"):
        if not isinstance(entry[key], str) or not entry[key].strip():
            raise CatalogError(f"{where}: '{key}' must be a non-empty string")
    practice = entry["practice"]
    if isinstance(practice, bool) or practice not in PRACTICES:
        raise CatalogError(f"{where}: unknown practice {practice!r}; practices are 1–10 ({_practice_list()})")
    pci = _str_list(entry, "pci_dss", where)
    bad = [p for p in pci if not PCI_RE.match(p)]
    if bad:
        raise CatalogError(
            f"{where}: bad PCI DSS reference(s) {', '.join(map(repr, bad))}; "
            "write v4.0 requirement numbers like '3.5.1' or '10.2.1.2'"
        )
    gdpr = _str_list(entry, "gdpr", where)
    hipaa = _str_list(entry, "hipaa", where)
    if not (pci or gdpr or hipaa):
        raise CatalogError(f"{where}: names no PCI DSS, GDPR or HIPAA reference; every control serves one")
    if entry["severity"] not in SEVERITIES:
        raise CatalogError(f"{where}: unknown severity {entry['severity']!r}; use one of {', '.join(SEVERITIES)}")
    layers = _str_list(entry, "layers", where)
    manual = entry.get("manual")
    if manual is not None and (not isinstance(manual, str) or not manual.strip()):
        raise CatalogError(f"{where}: 'manual' must name where the assessor records the result")
    if (not layers and manual is None) or any(x not in LAYERS for x in layers) or len(set(layers)) != len(layers):
        raise CatalogError(
            f"{where}: layers {list(layers)!r} must be a non-empty list of distinct {', '.join(LAYERS)} "
            "(empty only for a manual control)"
        )
    retired = entry.get("retired")
    if retired is not None and (not isinstance(retired, str) or not retired.strip()):
        raise CatalogError(f"{where}: 'retired' must say why the control was retired")
    return Control(
        id=cid,
        title=entry["title"].strip(),
        rationale=entry["rationale"].strip(),
        practice=practice,
        pci_dss=pci,
        severity=entry["severity"],
        layers=layers,
        gdpr=gdpr,
        hipaa=hipaa,
        retired=retired,
        manual=manual.strip() if manual else None,
    )


def _practice_list() -> str:
    return ", ".join(f"{n} {name}" for n, name in PRACTICES.items())


def parse_catalog(data: Any, source: str = "catalogue") -> Catalog:
    if not isinstance(data, dict) or not isinstance(data.get("controls"), list):
        raise CatalogError(f"{source}: expected a mapping with a 'controls' list at the top")
    controls: list[Control] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(data["controls"]):
        control = _parse(entry, i)
        if control.id in seen:
            raise CatalogError(
                f"{source}: duplicate id {control.id} (controls #{seen[control.id] + 1} and #{i + 1}); "
                "IDs are never reused: give the new control a new number"
            )
        seen[control.id] = i
        controls.append(control)
    return Catalog(tuple(controls))


def load_catalog(path: Path | str = CATALOG_PATH) -> Catalog:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogError(f"{path}: catalogue not found; it lives at controls/catalog.yaml in the kit") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML: {exc}") from None
    return parse_catalog(data, str(path))


# --- regulatory references -----------------------------------------------------------------


def load_pci_requirements(path: Path | str = PCI_REQUIREMENTS_PATH) -> dict[str, str]:
    """The PCI DSS v4.0 requirement numbers, in the standard's order: number -> short title."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(
            f"{path}: list of PCI DSS requirements not found; it lives at controls/pci_dss_v4.yaml"
        ) from None
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML: {exc}") from None
    reqs = data.get("requirements") if isinstance(data, dict) else None
    if not isinstance(reqs, dict) or not reqs:
        raise CatalogError(f"{path}: expected a mapping with a 'requirements' mapping of number -> title")
    out: dict[str, str] = {}
    for number, title in reqs.items():
        if not isinstance(number, str) or not PCI_RE.fullmatch(number):
            raise CatalogError(f'{path}: bad requirement number {number!r}; quote it, like "10.4.1.1"')
        if not isinstance(title, str) or not title.strip():
            raise CatalogError(f"{path}: requirement {number} has no title")
        out[number] = title.strip()
    return out


def pci_parents(number: str) -> list[str]:
    """The chain of requirements above a number: "10.4.1.1" -> ["10", "10.4", "10.4.1"]."""
    parts = number.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def pci_list_errors(requirements: dict[str, str]) -> list[str]:
    """Numbers of the list whose parent requirement is missing from it."""
    return [
        f"PCI DSS {n}: its parent {p} is not in the list"
        for n in requirements
        for p in pci_parents(n)[-1:]
        if p not in requirements
    ]


def gdpr_error(ref: str) -> str | None:
    if not GDPR_RE.fullmatch(ref):
        return f"GDPR reference {ref!r} is malformed; write 'Art. N', 'Art. N(n)' or 'Art. N(n)(a)' with N in 1–99"
    return None


def hipaa_error(ref: str) -> str | None:
    m = HIPAA_RE.fullmatch(ref)
    if not m:
        return (
            f"HIPAA reference {ref!r} is malformed; write a 45 CFR Part 164 section and its paragraphs, "
            "like '164.312(a)(2)(iv)' or '164.308(a)(7)(ii)(A)'"
        )
    section = int(m["section"])
    if not any(section in r for r in HIPAA_SECTIONS.values()):
        rules = ", ".join(f"{name} 164.{r.start}–164.{r.stop - 1}" for name, r in HIPAA_SECTIONS.items())
        return f"HIPAA reference {ref!r}: section 164.{section} is in none of the rules ({rules})"
    return None


def reference_errors(catalog: Catalog, requirements: dict[str, str] | None = None) -> list[str]:
    """Every PCI DSS number that the standard lacks and every malformed GDPR or HIPAA reference, by control."""
    reqs = load_pci_requirements() if requirements is None else requirements
    errors: list[str] = []
    for c in catalog.controls:
        errors += [
            f"{c.id}: PCI DSS {p!r} is not a requirement of PCI DSS v4.0 (controls/pci_dss_v4.yaml)"
            for p in c.pci_dss
            if p not in reqs
        ]
        errors += [f"{c.id}: {e}" for e in map(gdpr_error, c.gdpr) if e]
        errors += [f"{c.id}: {e}" for e in map(hipaa_error, c.hipaa) if e]
    return errors
