"""A search of the whole lab for card numbers (TOK-01): where could a PAN have leaked in clear?

Places searched, for a list of card numbers:

- every file each host wrote: its overlay upper layer, read from the controller (the lower layer
  is the pristine base image); an encrypted volume's image is searched as the ciphertext it is;
- what is mounted inside each host and not in that layer (tmpfs such as /run and /tmp, the
  database's decrypted data volume), from inside the host;
- each host's journal, decompressed by ``journalctl``;
- a plain ``pg_dump`` of every database on the database hosts.

The backup store on backup-1 is files on that host, so it is part of the first item.
"""

from __future__ import annotations

import hashlib
import secrets
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from billkit.lab.hosts import host_dir, merged, ssh_command
from infra.topology import hosts_of, lab_host, lab_hosts

# Well-known test card numbers (the gateways' documented test cards) the kit's tests may use.
TEST_PANS = (
    "4242424242424242", "4000056655665556", "4111111111111111", "5555555555554444", "2223003122003222",
    "5200828282828210", "378282246310005", "371449635398431", "6011111111111117", "3056930009020004",
    "36227206271667", "3566002020360505", "6200000000000005",
)  # fmt: skip

# In-host mounts worth searching: real or memory file systems (not /proc, /sys, devices, cgroups).
_SEARCHED_FS = ("tmpfs", "ext4", "ext3", "ext2", "xfs", "btrfs")
_SKIPPED_TARGETS = ("/", "/dev", "/sys", "/proc")


def luhn_ok(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def canary_pan(prefix: str = "4") -> str:
    """A random, Luhn-valid 16-digit number (a Visa-like test card nobody else uses)."""
    body = prefix + "".join(str(secrets.randbelow(10)) for _ in range(14 - len(prefix) + 1))
    return next(body + str(d) for d in range(10) if luhn_ok(body + str(d)))


@dataclass
class Finding:
    host: str
    where: str  # "file", "mount", "journal", "dump"
    detail: str  # a path, or what matched


@dataclass
class SweepResult:
    pans: int
    places: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def packaged_unchanged(root: Path, paths: list[str]) -> set[str]:
    """Those of ``paths`` (absolute, inside ``root``) that are byte for byte the file a Debian package
    installed, by dpkg's own checksums: digits in a package's data (time zone tables, say) are no card
    number the kit wrote, while a packaged file someone changed is still searched."""
    wanted = {p.lstrip("/") for p in paths}
    shipped: dict[str, str] = {}
    for sums in (root / "var/lib/dpkg/info").glob("*.md5sums"):
        for line in sums.read_text(errors="replace").splitlines():
            digest, _, rel = line.partition("  ")
            if rel in wanted:
                shipped[rel] = digest
    same = set()
    for rel, digest in shipped.items():
        try:
            data = (root / rel).read_bytes()
        except OSError:
            continue
        if hashlib.md5(data, usedforsecurity=False).hexdigest() == digest:  # dpkg's checksum, not a secret
            same.add("/" + rel)
    return same


def _grep_upper(name: str, pans: list[str]) -> list[Finding]:
    upper = host_dir(name) / "upper"
    proc = subprocess.run(
        ["grep", "-rlaF", "--no-messages", "-f", "-", str(upper)],
        input="\n".join(pans) + "\n", capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    if proc.returncode > 1:
        raise RuntimeError(f"searching {upper} failed: {proc.stderr.strip()}")
    found = [line.removeprefix(str(upper)) for line in proc.stdout.splitlines()]
    packaged = packaged_unchanged(merged(name), found) if found else set()
    return [Finding(name, "file", path) for path in found if path not in packaged]


def _in_host_script(dump: bool) -> str:
    """Bash reading the numbers from stdin: never on a command line (sudo would log them) nor in a file."""
    fs = ",".join(_SEARCHED_FS)
    skipped = " ".join(f"-e {shlex.quote(t)}" for t in _SKIPPED_TARGETS)
    lines = [
        "pats=$(cat); p() { printf '%s\\n' \"$pats\"; }",
        f"for m in $(findmnt -rn -t {fs} -o TARGET | grep -vx {skipped}); do",
        '  case "$m" in /dev/*|/sys/*|/proc/*) continue;; esac',
        "  grep -rlaF --no-messages -f <(p) \"$m\" | sed 's/^/mount /'",
        "done",
        "journalctl -q --no-pager -o export 2>/dev/null | grep -aoF -f <(p) | sort -u | sed 's/^/journal /'",
    ]
    if dump:
        lines.append(
            "for d in $(runuser -u postgres -- psql -XAtc "
            "\"SELECT datname FROM pg_database WHERE datallowconn AND datname <> 'template1'\" 2>/dev/null); do "
            'runuser -u postgres -- pg_dump --no-owner "$d" | grep -aoF -f <(p) | sort -u | sed "s/^/dump $d: /"; '
            "done"
        )
    lines.append("true")
    return "\n".join(lines)


def sweep(pans: list[str]) -> SweepResult:
    """Search every lab host for ``pans``; a finding names the host, the kind of place and the path."""
    result = SweepResult(len(pans))
    names = [h.name for h in lab_hosts()]
    db_hosts = {h.name for h in hosts_of("db")}
    for name in names:
        result.findings += _grep_upper(name, pans)
    result.places.append("files written by every host (overlay upper layers)")
    procs: dict[str, subprocess.CompletedProcess] = {}
    for name in names:  # one at a time: a dump and a journal read per host are heavy on 2 cores
        command = shlex.join(["sudo", "bash", "-c", _in_host_script(dump=name in db_hosts)])
        procs[name] = subprocess.run(ssh_command(lab_host(name), command), input="\n".join(pans) + "\n",
                                     capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    for name, proc in procs.items():
        if proc.returncode != 0:
            raise RuntimeError(f"the search on {name} failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}")
        for line in proc.stdout.splitlines():
            kind, _, detail = line.partition(" ")
            result.findings.append(Finding(name, kind, detail))
    result.places += ["in-host mounts (tmpfs, data volumes)", "journals", "database dumps"]
    return result
