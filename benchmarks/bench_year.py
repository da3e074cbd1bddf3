"""A year of hourly steps on Costa Rica MAR case 2, one iteration, in chunks (issue 6, target 4).

Run from the checkout (needs ../shared/data)::

    python benchmarks/bench_year.py [--days 30 365] [--repeat 3] [--chunk 720]

For each horizon of ``24 · days`` steps the case is written once with
``gridmarket.cases.cr_mar.build_case(out, case=2, days=days)`` (timed apart: a one-off), then
each run is a **fresh Python process** (so its peak resident memory is its own) that times,
after its imports, ``load_case`` + ``gridmarket.study.long_run.run_long`` (market → dispatch → power flow →
limits, results streamed to Parquet):

* ``long run, 1 process`` and ``long run, 2 processes`` (``workers=2``: the power flow of a
  chunk runs in a second process while the market of the next chunk clears);
* the **baseline** ``in memory``: the same iteration without chunks — one ``clear_market`` over
  the whole horizon, one power-flow series, one ``check_limits`` — and no files.

Printed per horizon: median wall time [s] of ``--repeat`` runs, peak RSS [MB] (largest of the
runs), the stage times of the long run, and the ratios against the baseline. Target: 8,760
steps ≤ 10 s with memory flat in the number of steps.
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
TARGET_S = 10.0  #: a year (8,760 steps)

_CHILD = r"""
import json, resource, sys, time, tempfile
from pathlib import Path
t0 = time.perf_counter()
import numpy as np
from gridmarket.case import load_case
from gridmarket.market import clear_market
from gridmarket.network import OpenDSSNetwork, check_limits, monitored_mask
from gridmarket.study.long_run import run_long
from gridmarket.study.loop import attach_agents, dispatch_kw
mode, case_dir, out, chunk, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
t_import = time.perf_counter() - t0
t0 = time.perf_counter()  # imports are not counted: the run of a library call
case = load_case(case_dir)
stages = {"load": time.perf_counter() - t0}
if mode == "long":
    r = run_long(case, out, chunk_steps=chunk, workers=workers)
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
print(json.dumps({"wall": wall, "rss_mb": rss, "child_rss_mb": kids, "import_s": t_import, "stages": stages,
                  "violations": violations}))
"""


def run_child(mode: str, case_dir: Path, out: Path, chunk: int, workers: int) -> dict:
    """One run in a fresh interpreter; its JSON line."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, mode, str(case_dir), str(out), str(chunk), str(workers)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        msg = f"benchmark child failed:\n{proc.stderr[-3000:]}"
        raise RuntimeError(msg)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def build(days: int, tmp: Path) -> tuple[Path, float]:
    from gridmarket.cases.cr_mar import build_case

    t0 = time.perf_counter()
    path = build_case(tmp / f"cr_mar_case2_{days}d", case=2, days=days, data_dir=DATA)
    return path, time.perf_counter() - t0


def measure(days: int, repeat: int, chunk: int, tmp: Path, *, baseline: bool = True,
            workers: Sequence[int] = (1, 2)) -> dict[str, dict]:
    """Median wall [s], largest peak RSS [MB] and stages of each way of running ``days`` days."""
    case_dir, t_build = build(days, tmp)
    ways = [(f"long run, {w} process{'es' if w > 1 else ''}", "long", w) for w in workers]
    if baseline:
        ways.append(("in memory (baseline)", "memory", 1))
    out: dict[str, dict] = {"build": {"wall": t_build}}
    for label, mode, w in ways:
        runs = []
        for k in range(repeat):
            runs.append(run_child(mode, case_dir, tmp / f"out_{days}_{mode}_{w}_{k}", chunk, w))
        out[label] = {
            "wall": statistics.median(r["wall"] for r in runs),
            "rss_mb": max(max(r["rss_mb"], r["child_rss_mb"]) for r in runs),
            "stages": {k: statistics.median(r["stages"].get(k, 0.0) for r in runs) for k in runs[0]["stages"]},
            "violations": runs[0]["violations"],
        }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--days", type=int, nargs="+", default=[30, 365])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=720, help="steps per chunk of the long run")
    ap.add_argument("--no-baseline", action="store_true", help="skip the in-memory baseline")
    args = ap.parse_args(argv)
    if not (DATA / "cr_mar" / "DSS" / "Master_MAR.dss").is_file():
        print(f"[skip] cr_mar not found under {DATA}")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        for days in args.days:
            res = measure(days, args.repeat, args.chunk, Path(tmp), baseline=not args.no_baseline)
            steps = 24 * days
            base = res.get("in memory (baseline)")
            print(f"\n{steps} steps ({days} days), chunk {args.chunk}, median of {args.repeat}; case written in "
                  f"{res['build']['wall']:.2f} s (not counted)")
            print(f"{'way':<24}{'wall s':>8}{'ms/step':>9}{'peak MB':>9}{'x base':>8}  stages [s]")
            for label, r in res.items():
                if label == "build":
                    continue
                ratio = f"{r['wall'] / base['wall']:.2f}" if base else "-"
                st = ", ".join(f"{k} {v:.2f}" for k, v in r["stages"].items())
                print(f"{label:<24}{r['wall']:>8.2f}{r['wall'] / steps * 1e3:>9.3f}{r['rss_mb']:>9.0f}{ratio:>8}  {st}")
            if steps == 8760:
                best = min(v["wall"] for k, v in res.items() if k.startswith("long"))
                print(f"target: a year <= {TARGET_S:.0f} s -> best {best:.2f} s: "
                      + ("PASS" if best <= TARGET_S else f"gap {best - TARGET_S:.2f} s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
