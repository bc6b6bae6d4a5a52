"""The lab's playbook runner stops a run that stalls (HRD-08): it never waits for good, and it ends
everything the stalled run started."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest

from billkit.lab import ansible


@pytest.mark.control("HRD-08")
def test_a_silent_run_is_stopped_with_all_it_started() -> None:
    seen: list[str] = []
    log = io.StringIO()
    start = time.monotonic()
    # the child prints its grandchild's PID, then both stay silent
    rc = ansible._run(["sh", "-c", "sleep 60 & echo $!; wait"], dict(os.environ), log, seen.append, stall=1.5)
    assert rc is None and time.monotonic() - start < 10
    grandchild = Path(f"/proc/{int(seen[0])}/stat")
    time.sleep(0.2)
    # gone, or a zombie waiting for whoever inherited it to reap it: either way it runs no more
    assert not grandchild.exists() or grandchild.read_text().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.control("HRD-08")
def test_a_run_that_keeps_printing_finishes_with_its_exit_code() -> None:
    seen: list[str] = []
    log = io.StringIO()
    script = "for i in 1 2 3; do echo line $i; sleep 0.5; done; exit 3"
    assert ansible._run(["sh", "-c", script], dict(os.environ), log, seen.append, stall=2) == 3
    assert seen == ["line 1", "line 2", "line 3"] and log.getvalue().count("line") == 3
