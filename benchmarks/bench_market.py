"""Benchmark of the market engine against the cvxpy reference on the same problem.

    python benchmarks/bench_market.py [--agents 272] [--communities 5] [--batteries 6]
                                      [--steps 24] [--seed 3] [--repeat 3]

Times, per market step, the sequential market (24 one-step QPs, SoC carried) and one
multi-period window of H = steps, each against the independent cvxpy model of
``tests/_market_cases.py`` (cvxpy + Clarabel, canonicalisation included), and checks that
both reach the same welfare. The case is seeded: about half consumers, half PV, a few
batteries of 1–3 SBUs, prices varying per step.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import clarabel

R = TypeVar("R")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _market_cases import random_case, reference_market  # noqa: E402

from gridmarket.market import clear_market  # noqa: E402


def _best(f: Callable[[], R], repeat: int) -> tuple[float, R]:
    """Fastest of ``repeat`` runs: (seconds, its result)."""
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = f()
        runs.append((time.perf_counter() - t0, out))
    return min(runs, key=lambda r: r[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=272, help="market agents in all, batteries included")
    ap.add_argument("--communities", type=int, default=5)
    ap.add_argument("--batteries", type=int, default=6)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (best is reported)")
    args = ap.parse_args(argv)
    import cvxpy

    n_steps = args.steps
    print(f"gridmarket market benchmark: {args.agents} agents ({args.agents - args.batteries} consumers/PV,"
          f" {args.batteries} batteries) in {args.communities} communities, {n_steps} steps, seed {args.seed}")
    print(f"python {platform.python_version()}, clarabel {clarabel.__version__}, cvxpy {cvxpy.__version__},"
          f" {platform.machine()}")
    header = (f"{'mode':<22}{'engine ms/step':>15}{'(solve)':>9}{'(build)':>9}{'cvxpy ms/step':>15}"
              f"{'(solve)':>9}{'ratio':>8}{'welfare rel.diff':>18}")
    print(header)
    print("-" * len(header))
    for label, H in (("sequential (H=1)", 1), (f"window (H={n_steps})", n_steps)):
        case = random_case(args.seed, n_agents=args.agents - args.batteries, n_communities=args.communities,
                           n_batteries=args.batteries, steps=n_steps, horizon=H)
        best, res = _best(lambda case=case: clear_market(case), args.repeat)
        rbest, ref = _best(lambda case=case: reference_market(case), max(1, args.repeat // 2))
        rel = abs(res.total_welfare - ref.welfare.sum()) / abs(ref.welfare.sum())
        ms = 1e3 / n_steps
        print(f"{label:<22}{ms * best:>15.2f}{ms * res.solve_seconds:>9.2f}{ms * res.build_seconds:>9.2f}"
              f"{ms * rbest:>15.2f}{ms * ref.solver_seconds:>9.2f}{rbest / best:>7.1f}x{rel:>18.1e}")
    print("engine: clear_market wall time (data, QP build, Clarabel solves, frames); (solve) = Clarabel"
          " update+solve, (build) = sparse assembly.\ncvxpy: reference_market wall time (canonicalisation + Clarabel);"
          " (solve) = Clarabel's own solve time inside cvxpy. ratio = cvxpy / engine wall time.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
