"""The central journal's tamper drill (MON-04): of a snapshot of a host's newest sealed file on the monitoring host,
the untouched copy must pass verification and a copy with one byte of an entry changed must fail. A drill: it
writes temporary copies on the host (removed afterwards) and never touches the received files.

`on_mon(*command) -> stdout` runs a command as root on the monitoring host and raises on a non-zero exit
(tests/hosts/monitoring/support.py's on_mon); the script always exits 0 and reports each exit status itself.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass

REMOTE_DIR = "/var/log/journal/remote"
SENDERS_DIR = "/etc/billkit/journal/senders"  # <host>/machine-id and <host>/verify.key, one receiver per host

# The first MESSAGE= payload is an entry's own data, well inside the part the header covers: the last one may
# belong to an object the receiver wrote into the copy before linking it, which verification does not read.
_FLIP = (
    "import sys\n"
    "p = sys.argv[1]\n"
    "b = bytearray(open(p, 'rb').read())\n"
    "i = b.find(b'MESSAGE=')\n"
    "assert i >= 0, 'no uncompressed MESSAGE field in ' + p\n"
    "i += len('MESSAGE=')\n"
    "b[i] ^= 0x20\n"
    "open(p, 'r+b').write(b)\n"
    "print(i)\n"
)


@dataclass(frozen=True)
class TamperResult:
    file: str
    offset: int
    original_rc: int
    original_output: str
    tampered_rc: int
    tampered_output: str

    @property
    def detected(self) -> bool:
        return self.original_rc == 0 and self.tampered_rc != 0


def tamper_script(remote_dir: str, verify_key: str) -> str:
    """The shell script the drill runs on the monitoring host (root)."""
    d, k = shlex.quote(remote_dir), shlex.quote(verify_key)
    return f"""set -u
tmp=$(mktemp -d /var/tmp/billkit-journal-tamper.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
key=$(cat {k})
f=$(ls -t {d}/*.journal | head -n 1)
echo "file=$f"
verify() {{ journalctl --verify --verify-key="$key" --file="$1" 2>&1; }}
# a snapshot of the file the receiver is appending to: one taken mid-append can fail, so take another (up to five)
for attempt in 1 2 3 4 5; do
  cp "$f" "$tmp/original.journal"
  out=$(verify "$tmp/original.journal"); rc=$?
  [ $rc -eq 0 ] && break
  sleep 2
done
echo "original_rc=$rc"; echo "$out" | sed 's/^/original| /'
cp "$tmp/original.journal" "$tmp/tampered.journal"
echo "offset=$(python3 -c {shlex.quote(_FLIP)} "$tmp/tampered.journal")"
out=$(verify "$tmp/tampered.journal"); rc=$?
echo "tampered_rc=$rc"; echo "$out" | sed 's/^/tampered| /'
"""


def parse(stdout: str) -> TamperResult:
    def value(name: str) -> str:
        m = re.search(rf"^{name}=(.*)$", stdout, re.M)
        assert m, f"the tamper drill's output lacks {name}:\n{stdout}"
        return m.group(1)

    def lines(prefix: str) -> str:
        return "\n".join(line[len(prefix) + 2 :] for line in stdout.splitlines() if line.startswith(prefix + "| "))

    return TamperResult(
        file=value("file"),
        offset=int(value("offset")),
        original_rc=int(value("original_rc")),
        original_output=lines("original"),
        tampered_rc=int(value("tampered_rc")),
        tampered_output=lines("tampered"),
    )


def receiver_paths(on_mon: Callable[..., str], sender: str) -> tuple[str, str]:
    """The directory of a sending host's sealed files and its verification key's file on the monitoring host."""
    machine_id = on_mon("cat", f"{SENDERS_DIR}/{sender}/machine-id").strip()
    return f"{REMOTE_DIR}/{machine_id}", f"{SENDERS_DIR}/{sender}/verify.key"


def tamper_check(on_mon: Callable[..., str], sender: str) -> TamperResult:
    """Copy the sender's newest sealed file, flip one byte of an entry in the copy, verify both; return what each
    said."""
    return parse(on_mon("sh", "-c", tamper_script(*receiver_paths(on_mon, sender))))
