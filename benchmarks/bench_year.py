"""A year of hourly steps on Costa Rica MAR case 2 (issue 14: ≤ 10 s per iteration of the loop).

Run from the checkout (needs ../shared/data)::

    python benchmarks/bench_year.py [--days 30 365] [--repeat 3] [--chunk 720] [--network aware]

For each horizon of ``24 · days`` steps the case is written once with
``gridmarket.cases.cr_mar.build_case(out, case=2, days=days)`` (timed apart: a one-off), then
each run is a **fresh Python process** (so its peak resident memory is its own) that times,
after its imports, ``load_case`` and:

* ``loop (gridmarket run)``: :func:`gridmarket.study.run_to_folder` — what ``gridmarket run``
  does without the report: every iteration of the placement loop through the one pipeline,
  per-step tables streamed to Parquet, the results folder written; per iteration: wall time
  and its stages (market, network, tables);
* ``long run, 1 iteration``: :func:`gridmarket.study.long_run.run_long` (the same pipeline,
  one iteration);
* the **baseline** ``in memory``: the same first iteration without chunks or tables — one
  ``clear_market`` over the whole horizon, one power-flow series, one ``check_limits``.

Printed per horizon: median wall time [s] of ``--repeat`` runs, peak RSS [MB] (largest of the
runs), stage times and ratios against the baseline. Target: ≤ 10 s per iteration of the loop
over 8,760 steps, memory flat in the number of steps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

DATA = Path(os.environ.get("GRIDMARKET_SHARED_DATA",
                           Path(__file__).resolve().parents[1].parent / "shared" / "data"))
TARGET_S = 10.0  #: per iteration of the loop over a year (8,760 steps)

_CHILD = r"""
import json, resource, sys, time, tempfile
from pathlib import Path
t0 = time.perf_counter()
import numpy as np
from gridmarket.case import load_case
from gridmarket.market import clear_market
from gridmarket.network import OpenDSSNetwork, check_limits, monitored_mask
from gridmarket.study import run_to_folder
from gridmarket.study.long_run import run_long
from gridmarket.study.pipeline import attach_agents, dispatch_kw
mode, case_dir, out, chunk = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t_import = time.perf_counter() - t0
t0 = time.perf_counter()  # imports are not counted: the run of a library call
case = load_case(case_dir)
stages = {"load": time.perf_counter() - t0}
per_iteration = []
if mode == "loop":
    res, _ = run_to_folder(case, out, stream=True)
    violations = [it.counts["violations"] for it in res.iterations]
    per_iteration = [{"wall": it.runtime_s, **it.stage_s, "units": it.battery_units, "solver": it.solver}
                     for it in res.iterations]
    for it in res.iterations:
        for k, v in it.stage_s.items():
            stages[k] = stages.get(k, 0.0) + v
elif mode == "long":
    r = run_long(case, out, chunk_steps=chunk)
    stages.update(r.stage_s)
    violations = r.counts["violations"]
else:
    t1 = time.perf_counter()
    res = clear_market(case)
    kw = dispatch_kw(case, res)
    t2 = time.perf_counter()
    net = OpenDSSNetwork(case.network.master)
    es = net.resolve(attach_agents(case, net))
    pf = np.array([a.pf if a.pf is not None else np.nan for a in case.agents])
    flow = net.run_series(es, kw, pf=pf, method="shapes")
    mask = monitored_mask(net.node_names, net.buses, case.network.monitored_buses)
    viol = check_limits(flow, vmin_pu=case.network.vmin_pu, vmax_pu=case.network.vmax_pu,
                        monitored_nodes=mask, times=case.time.index)
    stages.update({"market": t2 - t1, "network": time.perf_counter() - t2})
    violations = len(viol)
wall = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
cpu = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": wall, "cpu": cpu.ru_utime + cpu.ru_stime, "rss_mb": rss, "child_rss_mb": kids,
                  "import_s": t_import, "stages": stages, "violations": violations, "iterations": per_iteration}))
"""


def run_child(mode: str, case_dir: Path, out: Path, chunk: int) -> dict:
    """One run in a fresh interpreter; its JSON line."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, mode, str(case_dir), str(out), str(chunk)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        msg = f"benchmark child failed:\n{proc.stderr[-3000:]}"
        raise RuntimeError(msg)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def build(days: int, tmp: Path, network: str = "blind") -> tuple[Path, float]:
    """Costa Rica case 2 over ``days`` days; ``network = "aware"`` sets ``[market] network`` (the
    network-aware market, issue 13) and ``[placement] rule = "value"``."""
    from gridmarket.cases.cr_mar import build_case

    t0 = time.perf_counter()
    path = build_case(tmp / f"cr_mar_case2_{days}d_{network}", case=2, days=days, data_dir=DATA)
    if network == "aware":
        toml = path / "case.toml"
        text = toml.read_text()
        if "\n[market]\n" not in text or "\n[placement]\n" not in text:
            raise RuntimeError(f"{toml}: no [market] or [placement] table to set the aware market in")
        text = text.replace("\n[market]\n", '\n[market]\nnetwork = "aware"\n', 1)
        toml.write_text(text.replace("\n[placement]\n", '\n[placement]\nrule = "value"\n', 1))
    return path, time.perf_counter() - t0


def measure(days: int, repeat: int, chunk: int, tmp: Path, *, baseline: bool = True,
            modes: Sequence[str] = ("loop", "long"), network: str = "blind") -> dict[str, dict]:
    """Median wall and CPU [s], largest peak RSS [MB], stages and per-iteration figures of each
    way of running ``days`` days."""
    case_dir, t_build = build(days, tmp, network)
    labels = {"loop": "loop (gridmarket run)", "long": "long run, 1 iteration", "memory": "in memory (baseline)"}
    ways = [m for m in modes] + (["memory"] if baseline else [])
    out: dict[str, dict] = {"build": {"wall": t_build}}
    for mode in ways:
        runs = [run_child(mode, case_dir, tmp / f"out_{days}_{mode}_{k}", chunk) for k in range(repeat)]
        med = sorted(runs, key=lambda r: r["wall"])[len(runs) // 2]
        out[labels[mode]] = {
            "wall": statistics.median(r["wall"] for r in runs),
            "cpu": statistics.median(r["cpu"] for r in runs),
            "rss_mb": max(max(r["rss_mb"], r["child_rss_mb"]) for r in runs),
            "stages": {k: statistics.median(r["stages"].get(k, 0.0) for r in runs) for k in runs[0]["stages"]},
            "violations": runs[0]["violations"],
            "iterations": med["iterations"],
        }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--days", type=int, nargs="+", default=[30, 365])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=720, help="steps per chunk of the long run")
    ap.add_argument("--no-baseline", action="store_true", help="skip the in-memory baseline")
    ap.add_argument("--modes", nargs="+", default=["loop", "long"], choices=["loop", "long"])
    ap.add_argument("--network", default="blind", choices=["blind", "aware"],
                    help="the study's market (aware: also [placement] rule = value); the 10 s target is the blind's")
    args = ap.parse_args(argv)
    if not (DATA / "cr_mar" / "DSS" / "Master_MAR.dss").is_file():
        print(f"[skip] cr_mar not found under {DATA}")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        for days in args.days:
            res = measure(days, args.repeat, args.chunk, Path(tmp), baseline=not args.no_baseline, modes=args.modes,
                          network=args.network)
            steps = 24 * days
            base = res.get("in memory (baseline)")
            print(f"\n{steps} steps ({days} days), {args.network} market, chunk {args.chunk}, median of {args.repeat}; "
                  "case written in "
                  f"{res['build']['wall']:.2f} s (not counted)")
            print(f"{'way':<24}{'wall s':>8}{'cpu s':>8}{'peak MB':>9}{'x base':>8}  stages [s]")
            for label, r in res.items():
                if label == "build":
                    continue
                ratio = f"{r['wall'] / base['wall']:.2f}" if base else "-"
                st = ", ".join(f"{k} {v:.2f}" for k, v in r["stages"].items())
                print(f"{label:<24}{r['wall']:>8.2f}{r['cpu']:>8.2f}{r['rss_mb']:>9.0f}{ratio:>8}  {st}")
            loop = res.get("loop (gridmarket run)")
            if loop:
                for k, it in enumerate(loop["iterations"]):
                    st = ", ".join(f"{key} {it[key]:.2f}" for key in ("market", "network", "tables") if key in it)
                    print(f"  iteration {k}: {it['wall']:.2f} s ({st}); {it['units']} SBU, market {it['solver']}")
                worst = max((it["wall"] for it in loop["iterations"]), default=float("nan"))
                if steps == 8760 and args.network == "blind":
                    print(f"target: <= {TARGET_S:.0f} s per iteration over a year -> worst {worst:.2f} s: "
                          + ("PASS" if worst <= TARGET_S else f"gap {worst - TARGET_S:.2f} s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
