"""The central journal under a burst (MON-04): how long a host's entries take to reach its sealed receiver on mon-1.

Run as root on a lab that is up: ``.venv/bin/python bench/journal.py [--host db-1] [--entries 34000]``. Writes
``--entries`` journal entries on the host as fast as `systemd-cat` takes them (the data drills once sent 34,000
pgaudit entries from db-1 in a minute), then one marker entry, and times the marker's arrival in that host's
receiver on mon-1, and the time until mtail (which turns the central journal into security counters) has read
them all; meanwhile a marker from a quiet host shows whether one host's burst delays another's. Writes to the
lab's journals only; prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from billkit.lab.testing import run_on_hosts  # noqa: E402

MON = "mon-1"


def on(host: str, script: str, timeout: float = 600) -> str:
    proc = run_on_hosts([host], ["sudo", "sh", "-c", script], timeout=timeout)[host]
    if proc.returncode != 0:
        sys.exit(f"{host}: {script!r} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc.stdout


def arrived(host: str, marker: str) -> bool:
    d = f"/var/log/journal/remote/$(cat /etc/billkit/journal/senders/{host}/machine-id)"
    # an exact field match reads the index, not the burst
    return marker in on(MON, f"journalctl --directory={d} MESSAGE={marker} -o cat --no-pager")


MTAIL_LINES = (
    "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:3903/metrics').read().decode())\""
    " | sed -n 's/^mtail_log_lines_total{[^}]*} //p'"
)


def mtail_lines() -> float:
    """Lines mtail has read from every host's receiver (one reader per host)."""
    return sum(float(v) for v in on(MON, MTAIL_LINES).split())


def wait_for(hosts: dict[str, str], start: float, limit: float) -> dict[str, float]:
    took: dict[str, float] = {}
    while len(took) < len(hosts) and time.monotonic() - start < limit:
        for host, marker in hosts.items():
            if host not in took and arrived(host, marker):
                took[host] = time.monotonic() - start
        time.sleep(1)
    return took


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="db-1")
    p.add_argument("--quiet-host", default="app-1")
    p.add_argument("--entries", type=int, default=34000)
    p.add_argument("--limit", type=float, default=900, help="seconds to wait for the markers")
    args = p.parse_args()

    run = uuid.uuid4().hex[:8]
    loud, quiet = f"burst-end-{run}", f"quiet-{run}"
    before = mtail_lines()
    start = time.monotonic()
    on(args.host, f"seq {args.entries} | sed 's/^/billkit-bench {run} /' | systemd-cat -t billkit-bench && "
                  f"echo {shlex.quote(loud)} | systemd-cat -t billkit-bench")  # fmt: skip
    written = time.monotonic() - start
    on(args.quiet_host, f"echo {shlex.quote(quiet)} | systemd-cat -t billkit-bench")
    quiet_start = time.monotonic()
    took = wait_for({args.host: loud, args.quiet_host: quiet}, start, args.limit)
    while mtail_lines() < before + args.entries and time.monotonic() - start < args.limit:
        time.sleep(1)
    read = time.monotonic() - start
    print(f"{args.entries} entries written on {args.host} in {written:.1f} s")
    if args.host in took:
        print(f"  the burst's last entry in {args.host}'s receiver on {MON}: {took[args.host]:.1f} s after the "
              f"burst began ({args.entries / took[args.host]:.0f} entries/s end to end)")  # fmt: skip
    else:
        print(f"  the burst's last entry had not arrived after {args.limit:.0f} s")
    if mtail_lines() >= before + args.entries:
        print(f"  read by mtail {read:.1f} s after the burst began ({args.entries / read:.0f} lines/s)")
    else:
        print(f"  mtail had read {mtail_lines() - before:.0f} of them after {args.limit:.0f} s")
    if args.quiet_host in took:
        lag = took[args.quiet_host] - (quiet_start - start)
        print(f"  a quiet host's entry ({args.quiet_host}) meanwhile: {lag:.1f} s")
    else:
        print(f"  the quiet host's entry had not arrived after {args.limit:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
