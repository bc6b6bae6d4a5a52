"""The base image: one debootstrapped Debian bookworm rootfs, shared read-only by every host.

Built from the release suite only (no bookworm-updates, no security suite), so that a later
patch run has real updates to apply. Cached in ``.lab/base/`` and rebuilt only when its recipe
(suite, variant, package list, customisation version) changes. Each host runs on an overlayfs
copy of it (see hosts.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

from billkit.lab.procs import StepError, run
from billkit.lab.state import ADMIN_USER, BASE_DIR, SSH_GROUP
from billkit.system import APT_SOURCES, debian_mirror

SUITE = "bookworm"
VARIANT = "minbase"
# What every host needs before Ansible can run, plus the hardening and audit tools that the
# roles would otherwise fetch on every host (the roles still declare them: EC2 hosts get them
# through apt). Bump CUSTOMISATION when customise() changes.
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "python3-apt", "sudo",
    "iproute2", "nftables", "procps", "ca-certificates", "libpam-pwquality", "chrony",
    "unattended-upgrades", "lynis", "cron", "libpam-tmpdir", "apt-listchanges", "needrestart", "debsums",
    "apt-show-versions", "acct", "sysstat",
)  # fmt: skip
CUSTOMISATION = 4
ROOTFS = BASE_DIR / "rootfs"
STAMP = BASE_DIR / "recipe.json"


def security_mirror() -> str | None:
    """The Debian security archive of this machine's apt sources, if one is configured."""
    for src in APT_SOURCES:
        files = [src] if src.is_file() else sorted(src.glob("*")) if src.is_dir() else []
        for path in files:
            text = path.read_text(encoding="utf-8", errors="replace")
            m = re.search(r"^URIs:\s*(\S*security\S*)", text, re.M) or re.search(
                r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S*security\S*)\s", text, re.M
            )
            if m:
                return m.group(1).rstrip("/")
    return None


def recipe(mirror: str) -> dict[str, object]:
    return {"suite": SUITE, "variant": VARIANT, "packages": sorted(PACKAGES), "mirror": mirror,
            "customisation": CUSTOMISATION}  # fmt: skip


def recipe_hash(mirror: str) -> str:
    return hashlib.sha256(json.dumps(recipe(mirror), sort_keys=True).encode()).hexdigest()


def is_current() -> bool:
    try:
        return ROOTFS.is_dir() and json.loads(STAMP.read_text())["hash"] == recipe_hash(debian_mirror())
    except (OSError, ValueError, KeyError):
        return False


def sources_list(mirror: str, security: str | None) -> str:
    lines = [f"deb {mirror} {SUITE} main", f"deb {mirror} {SUITE}-updates main"]
    if security:
        lines.append(f"deb {security} {SUITE}-security main")
    return "\n".join(lines) + "\n"


def customise(root: Path, mirror: str) -> None:
    """Make the rootfs a template: no host keys or machine ID, networkd on, the admin account."""
    (root / "etc/apt/sources.list").write_text(sources_list(mirror, security_mirror()))
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    run(["chroot", str(root), "systemctl", "enable", "systemd-networkd.service"], "base image: enable networkd")
    run(["chroot", str(root), "groupadd", "--system", "-f", SSH_GROUP], "base image: SSH group")
    run(["chroot", str(root), "useradd", "--create-home", "--shell", "/bin/bash", "--groups", SSH_GROUP,
         ADMIN_USER], "base image: admin account")  # fmt: skip
    run(["chroot", str(root), "passwd", "--lock", ADMIN_USER], "base image: lock admin password")
    sudoers = root / "etc/sudoers.d" / ADMIN_USER
    sudoers.write_text(f"{ADMIN_USER} ALL=(ALL) NOPASSWD: ALL\n")
    sudoers.chmod(0o440)
    # The container's console and hostname come from nspawn; nothing to resolve by DNS.
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("")


def unmount_under(path: Path) -> None:
    """Unmount every mount point at or below the path, deepest first."""
    root = str(path.resolve())
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        points = [line.split()[4] for line in fh]
    for point in sorted((p for p in points if p == root or p.startswith(root + "/")), key=len, reverse=True):
        run(["umount", point], f"base image: unmount stale {point}", check=False)


def build() -> bool:
    """Build the base rootfs if missing or stale; return True if it was built."""
    mirror = debian_mirror()
    if is_current():
        return False
    BASE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = BASE_DIR / "rootfs.tmp"
    unmount_under(tmp)  # /proc, /sys… of a debootstrap that died with its session
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = ["debootstrap", f"--variant={VARIANT}", f"--include={','.join(PACKAGES)}", "--components=main",
           SUITE, str(tmp), mirror]  # fmt: skip
    try:
        run(cmd, "base image: debootstrap", timeout=1800)
    except StepError as exc:
        raise StepError(f"{exc}\nIs the Debian mirror {mirror} reachable? Re-run `billkit up` to retry.") from None
    customise(tmp, mirror)
    shutil.rmtree(ROOTFS, ignore_errors=True)
    tmp.rename(ROOTFS)
    STAMP.write_text(json.dumps({"hash": recipe_hash(mirror), "recipe": recipe(mirror)}, indent=2))
    return True
