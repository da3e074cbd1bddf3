"""Per-step time of the power-flow engine against a naive opendssdirect loop.

Run from the checkout::

    python benchmarks/bench_powerflow.py [--steps 288] [--repeat 3]

For each feeder of ../shared/data (ieee_eu_lv, cr_mar; a missing one is skipped with a
message) it times, in the same process and on the same seeded load series:

* ``engine``: :meth:`gridmarket.network.OpenDSSNetwork.run_series` — batch power setting,
  ``SolveNoControl``, all node voltages [pu] and all line currents [A] per step;
* ``naive``: per-name loop ``Loads.Name(x); Loads.kW(v)``, ``Solution.Solve()``, voltages
  read bus by bus (``Bus.puVmagAngle``); its loads get the engine's constant-power band so
  both give the same voltages (checked and printed);
* ``naive + I``: the same plus line currents read line by line (what the engine returns);
* ``OpenDSS loop``: OpenDSS's own time loop over the feeder's own loadshapes in one ``Solve``
  (yearly mode for ieee_eu_lv, daily for cr_mar), no results read back — a floor, not a
  like-for-like comparison.

Times are the best of ``--repeat`` runs, per step, in microseconds. The engine's one-time
costs (compile, resolve, first-run layout) are printed separately.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import opendssdirect as odd

from gridmarket.network import OpenDSSNetwork

DATA = Path(os.environ.get("GRIDMARKET_SHARED_DATA",
                           Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@dataclass(frozen=True)
class Feeder:
    """A feeder to time: master path, load range [kW] and OpenDSS's own loop command."""

    name: str
    master: Path
    kw_range: tuple[float, float]
    own_loop: str  #: OpenDSS command setting its own time loop; "{n}" = number of steps


FEEDERS = [
    Feeder("ieee_eu_lv", DATA / "ieee_eu_lv" / "Master.dss", (0.2, 3.0),
           "Set mode=yearly number={n} stepsize=1m"),
    Feeder("cr_mar", DATA / "cr_mar" / "DSS" / "Master_MAR.dss", (0.1, 1.2),
           "Set mode=daily number={n} stepsize=15m"),
]


def _best(fn: Callable[[], object], repeat: int) -> float:
    """Best wall time of ``repeat`` calls [s]."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _compile(master: Path) -> odd.OpenDSSDirect:
    cwd = os.getcwd()
    ctx = odd.NewContext()
    ctx.Text.Command(f'Compile "{master}"')
    os.chdir(cwd)
    return ctx


def _naive(ctx: odd.OpenDSSDirect, loads: Sequence[str], kw: np.ndarray, *,
           currents: bool) -> np.ndarray:
    """The per-name loop; returns the last step's node voltages [pu] in bus order."""
    buses = ctx.Circuit.AllBusNames()
    lines = ctx.Lines.AllNames()
    v: list[float] = []
    for row in kw:
        for name, value in zip(loads, row, strict=True):
            ctx.Loads.Name(name)
            ctx.Loads.kW(float(value))
        ctx.Solution.Solve()
        if not ctx.Solution.Converged():
            msg = "naive loop: power flow did not converge"
            raise RuntimeError(msg)
        v = []
        for bus in buses:
            ctx.Circuit.SetActiveBus(bus)
            v.extend(ctx.Bus.puVmagAngle()[0::2])
        if currents:
            for line in lines:
                ctx.Circuit.SetActiveElement(f"Line.{line}")
                ctx.CktElement.CurrentsMagAng()
    return np.array(v)


def _own_loop(feeder: Feeder, steps: int, repeat: int) -> float:
    ctx = _compile(feeder.master)

    def run() -> None:
        ctx.Text.Command(feeder.own_loop.format(n=steps))
        ctx.Solution.Solve()

    return _best(run, repeat) / steps


def bench(feeder: Feeder, steps: int, repeat: int) -> list[tuple[str, float]] | None:
    """Time one feeder; None (with a message) if its data are absent."""
    if not feeder.master.is_file():
        print(f"[skip] {feeder.name}: {feeder.master} not found (place ../shared/data beside "
              "the checkout or set GRIDMARKET_SHARED_DATA)")
        return None
    t0 = time.perf_counter()
    net = OpenDSSNetwork(feeder.master)
    t_compile = time.perf_counter() - t0
    load_names = list(net.dss.Loads.AllNames())
    t0 = time.perf_counter()
    elements = net.resolve([f"Load.{n}" for n in load_names])
    t_resolve = time.perf_counter() - t0
    rng = np.random.default_rng(12345)
    kw = rng.uniform(*feeder.kw_range, size=(steps, len(load_names)))
    t0 = time.perf_counter()
    net.run_series(elements, kw[:1])
    t_first = time.perf_counter() - t0

    result = {}

    def engine() -> None:
        result["r"] = net.run_series(elements, kw)

    t_engine = _best(engine, repeat) / steps
    ctx = _compile(feeder.master)
    ctx.Text.Command("Set mode=snapshot")
    low, high = net.pq_band_pu or (0.95, 1.05)  # same load model as the engine's
    ctx.Text.Command(f"BatchEdit Load..* vminpu={low} vmaxpu={high}")
    v_naive = _naive(ctx, load_names, kw[:1], currents=False)
    t_naive = _best(lambda: _naive(ctx, load_names, kw, currents=False), repeat) / steps
    t_naive_i = _best(lambda: _naive(ctx, load_names, kw, currents=True), repeat) / steps
    t_own = _own_loop(feeder, steps, repeat)

    # sanity: both ways give the same voltages for the same step
    first = net.run_series(elements, kw[:1])
    v_engine = dict(zip(first.node_names, first.v_pu[0], strict=True))
    names = [f"{b}.{n}" for b in ctx.Circuit.AllBusNames()
             for n in _bus_nodes(ctx, b)]
    diff = max(abs(v_engine[n] - v) for n, v in zip(names, v_naive, strict=True) if n in v_engine)

    res = result["r"]
    print(f"\n{feeder.name}: {len(load_names)} loads, {len(res.node_names)} nodes, "
          f"{len(res.line_phase_names)} line conductors, {steps} steps, best of {repeat}")
    print(f"  one-time: compile {t_compile * 1e3:.0f} ms, resolve {t_resolve * 1e3:.1f} ms, "
          f"first run (layout) {t_first * 1e3:.0f} ms; engine vs naive max |dV| {diff:.1e} pu")
    return [("engine (V + I)", t_engine), ("naive (V only)", t_naive),
            ("naive + I", t_naive_i), ("OpenDSS loop (no read)", t_own)]


def _bus_nodes(ctx: odd.OpenDSSDirect, bus: str) -> list[int]:
    ctx.Circuit.SetActiveBus(bus)
    return list(ctx.Bus.Nodes())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=288, help="power flows per run (default 288)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method; best is kept")
    args = parser.parse_args(argv)
    table: list[tuple[str, str, float, float]] = []
    for feeder in FEEDERS:
        rows = bench(feeder, args.steps, args.repeat)
        if rows is None:
            continue
        engine = rows[0][1]
        table += [(feeder.name, how, t, t / engine) for how, t in rows]
    if not table:
        print("no feeder found; nothing timed")
        return 1
    print(f"\n{'feeder':<12} {'method':<24} {'µs/step':>9} {'x engine':>9}")
    print("-" * 57)
    for name, how, t, ratio in table:
        print(f"{name:<12} {how:<24} {t * 1e6:>9.0f} {ratio:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
