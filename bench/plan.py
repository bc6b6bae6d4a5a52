"""Wall time of `billkit plan`: the prod stack, and a synthetic stack with 10x its resources.

Run: .venv/bin/python bench/plan.py   (prints figures; not a pass/fail test)
The synthetic stack composes the prod components ten times under different name prefixes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from billkit import plan  # noqa: E402


def timed(fn, *args):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    value = fn(*args)
    elapsed = time.perf_counter() - start
    return value, elapsed


def synthetic(copies: int):  # type: ignore[no-untyped-def]
    def program() -> None:
        import pulumi_aws as aws

        from infra import settings
        from infra.stack import build

        cfg = settings.load()
        account = aws.get_caller_identity_output().account_id
        for i in range(copies):
            build(cfg, account, prefix="billkit" if i == 0 else f"billkit{i}")

    return program


def main() -> None:
    config = plan.stack_config("prod")
    (resources, t_cold) = timed(plan.run_program, "prod", config, plan.main_program)
    (_, t_eval_cold) = timed(plan.evaluate, "prod", resources)
    rows = []
    for _ in range(3):
        (resources, t_cap) = timed(plan.run_program, "prod", config, plan.main_program)
        (result, t_eval) = timed(plan.evaluate, "prod", resources)
        rows.append((t_cap, t_eval))
    n = len([r for r in resources if r.custom])
    best = min(rows, key=lambda r: r[0] + r[1])
    print(f"prod stack: {n} resources, {result.policies_evaluated} policies, {len(result.violations)} violations")
    print(f"  cold (imports + first run): capture {t_cold:.2f} s + evaluate {t_eval_cold:.2f} s")
    print(f"  warm (best of 3):           capture {best[0]:.2f} s + evaluate {best[1]:.2f} s = {sum(best):.2f} s")
    (big, t_cap10) = timed(plan.run_program, "prod", config, synthetic(10))
    (result10, t_eval10) = timed(plan.evaluate, "prod", big)
    n10 = len([r for r in big if r.custom])
    print(f"synthetic 10x stack: {n10} resources ({n10 / n:.1f}x), {len(result10.violations)} violations")
    print(f"  warm: capture {t_cap10:.2f} s + evaluate {t_eval10:.2f} s = {t_cap10 + t_eval10:.2f} s "
          f"({(t_cap10 + t_eval10) / n10 * 1000:.1f} ms per resource)")  # fmt: skip


if __name__ == "__main__":
    main()
