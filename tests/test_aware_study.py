"""The aware market inside the study (run_study / run_iteration), value placement and the
four-way comparison, on small feeders solved by OpenDSS and markets solved for real. Expected
values come from independent runs (a plain blind clearing and power flow; the same case with
the unit placed by hand at each candidate bus), never from the code's own output."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _aware_cases import write_aware_case
from gridmarket import economics
from gridmarket.case.io import load_case
from gridmarket.case.model import Case
from gridmarket.enums import AgentKind, NetworkMode, PlacementRule
from gridmarket.errors import CaseError
from gridmarket.market import clear_market
from gridmarket.network import OpenDSSNetwork, check_limits, count_violations
from gridmarket.results import write_results
from gridmarket.study import run_study
from gridmarket.study.aware import RESIDUAL_FILE, RESIDUAL_FILE_COLUMNS, clear_aware
from gridmarket.study.compare import COLUMNS, SCENARIOS, compare
from gridmarket.study.loop import attach_agents, dispatch_kw, with_banks
from gridmarket.study.value_placement import NO_COST_THRESHOLD, bus_values

V_LN = 230.0
X_SRC = 1e-6

#: the study's own sections on top of the aware case (tests/_aware_cases.py)
EXTRA = """
[battery]
capex_per_kwh = {capex}

[placement]
rule = "value"
max_iterations = {iterations}
"""

# src -l0- b0, then a weak branch to ba and a stiff one to bb: midday PV export overvolts ba only
TWO_BRANCH = f"""\
Clear
Set DefaultBaseFrequency=50
New Circuit.tb phases=1 basekV={V_LN / 1000} pu=1.0 angle=0 bus1=src R1=0 X1={X_SRC} R0=0 X0={X_SRC}
New Line.l0 phases=1 bus1=src.1 bus2=b0.1 rmatrix=[0.05] xmatrix=[0.02] cmatrix=[0] length=1 units=none normamps=1000
New Line.la phases=1 bus1=b0.1 bus2=ba.1 rmatrix=[0.30] xmatrix=[0.05] cmatrix=[0] length=1 units=none normamps=1000
New Line.lb phases=1 bus1=b0.1 bus2=bb.1 rmatrix=[0.05] xmatrix=[0.02] cmatrix=[0] length=1 units=none normamps=1000
New Load.ha phases=1 bus1=ba.1 kV={V_LN / 1000} kW=1 kvar=0 model=1
New Load.hb phases=1 bus1=bb.1 kV={V_LN / 1000} kW=1 kvar=0 model=1
New PVSystem.pva phases=1 bus1=ba.1 kV={V_LN / 1000} kVA=12 Pmpp=11 irradiance=1 pf=1 %cutin=0 %cutout=0
New PVSystem.pvb phases=1 bus1=bb.1 kV={V_LN / 1000} kVA=12 Pmpp=11 irradiance=1 pf=1 %cutin=0 %cutout=0
New Load.p0 phases=1 bus1=b0.1 kV={V_LN / 1000} kW=1 kvar=0 model=1
Set voltagebases=[{V_LN * np.sqrt(3) / 1000:.12g}]
CalcVoltageBases
"""
AGENTS = """\
HA,consumer,C1,Load.ha,load,1,0.02,2.0,0,0.3,,
PVA,producer,C1,PVSystem.pva,pv,1,0.01,0.05,0,0,,
HB,consumer,C1,Load.hb,load,1,0.02,2.0,0,0.3,,
PVB,producer,C1,PVSystem.pvb,pv,1,0.01,0.05,0,0,,
P0,passive,,Load.p0,p0,1,0,0,0,0,,
"""
PROFILES = {"load": [1.0, 1.0, 2.0, 3.0], "pv": [0.0, 10.0, 4.0, 0.0], "p0": [0.5, 0.5, 0.5, 0.5]}


def _write(root: Path, *, capex: float = 0.0, iterations: int = 2, master: str = TWO_BRANCH,
           agents: str = AGENTS, profiles: dict[str, list[float]] | None = None,
           monitored: str = '["ba", "bb"]') -> Case:
    write_aware_case(root, name="two-branch", master=master, agents=agents, profiles=profiles or PROFILES,
                     monitored=monitored, extra=EXTRA.format(capex=capex, iterations=iterations))
    return load_case(root)


def _aware_with_unit_at(case: Case, bus: str) -> float:
    """Realised welfare of the aware clearing with one unit placed by hand at ``bus``."""
    c = with_banks(case, {bus: 1}, {bus: "C1"})
    net = OpenDSSNetwork(c.network.master)
    es = net.resolve(attach_agents(c, net))
    res = clear_aware(c, net, es)
    viol = check_limits(res.flow, vmin_pu=c.network.vmin_pu, vmax_pu=c.network.vmax_pu)
    assert count_violations(viol)["violations"] == 0
    return float(res.market.welfare_realised)


# --------------------------------------------------------------------------- value placement


def test_value_placement_puts_the_unit_where_the_duals_value_relief_most(tmp_path: Path) -> None:
    case = _write(tmp_path)
    # the feeder does what it was built for: the blind market overvolts ba only
    net = OpenDSSNetwork(case.network.master)
    es = net.resolve(attach_agents(case, net))
    blind = net.run_series(es, dispatch_kw(case, clear_market(case)))
    col = {n: k for k, n in enumerate(blind.node_names)}
    assert blind.v_pu[1, col["ba.1"]] > 1.05 > blind.v_pu[1, col["bb.1"]]
    res = run_study(case)
    assert [it.banks for it in res.iterations] == [{}, {"ba": 1}]
    assert res.iterations[0].counts["violations"] == 0  # the aware market already respects the grid
    assert res.iterations[1].case.agents_of(AgentKind.BATTERY)[0].bus == "ba"
    # independent check: the unit is worth more at ba than at bb (each placed by hand)
    w_a, w_b = _aware_with_unit_at(case, "ba"), _aware_with_unit_at(case, "bb")
    assert w_a > w_b + 0.05
    assert res.iterations[1].welfare_realised == pytest.approx(w_a, abs=1e-6)
    # the relief of the iteration-0 duals: ba's unit is worth more than bb's, both positive
    tally = res.iterations[0].aware
    vals = bus_values(tally.relief, case.agents, res.agent_buses, case.battery.unit_kw)
    assert list(vals.index[:2]) == ["ba", "bb"] and vals["ba"] > vals["bb"] > 0
    # after it, either nothing binds any more or the iteration limit stopped the loop
    assert res.stop_reason in ("reached max_iterations = 2", "no network row binds: the duals value no relief")


def test_value_placement_stops_below_the_annuity(tmp_path: Path) -> None:
    case = _write(tmp_path, capex=1e6, iterations=5)
    res = run_study(case)
    assert len(res.iterations) == 1 and res.iterations[0].banks == {}
    assert "is below its annuity over the run" in res.stop_reason
    # with the cost of one unit just below its value, it is placed
    tally = res.iterations[0].aware
    vals = bus_values(tally.relief, case.agents, res.agent_buses, case.battery.unit_kw)
    spec = case.battery
    # the annuity is linear in capex: a capex at which one unit costs 90 % of its value
    per_capex = economics.annuity(1, replace(spec, capex_per_kwh=1.0), 4, 1.0)
    cheap = replace(case, battery=replace(spec, capex_per_kwh=0.9 * float(vals.iloc[0]) / per_capex),
                    placement=replace(case.placement, max_iterations=2))
    res2 = run_study(cheap)
    assert res2.iterations[-1].banks == {"ba": 1}


def test_value_placement_without_cost_says_so(tmp_path: Path) -> None:
    # no row binds (little PV): nothing to value, the rule says so and places nothing
    case = _write(tmp_path, iterations=5, profiles={"load": [1.0, 1.0, 2.0, 3.0], "pv": [0.0, 2.0, 1.0, 0.0],
                                                    "p0": [0.5] * 4})
    res = run_study(case)
    assert res.iterations[0].banks == {} and len(res.iterations) == 1
    assert res.stop_reason.startswith("no network row binds")
    assert NO_COST_THRESHOLD > 0


def test_value_rule_needs_the_aware_market(tmp_path: Path) -> None:
    case = _write(tmp_path)
    blind = replace(case, market=replace(case.market, network=NetworkMode.BLIND))
    with pytest.raises(CaseError, match=r"\[placement\].rule"):
        run_study(blind)


# --------------------------------------------------------------------------- the study's tables


def test_aware_study_records_its_facts_and_residual(tmp_path: Path) -> None:
    """A passive load on its own lateral from a stiff source undervolts its bus b3 in the last
    two steps, where no agent can reach it: a residual violation with its cause in
    network_residual.csv; the PV at ba is curtailed at midday (binding rows, congestion rent)."""
    lateral = TWO_BRANCH.replace("Set voltagebases", f"""\
New Line.l3 phases=1 bus1=src.1 bus2=b3.1 rmatrix=[0.15] xmatrix=[0.05] cmatrix=[0] length=1 units=none normamps=1000
New Load.p3 phases=1 bus1=b3.1 kV={V_LN / 1000} kW=1 kvar=0 model=1
Set voltagebases""")
    profiles = {**PROFILES, "p3": [1.0, 1.0, 20.0, 20.0]}
    case = _write(tmp_path / "case", profiles=profiles, master=lateral,
                  agents=AGENTS + "P3,passive,,Load.p3,p3,1,0,0,0,0,,\n", monitored='["ba", "bb", "b3"]')
    case = replace(case, placement=replace(case.placement, rule=PlacementRule.VIOLATIONS, max_iterations=1))
    res = run_study(case)
    it = res.iterations[0]
    summ = it.aware.summary()  # the iteration's chunks together (one here)
    chunk = res.summary()["network_aware"][0][0]  # summary.json: per iteration, per chunk
    assert chunk["network_residual_violations"] == summ["residual_violations"]
    assert chunk["network_congestion_rent"] == pytest.approx(summ["congestion_rent"])
    assert chunk["network_residual_by_cause"] == summ["residual_by_cause"]
    assert summ["clearings"] >= 2 and summ["outer_iterations_per_step_max"] >= 2
    assert summ["rows"] > 0 and summ["binding_rows"] > 0 and summ["congestion_rent"] > 0
    # the rent is what the agents pay through their network price components (MODEL.md)
    m = it.market
    assert m is not None
    energy = np.asarray(m.p_kwh) + np.asarray(m.s_kwh)
    comp = np.nan_to_num(np.asarray(m.price_voltage) + np.asarray(m.price_congestion))
    assert summ["congestion_rent"] == pytest.approx(float((comp * energy).sum()), rel=1e-6, abs=1e-9)
    # the violations of the study's count are the residual ones
    assert summ["residual_violations"] == it.counts["violations"] > 0
    assert summ["residual_by_cause"] == {f"no agent has sensitivity above {1e-6:g} pu/kW to this voltage row":
                                         summ["residual_violations"]}
    out = write_results(res.to_results(), tmp_path / "out")
    table = pd.read_csv(out / RESIDUAL_FILE)
    assert tuple(table.columns) == RESIDUAL_FILE_COLUMNS
    assert len(table) == summ["residual_violations"]
    # the same run in chunks of one step: the same facts, steps counted in the whole horizon
    chunked = run_study(case, chunk_steps=1)
    t2 = chunked.to_results().tables[RESIDUAL_FILE]
    assert list(t2["step"]) == list(table["step"]) == [2, 3]
    assert set(table["element"]) == {"b3.1"} and (table["value"] < table["limit"]).all()
    assert chunked.iterations[0].welfare_realised == pytest.approx(it.welfare_realised, abs=1e-6)


# --------------------------------------------------------------------------- comparison


def test_compare_scenario_1_is_a_plain_blind_run_and_3_a_plain_aware_clearing(tmp_path: Path) -> None:
    case = _write(tmp_path, iterations=2)
    table = compare(case)
    assert tuple(table.columns) == COLUMNS and tuple(table["scenario"]) == SCENARIOS
    row = table.set_index("scenario")
    # (1) by hand: blind clearing, its power flow, the counting rule
    blind_case = replace(case, market=replace(case.market, network=NetworkMode.BLIND))
    mk = clear_market(blind_case)
    net = OpenDSSNetwork(case.network.master)
    es = net.resolve(attach_agents(case, net))
    flow = net.run_series(es, dispatch_kw(case, mk))
    viol = check_limits(flow, vmin_pu=case.network.vmin_pu, vmax_pu=case.network.vmax_pu,
                        monitored_nodes=np.array([n.split(".")[0] in ("ba", "bb") for n in flow.node_names]))
    b = row.loc["blind"]
    assert b["violations"] == count_violations(viol)["violations"] > 0
    assert b["welfare_realised"] == pytest.approx(float(mk.welfare_realised), abs=1e-9)
    assert b["net_benefit"] == 0.0 and b["battery_units"] == 0
    pv_avail = sum(PROFILES["pv"])  # two PV agents, scale 1, 1 h steps, Pmpp above the profile
    assert b["curtailed_kwh"] == pytest.approx(2 * pv_avail + float(np.asarray(mk.p_kwh)[:, [1, 3]].sum()), abs=1e-9)
    price = mk.market["price"].to_numpy(dtype=float)
    assert b["price_spread"] == pytest.approx(np.nanmax(price) - np.nanmin(price), abs=1e-12)
    assert np.isnan(b["linearisation_error_pu"])
    # (3) a plain aware clearing: no violation, welfare lost to the grid, PV curtailed at ba
    aw = clear_aware(case, net, es)
    a = row.loc["aware"]
    assert a["violations"] == 0
    assert a["welfare_realised"] == pytest.approx(float(aw.market.welfare_realised), abs=1e-6)
    assert a["net_benefit"] == pytest.approx(float(aw.market.welfare_realised) - float(mk.welfare_realised), abs=1e-6)
    assert a["net_benefit"] < 0 and a["curtailed_kwh"] > b["curtailed_kwh"] + 1.0
    assert a["linearisation_error_pu"] < case.market.network_margin_pu
    # (4) the value rule's unit gives back part of what respecting the grid cost
    v = row.loc["aware+value"]
    assert v["battery_units"] == 1 and v["violations"] == 0 and v["welfare_realised"] > a["welfare_realised"]


def test_compare_scenario_2_is_the_study_placement(tmp_path: Path) -> None:
    case = _write(tmp_path, iterations=3)
    row = compare(case).set_index("scenario")
    placed = row.loc["blind+placement"]
    # the blind market overvolts ba: the study's rule puts ladder[0] = 1 unit there first
    assert placed["battery_units"] >= case.placement.ladder[0]
    assert placed["net_benefit"] == pytest.approx(placed["welfare_realised"] - row.loc["blind", "welfare_realised"])


# --------------------------------------------------------------------------- cheaper rows


def test_rows_left_to_a_parallel_tighter_row_and_violated_rows_kept() -> None:
    from gridmarket.study.aware import _distinct_rows
    g = np.array([[1.0, 0.5, 0.0],   # tight
                  [1.0, 0.5, 0.001],  # parallel to row 0, looser: left to it
                  [0.0, 0.2, 1.0],   # another direction: kept
                  [1.0, 0.5, 0.0]])  # parallel and looser, but violated now: kept
    room = np.array([0.1, 0.5, 0.3, 0.9])
    big = np.abs(g).max(axis=1)
    keep = _distinct_rows(g, room, big, [False, False, False, True], 0.99)
    assert keep.tolist() == [True, False, True, True]
    assert _distinct_rows(g, room, big, [False] * 4, 1.0).all()


def test_the_outer_loop_power_flow_equals_a_full_solve(tmp_path: Path) -> None:
    """Only the steps whose dispatch changed are solved again; the spliced result equals a
    power flow of the whole final dispatch."""
    case = _write(tmp_path)
    net = OpenDSSNetwork(case.network.master, tolerance=1e-10, max_iterations=100)
    es = net.resolve(attach_agents(case, net))
    res = clear_aware(case, net, es)
    assert res.outer_iterations >= 2
    full = net.run_series(es, res.kw)
    assert np.abs(full.v_pu - res.flow.v_pu).max() < 1e-8
    assert np.abs(full.i_amps - res.flow.i_amps).max() < 1e-6


def test_run_compare_writes_comparison_csv(tmp_path: Path) -> None:
    from gridmarket.cli import main
    _write(tmp_path / "case", iterations=2)
    out = tmp_path / "res"
    assert main(["run", str(tmp_path / "case"), "--out", str(out), "--compare", "--no-report", "-q"]) == 0
    table = pd.read_csv(out / "comparison.csv")
    assert tuple(table.columns) == COLUMNS and tuple(table["scenario"]) == SCENARIOS
    assert (out / RESIDUAL_FILE).is_file()  # the case's own run is aware


def test_value_rule_stops_when_the_last_unit_did_not_pay(tmp_path: Path) -> None:
    from gridmarket.study.value_placement import next_unit
    case = _write(tmp_path, capex=200.0)
    ann = economics.annuity(1, case.battery, case.time.steps, case.time.step_hours)
    relief = np.array([1e6, 0.0, 1.0, 0.0, 0.0])  # HA's connection valued far above the annuity
    bus = {"HA": "ba", "PVA": "ba", "HB": "bb", "PVB": "bb", "P0": "b0"}
    go = next_unit({"ba": 1}, relief, case, bus, last_gain=1.01 * ann)
    assert go.stop is None and go.banks == {"ba": 2} and go.bus == "ba"
    # mean over ba's market agents (HA and PVA) times unit_kw
    assert go.value == pytest.approx(0.5 * 1e6 * case.battery.unit_kw)
    stop = next_unit({"ba": 1}, relief, case, bus, last_gain=0.99 * ann)
    assert stop.banks == {"ba": 1} and stop.stop is not None and "below its annuity" in stop.stop


def test_shapes_power_flows_give_the_snapshot_outer_loop(tmp_path: Path) -> None:
    """The outer loop's power flows by the "shapes" method (flow_method="auto" on a feeder of
    Loads and PVSystems) give the loop of the snapshot method: the same rows, dispatch and AC
    voltages to the power-flow tolerance; the spliced result equals a full snapshot solve."""
    case = _write(tmp_path)
    runs = {}
    for how in ("snapshot", "auto"):
        net = OpenDSSNetwork(case.network.master, tolerance=1e-10, max_iterations=100)
        es = net.resolve(attach_agents(case, net))
        runs[how] = (net, es, clear_aware(case, net, es, flow_method=how))
    snap, auto = runs["snapshot"][2], runs["auto"][2]
    assert auto.outer_iterations == snap.outer_iterations >= 2
    assert snap.constraints is not None and auto.constraints is not None
    assert auto.constraints.name == snap.constraints.name
    assert np.abs(auto.kw - snap.kw).max() < 1e-6
    assert np.abs(auto.flow.v_pu - snap.flow.v_pu).max() < 1e-8
    net, es, _ = runs["auto"]
    assert any(n.lower().startswith("gm_shape") for n in net.dss.LoadShape.AllNames())  # it ran "shapes"
    assert not any(n.lower().startswith("gm_shape") for n in runs["snapshot"][0].dss.LoadShape.AllNames())
    full = net.run_series(es, auto.kw)
    assert np.abs(full.v_pu - auto.flow.v_pu).max() < 1e-8
    with pytest.raises(ValueError, match="flow_method"):
        clear_aware(case, net, es, flow_method="yearly")
