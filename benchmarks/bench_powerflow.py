"""Per-step time of the power-flow engine against OpenDSS's own time loop (issue 6, target 2).

Run from the checkout::

    python benchmarks/bench_powerflow.py [--steps 720] [--repeat 5]

For each network (a missing one is skipped with a message) and the same seeded hourly series
of powers, in the same process:

* ``OpenDSS own loop`` (the **baseline**): OpenDSS's yearly mode in **one** ``Solve`` — each
  dispatched element follows a Loadshape holding exactly the series the engine gets
  (``Load.kW = 1`` × kW multipliers; PV ``irradiance = 1`` × kW/Pmpp), ``stepsize=1h``.
  Monitors and energy meters are disabled and nothing is read back, so this is OpenDSS's
  floor for these steps. Same tolerance (1e-6) and the same constant-power voltage band
  (0.5–1.5 pu) as the engine; PV with the engine's unity efficiency and P-T curves.
* ``engine shapes``: ``OpenDSSNetwork.run_series(method="shapes")`` — all node voltages [pu]
  and all line currents [A] of every step returned as arrays.
* ``engine snapshot``: ``run_series(method="snapshot")`` (per-step batch writes); with PV,
  each irradiance change makes OpenDSS rebuild the system matrix.
* ``naive``: per-name ``Loads.Name(x); Loads.kW(v)``, ``Solve()``, voltages read bus by bus
  (shorter series; a reference for what the engine saves).

Networks: ``cr_mar`` (92 loads), ``ieee_eu_lv`` (55 loads), and ``cr_mar+pv`` (the case-2
network: 92 loads and 92 PV systems). Per-step times are the **median of ``--repeat``
runs**; ratio = engine / OpenDSS own loop (target: ≤ 1.3). Checks printed: the largest
voltage difference between the engine and OpenDSS's own loop at the last step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import opendssdirect as odd

from gridmarket.network import OpenDSSNetwork

DATA = Path(os.environ.get("GRIDMARKET_SHARED_DATA",
                           Path(__file__).resolve().parents[1].parent / "shared" / "data"))
TARGET = 1.3  #: engine / OpenDSS own loop


@dataclass(frozen=True)
class Feeder:
    """A network to time: its master and how to build it (``None``: a file of the shared data)."""

    name: str
    master: Callable[[Path], Path | None]
    with_pv: bool = False


def _shared(rel: str) -> Callable[[Path], Path | None]:
    def get(_: Path) -> Path | None:
        p = DATA / rel
        return p if p.is_file() else None
    return get


def _cr_mar_case(tmp: Path) -> Path | None:
    if not (DATA / "cr_mar" / "DSS" / "Master_MAR.dss").is_file():
        return None
    from gridmarket.cases.cr_mar import build_case

    return build_case(tmp / "cr_mar_case2", case=2, data_dir=DATA) / "network" / "Master.dss"


FEEDERS = [
    Feeder("cr_mar", _shared("cr_mar/DSS/Master_MAR.dss")),
    Feeder("ieee_eu_lv", _shared("ieee_eu_lv/Master.dss")),
    Feeder("cr_mar+pv", _cr_mar_case, with_pv=True),
]


def median_time(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``repeat`` calls [s]."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _compile(master: Path) -> odd.OpenDSSDirect:
    cwd = os.getcwd()
    ctx = odd.NewContext()
    try:
        ctx.Text.Command(f'Compile "{master}"')
    finally:
        os.chdir(cwd)
    return ctx


def _quiet(cmd: Callable[[str], object]) -> None:
    """No monitors, no energy meters (nothing read back in the baseline)."""
    cmd("BatchEdit Monitor..* enabled=no")
    cmd("BatchEdit EnergyMeter..* enabled=no")


def series(net: OpenDSSNetwork, steps: int, with_pv: bool) -> tuple[list[str], np.ndarray]:
    """Element names and a seeded (steps, n) series: loads 0.1–1.5 kW, PV 0–Pmpp [kW]."""
    loads = [f"Load.{n}" for n in net.dss.Loads.AllNames()]
    pvs = [f"PVSystem.{n}" for n in net.dss.PVsystems.AllNames()] if with_pv else []
    rng = np.random.default_rng(12345)
    kw = rng.uniform(0.1, 1.5, size=(steps, len(loads)))
    if pvs:
        pmpp = []
        for name in pvs:
            net.dss.PVsystems.Name(name.split(".", 1)[1])
            pmpp.append(net.dss.PVsystems.Pmpp())
        kw = np.hstack([kw, rng.uniform(0.0, 1.0, size=(steps, len(pvs))) * np.array(pmpp)])
    return loads + pvs, kw


def own_loop(master: Path, elements: Sequence[str], kw: np.ndarray, q_ratio: np.ndarray,
             repeat: int) -> tuple[float, dict[str, float]]:
    """OpenDSS's own yearly loop on the same series; (median s/step, last-step node voltages [pu])."""
    run, last = own_loop_runner(master, elements, kw, q_ratio)
    return median_time(run, repeat) / kw.shape[0], last()


def own_loop_runner(master: Path, elements: Sequence[str], kw: np.ndarray, q_ratio: np.ndarray
                    ) -> tuple[Callable[[], None], Callable[[], dict[str, float]]]:
    """OpenDSS's own yearly loop, prepared: (run the whole series once, last-step node voltages [pu])."""
    ctx = _compile(master)
    cmd = ctx.Text.Command
    _quiet(cmd)
    cmd("Set tolerance=1e-6")
    cmd("New XYCurve.unity npts=2 xarray=[-1000 1000] yarray=[1 1]")
    steps = kw.shape[0]
    for k, name in enumerate(elements):
        shape = f"bench{k}"
        ctx.LoadShape.New(shape)
        ctx.LoadShape.Npts(steps)
        ctx.LoadShape.HrInterval(1.0)
        if name.startswith("Load."):
            ctx.LoadShape.PMult(kw[:, k].tolist())
            ctx.LoadShape.QMult((kw[:, k] * q_ratio[k]).tolist())
            cmd(f"Edit {name} kW=1 kvar=1 yearly={shape} vminpu=0.5 vmaxpu=1.5 status=variable")
        else:
            ctx.PVsystems.Name(name.split(".", 1)[1])
            ctx.LoadShape.PMult((kw[:, k] / ctx.PVsystems.Pmpp()).tolist())
            cmd(f"Edit {name} irradiance=1 yearly={shape} %cutin=0 %cutout=0 pf=1 %Pmpp=100 "
                "effcurve=unity P-TCurve=unity vminpu=0.5 vmaxpu=1.5")

    def run() -> None:
        cmd(f"Set mode=yearly number={steps} stepsize=1h hour=0 sec=0")
        ctx.Solution.Solve()
        if not ctx.Solution.Converged():
            msg = "OpenDSS own loop did not converge"
            raise RuntimeError(msg)

    def last() -> dict[str, float]:
        return dict(zip((n.lower() for n in ctx.Circuit.AllNodeNames()), ctx.Circuit.AllBusMagPu(), strict=True))

    return run, last


def naive(master: Path, loads: Sequence[str], kw: np.ndarray) -> float:
    """Per-name loop (loads only), s/step."""
    ctx = _compile(master)
    _quiet(ctx.Text.Command)
    ctx.Text.Command("Set mode=snapshot tolerance=1e-6")
    buses = ctx.Circuit.AllBusNames()
    t0 = time.perf_counter()
    for row in kw:
        for name, value in zip(loads, row, strict=False):
            ctx.Loads.Name(name.split(".", 1)[1])
            ctx.Loads.kW(float(value))
        ctx.Solution.Solve()
        for bus in buses:
            ctx.Circuit.SetActiveBus(bus)
            ctx.Bus.puVmagAngle()
    return (time.perf_counter() - t0) / kw.shape[0]


def measure(feeder: Feeder, steps: int, repeat: int, tmp: Path) -> dict[str, float] | None:
    """Per-step times [s] of one network; None (with a message) when its data are absent."""
    master = feeder.master(tmp)
    if master is None:
        print(f"[skip] {feeder.name}: shared data not found under {DATA}")
        return None
    net = OpenDSSNetwork(master)
    for c in ("BatchEdit Monitor..* enabled=no", "BatchEdit EnergyMeter..* enabled=no"):
        net.command(c)
    names, kw = series(net, steps, feeder.with_pv)
    es = net.resolve(names)
    q_ratio = np.array([net._own_q_ratio("Load", n.split(".", 1)[1].lower()) if n.startswith("Load.") else 0.0
                        for n in names])
    net.run_series(es, kw[:2])  # layout, first Y build
    out: dict[str, float] = {"elements": float(len(names)), "steps": float(steps)}
    last: dict[str, np.ndarray] = {}
    own_run, own_last = own_loop_runner(master, names, kw, q_ratio)
    own_run()  # warm: the first yearly run builds its matrix
    times: dict[str, list[float]] = {"engine shapes": [], "engine snapshot": [], "own loop": []}
    for _ in range(repeat):  # interleaved, so that a change of load on the machine hits all alike
        for method in ("shapes", "snapshot"):
            t0 = time.perf_counter()
            r = net.run_series(es, kw, method=method)
            times[f"engine {method}"].append((time.perf_counter() - t0) / steps)
            last[method] = r.v_pu[-1]
        t0 = time.perf_counter()
        own_run()
        times["own loop"].append((time.perf_counter() - t0) / steps)
    out.update({k: statistics.median(v) for k, v in times.items()})
    v_own = own_last()
    loads = [n for n in names if n.startswith("Load.")]
    out["naive"] = naive(master, loads, kw[: min(steps, 48), : len(loads)])
    nodes = net.node_names
    common = [i for i, n in enumerate(nodes) if n in v_own]
    out["max |dV| shapes vs own [pu]"] = float(np.nanmax(np.abs(
        last["shapes"][common] - np.array([v_own[nodes[i]] for i in common]))))
    return out


def run_all(steps: int = 720, repeat: int = 5) -> list[tuple[str, dict[str, float]]]:
    """Measure every network; [(name, figures)] for the networks found."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for feeder in FEEDERS:
            r = measure(feeder, steps, repeat, Path(tmp))
            if r is not None:
                rows.append((feeder.name, r))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=720, help="hourly steps per run (default 720)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per method; the median is kept")
    args = parser.parse_args(argv)
    rows = run_all(args.steps, args.repeat)
    if not rows:
        print("no network found; nothing timed")
        return 1
    print(f"\n{args.steps} hourly steps, median of {args.repeat}; µs per step; ratio = engine / OpenDSS own loop "
          f"(target ≤ {TARGET})")
    head = (f"{'network':<11}{'elements':>9}{'own loop':>10}{'shapes':>9}{'ratio':>7}{'snapshot':>10}{'ratio':>7}"
            f"{'naive':>8}{'|dV| pu':>10}")
    print(head)
    print("-" * len(head))
    for name, r in rows:
        own = r["own loop"]
        print(f"{name:<11}{int(r['elements']):>9}{own * 1e6:>10.0f}{r['engine shapes'] * 1e6:>9.0f}"
              f"{r['engine shapes'] / own:>7.2f}{r['engine snapshot'] * 1e6:>10.0f}{r['engine snapshot'] / own:>7.2f}"
              f"{r['naive'] * 1e6:>8.0f}{r['max |dV| shapes vs own [pu]']:>10.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
