"""The lab's hosts: one systemd-nspawn container per host of the topology.

Each host runs on an overlayfs copy of the base rootfs (``.lab/hosts/<name>/upper`` holds what
is its own), boots systemd as PID 1, joins its tier's bridge with its topology address, and
accepts SSH only with the lab's own key for the lab's admin account. This machine has neither
systemd nor D-Bus, hence ``--keep-unit --register=no``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from billkit.lab import base, cgroups
from billkit.lab.net import bridge_name
from billkit.lab.procs import StepError, is_ours, processes_rooted_in, run, stop_pid
from billkit.lab.state import ADMIN_USER, HOSTS_DIR, KNOWN_HOSTS, LOG_DIR, SSH_DIR, SSH_KEY, LabState
from infra.topology import APT_PROXY, SSH, TIERS, LabHost, lab_hosts

# The lab's address space (every tier's /24 inside it): the only destinations a host can route to.
LAB_NET = str(ipaddress.ip_network(TIERS[0].lab_cidr).supernet(new_prefix=16))


def host_dir(name: str) -> Path:
    return HOSTS_DIR / name


def merged(name: str) -> Path:
    return host_dir(name) / "merged"


def is_mounted(path: Path) -> bool:
    want = str(path.resolve())
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        return any(line.split()[4] == want for line in fh)


def ensure_ssh_key() -> None:
    SSH_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not SSH_KEY.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "billkit-lab", "-f", str(SSH_KEY)], "ssh key")


def _write(root: Path, rel: str, text: str, mode: int = 0o644) -> None:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def network_unit(h: LabHost) -> str:
    return (
        "[Match]\nVirtualization=container\nName=host0\n\n"
        f"[Network]\nAddress={h.address}/{h.prefixlen}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n\n"
        # Only the lab's own networks are routable: no default route, no way out.
        f"[Route]\nDestination={LAB_NET}\nGateway={h.gateway}\n"
    )


def provision(h: LabHost) -> None:
    """Write what makes a copy of the base this host (first boot only)."""
    root = merged(h.name)
    _write(root, "/etc/hostname", f"{h.name}\n")
    _write(root, "/etc/hosts", f"127.0.0.1 localhost\n{h.address} {h.name}\n")
    _write(root, "/etc/machine-id", secrets.token_hex(16) + "\n", 0o444)
    _write(root, "/etc/systemd/network/80-container-host0.network", network_unit(h))
    _write(root, "/etc/apt/apt.conf.d/01billkit-proxy", f'Acquire::http::Proxy "http://{h.gateway}:{APT_PROXY}";\n')
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    run(["ssh-keygen", "-A", "-f", str(root)], f"{h.name}: host keys")
    home = root / "home" / ADMIN_USER
    pub = (SSH_KEY.with_suffix(".pub")).read_text()
    _write(root, f"/home/{ADMIN_USER}/.ssh/authorized_keys", pub, 0o600)
    uid = gid = 0
    for line in (root / "etc/passwd").read_text().splitlines():
        parts = line.split(":")
        if parts[0] == ADMIN_USER:
            uid, gid = int(parts[2]), int(parts[3])
    for path in (home / ".ssh", home / ".ssh/authorized_keys"):
        os.chown(path, uid, gid)
    (home / ".ssh").chmod(0o700)


def host_key_line(h: LabHost) -> str:
    key = (merged(h.name) / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
    return f"{h.address},{h.name} {key[0]} {key[1]}\n"


def write_known_hosts() -> None:
    KNOWN_HOSTS.write_text(
        "".join(host_key_line(h) for h in lab_hosts() if merged(h.name).joinpath("etc/ssh").exists())
    )


def ensure_disk(h: LabHost) -> bool:
    """Mount the host's overlay (reusing a mount left by a dead session); provision it once.

    Returns True when the host's disk is new (nothing applied to it yet).
    """
    d = host_dir(h.name)
    stamp = d / "base.hash"
    want = base.recipe_hash(base.debian_mirror())
    if stamp.exists() and stamp.read_text() != want:
        # The base changed under this host: an overlay over a different lower dir is undefined.
        destroy_disk(h.name)
    for sub in ("upper", "work", "merged"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    if not is_mounted(merged(h.name)):
        opts = f"lowerdir={base.ROOTFS},upperdir={d / 'upper'},workdir={d / 'work'}"
        run(["mount", "-t", "overlay", "overlay", "-o", opts, str(merged(h.name))], f"{h.name}: mount overlay")
    if not stamp.exists():
        provision(h)
        stamp.write_text(want)
        return True
    return False


def destroy_disk(name: str) -> None:
    if is_mounted(merged(name)):
        run(["umount", str(merged(name))], f"{name}: unmount overlay")
    shutil.rmtree(host_dir(name), ignore_errors=True)


# systemd-nspawn exits with 133 when the container reboots (systemd's own nspawn unit restarts it on
# that status); this machine has no systemd, so a small shell loop does: a reboot of a lab host is a
# restart of its container. SIGTERM (`billkit down`) is passed on, and ends the loop.
REBOOT_STATUS = 133
SUPERVISOR = (
    'trap \'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 0\' TERM INT; '
    'while :; do "$@" & child=$!; wait "$child"; rc=$?; '
    f'[ "$rc" -eq {REBOOT_STATUS} ] || exit "$rc"; done'
)


def nspawn_command(h: LabHost) -> list[str]:
    return [
        "sh", "-c", SUPERVISOR, f"billkit-host-{h.name}",
        "systemd-nspawn", "--quiet", "--keep-unit", "--register=no", "--boot",
        f"--directory={merged(h.name)}", f"--machine={h.name}", f"--network-bridge={bridge_name(h.tier)}",
        "--resolv-conf=off", "--timezone=off", "--link-journal=no", "--console=passive",
    ]  # fmt: skip


def is_running(state: LabState, name: str) -> bool:
    return is_ours(state.nspawn.get(name), str(merged(name)))


def strays(name: str) -> set[int]:
    """Processes of this host: in its cgroups, or with its rootfs as their root."""
    return cgroups.pids(name) | set(processes_rooted_in(merged(name)))


def kill_strays(name: str) -> None:
    """Kill what a dead nspawn left of this host (ours by its cgroup or its root directory)."""
    for pid in strays(name):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    veth = f"vb-{name}"[:15]
    while time.monotonic() < deadline and (strays(name) or Path(f"/sys/class/net/{veth}").exists()):
        time.sleep(0.1)
    if Path(f"/sys/class/net/{veth}").exists():
        run(["ip", "link", "del", veth], f"{name}: remove stale veth", check=False)


def start(state: LabState, h: LabHost) -> None:
    if is_running(state, h.name):
        return
    kill_strays(h.name)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOG_DIR / f"{h.name}.log", "ab") as log:
        proc = subprocess.Popen(
            nspawn_command(h), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            preexec_fn=lambda: cgroups.enter(h.name),  # noqa: PLW1509 - no threads touch state in the child
        )  # fmt: skip
    state.nspawn[h.name] = proc.pid
    state.save()


def wait_ssh(state: LabState, h: LabHost, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(state, h.name):
            raise StepError(f"{h.name}: systemd-nspawn exited during boot; see {LOG_DIR / (h.name + '.log')}")
        try:
            with socket.create_connection((h.address, SSH), timeout=0.5) as s:
                s.settimeout(2)
                if s.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.2)
    raise StepError(f"{h.name}: SSH did not answer on {h.address}:{SSH} within {timeout:.0f}s; see {LOG_DIR}")


def stop(state: LabState, name: str) -> None:
    pid = state.nspawn.get(name)
    if pid:
        # SIGTERM makes nspawn ask the container's systemd for an orderly poweroff.
        stop_pid(pid, str(merged(name)), timeout=20)
    kill_strays(name)
    state.nspawn.pop(name, None)
    state.save()
    cgroups.remove(name)
    if is_mounted(merged(name)):
        proc = run(["umount", str(merged(name))], f"{name}: unmount overlay", check=False)
        if proc.returncode != 0:
            raise StepError(f"down: could not unmount {merged(name)}: {proc.stderr.strip()}; is a shell open in it?")


def ssh_command(h: LabHost, *extra: str) -> list[str]:
    return [
        "ssh", "-i", str(SSH_KEY), "-o", f"UserKnownHostsFile={KNOWN_HOSTS}", "-o", "StrictHostKeyChecking=yes",
        "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-o", "LogLevel=ERROR",
        f"{ADMIN_USER}@{h.address}",
        *extra,
    ]  # fmt: skip


def require_ready(h: LabHost, timeout: float = 120) -> None:
    """Log in with the lab key; retry while the host finishes booting (pam_nologin until then)."""
    deadline = time.monotonic() + timeout
    while True:
        cmd = [("LogLevel=INFO" if c == "LogLevel=ERROR" else c) for c in ssh_command(h, "true")]
        proc = run(cmd, f"{h.name}: ssh", check=False, timeout=30)
        if proc.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise StepError(f"{h.name}: SSH login with the lab key failed: {proc.stderr.strip()[-500:]}")
        time.sleep(1)
