"""The lab's apt proxy from a checkout under a private directory (root's home is 0700 on Debian): the
proxy runs as its own user, which reads its folder through a bind mount outside the checkout.

Runs the real apt-cacher-ng on loopback, as `billkit up` starts it; it forwards nothing here (the
request names a host that is not the machine's mirror, which the proxy refuses)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from billkit.lab import helpers
from billkit.localsvc import stop_process
from billkit.system import ensure_packages

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts and runs the proxy as its own user: root only")


def _free_port() -> int:
    """A free port at 20000 and up: apt-cacher-ng failed to bind 39999 here ('Error resolving address')."""
    for port in range(20000, 20200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 20000-20199")


def _answers(port: int, timeout: float = 10) -> bytes | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"GET http://not-the-mirror.invalid/debian/dists/x/Release HTTP/1.1\r\n"
                          b"Host: not-the-mirror.invalid\r\nConnection: close\r\n\r\n")  # fmt: skip
                return s.recv(200)
        except OSError:
            time.sleep(0.2)
    return None


@pytest.fixture
def private_checkout(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    ensure_packages(["apt-cacher-ng"], "the lab's apt proxy, started as `billkit up` starts it")
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    store = home / "checkout" / ".lab" / "apt-proxy"
    view = Path(f"/run/billkit-test-{uuid.uuid4().hex[:8]}") / "apt-proxy"
    yield store, view
    helpers.unmount_proxy_view(view)


def _start(pre: list[str], conf_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([*pre, "apt-cacher-ng", "-c", str(conf_dir), "ForeGround=1"], stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip


def test_the_proxy_serves_from_a_checkout_under_a_private_directory(private_checkout, tmp_path: Path) -> None:
    store, view = private_checkout
    port = _free_port()
    pre = helpers.prepare_proxy(helpers.proxy_config(["127.0.0.1"], port, view), store, view)
    assert pre, "the package's user should exist once apt-cacher-ng is installed"
    proc = _start(pre, view / "conf", port, tmp_path / "proxy.log")
    try:
        answer = _answers(port)
        assert proc.poll() is None, (tmp_path / "proxy.log").read_text()[-2000:]
        # it read its configuration (ForceManaged): a host other than the mirror is refused, not fetched
        assert answer and answer.startswith(b"HTTP/1.") and b" 403 " in answer.split(b"\r\n")[0], answer
        assert (store / "log").is_dir() and any((store / "log").iterdir()), "its log should land in the checkout"
    finally:
        stop_process(proc, timeout=10)
    helpers.unmount_proxy_view(view)
    assert not view.exists() and not view.parent.exists(), "the view should be gone with the lab"


def test_without_the_view_the_proxy_cannot_read_its_configuration(private_checkout, tmp_path: Path) -> None:
    """What `up` hit before the view: the proxy's user cannot reach a folder under a 0700 directory."""
    store, view = private_checkout
    port = _free_port()
    pre = helpers.prepare_proxy(helpers.proxy_config(["127.0.0.1"], port, store), store, view)
    proc = _start(pre, store / "conf", port, tmp_path / "proxy.log")
    try:
        assert _answers(port, timeout=5) is None
    finally:
        stop_process(proc, timeout=10)
    assert "Failed to open config directory" in (tmp_path / "proxy.log").read_text()
