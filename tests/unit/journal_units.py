"""The central journal's role files rendered as Ansible renders them (defaults, trim_blocks), and a unit's command
line: shared by the journal's unit tests (test_journal_central.py, test_journal_roles.py)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import jinja2
import yaml

from billkit.controls import ROOT

MONITORING = ROOT / "playbooks/roles/monitoring"
HOST_MONITORING = ROOT / "playbooks/roles/host_monitoring"


def render(role: Path, template: str, **values: Any) -> str:
    defaults: dict[str, Any] = yaml.safe_load((role / "defaults/main.yml").read_text())
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True)  # noqa: S701 -- units
    return env.from_string((role / "templates" / template).read_text()).render(
        defaults | {"ansible_managed": "managed"} | values
    )


def exec_start(unit: str) -> list[str]:
    joined = unit.replace("\\\n", " ")  # systemd's line continuations
    line = next(x for x in joined.splitlines() if x.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))
