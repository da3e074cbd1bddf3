"""The synthetic feeder generator: reproducible by seed, the promised elements, a radial
network that compiles and solves, and a case that loads and runs the study loop.

Network facts are read back from OpenDSS itself (a separate opendssdirect context), not
from the generator's own data structures.
"""

from __future__ import annotations

import csv
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import opendssdirect as odd
import pandas as pd
import pytest

from gridmarket.cases.synthetic import (
    HOUSEHOLDS_PER_TRANSFORMER,
    build_case,
    household_profiles,
    pv_profile,
    write_feeder,
)


def _compile(master: Path) -> odd.OpenDSSDirect:
    ctx = odd.NewContext()
    cwd = os.getcwd()
    try:
        ctx.Text.Command(f'Compile "{master}"')
    finally:
        os.chdir(cwd)
    return ctx


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_feeder(tmp_path: Path) -> None:
    a = write_feeder(tmp_path / "a", n_households=40, seed=7, steps=24).parent
    b = write_feeder(tmp_path / "b", n_households=40, seed=7, steps=24).parent
    c = write_feeder(tmp_path / "c", n_households=40, seed=8, steps=24).parent
    assert _files(a) == _files(b)
    assert _files(a)["Lines.dss"] != _files(c)["Lines.dss"]
    assert _files(a)["Loadshapes.dss"] != _files(c)["Loadshapes.dss"]
    # the layout does not depend on the number of steps written
    d = write_feeder(tmp_path / "d", n_households=40, seed=7).parent
    assert _files(d)["Lines.dss"] == _files(a)["Lines.dss"] and "Loadshapes.dss" not in _files(d)


@pytest.mark.parametrize("n", [1, 31, 150])
def test_households_pv_transformers_present_and_radial(tmp_path: Path, n: int) -> None:
    master = write_feeder(tmp_path / "f", n_households=n, seed=3)
    assert master.name == "Master.dss" and master.is_file()
    ctx = _compile(master)
    loads = {name.lower() for name in ctx.Loads.AllNames()}
    pvs = {name.lower() for name in ctx.PVsystems.AllNames()}
    assert loads == {f"h{k}" for k in range(1, n + 1)}
    assert pvs == {f"pv{k}" for k in range(1, n + 1)}
    n_tx = ctx.Transformers.Count()
    assert n_tx == math.ceil(n / HOUSEHOLDS_PER_TRANSFORMER)
    # every household: single-phase, on its own bus and a phase node 1..3, PV beside it
    phases: Counter[int] = Counter()
    for k in range(1, n + 1):
        ctx.Circuit.SetActiveElement(f"Load.H{k}")
        bus = ctx.CktElement.BusNames()[0].lower()
        name, node = bus.split(".")
        assert name == f"h{k}" and int(node) in (1, 2, 3)
        assert ctx.CktElement.NumPhases() == 1
        phases[int(node)] += 1
        ctx.Circuit.SetActiveElement(f"PVSystem.PV{k}")
        assert ctx.CktElement.BusNames()[0].lower() == bus
        ctx.PVsystems.Name(f"PV{k}")
        assert ctx.PVsystems.Pmpp() in (3.0, 4.0, 5.0)
        assert ctx.PVsystems.kVARated() == pytest.approx(1.1 * ctx.PVsystems.Pmpp())
    # phases a/b/c in use, balanced to a few households per LV feeder
    if n >= 3:
        assert set(phases) == {1, 2, 3}
        assert max(phases.values()) - min(phases.values()) <= math.ceil(n / 30) + 1
    # radial and connected: one series element per bus but the source's
    n_buses = ctx.Circuit.NumBuses()
    assert ctx.Lines.Count() + n_tx == n_buses - 1
    ctx.Solution.Solve()
    assert ctx.Solution.Converged()
    v = np.asarray(ctx.Circuit.AllBusMagPu())
    assert v.min() > 0.9 and v.max() < 1.15
    # every bus has coordinates (for the network map)
    for b in ctx.Circuit.AllBusNames():
        ctx.Circuit.SetActiveBus(b)
        assert ctx.Bus.Coorddefined()


def test_loadshapes_drive_opendss_yearly_loop(tmp_path: Path) -> None:
    """OpenDSS's own yearly loop on the written shapes gives each load the profile's kW."""
    n, steps = 12, 6
    master = write_feeder(tmp_path / "f", n_households=n, seed=5, steps=steps)
    ctx = _compile(master)
    ctx.Text.Command(f"Set mode=yearly number={steps - 1} stepsize=1h")  # hours 0..4, then step 5
    ctx.Solution.Solve()
    ctx.Text.Command("Set number=1")
    ctx.Solution.Solve()  # hour 5 (the last)
    demand = household_profiles(n, steps, seed=5)
    pv = pv_profile(steps, seed=5)
    for k in (1, 7, 12):
        ctx.Circuit.SetActiveElement(f"Load.H{k}")
        assert ctx.CktElement.TotalPowers()[0] == pytest.approx(round(demand[steps - 1, k - 1], 6), rel=1e-3)
    assert pv[steps - 1] == 0.0  # 05:00 is before sunrise


def test_profiles_shapes_and_physics() -> None:
    d = household_profiles(50, 72, seed=2)
    assert d.shape == (72, 50) and np.isfinite(d).all() and (d > 0).all()
    # median daily energy near the documented 9 kWh; a longer run starts with the same days
    assert 6.0 < float(np.median(d[:24].sum(axis=0))) < 13.0
    np.testing.assert_array_equal(household_profiles(50, 24, seed=2), d[:24])
    pv = pv_profile(72, seed=2)
    hours = np.arange(72) % 24
    assert (pv[(hours < 6) | (hours >= 18)] == 0).all()
    assert pv.max() <= 0.8 + 1e-12 and pv[:24].max() == pytest.approx(0.8 * math.sin(math.pi * 5.5 / 12) ** 1.2)
    np.testing.assert_array_equal(pv_profile(24, seed=2), pv[:24])


def test_case_loads_and_runs_the_loop(tmp_path: Path) -> None:
    from gridmarket.case import load_case
    from gridmarket.network import monitored_mask
    from gridmarket.study import run_study

    n, steps = 120, 6
    root = build_case(tmp_path / "case", n_households=n, seed=1, steps=steps)
    with (root / "agents.csv").open(newline="") as f:
        agents = list(csv.DictReader(f))
    assert len(agents) == 2 * n
    coms = Counter(a["community"] for a in agents if a["kind"] == "consumer")
    assert coms == {"C1": HOUSEHOLDS_PER_TRANSFORMER, "C2": n - HOUSEHOLDS_PER_TRANSFORMER}
    prof = pd.read_csv(root / "profiles.csv")
    np.testing.assert_allclose(prof["H3"].to_numpy(), household_profiles(n, steps, seed=1)[:, 2], atol=1e-6)
    case = load_case(root)
    assert case.time.steps == steps and len(case.agents) == 2 * n
    study = run_study(case, max_iterations=1)
    it = study.iterations[0]
    # market dispatch arrives in the network: total load power equals the cleared consumption
    net = study.network
    assert net is not None
    flow = it.flow
    lv = monitored_mask(net.node_names, net.buses, "lv")
    assert flow.v_pu.shape[0] == steps and lv.sum() > n and np.isfinite(flow.v_pu[:, lv]).all()
    assert 0.9 < np.nanmin(flow.v_pu[:, lv]) and np.nanmax(flow.v_pu[:, lv]) < 1.1
    last = steps - 1
    es = net.resolve([f"Load.H{k}" for k in range(1, n + 1)])
    cons = [i for i, a in enumerate(case.agents) if a.kind.value == "consumer"]
    np.testing.assert_allclose(net.element_powers_kw(es), it.market.p_kwh[last, cons], rtol=1e-5, atol=1e-6)


def test_households_per_transformer_feeds_each_household_from_its_own_transformer(tmp_path: Path) -> None:
    """A utility's shape (issue 14): 5 households per pole transformer, the last takes the rest.

    Read back from OpenDSS: 23 households give ceil(23 / 5) = 5 transformers of 100 kVA (the
    smallest standard size >= 3.5 kVA × 5); switching one transformer off de-energises
    exactly its own households (H6..H10 behind T2) and no other; the case's communities are
    those transformers.
    """
    n, per = 23, 5
    master = write_feeder(tmp_path / "f", n_households=n, seed=2, households_per_transformer=per)
    ctx = _compile(master)
    assert ctx.Transformers.Count() == 5
    for name in ctx.Transformers.AllNames():
        ctx.Transformers.Name(name)
        assert ctx.Transformers.kVA() == pytest.approx(100.0)
    ctx.Text.Command("Transformer.T2.enabled=no")
    ctx.Solution.Solve()
    assert ctx.Solution.Converged()
    dead = set()
    for k in range(1, n + 1):
        ctx.Circuit.SetActiveBus(f"h{k}")
        if max(ctx.Bus.puVmagAngle()[0::2]) < 0.1:
            dead.add(k)
    assert dead == {6, 7, 8, 9, 10}
    root = build_case(tmp_path / "case", n_households=n, seed=2, steps=2, households_per_transformer=per)
    with (root / "agents.csv").open(newline="") as f:
        coms = Counter(a["community"] for a in csv.DictReader(f) if a["kind"] == "consumer")
    assert coms == {"C1": 5, "C2": 5, "C3": 5, "C4": 5, "C5": 3}
    # the default stays 100 households per transformer
    default = write_feeder(tmp_path / "d", n_households=n, seed=2)
    assert _compile(default).Transformers.Count() == math.ceil(n / HOUSEHOLDS_PER_TRANSFORMER)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "5"])
def test_households_per_transformer_refused_when_not_a_positive_integer(tmp_path: Path, bad: object) -> None:
    from gridmarket.cases.synthetic import layout
    from gridmarket.errors import GridmarketError

    with pytest.raises(GridmarketError, match="households_per_transformer must be a positive integer"):
        layout(10, households_per_transformer=bad)  # type: ignore[arg-type]
