"""Scale: market and power flow per step on synthetic feeders of 100 to 5,000 agents (issue 6, target 5).

Run from the checkout (no shared data needed)::

    python benchmarks/bench_scale.py [--agents 100 1000 5000] [--steps 168] [--repeat 3]

For each size the case is written by ``gridmarket.cases.synthetic.build_case`` (N agents =
N/2 households, each with PV; one community per 100 households; seed 0) and, in the same
process, timed per hourly step (median of ``--repeat`` runs of ``--steps`` steps):

* market: ``clear_market(case)`` (the default method) and, as its baseline, the general QP
  on Clarabel (``method="qp"``, when that option exists; timed on the first 24 steps, its
  cost per step does not depend on the horizon);
* power flow: ``run_series(method="shapes")`` (all node voltages and line currents; each call
  opens a yearly-mode session, whose one-off cost — the admittance matrix built and factorised
  — is spread over ``--steps``), and as its baseline OpenDSS's own yearly loop on the same
  series (one ``Solve``, no monitors; see ``bench_powerflow.py``).

Printed: times per step, ratios to the baselines, and the growth exponent ``b`` of
``time ∝ N^b`` from a least-squares fit of log time on log N.

``--communities`` (issue 14, market only): a utility feeder's shape, about 4,000 households
in about 750 transformer communities, all linked (``links = "all"``), built in memory by
:func:`pooled_market_case`. Timed per hourly step: the default market (the fast path on the
pool formulation), the general QP on Clarabel with pools, and as the baseline the QP on the
arc formulation of MODEL.md (``pools=False``: C(C−1) arcs), on a slice of the communities
where that is still feasible (``--arc-communities``, default 40, 60, 80), with the pool
formulation timed on the same slices.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_powerflow import median_time, own_loop_runner  # noqa: E402


def exponent(sizes: Sequence[float], times: Sequence[float]) -> float:
    """``b`` of ``t = a · N^b`` (least squares on logs)."""
    if len(sizes) < 2:
        return float("nan")
    return float(np.polyfit(np.log(np.asarray(sizes, dtype=float)), np.log(np.asarray(times, dtype=float)), 1)[0])


def measure(n_agents: int, steps: int, repeat: int, tmp: Path, *, qp_baseline: bool = True) -> dict[str, float]:
    """Per-step times [s] at one size."""
    from gridmarket.case import load_case
    from gridmarket.cases.synthetic import build_case
    from gridmarket.market import clear_market
    from gridmarket.network import OpenDSSNetwork
    from gridmarket.study.loop import dispatch_kw

    t0 = time.perf_counter()
    root = build_case(tmp / f"syn{n_agents}", n_households=max(1, n_agents // 2), seed=0, steps=steps)
    case = load_case(root)
    out: dict[str, float] = {"agents": float(len(case.agents)), "setup": time.perf_counter() - t0}
    res = clear_market(case)
    out["market"] = median_time(lambda: clear_market(case), repeat) / steps
    if qp_baseline:
        from gridmarket.study.long_run import slice_case

        day = slice_case(case, 0, min(24, steps))
        try:
            out["market qp"] = median_time(lambda: clear_market(day, method="qp"), repeat) / day.time.steps
        except TypeError:  # a clear_market without the method option
            pass
    kw = dispatch_kw(case, res)
    t0 = time.perf_counter()
    net = OpenDSSNetwork(case.network.master)
    names = [a.element for a in case.agents]
    es = net.resolve(names)
    out["compile"] = time.perf_counter() - t0
    pf = np.array([a.pf if a.pf is not None else np.nan for a in case.agents])
    net.run_series(es, kw[:2], pf=pf, method="shapes")
    q = np.where(np.isnan(pf), 0.0, np.sqrt(1.0 / np.where(np.isnan(pf), 1.0, pf) ** 2 - 1.0))
    own_run, _ = own_loop_runner(net.master, names, kw, q)
    own_run()
    ours, own = [], []
    for _ in range(repeat):  # interleaved with the baseline
        ours.append(median_time(lambda: net.run_series(es, kw, pf=pf, method="shapes"), 1) / steps)
        own.append(median_time(own_run, 1) / steps)
    out["power flow"], out["power flow own"] = statistics.median(ours), statistics.median(own)
    out["nodes"] = float(len(net.node_names))
    return out


def pooled_market_case(n_households: int, n_communities: int, steps: int, *, seed: int = 0,
                       pv_share: float = 0.5, batteries: int = 0):  # -> Case
    """A market-only case: ``n_households`` consumers (flex 0.2) spread over ``n_communities``
    communities, a PV producer at ``pv_share`` of them, ``batteries`` one-unit batteries, every
    pair of communities linked; profiles of :mod:`gridmarket.cases.synthetic`."""
    from pathlib import Path as _P

    import pandas as pd

    from gridmarket.case.model import (
        Agent,
        BatterySpec,
        Case,
        GridPrices,
        MarketOptions,
        NetworkOptions,
        PlacementOptions,
        TimeOptions,
    )
    from gridmarket.cases.synthetic import household_profiles, pv_profile
    from gridmarket.enums import AgentKind

    rng = np.random.default_rng(seed)
    demand = household_profiles(n_households, steps, seed=seed)
    pv = pv_profile(steps, seed=seed)
    comm = np.sort(rng.integers(0, n_communities, n_households))
    comm[:n_communities] = np.arange(n_communities)  # every community has a household
    names = [f"C{k + 1}" for k in range(n_communities)]
    agents, cols = [], []
    for k in range(n_households):
        c = names[comm[k]]
        agents.append(Agent(name=f"H{k}", kind=AgentKind.CONSUMER, community=c, element=f"Load.H{k}",
                            profile=f"H{k}", a=0.02, b=1.0, flex=0.2))
        cols.append(demand[:, k])
        if rng.random() < pv_share:
            agents.append(Agent(name=f"PV{k}", kind=AgentKind.PRODUCER, community=c, element=f"PVSystem.PV{k}",
                                profile=f"PV{k}", a=0.01, b=0.05))
            cols.append(pv * rng.uniform(2.0, 6.0))
    for k in range(batteries):
        agents.append(Agent(name=f"B{k}", kind=AgentKind.BATTERY, community=names[k % n_communities],
                            element=f"bus:b{k}", units=1))
        cols.append(np.zeros(steps))
    prof = np.column_stack(cols)
    prof.setflags(write=False)
    i, j = np.triu_indices(n_communities, 1)
    links = tuple(zip([names[x] for x in i], [names[x] for x in j], strict=True))
    h = np.arange(steps) % 24
    ip = np.where((h >= 17) & (h < 21), 1.1, 0.8)
    ep = np.full(steps, 0.3)
    return Case(
        name=f"pooled-{n_households}-{n_communities}", root=_P("."), network=NetworkOptions(master=_P("Master.dss")),
        time=TimeOptions(steps=steps, step_hours=1.0, start=pd.Timestamp("2024-03-01T00:00")),
        market=MarketOptions(horizon=1, trade_fee=0.01), grid=GridPrices(import_price=ip, export_price=ep),
        battery=BatterySpec(), placement=PlacementOptions(), agents=tuple(agents), communities=tuple(names),
        links=links, profile_kw=prof)


def measure_communities(n_households: int, n_communities: int, steps: int, repeat: int,
                        arc_communities: Sequence[int]) -> list[dict[str, float]]:
    """Market per step [s] on :func:`pooled_market_case` and on slices of it (arc baseline)."""
    from gridmarket.market import clear_market

    rows = []
    per = n_households / n_communities
    for nc in [*arc_communities, n_communities]:
        nh = max(nc, int(round(per * nc)))
        t0 = time.perf_counter()
        case = pooled_market_case(nh, nc, steps, batteries=max(1, nc // 50))
        row: dict[str, float] = {"communities": float(nc), "agents": float(len(case.agents)),
                                 "setup": time.perf_counter() - t0}
        res = clear_market(case)
        row["fast on clarabel steps"] = float(sum(s == "clarabel" for s in res.window_solver))
        row["market"] = median_time(lambda c=case: clear_market(c), repeat) / steps
        qsteps = min(steps, 6)
        from gridmarket.study.long_run import slice_case

        part = slice_case(case, 0, qsteps)
        row["qp pool"] = median_time(lambda c=part: clear_market(c, method="qp", pools=True), 1) / qsteps
        if nc in arc_communities:
            row["qp arcs"] = median_time(lambda c=part: clear_market(c, method="qp", pools=False), 1) / qsteps
        rows.append(row)
    return rows


def run(agents: Sequence[int], steps: int, repeat: int) -> list[dict[str, float]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in agents:
            rows.append(measure(n, steps, repeat, Path(tmp)))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--agents", type=int, nargs="+", default=[100, 1000, 5000])
    ap.add_argument("--steps", type=int, default=168)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--communities", type=int, nargs=2, metavar=("HOUSEHOLDS", "COMMUNITIES"),
                    help="market only: HOUSEHOLDS in COMMUNITIES all linked, e.g. 4000 750")
    ap.add_argument("--arc-communities", type=int, nargs="*", default=[40, 60, 80])
    args = ap.parse_args(argv)
    if args.communities:
        nh, nc = args.communities
        crows = measure_communities(nh, nc, args.steps, args.repeat, args.arc_communities)
        print(f"\n{nh} households in {nc} linked communities (and slices), {args.steps} hourly steps;"
              f" ms per step (QP: first 6 steps)")
        head = (f"{'comms':>6}{'agents':>8}{'market':>9}{'QP pool':>9}{'QP arcs':>9}{'arcs/mkt':>9}"
                f"{'QP steps':>9}{'setup s':>8}")
        print(head)
        print("-" * len(head))
        for r in crows:
            arcs = r.get("qp arcs", float("nan"))
            print(f"{int(r['communities']):>6}{int(r['agents']):>8}{r['market'] * 1e3:>9.2f}{r['qp pool'] * 1e3:>9.1f}"
                  f"{arcs * 1e3:>9.1f}{arcs / r['market']:>9.1f}{int(r['fast on clarabel steps']):>9}"
                  f"{r['setup']:>8.2f}")
        return 0
    rows = run(args.agents, args.steps, args.repeat)
    print(f"\nsynthetic feeders, {args.steps} hourly steps, median of {args.repeat}; ms per step")
    head = (f"{'agents':>7}{'nodes':>7}{'market':>9}{'QP':>9}{'x QP':>7}{'pf':>8}{'own loop':>10}{'x own':>7}"
            f"{'setup s':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        qp = r.get("market qp", float("nan"))
        print(f"{int(r['agents']):>7}{int(r['nodes']):>7}{r['market'] * 1e3:>9.2f}{qp * 1e3:>9.2f}"
              f"{r['market'] / qp:>7.2f}{r['power flow'] * 1e3:>8.2f}{r['power flow own'] * 1e3:>10.2f}"
              f"{r['power flow'] / r['power flow own']:>7.2f}{r['setup']:>9.2f}")
    sizes = [r["agents"] for r in rows]
    print("growth exponent b (time ∝ N^b): " + ", ".join(
        f"{k} {exponent(sizes, [r[k] for r in rows]):.2f}"
        for k in ("market", "market qp", "power flow", "power flow own") if all(k in r for r in rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
