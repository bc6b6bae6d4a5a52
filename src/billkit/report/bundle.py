"""The bundle directory: evidence files copied in with their hash, time, method, tool and version."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import shutil
from pathlib import Path

from billkit.report.model import Evidence

EVIDENCE = "evidence"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def utc_iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).replace(microsecond=0).isoformat()


class Bundle:
    def __init__(self, out: Path) -> None:
        self.out = out
        (out / EVIDENCE).mkdir(parents=True, exist_ok=True)
        self.evidence: list[Evidence] = []

    def _target(self, name: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "evidence"
        target, n = self.out / EVIDENCE / safe, 1
        while target.exists():
            n += 1
            target = self.out / EVIDENCE / f"{n}-{safe}"
        return target

    def _add(self, target: Path, collected: str, method: str, tool: str, version: str, description: str) -> Evidence:
        ev = Evidence(
            id=f"ev-{len(self.evidence) + 1:03d}",
            path=target.relative_to(self.out).as_posix(),
            sha256=sha256_file(target),
            collected=collected,
            method=method,
            tool=tool,
            version=version,
            description=description,
            size=target.stat().st_size,
        )
        self.evidence.append(ev)
        return ev

    def copy(self, src: Path, method: str, tool: str, version: str, description: str, collected: str = "") -> Evidence:
        target = self._target(src.name)
        shutil.copyfile(src, target)
        return self._add(target, collected or utc_iso(src.stat().st_mtime), method, tool, version, description)

    def write(self, name: str, data: bytes, method: str, tool: str, version: str, description: str) -> Evidence:
        target = self._target(name)
        target.write_bytes(data)
        now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
        return self._add(target, now, method, tool, version, description)
