"""The lab's helper processes on the machine, each started by the lab and tracked by PID.

- ``apt-proxy``: apt-cacher-ng bound to the machine's address on every lab bridge, the only
  path from any host to the Debian mirror (its cache lives in ``.lab/apt-proxy``, which it sees
  bind-mounted at ``PROXY_VIEW``).
- ``publish``: a TCP forwarder from the machine's loopback port ``LAB_PUBLISHED_HTTPS`` to the
  edge's floating address (held by one WAF host at a time), port HTTPS: the only way in for users.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import sys
import time
from pathlib import Path

from billkit.lab.base import security_mirror
from billkit.lab.hosts import is_mounted
from billkit.lab.net import bridges
from billkit.lab.procs import StepError, cmdline, is_ours, stop_pid
from billkit.lab.state import LOG_DIR, PROXY_DIR, PROXY_VIEW, LabState
from billkit.system import debian_mirror
from infra.topology import APT_PROXY, HTTPS, LAB_PUBLISHED_HTTPS, lab_floating_address

PROXY_USER = "apt-cacher-ng"


def _marker(name: str) -> str:
    return {"apt-proxy": str(PROXY_VIEW), "publish": "billkit.lab.forward"}[name]


def _wait_port(host: str, port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise StepError(f"{what} did not listen on {host}:{port} within {timeout:.0f}s; see {LOG_DIR}")


def _strip_scheme(url: str) -> str:
    return url.split("://", 1)[-1].rstrip("/")


def proxy_config(binds: list[str] | None = None, port: int = APT_PROXY, view: Path = PROXY_VIEW) -> str:
    """apt-cacher-ng's configuration: it serves the machine's own mirrors and nothing else."""
    binds = binds or [addr.split("/")[0] for addr in bridges().values()]
    mirror = debian_mirror()
    lines = [
        f"CacheDir: {view / 'cache'}",
        f"LogDir: {view / 'log'}",
        "SupportDir: /usr/lib/apt-cacher-ng",
        f"Port: {port}",
        f"BindAddress: {' '.join(binds)}",
        f"PidFile: {view / 'pid'}",
        f"SocketPath: {view / 'socket'}",
        f"Remap-debrep: {_strip_scheme(mirror)} ; {mirror}/",
        # Requests for any other host are refused: the proxy is not a way out of the lab.
        "ForceManaged: 1",
        "ExThreshold: 4",
        "ReportPage: ",
    ]
    security = security_mirror()
    if security:
        lines.append(f"Remap-secdeb: {_strip_scheme(security)} ; {security}/")
    return "\n".join(lines) + "\n"


def _require_alive(state: LabState, name: str, what: str) -> None:
    """A listener answering is not enough: it must be ours (another program may hold the port)."""
    time.sleep(0.5)
    if not is_ours(state.helpers.get(name), _marker(name)):
        raise StepError(
            f"{name} exited at start: is {what} already taken by another program? See {LOG_DIR / (name + '.log')}"
        )


def proxy_command(view: Path = PROXY_VIEW) -> list[str]:
    return ["apt-cacher-ng", "-c", str(view / "conf"), "ForeGround=1"]


def mount_proxy_view(store: Path = PROXY_DIR, view: Path = PROXY_VIEW) -> None:
    """Bind-mount the proxy's folder where its user can reach it (kept after a dead session, like the
    hosts' disks: mounted once)."""
    view.mkdir(parents=True, exist_ok=True)
    view.parent.chmod(0o755)
    if not is_mounted(view):
        subprocess.run(["mount", "--bind", str(store), str(view)], check=True, capture_output=True)


def unmount_proxy_view(view: Path = PROXY_VIEW) -> None:
    if is_mounted(view):
        subprocess.run(["umount", str(view)], check=True, capture_output=True)
    for path in (view, view.parent):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def prepare_proxy(config: str, store: Path = PROXY_DIR, view: Path = PROXY_VIEW) -> list[str]:
    """The proxy's folders, its configuration and the view its user reads them through; returns the
    prefix that runs the proxy as that user (none when the package's user is missing)."""
    for sub in ("cache", "log", "conf"):
        (store / sub).mkdir(parents=True, exist_ok=True)
    (store / "conf" / "acng.conf").write_text(config)
    mount_proxy_view(store, view)
    try:
        pw = pwd.getpwnam(PROXY_USER)
    except KeyError:
        return []
    for path in (store, store / "cache", store / "log"):
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups"]


def ensure_proxy(state: LabState) -> None:
    if is_ours(state.helpers.get("apt-proxy"), _marker("apt-proxy")):
        return
    pre = prepare_proxy(proxy_config())
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    (PROXY_DIR / "pid").unlink(missing_ok=True)
    with open(LOG_DIR / "apt-proxy.log", "ab") as log:
        proc = subprocess.Popen(
            [*pre, *proxy_command()], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    state.helpers["apt-proxy"] = proc.pid
    state.save()
    first = next(iter(bridges().values())).split("/")[0]
    _wait_port(first, APT_PROXY, 15, "the apt proxy (apt-cacher-ng)")
    _require_alive(state, "apt-proxy", f"port {APT_PROXY} on the gateway addresses")


def ensure_publish(state: LabState) -> None:
    edge = lab_floating_address("waf")  # whichever edge host holds it (keepalived)
    pid = state.helpers.get("publish")
    if is_ours(pid, _marker("publish")):
        if edge in cmdline(pid or 0):
            return
        stop_pid(pid or 0, _marker("publish"), timeout=5)  # a forwarder of an older topology
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOG_DIR / "publish.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "billkit.lab.forward", "127.0.0.1", str(LAB_PUBLISHED_HTTPS), edge, str(HTTPS)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
    state.helpers["publish"] = proc.pid
    state.save()
    _wait_port("127.0.0.1", LAB_PUBLISHED_HTTPS, 10, "the published-port forwarder")
    _require_alive(state, "publish", f"127.0.0.1:{LAB_PUBLISHED_HTTPS}")


def stop_helpers(state: LabState) -> None:
    for name, pid in list(state.helpers.items()):
        stop_pid(pid, _marker(name), timeout=5)
        del state.helpers[name]
        state.save()
    unmount_proxy_view()
