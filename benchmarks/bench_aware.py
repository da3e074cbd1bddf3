"""Benchmark of the network-aware market (issue 13): sensitivities by the Y-matrix method
against perturbed OpenDSS solves (time per step, agreement), and the aware outer loop
against the blind market + one AC power flow (time, outer iterations, violations, welfare).

Cases: the embedded default case and, when ../shared/data is present, Costa Rica MAR
cases 1 and 2 (built into a temporary folder, never into the repository).

    python benchmarks/bench_aware.py [--steps 3] [--cases default,cr1,cr2] [--parts study,compare]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from gridmarket.case.io import load_case
from gridmarket.case.model import Case
from gridmarket.enums import NetworkMode, PlacementRule
from gridmarket.market import clear_market
from gridmarket.network import OpenDSSNetwork, check_limits, monitored_mask
from gridmarket.network import sensitivity as sens
from gridmarket.study import run_study
from gridmarket.study.aware import clear_aware
from gridmarket.study.compare import compare
from gridmarket.study.loop import attach_agents, dispatch_kw

DEFAULT = Path(__file__).resolve().parents[1] / "src" / "gridmarket" / "data" / "default_case"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _cases(which: list[str], tmp: Path) -> list[tuple[str, Path]]:
    out = []
    for name in which:
        if name == "default":
            out.append((name, DEFAULT))
        elif name in ("cr1", "cr2"):
            if not (SHARED / "cr_mar").is_dir():
                print(f"{name}: skipped, {SHARED / 'cr_mar'} not found")
                continue
            from gridmarket.cases.cr_mar import build_case
            out.append((name, build_case(tmp / name, case=int(name[-1]), data_dir=SHARED)))
    return out


def _voltage_rows(case: Case, net: OpenDSSNetwork, names: list[str]) -> list[tuple[str, str]]:
    mask = monitored_mask(names, net.buses, case.network.monitored_buses)
    return [("voltage", n) for n, m in zip(names, mask, strict=True) if m]


def bench_sensitivities(name: str, case: Case, steps: list[int]) -> None:
    net = OpenDSSNetwork(case.network.master)
    es = net.resolve(attach_agents(case, net))
    pf = np.array([a.pf if a.pf is not None else np.nan for a in case.agents])
    kw = dispatch_kw(case, clear_market(case))
    model = sens.grid_model(net)
    q_ratio = sens.dispatch_q_ratio(net, es, pf)
    for t in steps:
        flow = net.run_series(es, kw[t], pf=pf)
        rows = _voltage_rows(case, net, flow.node_names)
        t0 = time.perf_counter()
        op = sens.read_operating_point(net, model)
        ys = sens.ymatrix_sensitivities(model, op, es.names, rows, q_ratio)
        ty = time.perf_counter() - t0
        few = rows[:10]
        t0 = time.perf_counter()
        sens.ymatrix_sensitivities(model, op, es.names, few, q_ratio)
        ty10 = time.perf_counter() - t0
        t0 = time.perf_counter()
        ps = sens.perturbed_sensitivities(net, es, kw[t], rows, model=model, pf=pf)
        tp = time.perf_counter() - t0
        err = float(np.abs(ys.dp - ps.dp).max())
        print(f"{name} step {t:2d}: {len(rows)} voltage rows x {len(es)} agents; ymatrix {ty * 1e3:7.1f} ms "
              f"(10 rows {ty10 * 1e3:5.1f} ms), perturbed {tp * 1e3:7.1f} ms; max |diff| {err:.2e} pu/kW "
              f"(max |sens| {np.abs(ps.dp).max():.2e})")


def bench_loop(name: str, case: Case) -> None:
    net = OpenDSSNetwork(case.network.master)
    es = net.resolve(attach_agents(case, net))
    pf = np.array([a.pf if a.pf is not None else np.nan for a in case.agents])
    pfa = None if np.isnan(pf).all() else pf
    t0 = time.perf_counter()
    blind = clear_market(case)
    flow = net.run_series(es, dispatch_kw(case, blind), pf=pfa)
    t_blind = time.perf_counter() - t0
    mask = monitored_mask(flow.node_names, net.buses, case.network.monitored_buses)
    vb = check_limits(flow, vmin_pu=case.network.vmin_pu, vmax_pu=case.network.vmax_pu, monitored_nodes=mask)
    t0 = time.perf_counter()
    res = clear_aware(case, net, es, pf=pfa, monitored=mask)
    t_aware = time.perf_counter() - t0
    va = check_limits(res.flow, vmin_pu=case.network.vmin_pu, vmax_pu=case.network.vmax_pu, monitored_nodes=mask)
    wb, wa = float(np.sum(blind.welfare)), float(np.sum(res.market.welfare))
    print(f"{name}: blind {t_blind:.2f} s, {len(vb)} violations, welfare {wb:.2f}; aware {t_aware:.2f} s "
          f"({t_aware / t_blind:.1f}x), {len(va)} violations (residual {len(res.residual)}), welfare {wa:.2f} "
          f"(cost of the grid {wb - wa:.2f}); {res.outer_iterations} clearings, iterations per step "
          f"max {res.step_iterations.max()} mean {res.step_iterations.mean():.2f}; "
          f"rows {0 if res.constraints is None else len(res.constraints.name)}; linearisation error "
          f"{res.linearisation_error_pu:.2e} pu; stop: {res.stop_reason}")
    print("   ", res.summary())
    for h in res.history:
        print("   ", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items()})
    if len(res.residual):
        print(res.residual.to_string(max_rows=20, max_colwidth=70))


def _variant(case: Case, network: NetworkMode, rule: PlacementRule) -> Case:
    return replace(case, market=replace(case.market, network=network), placement=replace(case.placement, rule=rule))


def bench_study(name: str, case: Case, repeat: int = 3) -> None:
    """One study iteration (market, power flow, limits, tables) blind against aware, best of
    ``repeat`` (the machine is shared), then the whole aware study with value placement."""
    blind = _variant(case, NetworkMode.BLIND, PlacementRule.VIOLATIONS)
    aware = _variant(case, NetworkMode.AWARE, PlacementRule.VALUE)
    tb = min(run_study(blind, max_iterations=1).iterations[0].runtime_s for _ in range(repeat))
    runs = [run_study(aware, max_iterations=1) for _ in range(repeat)]
    ta = min(r.iterations[0].runtime_s for r in runs)
    s = runs[0].iterations[0].aware.summary()
    t0 = time.perf_counter()
    full = run_study(aware)
    t_full = time.perf_counter() - t0
    print(f"{name} study: blind iteration {tb:.3f} s, aware iteration {ta:.3f} s ({ta / tb:.1f}x); outer iterations"
          f" per step mean {s['outer_iterations_per_step_mean']:.2f} max {s['outer_iterations_per_step_max']};"
          f" rows {s['rows']} ({s['binding_rows']} binding); seconds {s['seconds']}; whole aware study with value"
          f" placement {t_full:.2f} s, {len(full.iterations)} iterations ({full.stop_reason})")
    # each part at its best over the runs (the machine is shared), and the sensitivities per step linearised
    tallies = [r.iterations[0].aware for r in runs]
    best = {part: min(t.seconds[part] for t in tallies) for part in tallies[0].seconds}
    lin = int(sum(int((np.asarray(x) - 1).sum()) for x in tallies[0].step_iterations))
    per_step = best["sensitivity"] / lin * 1e3 if lin else 0.0
    print(f"{name} study parts (best of {repeat}): " + ", ".join(f"{k} {v:.4f} s" for k, v in best.items())
          + f"; sensitivities {per_step:.2f} ms per linearised step ({lin} steps)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", default="3,12,19", help="steps for the sensitivity comparison")
    ap.add_argument("--cases", default="default,cr1,cr2")
    ap.add_argument("--parts", default="sensitivities,loop,study,compare",
                    help="what to measure: sensitivities, loop (clear_aware), study (run_study), compare")
    args = ap.parse_args()
    steps = [int(s) for s in args.steps.split(",") if s.strip()]
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in _cases(args.cases.split(","), Path(tmp)):
            case = load_case(path)
            if "sensitivities" in parts:
                bench_sensitivities(name, case, steps)
            if "loop" in parts:
                bench_loop(name, case)
            if "study" in parts:
                bench_study(name, case)
            if "compare" in parts:
                with pd.option_context("display.width", 200, "display.max_columns", 20):
                    print(f"{name} comparison:\n{compare(case).to_string(index=False)}")


if __name__ == "__main__":
    main()
