#!/usr/bin/python3
"""This host's patch status as one JSON object on stdout (PAT-05, PAT-06, PAT-07). Read only.

Run on a host by Ansible (``playbooks/patch_check.yml``, ``ansible.builtin.script``) as root, so that
needrestart sees every process. Standard library and python3-apt only (both on every Debian host).

It reads apt's package lists as they are: it never updates them (the rollout does, and the host's
apt-daily timer), never writes apt's binary caches, and runs needrestart in list-only batch mode.
Each configured suite's index is reported with its Release date, so the controller can tell a
host whose view of the archive is missing or stale from one that is up to date.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
from email.utils import parsedate_to_datetime

SECURITY_LABEL = "Debian-Security"
REBOOT_FLAG = "/run/reboot-required"
BOOT_ID = "/proc/sys/kernel/random/boot_id"


def is_security(label: str | None, codename: str | None) -> bool:
    """An origin of the security archive (Debian labels it; its suites are named <codename>-security)."""
    return label == SECURITY_LABEL or bool(codename and codename.endswith("-security"))


def parse_needrestart(text: str) -> dict[str, object]:
    """needrestart's batch output (``-b``): services to restart (SVC) and the kernel's state (KSTA).

    KSTA: 0 unknown, 1 the running kernel is the newest installed, 2 an ABI-compatible update is
    pending, 3 a newer kernel version is installed (both 2 and 3 need a reboot).
    """
    services: list[str] = []
    containers: list[str] = []
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep or not key.startswith("NEEDRESTART-"):
            continue
        key, value = key[len("NEEDRESTART-") :], value.strip()
        if key == "SVC":
            services.append(value)
        elif key == "CONT":
            containers.append(value)
        else:
            fields[key] = value
    ksta = fields.get("KSTA")
    return {
        "version": fields.get("VER"),
        "services": sorted(set(services)),
        "containers": sorted(set(containers)),
        "kernel_status": int(ksta) if ksta and ksta.isdigit() else None,
        "kernel_current": fields.get("KCUR"),
        "kernel_expected": fields.get("KEXP"),
    }


def needrestart() -> dict[str, object]:
    """Services running replaced code, listed only (``-r l``): needrestart restarts nothing here."""
    exe = shutil.which("needrestart") or next(
        (p for p in ("/usr/sbin/needrestart", "/sbin/needrestart") if os.access(p, os.X_OK)), None
    )
    if exe is None:
        return {"available": False, "error": "needrestart is not installed", **parse_needrestart("")}
    proc = subprocess.run([exe, "-b", "-r", "l"], capture_output=True, text=True, timeout=300, check=False)
    out: dict[str, object] = {"available": True, "error": None, **parse_needrestart(proc.stdout)}
    if proc.returncode != 0:
        out["error"] = f"needrestart exited {proc.returncode}: {proc.stderr.strip()[-500:]}"
    return out


def reboot_flag() -> dict[str, object]:
    packages: list[str] = []
    try:
        with open(REBOOT_FLAG + ".pkgs", encoding="utf-8") as f:
            packages = sorted({line.strip() for line in f if line.strip()})
    except OSError:
        pass
    return {"required": os.path.exists(REBOOT_FLAG), "packages": packages}


def release_fields(path: str) -> dict[str, str]:
    """The first stanza of a (In)Release file: its Date, Valid-Until, Label, Suite, Codename."""
    fields: dict[str, str] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("-----BEGIN PGP SIGNED MESSAGE") or line.startswith("Hash:"):
                continue
            if not line.strip():
                if fields:
                    break
                continue
            if line[0].isspace():
                continue  # the checksum lists' continuation lines
            key, sep, value = line.partition(":")
            if sep:
                fields[key] = value.strip()
    return fields


def _iso(stamp: str | None) -> str | None:
    if not stamp:
        return None
    try:
        return parsedate_to_datetime(stamp).astimezone(datetime.UTC).isoformat()
    except (TypeError, ValueError):
        return None


def indexes(apt_pkg) -> list[dict[str, object]]:
    """Every suite of the host's apt sources, whether its index was ever fetched, and its Release date."""
    lists_dir = apt_pkg.config.find_dir("Dir::State::lists")
    sources = apt_pkg.SourceList()
    sources.read_main_list()
    out = []
    for meta in sources.list:
        base = meta.uri + (meta.dist if meta.dist.endswith("/") else f"dists/{meta.dist}/")
        fields: dict[str, str] = {}
        release = None
        for name in ("InRelease", "Release"):
            path = os.path.join(lists_dir, apt_pkg.uri_to_filename(base + name))
            if os.path.exists(path):
                release = path
                fields = release_fields(path)
                break
        files = meta.index_files
        out.append({
            "uri": meta.uri,
            "dist": meta.dist,
            # binary-all is listed but usually merged into the architecture's index: any one will do
            "fetched": release is not None and any(f.exists for f in files),
            "date": _iso(fields.get("Date")),
            "valid_until": _iso(fields.get("Valid-Until")),
            "label": fields.get("Label"),
            "security": is_security(fields.get("Label"), fields.get("Codename") or meta.dist),
        })  # fmt: skip
    return out


def pending(cache) -> list[dict[str, object]]:
    """Every upgradable package: versions, the candidate's origin (the security one when it has one), URI."""
    out = []
    for pkg in cache:
        if not pkg.is_upgradable:
            continue
        cand = pkg.candidate
        origins = [o for o in cand.origins if o.archive != "now"]
        security = [o for o in origins if is_security(o.label, o.codename)]
        origin = (security or origins or [None])[0]
        out.append({
            "name": pkg.name,
            "installed": pkg.installed.version,
            "candidate": cand.version,
            "security": bool(security),
            "origin": getattr(origin, "origin", None),
            "label": getattr(origin, "label", None),
            "codename": getattr(origin, "codename", None),
            "archive": getattr(origin, "archive", None),
            "site": getattr(origin, "site", None),
            "uri": cand.uri,
        })  # fmt: skip
    return sorted(out, key=lambda p: p["name"])


def collect() -> dict[str, object]:
    try:
        import apt
        import apt_pkg
    except ImportError:
        sys.exit("patch_status: python3-apt is missing on this host: install it (apt-get install python3-apt)")

    apt_pkg.init_config()
    # Build apt's package cache in memory: reading the status must not rewrite /var/cache/apt.
    apt_pkg.config.set("Dir::Cache::pkgcache", "")
    apt_pkg.config.set("Dir::Cache::srcpkgcache", "")
    apt_pkg.init_system()
    cache = apt.Cache()
    with open(BOOT_ID, encoding="ascii") as f:
        boot_id = f.read().strip()
    return {
        "host": socket.gethostname(),
        "boot_id": boot_id,
        "collected_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "indexes": indexes(apt_pkg),
        "pending": pending(cache),
        "reboot_required": reboot_flag(),
        "restart_needed": needrestart(),
        "installed": {p.name: p.installed.version for p in cache if p.is_installed},
    }


def main() -> int:
    try:
        status = collect()
    except Exception as exc:  # the controller shows this line as the host's error
        print(f"patch_status: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    json.dump(status, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
