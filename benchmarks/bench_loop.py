"""Costa Rica MAR case 2, the whole placement loop, wall time (issue 6, target 3).

Run from the checkout (needs ../shared/data)::

    python benchmarks/bench_loop.py [--repeat 5]

Times, in one warm process (imports excluded, as for a library call), the loop itself:
``gridmarket.cases.cr_mar.build_case(out, case=2)`` → ``load_case`` → ``run_study`` (compile,
market, power flow, limit checks, battery placement, every iteration) → ``to_results()``
(the results tables). The report's figures (``write_results`` + ``build_report``) are timed
apart. Medians of ``--repeat`` runs.

Baseline, measured in the same run: the **power-flow floor** — OpenDSS's own yearly loop
(one ``Solve``, no monitors) over as many steps as the study solved, on the case's network
with every load and PV following a loadshape. ``x floor`` says how much the whole loop costs
over just solving its power flows once in OpenDSS. Target: loop ≤ 1 s.

Also printed: where the loop's time goes, from the market and power flow re-run on the
study's own iteration cases (``clear_market`` and ``run_series``) — the rest is compile,
checks, placement and tables.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_powerflow import own_loop  # noqa: E402

DATA = Path(os.environ.get("GRIDMARKET_SHARED_DATA",
                           Path(__file__).resolve().parents[1].parent / "shared" / "data"))
TARGET_S = 1.0


def one_run(tmp: Path, k: int) -> tuple[dict[str, float], object]:
    """One loop: stage times [s] and the StudyResult."""
    from gridmarket.case import load_case
    from gridmarket.cases.cr_mar import build_case
    from gridmarket.study import run_study

    t = {}
    t0 = time.perf_counter()
    path = build_case(tmp / f"c{k}", case=2, data_dir=DATA)
    t["build"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    case = load_case(path)
    t["load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    study = run_study(case)
    t["study"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = study.to_results()
    t["tables"] = time.perf_counter() - t0
    t["loop"] = t["build"] + t["load"] + t["study"] + t["tables"]
    t0 = time.perf_counter()
    from gridmarket.report import build_report
    from gridmarket.results import write_results

    write_results(results, tmp / f"out{k}", extra={"report": build_report})
    t["files + report"] = time.perf_counter() - t0
    return t, study


def breakdown(study: object) -> dict[str, float]:
    """Market and power-flow time of the study's iterations, re-run on its own cases [s]."""
    from gridmarket.market import clear_market
    from gridmarket.study.loop import dispatch_kw

    net = study.network  # type: ignore[attr-defined]
    market = pf = 0.0
    for it in study.iterations:  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        res = clear_market(it.case)
        market += time.perf_counter() - t0
        kw = dispatch_kw(it.case, res)
        es = net.resolve([study.agent_elements[a.name] for a in it.case.agents])  # type: ignore[attr-defined]
        pf_arr = np.array([a.pf if a.pf is not None else np.nan for a in it.case.agents])
        t0 = time.perf_counter()
        net.run_series(es, kw, pf=None if np.isnan(pf_arr).all() else pf_arr)
        pf += time.perf_counter() - t0
    return {"market": market, "power flow": pf}


def floor(study: object, repeat: int) -> float:
    """OpenDSS's own loop over as many steps as the study solved, on its network [s]."""
    it = study.iterations[-1]  # type: ignore[attr-defined]
    from gridmarket.study.loop import dispatch_kw

    kw = dispatch_kw(it.case, it.market)
    net = study.network  # type: ignore[attr-defined]
    names = [study.agent_elements[a.name] for a in it.case.agents]  # type: ignore[attr-defined]
    steps = len(study.iterations) * kw.shape[0]  # type: ignore[attr-defined]
    reps = int(np.ceil(steps / kw.shape[0]))
    series = np.tile(kw, (reps, 1))[:steps]
    q = np.array([0.0 if not n.lower().startswith("load.") else
                  np.sqrt(1 / a.pf**2 - 1) if a.pf else 0.0 for n, a in zip(names, it.case.agents, strict=True)])
    per_step, _ = own_loop(net.master, names, series, q, repeat)
    return per_step * steps


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    if not (DATA / "cr_mar" / "DSS" / "Master_MAR.dss").is_file():
        print(f"[skip] cr_mar not found under {DATA}")
        return 1
    res = measure(args.repeat)
    t = res["stages"]
    print(f"Costa Rica MAR case 2: {res['iterations']} iterations x {res['steps']} steps, median of {args.repeat}")
    for k in ("build", "load", "study", "tables", "loop", "files + report"):
        print(f"  {k:<16}{t[k]:>8.3f} s")
    print(f"  of the study: market {res['market']:.3f} s, power flow {res['power flow']:.3f} s, rest "
          f"{t['study'] - res['market'] - res['power flow']:.3f} s (compile, checks, placement)")
    print(f"baseline: OpenDSS own loop over the {res['iterations'] * res['steps']} steps: {res['floor']:.3f} s "
          f"-> loop = {t['loop'] / res['floor']:.1f} x floor")
    print(f"target: loop <= {TARGET_S:.1f} s -> {t['loop']:.3f} s: "
          + ("PASS" if t["loop"] <= TARGET_S else f"gap {t['loop'] - TARGET_S:.3f} s"))
    return 0


def measure(repeat: int = 5) -> dict:
    """Median stage times of ``repeat`` loops, the breakdown and the floor."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        one_run(Path(tmp), -1)  # warm-up (imports, first compile)
        study = None
        for k in range(repeat):
            t, study = one_run(Path(tmp), k)
            runs.append(t)
        stages = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        parts = breakdown(study)
        base = floor(study, 3)
    return {"stages": stages, "iterations": len(study.iterations), "steps": study.case.time.steps,  # type: ignore[union-attr]
            "floor": base, **parts}


if __name__ == "__main__":
    sys.exit(main())
