"""Long runs in chunks (gridmarket.study.long_run): a chunked run is the unchunked run, the
market matches one clear_market over the whole horizon, the network results match a fresh
snapshot power flow, the counts match the violations written, and the folder appears whole
or not at all.

The case is a synthetic feeder (no shared data needed) with two batteries, so that the state
of charge must be carried across chunk boundaries.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gridmarket import contract
from gridmarket.case import load_case
from gridmarket.case.model import Case
from gridmarket.cases.synthetic import build_case
from gridmarket.errors import ResultsError
from gridmarket.market import clear_market
from gridmarket.network import OpenDSSNetwork, count_violations
from gridmarket.outdir import MARKER
from gridmarket.study.long_run import LONG_RUN_FILES, run_long, slice_case
from gridmarket.study.loop import dispatch_kw, with_banks

STEPS = 72  # three days
# The exactness tests use the general QP when clear_market offers the choice: its result for a
# step depends only on the SoC before it. (The fast default path may settle a step to its own
# tolerance differently depending on where a multi-step call starts; see the last test.)
METHOD = "qp" if "method" in inspect.signature(clear_market).parameters else None
MARKET_KW = {} if METHOD is None else {"method": METHOD}


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    root = build_case(tmp_path_factory.mktemp("synthetic") / "case", n_households=24, seed=4, steps=STEPS)
    base = load_case(root)
    # a tighter upper limit than the case's 1.05 pu, so that midday PV export violates it
    base = replace(base, network=replace(base.network, vmax_pu=1.03))
    # two batteries (3 and 1 SBUs) at household buses of the only community
    return with_banks(base, {"h5": 3, "h17": 1}, {"h5": "C1", "h17": "C1"})


@pytest.fixture(scope="module")
def runs(case: Case, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("long")
    return {
        "whole": run_long(case, out / "whole", chunk_steps=STEPS, market_method=METHOD).out_dir,
        "days": run_long(case, out / "days", chunk_steps=24, market_method=METHOD).out_dir,
        "odd": run_long(case, out / "odd", chunk_steps=17, market_method=METHOD).out_dir,
    }


def _read(folder: Path, name: str) -> pd.DataFrame:
    return contract.read_table(folder, name)


@pytest.mark.parametrize("other", ["days", "odd"])
def test_chunked_equals_unchunked(runs: dict[str, Path], other: str) -> None:
    a, b = runs["whole"], runs[other]
    for name in ("market.parquet", "communities.parquet", "voltages.parquet", "violations.parquet", "steps.parquet"):
        x, y = _read(a, name), _read(b, name)
        assert list(x.columns) == list(y.columns) and len(x) == len(y), name
        num = x.select_dtypes("number").columns
        pd.testing.assert_frame_equal(x.drop(columns=num), y.drop(columns=num), obj=name)
        np.testing.assert_allclose(x[num].to_numpy(dtype=float), y[num].to_numpy(dtype=float),
                                   rtol=0, atol=1e-9, equal_nan=True, err_msg=name)
    sa = json.loads((a / "summary.json").read_text())
    sb = json.loads((b / "summary.json").read_text())
    assert sa["chunks"] == 1 and sb["chunks"] > 1
    assert sa["welfare"][0] == pytest.approx(sb["welfare"][0], abs=1e-9)
    assert sa["counts"] == sb["counts"]


def test_market_equals_one_clearing_of_the_whole_horizon(case: Case, runs: dict[str, Path]) -> None:
    ref = clear_market(case, **MARKET_KW)
    m = _read(runs["odd"], "market.parquet")
    n = len(case.agents)
    assert len(m) == STEPS * n
    assert (m["step"].to_numpy() == np.repeat(np.arange(STEPS), n)).all()
    assert m["agent"].iloc[:n].tolist() == case.agent_names
    dt = case.time.step_hours
    np.testing.assert_allclose(m["P_kw"].to_numpy().reshape(STEPS, n), ref.p_kwh / dt, atol=1e-9)
    np.testing.assert_allclose(m["S_kw"].to_numpy().reshape(STEPS, n), ref.s_kwh / dt, atol=1e-9)
    np.testing.assert_allclose(m["soc"].to_numpy().reshape(STEPS, n), ref.soc, atol=1e-9, equal_nan=True)
    # the batteries did something, so the carried SoC mattered
    bats = [i for i, a in enumerate(case.agents) if a.kind.value == "battery"]
    assert np.ptp(ref.soc[:, bats], axis=0).min() > 0.05
    s = json.loads((runs["odd"] / "summary.json").read_text())
    assert s["welfare"][0] == pytest.approx(ref.total_welfare, rel=1e-9)
    steps = _read(runs["odd"], "steps.parquet")
    np.testing.assert_allclose(steps["welfare"].to_numpy(), ref.welfare.to_numpy(), atol=1e-9)


def test_voltages_match_a_fresh_snapshot_power_flow(case: Case, runs: dict[str, Path]) -> None:
    """Two steps re-solved on a new engine (snapshot method, batteries created by hand)."""
    res = clear_market(case, **MARKET_KW)
    kw = dispatch_kw(case, res)
    net = OpenDSSNetwork(case.network.master)
    b = case.battery
    elements = [net.add_battery(a.name, a.bus, kw_rated=a.units * b.unit_kw, kwh=a.units * b.unit_kwh)
                if a.bus else a.element for a in case.agents]
    es = net.resolve(elements)
    pf = np.array([a.pf if a.pf is not None else np.nan for a in case.agents])
    v = _read(runs["days"], "voltages.parquet")
    for t in (12, 60):  # midday of days 1 and 3
        flow = net.run_series(es, kw[t], pf=pf)
        ref = dict(zip(flow.node_names, flow.v_pu[0], strict=True))
        got = v[v["step"] == t]
        names = (got["bus"] + "." + got["phase"].astype(str)).tolist()
        assert len(names) > 0
        # same nodes (LV ones), and the same voltages up to the power-flow tolerance
        np.testing.assert_allclose(got["v_pu"].to_numpy(), [ref[n] for n in names], atol=2e-5)
        # the engine delivered the dispatched powers
        np.testing.assert_allclose(net.element_powers_kw(es), kw[t], atol=1e-4)


def test_counts_and_per_step_table_agree_with_the_violations(case: Case, runs: dict[str, Path]) -> None:
    folder = runs["odd"]
    viol = _read(folder, "violations.parquet")
    volts = _read(folder, "voltages.parquet")
    s = json.loads((folder / "summary.json").read_text())
    # voltage rows are exactly the written voltages outside the limits
    vmin, vmax = case.network.vmin_pu, case.network.vmax_pu
    bad = volts[(volts["v_pu"] < vmin) | (volts["v_pu"] > vmax)]
    got = viol[viol["kind"] == "voltage"]
    assert sorted(zip(got["step"], got["element"], strict=True)) == sorted(
        zip(bad["step"], bad["bus"] + "." + bad["phase"].astype(str), strict=True))
    assert len(bad) > 0  # the case does have midday overvoltage
    # totals: the project's own counting rule on the whole table
    counts = count_violations(viol.drop(columns="iteration"))
    for k in ("violations", "voltage_violations", "current_violations", "buses_violated", "lines_violated",
              "steps_violated"):
        assert s["counts"][k] == counts[k], k
    assert s["counts"]["v_max_pu"] == pytest.approx(counts["v_max_pu"])
    steps = _read(folder, "steps.parquet")
    assert len(steps) == STEPS and steps["violations"].sum() == counts["violations"]
    owner = contract.violation_owner(viol["kind"], viol["element"])
    per_step = (pd.DataFrame({"step": viol["step"], "owner": owner}).drop_duplicates().groupby("step").size()
                .reindex(range(STEPS), fill_value=0))
    np.testing.assert_array_equal(steps["violations"].to_numpy(), per_step.to_numpy())
    np.testing.assert_allclose(steps["v_max_pu"].to_numpy(), volts.groupby("step")["v_pu"].max().to_numpy())


def test_files_whole_and_readable_by_the_report(case: Case, runs: dict[str, Path]) -> None:
    from gridmarket.report import load_results

    for folder in runs.values():
        assert sorted(p.name for p in folder.iterdir() if p.name != MARKER) == sorted(LONG_RUN_FILES)
        assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]
    data = load_results(runs["days"])
    assert data.iterations["iteration"].tolist() == [0] and data.steps is not None and len(data.steps) == STEPS
    with pytest.raises(ResultsError, match="already exists"):
        run_long(case, runs["days"], chunk_steps=24)


def test_failed_run_leaves_nothing(case: Case, tmp_path: Path) -> None:
    def stop(label: str, done: int, total: int) -> None:
        if done >= 48:
            msg = "interrupted"
            raise KeyboardInterrupt(msg)

    with pytest.raises(KeyboardInterrupt):
        run_long(case, tmp_path / "out", chunk_steps=24, progress=stop)
    assert list(tmp_path.iterdir()) == []


def test_slice_case(case: Case) -> None:
    part = slice_case(case, 30, 50)
    assert part.time.steps == 20
    assert part.time.index[0] == case.time.index[30]
    np.testing.assert_array_equal(part.profile_kw, case.profile_kw[30:50])
    np.testing.assert_array_equal(part.grid.import_price, case.grid.import_price[30:50])
    with pytest.raises(ValueError, match="cannot slice"):
        slice_case(case, 50, 30)


SHAPES_MASTER = """\
Clear
New Circuit.shapes basekV=0.4 pu=1.0 phases=3 bus1=src
New Line.L1 bus1=src bus2=b1 phases=3 r1=0.3 x1=0.08 r0=0.3 x0=0.08 c1=0 c0=0 units=km length=0.2 normamps=200
New Line.L2 bus1=b1 bus2=b2 phases=3 r1=0.3 x1=0.08 r0=0.3 x0=0.08 c1=0 c0=0 units=km length=0.2 normamps=200
New Loadshape.wild npts=3 interval=1 mult=[5 0.1 3]
New Load.H1 bus1=b1.1 phases=1 kV=0.23 kW=1 pf=0.95
New Load.H2 bus1=b2.2 phases=1 kV=0.23 kW=1 kvar=0.5
New Load.H3 bus1=b2.3 phases=1 kV=0.23 kW=2 pf=0.9 daily=wild yearly=wild
New PVSystem.PV1 bus1=b2.2 phases=1 kV=0.23 kVA=5 Pmpp=4 irradiance=1 pf=1 %cutin=0 %cutout=0
Set VoltageBases=[0.4]
CalcVoltageBases
"""


def test_engine_shapes_method_agrees_with_snapshot(tmp_path: Path) -> None:
    """The "shapes" power flow (used by long runs) against the per-step "snapshot" one: same
    voltages to the power-flow tolerance, the powers delivered, an element it does not
    dispatch (H3, with its own loadshapes) held at its kW as in a snapshot."""
    master = tmp_path / "m.dss"
    master.write_text(SHAPES_MASTER)
    rng = np.random.default_rng(0)
    kw = np.column_stack([rng.uniform(0.2, 6, 10), rng.uniform(0.2, 4, 10), rng.uniform(0, 4, 10),
                          rng.uniform(-2.5, 2.5, 10)])  # H1, H2, PV1, a battery
    flows, powers = {}, {}
    for method in ("snapshot", "shapes"):
        net = OpenDSSNetwork(master)
        bat = net.add_battery("B1", "b1.3", kw_rated=2.56, kwh=10.24)
        es = net.resolve(["Load.H1", "Load.H2", "PVSystem.PV1", bat])
        flows[method] = net.run_series(es, kw, method=method)
        powers[method] = net.element_powers_kw(es)
        h3 = net.resolve(["Load.H3"])
        assert net.element_powers_kw(h3)[0] == pytest.approx(2.0, rel=1e-5)
        if method == "shapes":
            with net.shape_session(es) as session:
                with pytest.raises(Exception, match="shape session is open"):
                    net.run_series(es, kw)
                part = np.vstack([session.run(kw[:4]).v_pu, session.run(kw[4:]).v_pu])
            np.testing.assert_array_equal(part, net.run_series(es, kw, method="shapes").v_pu)
    np.testing.assert_allclose(flows["shapes"].v_pu, flows["snapshot"].v_pu, atol=2e-6)
    np.testing.assert_allclose(powers["shapes"], kw[-1], atol=1e-5)
    np.testing.assert_allclose(powers["snapshot"], kw[-1], atol=1e-5)


def test_default_market_method_chunked_close(case: Case, runs: dict[str, Path], tmp_path: Path) -> None:
    """With clear_market's default method, chunks agree with the exact run to the market's tolerance."""
    default = run_long(case, tmp_path / "default", chunk_steps=24).out_dir
    a, b = _read(default, "market.parquet"), _read(runs["whole"], "market.parquet")
    for col in ("P_kw", "S_kw", "soc"):
        np.testing.assert_allclose(a[col].to_numpy(), b[col].to_numpy(), atol=1e-3, equal_nan=True, err_msg=col)
    va, vb = _read(default, "voltages.parquet"), _read(runs["whole"], "voltages.parquet")
    np.testing.assert_allclose(va["v_pu"].to_numpy(), vb["v_pu"].to_numpy(), atol=1e-5)


# ------------------------------------------------------------------ long cases of the Costa Rica feeder


def test_rotate_days_keeps_energy_and_rotates_within_groups() -> None:
    from gridmarket.cases.profiles import rotate_days

    day = np.array([[1.0, 3.0], [2.0, 2.0], [0.0, 0.0], [4.0, 0.0]])  # 4 customers, 2 "hours"
    out = rotate_days(day, np.array(["R", "R", "R", "C"]), 3).reshape(3, 2, 4)
    np.testing.assert_array_equal(out[0], day.T)  # day 0 as measured
    # day 1: customer 0 takes customer 1's shape (flat) at its own mean 2; customer 1 takes 0's,
    # [1, 3] at its mean 2, capped at its own measured peak 2 with its energy 4 kept: [2, 2]
    np.testing.assert_allclose(out[1][:, 0], [2.0, 2.0])
    np.testing.assert_allclose(out[1][:, 1], [2.0, 2.0])
    np.testing.assert_allclose(out[2], out[0])  # a pool of two repeats every other day
    assert (out[:, :, 2] == 0).all()  # no energy stays no energy
    np.testing.assert_allclose(out[:, :, 3], np.tile([4.0, 0.0], (3, 1)))  # alone in its group


def test_rotated_days_keep_each_customers_energy_and_peak() -> None:
    from gridmarket.cases.profiles import rotate_days

    # customer 0 is a single spike (24 kW in hour 0, mean 1 kW); customer 1 is flat at 10 kW
    day = np.zeros((2, 24))
    day[0, 0] = 24.0
    day[1, :] = 10.0
    out = rotate_days(day, np.array(["R", "R"]), 2).reshape(2, 24, 2)
    # day 1: the flat customer takes the spike's shape: 240 kW in hour 0 uncapped; capped at its
    # own peak of 10 kW with its 240 kWh kept, it stays flat at 10 kW
    np.testing.assert_allclose(out[1][:, 1], np.full(24, 10.0), rtol=1e-9)
    # the spike customer takes the flat shape at its mean: 1 kW every hour (under its peak 24)
    np.testing.assert_allclose(out[1][:, 0], np.full(24, 1.0), rtol=1e-12)
    # a customer of mean 2 and peak 4 given a spike shape: 4 kW where the spike was, the rest of
    # its 48 kWh spread over the other hours (44/23 kW each; a thousandth of the mean lifts them)
    day3 = np.array([[4.0] * 6 + [1.0] * 12 + [2.0] * 6, [0.0] * 23 + [24.0]])
    cap = rotate_days(day3, np.array(["R", "R"]), 2).reshape(2, 24, 2)[1][:, 0]
    assert cap.sum() == pytest.approx(48.0, rel=1e-12) and cap.max() == pytest.approx(4.0, rel=1e-12)
    assert cap[23] == pytest.approx(4.0) and np.allclose(cap[:23], 44.0 / 23.0, rtol=1e-9)


def test_cr_mar_case_of_several_days(cr_mar_dir: Path, tmp_path: Path) -> None:
    import tomllib

    from gridmarket.cases.cr_mar import build_case as build_cr

    one = build_cr(tmp_path / "one", case=2, data_dir=cr_mar_dir.parent)
    three = build_cr(tmp_path / "three", case=2, days=3, data_dir=cr_mar_dir.parent)
    assert tomllib.loads((three / "case.toml").read_text())["time"]["steps"] == 72
    p1, p3 = pd.read_csv(one / "profiles.csv"), pd.read_csv(three / "profiles.csv")
    assert len(p3) == 72 and list(p3.columns) == list(p1.columns)
    pd.testing.assert_frame_equal(p3.iloc[:24].reset_index(drop=True), p1)
    loads = [c for c in p1.columns if c.startswith("Load")]
    daily = p3[loads].to_numpy().reshape(3, 24, len(loads)).sum(axis=1)
    np.testing.assert_allclose(daily[1], daily[0], atol=24e-6)  # each customer keeps its energy per day
    np.testing.assert_allclose(daily[2], daily[0], atol=24e-6)
    moved = np.abs(p3[loads].to_numpy()[24:48] - p3[loads].to_numpy()[:24]).max(axis=0)
    assert (moved[daily[0] > 0] > 1e-3).mean() > 0.9  # the timing changes for (nearly) every customer
    # PV: the pvlib days that follow the start date, read here straight from the file
    pv = pd.read_csv(cr_mar_dir.parent / "profiles" / "pvlib_costa_rica" / "pvlib_clearsky_sanjose_cr_2023_hourly.csv",
                     index_col=0, parse_dates=True)["p_ac_pu"]
    expected = pv.loc["2023-03-15":"2023-03-17"].to_numpy()
    np.testing.assert_allclose(p3["pv_pu"].to_numpy(), expected, atol=1e-6)
    assert pd.Timestamp(p3["time"].iloc[-1]) == pd.Timestamp("2023-03-17T23:00")
