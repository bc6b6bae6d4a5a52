"""What the patching role asks the lab's controller to do: ``python -m billkit.patching.labhooks restart-app HOST``.

The lab's app logs in to Vault with response-wrapped secret IDs that only the controller can make, so
restarting it means delivering fresh ones (the same step as `billkit up`). On EC2 the app uses its
instance role and the role restarts it with systemctl.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "restart-app":
        print("usage: python -m billkit.patching.labhooks restart-app HOST", file=sys.stderr)
        return 2
    from billkit.lab.app import deliver

    for change in deliver(force=True, only=[argv[1]]):
        print(change)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
