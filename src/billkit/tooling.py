"""The test command: linters and type checks, then pytest. CI runs exactly this."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from billkit.controls import ROOT

console = Console(stderr=True)
BIN = Path(sys.executable).parent
# The lab's tests are stopped (and fail) past this many minutes after the suite starts, so a hang shows
# its log instead of running into CI's own limit; the suite's budget is 45 minutes.
LAB_DEADLINE_MIN = float(os.environ.get("BILLKIT_LAB_DEADLINE_MIN", "75"))
# The lab's tests are the suite's critical path: the linters and the fast tests, which run beside them,
# yield the CPU to them (they finish in the lab's idle minutes, waiting on drills and services).
BESIDE_THE_LAB_NICE = 10


def _beside_the_lab() -> None:
    os.nice(BESIDE_THE_LAB_NICE)


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


def _pytest(marker: str | None, pytest_args: list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", *(["-m", marker] if marker else []), *pytest_args]


def _checks_junit(pytest_args: list[str]) -> list[str]:
    """A whole run's results as JUnit in the lab's evidence folder: `billkit report` reads the newest
    checks-*.xml as the app and cloud layers' evidence (the host layer only from `billkit verify`)."""
    if pytest_args:
        return []
    from billkit.lab.state import junit_evidence, junit_options

    return junit_options(junit_evidence("checks"))


def _verdict(rc: int, pytest_args: list[str]) -> int:
    return 1 if rc == 5 and not pytest_args else rc  # a whole suite collecting nothing fails


def _follow(lab: subprocess.Popen[bytes], log: Path, deadline: float) -> int:
    """Print the lab's log as it grows until its pytest ends; past the deadline, stop it (SIGINT, so its
    teardown runs, then SIGKILL after 5 minutes) and fail."""
    sys.stdout.flush()
    with log.open("rb") as f:
        while lab.poll() is None:
            shutil.copyfileobj(f, sys.stdout.buffer)
            sys.stdout.flush()
            if time.monotonic() > deadline:
                console.print(f"[red]the lab's tests ran past {LAB_DEADLINE_MIN:.0f} minutes: stopping them[/red]")
                lab.send_signal(signal.SIGINT)
                try:
                    lab.wait(timeout=300)
                except subprocess.TimeoutExpired:
                    os.killpg(lab.pid, signal.SIGKILL)
                    lab.wait()
                shutil.copyfileobj(f, sys.stdout.buffer)
                return 1
            time.sleep(2)
        shutil.copyfileobj(f, sys.stdout.buffer)
    sys.stdout.flush()
    return lab.returncode


def run_suite(pytest_args: list[str], *, fast: bool = False, lint: bool = True) -> int:
    """Lint, then pytest. The whole suite runs the lab's tests in a second pytest started first: bringing
    the lab up is mostly waiting on packages and services, which the linters and the fast tests fill."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    failed: list[str] = []
    started = time.monotonic()
    lab: subprocess.Popen[bytes] | None = None
    lab_log = tempfile.NamedTemporaryFile(prefix="billkit-lab-tests-", suffix=".log", delete=False)  # noqa: SIM115
    if not fast and not pytest_args:
        console.print(f"[bold]==> pytest (lab)[/bold] in the background: tail -f {lab_log.name}", soft_wrap=True)
        lab = subprocess.Popen(_pytest("lab", []), cwd=ROOT, env=env, stdout=lab_log, stderr=subprocess.STDOUT,
                               start_new_session=True)  # fmt: skip
    nice = _beside_the_lab if lab is not None else None
    try:
        if lint:
            for name, cmd in lint_steps():
                console.print(f"[bold]==> {name}[/bold]")
                start = time.monotonic()
                rc = subprocess.run(cmd, cwd=ROOT, env=env, check=False, preexec_fn=nice).returncode
                verdict = "[green]ok[/green]" if rc == 0 else f"[red]failed (exit {rc})[/red]"
                console.print(f"    {name}: {verdict} in {time.monotonic() - start:.1f}s")
                if rc != 0:
                    failed.append(name)
            if failed:
                console.print(f"[red]lint failed: {', '.join(failed)}[/red] — running the tests anyway")
        args = _pytest("not lab" if fast or lab else None, pytest_args) + _checks_junit(pytest_args)
        console.print(f"[bold]==> pytest[/bold] {' '.join(args[3:])}")
        rc = _verdict(subprocess.run(args, cwd=ROOT, env=env, check=False, preexec_fn=nice).returncode, pytest_args)
        if lab is not None:
            console.print(f"[bold]==> pytest (lab)[/bold] waiting for the lab's tests ({lab_log.name})", soft_wrap=True)
            lab_rc = _verdict(_follow(lab, Path(lab_log.name), started + LAB_DEADLINE_MIN * 60), pytest_args)
            lab = None
            rc = rc or lab_rc
    finally:
        if lab is not None:  # interrupted: one SIGINT to the lab's pytest, whose teardown then runs
            lab.send_signal(signal.SIGINT)
            lab.wait()
        lab_log.close()
        Path(lab_log.name).unlink(missing_ok=True)
    return rc or (1 if failed else 0)
