"""The one study step (gridmarket.study.pipeline) as run_study and run_long use it: the same
tables from both, a streamed loop equal to the in-memory loop, counts equal to the violations
written, realised welfare and net benefit against hand computations, "customers" monitoring
and the source voltage."""

from __future__ import annotations

import inspect
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gridmarket import contract
from gridmarket.case import load_case
from gridmarket.case.model import Case
from gridmarket.cases.synthetic import build_case
from gridmarket.market import clear_market
from gridmarket.network import count_violations
from gridmarket.results import write_results
from gridmarket.study import run_study, run_to_folder
from gridmarket.study.long_run import run_long

STEPS = 48
QP = {"method": "qp"} if "method" in inspect.signature(clear_market).parameters else {}
PER_STEP = ("market.parquet", "communities.parquet", "violations.parquet", "voltages.parquet", "steps.parquet")


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    root = build_case(tmp_path_factory.mktemp("synthetic") / "case", n_households=24, seed=4, steps=STEPS)
    base = load_case(root)
    # midday PV export violates a tighter upper limit: the loop places batteries
    return replace(base, network=replace(base.network, vmax_pu=1.03))


def _same(a: Path, b: Path, names: tuple[str, ...], atol: float = 0.0) -> None:
    for name in names:
        x, y = contract.read_table(a, name), contract.read_table(b, name)
        assert list(x.columns) == list(y.columns) and len(x) == len(y), name
        num = [c for c in x.columns if contract.table(name).column(c).dtype in ("float",)]
        pd.testing.assert_frame_equal(x.drop(columns=num), y.drop(columns=num), obj=name)
        np.testing.assert_allclose(x[num].to_numpy(dtype=float), y[num].to_numpy(dtype=float), rtol=0, atol=atol,
                                   equal_nan=True, err_msg=name)


def test_run_study_and_run_long_write_identical_tables(case: Case, tmp_path: Path) -> None:
    study = run_study(case, max_iterations=1, power_flow="snapshot", market_kw=QP)
    a = write_results(study.to_results(), tmp_path / "study")
    b = run_long(case, tmp_path / "long", chunk_steps=STEPS, power_flow="snapshot", market_method=QP.get("method"))
    _same(a, b.out_dir, (*PER_STEP, "iterations.csv", "batteries.csv", "agents.csv", "network_buses.csv",
                         "network_lines.csv", "welfare_breakdown.csv"))
    assert study.iterations[0].counts == b.counts


def test_streamed_loop_equals_the_in_memory_loop(case: Case, tmp_path: Path) -> None:
    """Every iteration of the placement loop streamed in chunks of 12 steps (one engine
    session across the chunks) gives the in-memory loop's tables, iterations and banks."""
    mem = run_study(case, power_flow="shapes", market_kw=QP)
    assert len(mem.iterations) >= 2 and mem.iterations[-1].battery_units > 0, "the loop placed batteries"
    streamed = run_study(case, power_flow="shapes", market_kw=QP, stream=True, chunk_steps=12,
                         stream_dir=tmp_path / "stream")
    try:
        assert all(it.market is None and it.flow is None for it in streamed.iterations)
        assert [it.banks for it in streamed.iterations] == [it.banks for it in mem.iterations]
        assert streamed.stop_reason == mem.stop_reason and streamed.best == mem.best
        a = write_results(mem.to_results(), tmp_path / "a")
        b = write_results(streamed.to_results(), tmp_path / "b")
        _same(a, b, (*PER_STEP, "iterations.csv", "batteries.csv"), atol=1e-9)
    finally:
        streamed.cleanup()
    assert not (tmp_path / "stream").exists()


def test_counts_follow_the_violations_written(case: Case, tmp_path: Path) -> None:
    study = run_study(case, market_kw=QP)
    out = write_results(study.to_results(), tmp_path / "r")
    viol = contract.read_table(out, "violations.parquet")
    table = contract.read_table(out, "iterations.csv")
    steps = contract.read_table(out, "steps.parquet")
    for it in study.iterations:
        v = viol[viol["iteration"] == it.index].drop(columns="iteration")
        ref = count_violations(v)
        row = table[table["iteration"] == it.index].iloc[0]
        for k in ("violations", "voltage_violations", "current_violations", "buses_violated", "lines_violated"):
            assert row[k] == ref[k] == it.counts[k], (it.index, k)
        s = steps[steps["iteration"] == it.index]
        assert s["violations"].sum() == row["violations"]
        assert s["welfare"].sum() == pytest.approx(row["welfare"], rel=1e-9)  # CSV: 10 significant digits


def test_realised_welfare_annuity_and_net_benefit_by_hand(case: Case, tmp_path: Path) -> None:
    costed = replace(case, battery=replace(case.battery, capex_per_kwh=800.0, capex_per_kw=100.0,
                                           om_per_year=0.01, lifetime_years=12, discount_rate=0.05))
    study = run_study(costed, market_kw=QP)
    t = study.iteration_table()
    b = costed.battery
    dt = costed.time.step_hours
    r, n = 0.05, 12
    crf = r * (1 + r) ** n / ((1 + r) ** n - 1)  # 0.11283 per year
    for it, row in zip(study.iterations, t.itertuples(), strict=True):
        units = sum(it.banks.values())
        capex = units * (10.24 * 800.0 + 2.56 * 100.0)
        annuity = capex * (crf + 0.01) * STEPS * dt / 8760.0
        assert row.battery_annuity == pytest.approx(annuity, rel=1e-12)
        assert row.net_benefit == pytest.approx(row.welfare_realised - t["welfare_realised"].iloc[0] - annuity,
                                                abs=1e-9)
        # reported − realised = the batteries' valued energy change, from the dispatch itself:
        # ΔE = η_ch·S (charging) or S/η_dis (discharging), v = mean of import and export price
        m = it.market.market
        bat = m[m["kind"] == "battery"]
        s_kwh = bat["S_kw"].to_numpy() * dt
        de = np.where(s_kwh > 0, b.eff_charge * s_kwh, s_kwh / b.eff_discharge)
        v = ((costed.grid.import_price + costed.grid.export_price) / 2)[bat["step"].to_numpy()]
        assert row.welfare - row.welfare_realised == pytest.approx(float((v * de).sum()), abs=1e-6)
        # stored energy value: v at the last step times the energy left in (or drained from) the banks
        last = bat[bat["step"] == STEPS - 1]
        cap = np.array([sum(it.banks.values()) and it.banks[a.removeprefix("SBU_")] for a in last["agent"]]) * 10.24
        v_end = (costed.grid.import_price[-1] + costed.grid.export_price[-1]) / 2
        assert row.stored_energy_value == pytest.approx(v_end * float((cap * (last["soc"] - b.soc_init)).sum()),
                                                        abs=1e-6)
    assert math.isclose(t["net_benefit"].iloc[0], 0.0, abs_tol=1e-12)
    summary = study.summary()
    best = study.iterations[study.best]
    if best.battery_units:
        be = summary["break_even_capex_per_kwh"]
        # at that capex per kWh the best iteration's net benefit is zero
        units = best.battery_units
        gain = best.welfare_realised - study.iterations[0].welfare_realised
        at_be = units * (10.24 * be + 2.56 * 100.0) * (crf + 0.01) * STEPS * dt / 8760.0
        assert at_be == pytest.approx(gain, rel=1e-6, abs=1e-9)
    assert summary["battery_costed"] is True and summary["network_mode"] == "blind"


def test_customers_monitoring_and_placement(case: Case, tmp_path: Path) -> None:
    cust = replace(case, network=replace(case.network, monitored_buses="customers"))
    study = run_study(cust, market_kw=QP)
    customer_buses = {study.agent_buses[a.name] for a in case.agents}
    volts = study.frames["voltages.parquet"]
    assert set(volts["bus"]) == customer_buses
    for it in study.iterations:
        assert set(it.banks) <= customer_buses


def test_source_pu_sets_the_source_voltage(case: Case) -> None:
    hi = replace(case, network=replace(case.network, source_pu=0.99, monitored_buses="all"))
    a = run_study(hi, max_iterations=1, market_kw=QP)
    b = run_study(replace(hi, network=replace(hi.network, source_pu=None)), max_iterations=1, market_kw=QP)
    src = a.network.source_bus if a.network is not None else ""
    va = a.frames["voltages.parquet"]
    vb = b.frames["voltages.parquet"]
    at_src = va[va["bus"] == src]["v_pu"]
    assert len(at_src) and np.allclose(at_src, 0.99, atol=2e-3)
    assert va["v_pu"].mean() < vb["v_pu"].mean() - 0.01  # the case's own source is at 1.02 pu


def test_run_to_folder_streams_long_horizons_and_leaves_no_stray_files(case: Case, tmp_path: Path) -> None:
    seen = []
    from gridmarket.report import build_report

    res, out = run_to_folder(case, tmp_path / "out", stream=True, on_progress=seen.append, t_command=0.0,
                             extra={"report": build_report})
    assert (out / "report.html").is_file()
    assert res.files == {} or all(not p.exists() for p in res.files.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    from gridmarket.report import load_results

    data = load_results(out)
    assert len(data.iterations) == len(res.iterations) and data.steps is not None
    assert seen and seen[-1].done == seen[-1].total == STEPS
    assert {p.iteration for p in seen} == set(range(len(res.iterations)))
    assert any(p.eta_s is not None and "ETA" in p.text for p in seen)


def test_aware_market_through_the_study(case: Case, tmp_path: Path) -> None:
    """``[market] network = "aware"``: each iteration clears with the network's limits inside
    (gridmarket.study.aware), streamed or not; the PV overvoltage of the blind market is gone and
    the prices carry a voltage component."""
    from gridmarket.enums import NetworkMode

    aware = replace(case, market=replace(case.market, network=NetworkMode.AWARE))
    blind = run_study(case, max_iterations=1)
    study = run_study(aware, max_iterations=1)
    assert blind.iterations[0].counts["violations"] > 0
    assert study.iterations[0].counts["violations"] < blind.iterations[0].counts["violations"]
    m = study.frames["market.parquet"]
    mk = m[m["kind"] != "passive"]
    np.testing.assert_allclose(mk["price"], mk["price_energy"] + mk["price_voltage"] + mk["price_congestion"],
                               atol=1e-9)
    assert (mk["price_voltage"].abs() > 1e-6).any()
    s = study.summary()
    assert s["network_mode"] == "aware" and s["network_aware"][0][0]["network_outer_iterations"] >= 2
    streamed = run_study(aware, max_iterations=1, stream=True, chunk_steps=24, stream_dir=tmp_path / "s")
    try:
        assert len(streamed.iterations[0].network) == 2  # one outer loop per chunk
        assert streamed.iterations[0].counts["violations"] < blind.iterations[0].counts["violations"]
    finally:
        streamed.cleanup()
