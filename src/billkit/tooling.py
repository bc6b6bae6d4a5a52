"""The test command: linters and type checks, then pytest. CI runs exactly this."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from billkit.controls import ROOT

console = Console(stderr=True)
BIN = Path(sys.executable).parent


def _playbooks_have_content() -> bool:
    playbooks = ROOT / "playbooks"
    return any(playbooks.glob("*.yml")) or any(playbooks.glob("roles/*/tasks/*.yml"))


def lint_steps() -> list[tuple[str, list[str]]]:
    steps = [
        ("ruff check", [str(BIN / "ruff"), "check", "."]),
        ("ruff format", [str(BIN / "ruff"), "format", "--check", "."]),
        ("pyright", [str(BIN / "pyright")]),
        ("yamllint", [str(BIN / "yamllint"), "--strict", "."]),
    ]
    if _playbooks_have_content():
        steps.append(("ansible-lint", [str(BIN / "ansible-lint"), "--profile", "production", "playbooks"]))
    return steps


def run_suite(pytest_args: list[str], *, fast: bool = False, lint: bool = True) -> int:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    failed: list[str] = []
    if lint:
        for name, cmd in lint_steps():
            console.print(f"[bold]==> {name}[/bold]")
            start = time.monotonic()
            rc = subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode
            verdict = "[green]ok[/green]" if rc == 0 else f"[red]failed (exit {rc})[/red]"
            console.print(f"    {name}: {verdict} in {time.monotonic() - start:.1f}s")
            if rc != 0:
                failed.append(name)
        if failed:
            console.print(f"[red]lint failed: {', '.join(failed)}[/red] — running the tests anyway")
    args = [sys.executable, "-m", "pytest", *(["-m", "not lab"] if fast else []), *pytest_args]
    console.print(f"[bold]==> pytest[/bold] {' '.join(args[3:])}")
    rc = subprocess.run(args, cwd=ROOT, env=env, check=False).returncode
    if rc == 5 and not pytest_args:
        rc = 1  # the whole suite collecting nothing is a failure, not a pass
    return rc or (1 if failed else 0)
