"""Benchmark of the market engine: the fast KKT path against Clarabel, and both against cvxpy.

    python benchmarks/bench_market.py [--agents 272] [--communities 5] [--batteries 6]
                                      [--steps 24] [--seed 3] [--repeat 5] [--no-cvxpy]

1. **Fast path vs Clarabel** (the target of issue 6): the sequential market (24 one-step
   markets, SoC carried) cleared by ``method="fast"`` (gridmarket.market.fast) and by
   ``method="qp"`` (Clarabel), interleaved, ``--repeat`` times each; medians. "solve" is the
   engines' own time (``MarketResult.solve_seconds``: the KKT iteration, or Clarabel's update
   and solve), "wall" the whole ``clear_market`` call (data, frames). Target: fast solve
   <= 0.5 ms per step and >= 25x faster than Clarabel.
2. **Engine vs cvxpy**: the Clarabel engine against the independent cvxpy model of
   ``tests/_market_cases.py`` (canonicalisation included), sequential and one window of
   H = steps, with their welfare difference.
3. **Placed banks** (``--banks N``, issue 14): the same case plus N equal 1-unit batteries
   spread over the communities (what a placement loop adds), fast path with the equal banks
   merged into one agent per community (the default) and each solved on its own
   (``fast_plan(merge=False)``), ms per step and CPU ms per step over ``--bank-steps`` steps.

The case is seeded: about half consumers, half PV, a few batteries of 1–3 SBUs, prices
varying per step, all communities linked (one pool). The machine's load moves absolute times
(±30% is normal on shared machines); the ratios are measured in the same run.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import clarabel
import numpy as np

R = TypeVar("R")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _market_cases import battery, random_case, reference_market  # noqa: E402
from gridmarket.market import clear_market, market_data  # noqa: E402
from gridmarket.market import fast as fast_module  # noqa: E402
from gridmarket.market import solve as solve_module  # noqa: E402

TARGET_MS = 0.5  #: fast path, ms per step
TARGET_RATIO = 25.0  #: fast path against Clarabel


def _timed(f: Callable[[], R]) -> tuple[float, R]:
    t0 = time.perf_counter()
    out = f()
    return time.perf_counter() - t0, out


def _best(f: Callable[[], R], repeat: int) -> tuple[float, R]:
    """Fastest of ``repeat`` runs: (seconds, its result)."""
    runs = [_timed(f) for _ in range(repeat)]
    return min(runs, key=lambda r: r[0])


def fast_vs_clarabel(case, repeat: int) -> dict[str, float]:
    """Interleaved runs of both methods; medians [s] of wall and solve time, and agreement."""
    clear_market(case, method="fast")  # first call: imports, caches
    wall_f, solve_f, wall_q, solve_q = [], [], [], []
    res_f = res_q = None
    for _ in range(repeat):
        t, res_f = _timed(lambda: clear_market(case, method="fast"))
        wall_f.append(t)
        solve_f.append(res_f.solve_seconds)
        t, res_q = _timed(lambda: clear_market(case, method="qp"))
        wall_q.append(t)
        solve_q.append(res_q.solve_seconds)
    assert res_f is not None and res_q is not None
    return {
        "wall_fast": statistics.median(wall_f), "solve_fast": statistics.median(solve_f),
        "wall_qp": statistics.median(wall_q), "solve_qp": statistics.median(solve_q),
        "min_solve_fast": min(solve_f), "min_solve_qp": min(solve_q),
        "welfare_rel": abs(res_f.total_welfare - res_q.total_welfare) / abs(res_q.total_welfare),
        "price": float(np.nanmax(np.abs(res_f.price - res_q.price))),
        "p": float(np.nanmax(np.abs(res_f.p_kwh - res_q.p_kwh))),
        "solver": res_f.solver,  # type: ignore[dict-item]
    }


def measure(*, repeat: int = 5, agents: int = 272, communities: int = 5, batteries: int = 6, steps: int = 24,
            seed: int = 3) -> dict[str, float]:
    """Target 1 of issue 6 for ``benchmarks/run_all.py``: ms per step of the fast path and of
    Clarabel, engine time (``solve``) and whole ``clear_market`` call (``wall``), medians."""
    case = random_case(seed, n_agents=agents - batteries, n_communities=communities, n_batteries=batteries,
                       steps=steps, horizon=1)
    m = fast_vs_clarabel(case, max(3, repeat))
    ms = 1e3 / steps
    return {"fast_ms_per_step": ms * m["solve_fast"], "qp_ms_per_step": ms * m["solve_qp"],
            "fast_wall_ms_per_step": ms * m["wall_fast"], "qp_wall_ms_per_step": ms * m["wall_qp"]}


def with_banks(case, n: int):
    """``case`` plus ``n`` equal 1-unit batteries, round robin over its communities."""
    from dataclasses import replace

    comms = list(case.communities)
    new = tuple(battery(f"BANK{k}", comms[k % len(comms)], units=1) for k in range(n))
    prof = np.hstack([case.profile_kw, np.zeros((case.time.steps, n))])
    return replace(case, agents=case.agents + new, profile_kw=prof)


def banks(case, repeat: int) -> dict[str, float]:
    """Median wall and CPU [s] of the fast path with the banks merged and unmerged, and their agreement."""
    plain = solve_module.fast_plan
    out: dict[str, float] = {}
    res = {}
    for label, plan in (("merged", plain), ("unmerged", lambda d, merge=True: plain(d, merge=False))):
        solve_module.fast_plan = plan  # type: ignore[assignment]
        try:
            clear_market(case, method="fast")
            walls, cpus = [], []
            for _ in range(repeat):
                t0, c0 = time.perf_counter(), time.process_time()
                res[label] = clear_market(case, method="fast")
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
        finally:
            solve_module.fast_plan = plain
        out[f"wall_{label}"] = statistics.median(walls)
        out[f"cpu_{label}"] = statistics.median(cpus)
    out["s_diff"] = float(np.nanmax(np.abs(res["merged"].s_kwh - res["unmerged"].s_kwh)))
    out["welfare_rel"] = abs(res["merged"].total_welfare - res["unmerged"].total_welfare) / abs(
        res["unmerged"].total_welfare)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=272, help="market agents in all, batteries included")
    ap.add_argument("--communities", type=int, default=5)
    ap.add_argument("--batteries", type=int, default=6)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5, help="runs per measurement (>= 3; medians reported)")
    ap.add_argument("--no-cvxpy", action="store_true", help="skip the comparison with the cvxpy model")
    ap.add_argument("--banks", type=int, default=0, help="also time the fast path with this many equal 1-unit banks")
    ap.add_argument("--bank-steps", type=int, default=720, help="steps of the placed-banks case")
    ap.add_argument("--terminal-soc", choices=["free", "cyclic"], default="free",
                    help="[battery] terminal_soc of the case (free: the study's market, comparable with earlier"
                         " runs; cyclic: the tool's default, batteries end where they started)")
    args = ap.parse_args(argv)
    repeat = max(3, args.repeat)
    n_steps = args.steps
    print(f"gridmarket market benchmark: {args.agents} agents ({args.agents - args.batteries} consumers/PV,"
          f" {args.batteries} batteries) in {args.communities} communities, {n_steps} steps, seed {args.seed},"
          f" terminal SoC {args.terminal_soc}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, clarabel {clarabel.__version__},"
          f" {platform.machine()}")
    ms = 1e3 / n_steps

    # ---- 1. fast path against Clarabel, sequential market
    case = random_case(args.seed, n_agents=args.agents - args.batteries, n_communities=args.communities,
                       n_batteries=args.batteries, steps=n_steps, horizon=1, terminal_soc=args.terminal_soc)
    m = fast_vs_clarabel(case, repeat)
    print(f"\nsequential market (H=1), medians of {repeat} interleaved runs [ms per step]")
    header = f"{'method':<22}{'solve':>10}{'wall':>10}"
    print(header)
    print("-" * len(header))
    print(f"{'fast (KKT path)':<22}{ms * m['solve_fast']:>10.3f}{ms * m['wall_fast']:>10.3f}")
    print(f"{'qp (Clarabel)':<22}{ms * m['solve_qp']:>10.3f}{ms * m['wall_qp']:>10.3f}")
    ratio = m["solve_qp"] / m["solve_fast"]
    ratio_wall = m["wall_qp"] / m["wall_fast"]
    print(f"{'ratio qp/fast':<22}{ratio:>9.1f}x{ratio_wall:>9.1f}x"
          f"   (best runs: {m['min_solve_qp'] / m['min_solve_fast']:.1f}x)")
    print(f"agreement: welfare rel. diff {m['welfare_rel']:.1e}, prices {m['price']:.1e}, P {m['p']:.1e} kWh"
          f" (Clarabel's default tolerance; solver={m['solver']})")
    fast_ms = ms * m["solve_fast"]
    met = fast_ms <= TARGET_MS and ratio >= TARGET_RATIO
    print(f"target (<= {TARGET_MS} ms/step and >= {TARGET_RATIO:.0f}x): {'met' if met else 'NOT met'}"
          f" ({fast_ms:.3f} ms/step, {ratio:.1f}x; gap {fast_ms / TARGET_MS:.2f}x of the time target,"
          f" {TARGET_RATIO / ratio:.2f}x of the ratio target)")

    if args.banks:
        bcase = with_banks(random_case(args.seed, n_agents=args.agents - args.batteries, n_communities=args.communities,
                                       n_batteries=args.batteries, steps=args.bank_steps, horizon=1,
                                       terminal_soc=args.terminal_soc), args.banks)
        b = banks(bcase, repeat)
        n_cls = fast_module.fast_plan(market_data(bcase)).n_b
        bs = 1e3 / args.bank_steps
        print(f"\nplaced banks: {args.banks} equal 1-unit banks ({n_cls} battery classes), {args.bank_steps} steps,"
              f" fast path, medians of {repeat} [ms per step]")
        print(f"{'batteries':<22}{'wall':>10}{'cpu':>10}")
        print(f"{'merged (default)':<22}{bs * b['wall_merged']:>10.3f}{bs * b['cpu_merged']:>10.3f}")
        print(f"{'each on its own':<22}{bs * b['wall_unmerged']:>10.3f}{bs * b['cpu_unmerged']:>10.3f}")
        print(f"agreement: S {b['s_diff']:.1e} kWh, welfare rel. diff {b['welfare_rel']:.1e}")

    if args.no_cvxpy:
        return 0
    import cvxpy

    # ---- 2. the Clarabel engine against cvxpy
    print(f"\nClarabel engine against the cvxpy model (cvxpy {cvxpy.__version__}), best of runs [ms per step]")
    header = (f"{'mode':<22}{'engine ms/step':>15}{'(solve)':>9}{'(build)':>9}{'cvxpy ms/step':>15}"
              f"{'(solve)':>9}{'ratio':>8}{'welfare rel.diff':>18}")
    print(header)
    print("-" * len(header))
    for label, H in (("sequential (H=1)", 1), (f"window (H={n_steps})", n_steps)):
        case = random_case(args.seed, n_agents=args.agents - args.batteries, n_communities=args.communities,
                           n_batteries=args.batteries, steps=n_steps, horizon=H, terminal_soc=args.terminal_soc)
        best, res = _best(lambda case=case: clear_market(case, method="qp"), repeat)
        rbest, ref = _best(lambda case=case: reference_market(case), max(1, repeat // 2))
        rel = abs(res.total_welfare - ref.welfare.sum()) / abs(ref.welfare.sum())
        print(f"{label:<22}{ms * best:>15.2f}{ms * res.solve_seconds:>9.2f}{ms * res.build_seconds:>9.2f}"
              f"{ms * rbest:>15.2f}{ms * ref.solver_seconds:>9.2f}{rbest / best:>7.1f}x{rel:>18.1e}")
    print("engine: clear_market(method='qp') wall time (data, QP build, Clarabel solves, frames); (solve) ="
          " Clarabel update+solve, (build) = sparse assembly.\ncvxpy: reference_market wall time (canonicalisation"
          " + Clarabel); (solve) = Clarabel's own solve time inside cvxpy. ratio = cvxpy / engine wall time.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
