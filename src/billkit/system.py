"""The machine's own packages and apt sources: one place for every apt call of the kit."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console

console = Console(stderr=True)
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


class PrerequisiteError(RuntimeError):
    """A machine-level prerequisite is missing; the message says what to do."""


def missing_packages(packages: list[str]) -> list[str]:
    """Debian packages of the list that are not installed."""
    missing = []
    for pkg in packages:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${db:Status-Status}", pkg], capture_output=True, text=True, check=False
        )
        if proc.stdout.strip() != "installed":
            missing.append(pkg)
    return missing


def ensure_packages(packages: list[str], why: str) -> list[str]:
    """Install the Debian packages the machine lacks (idempotent); return what was installed.

    The kit's own processes take turns (the lab and the fast tests run side by side); apt's lock timeout
    covers anything else holding it."""
    if not missing_packages(packages):
        return []
    if os.geteuid() != 0:
        raise PrerequisiteError(f"{why} needs Debian packages {' '.join(missing_packages(packages))}: "
                                "run as root, or install them")  # fmt: skip
    with _apt_turn():
        missing = missing_packages(packages)
        if not missing:
            return []
        console.print(f"[bold]installing[/bold] {' '.join(missing)} ({why})")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        wait = ["-o", "DPkg::Lock::Timeout=600"]
        update = subprocess.run(["apt-get", *wait, "update", "-qq"], env=env, capture_output=True, text=True,
                                check=False)  # fmt: skip
        if update.returncode != 0:
            raise PrerequisiteError(
                f"apt-get update failed (is the Debian mirror reachable?):\n{update.stderr[-2000:]}"
            )
        proc = subprocess.run(
            ["apt-get", *wait, "install", "-y", "-qq", "--no-install-recommends", *missing],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise PrerequisiteError(f"apt-get install {' '.join(missing)} failed:\n{proc.stderr[-2000:]}")
        return missing


@contextlib.contextmanager
def _apt_turn() -> Iterator[None]:
    # an advisory lock on dpkg's own directory: nothing to create, nothing left behind
    fd = os.open("/var/lib/dpkg", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def debian_mirror() -> str:
    """The Debian archive this machine installs from, read from its own apt sources."""
    files: list[Path] = []
    for src in APT_SOURCES:
        if src.is_file():
            files.append(src)
        elif src.is_dir():
            files.extend(sorted(p for p in src.iterdir() if p.suffix in (".list", ".sources")))
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
                suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
                if uris and suites and re.search(r"\bbookworm\b", suites.group(1)) and "security" not in uris.group(1):
                    return uris.group(1).rstrip("/")
        else:
            for line in text.splitlines():
                m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s", line)
                if m and "security" not in m.group(1):
                    return m.group(1).rstrip("/")
    raise PrerequisiteError(
        "no Debian bookworm mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d/: "
        "configure one (a 'deb <mirror> bookworm main' line) and try again"
    )


def require_command(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise PrerequisiteError(f"'{name}' not found: install the Debian package {package}")
    return path
