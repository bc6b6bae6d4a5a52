"""Transit throughput against a real 3-node OpenBao cluster (TLS, raft, file audit) on loopback.

Run: .venv/bin/python bench/vault.py [--seconds 5] [--threads 4]
Prints figures; nothing is asserted. The cluster is the tests' one: converged by billkit.vault.deploy,
the app logged in with its AppRole (wrapped secret ID), requests sent to the active node.
"""

from __future__ import annotations

import argparse
import base64
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from billkit.vault import configure
from billkit.vault.bootstrap import root_session
from billkit.vault.deploy import StateLayout, converge, open_cluster
from billkit.vault.local import cert_installer, start_local_cluster
from billkit.vault.pki import ensure_root_ca


def _rate(fn, seconds: float, threads: int) -> tuple[int, float]:
    """Call fn() from `threads` workers for `seconds`; return (calls, elapsed)."""
    deadline = time.monotonic() + seconds
    start = time.monotonic()

    def worker() -> int:
        n = 0
        while time.monotonic() < deadline:
            fn()
            n += 1
        return n

    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(lambda _: worker(), range(threads)))
    return total, time.monotonic() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--batch", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="billkit-bench-vault-") as tmp:
        base = Path(tmp)
        state = StateLayout(base / "state")
        t0 = time.monotonic()
        local = start_local_cluster(base / "nodes", ensure_root_ca(state.pki))
        try:
            settings = configure.Settings(service_names=tuple(n.name for n in local.nodes), allow_localhost=True,
                                          app_cidrs=("127.0.0.0/8",))  # fmt: skip
            converge(local.nodes, state, settings, cert_installer(local))
            bootstrap = time.monotonic() - t0
            cluster, _ = open_cluster(local.nodes, state)
            with root_session(cluster) as c:
                wrapped = configure.wrapped_secret_id(c, configure.BILLING_APP)
                token = configure.approle_login(c, configure.role_id(c, configure.BILLING_APP), wrapped)
            app = cluster.active_client(token)
            pan = base64.b64encode(b"4111111111111111").decode()
            batch = [{"plaintext": base64.b64encode(os.urandom(16)).decode()} for _ in range(args.batch)]

            def one() -> None:
                app.secrets.transit.encrypt_data("pan", pan)

            def many() -> None:
                app.secrets.transit.encrypt_data("pan", "", batch_input=batch)

            one()
            many()
            n1, t1 = _rate(one, args.seconds, 1)
            nt, tt = _rate(one, args.seconds, args.threads)
            nb, tb = _rate(many, args.seconds, args.threads)
            print(f"3-node cluster: start + init + unseal + raft join + configuration: {bootstrap:.1f} s")
            print(f"transit encrypt, 1 client:           {n1 / t1:8.0f} req/s ({1000 * t1 / n1:.1f} ms each)")
            print(f"transit encrypt, {args.threads} clients:           {nt / tt:8.0f} req/s")
            print(f"transit batch encrypt ({args.batch}/req), {args.threads} clients: {nb / tb:8.0f} req/s = "
                  f"{nb * args.batch / tb:.0f} items/s")  # fmt: skip
        finally:
            local.close()


if __name__ == "__main__":
    main()
