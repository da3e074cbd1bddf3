"""The network-aware market's outer loop (gridmarket.study.aware) on small feeders solved by
OpenDSS and markets solved for real; expected values are computed here by hand (a two-bus
power flow in numpy) or by finite differences of whole aware runs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from _aware_cases import write_aware_case
from gridmarket.case.io import load_case
from gridmarket.case.model import Case
from gridmarket.market import clear_market
from gridmarket.network import ElementSet, OpenDSSNetwork, check_limits
from gridmarket.study.aware import AwareResult, clear_aware
from gridmarket.study.loop import attach_agents, dispatch_kw

V_LN = 230.0  #: [V]
R_OHM, X_OHM, X_SRC = 0.15, 0.05, 1e-6  #: two-bus line and source impedance [Ω]
SOURCE_PU = 1.03
A_PV, B_PV, EXPORT = 0.01, 0.05, 0.30

def _write_case(root: Path, name: str, master: str, agents: str, profiles: dict[str, list[float]],
                monitored: str, iterations: int = 8) -> Path:
    return write_aware_case(root, name=name, master=master, agents=agents, profiles=profiles, monitored=monitored,
                            network_iterations=iterations, export=EXPORT)


def _setup(case: Case) -> tuple[OpenDSSNetwork, ElementSet, np.ndarray]:
    net = OpenDSSNetwork(case.network.master, tolerance=1e-10, max_iterations=100)
    es = net.resolve(attach_agents(case, net))
    pf = np.array([a.pf if a.pf is not None else np.nan for a in case.agents])
    return net, es, pf


# --------------------------------------------------------------------------- two-bus case

TWO_BUS = f"""\
Clear
Set DefaultBaseFrequency=50
New Circuit.two phases=1 basekV={V_LN / 1000} pu={SOURCE_PU} angle=0 bus1=src R1=0 X1={X_SRC} R0=0 X0={X_SRC}
New Line.l1 phases=1 bus1=src.1 bus2=b1.1 rmatrix=[{R_OHM}] xmatrix=[{X_OHM}] cmatrix=[0] length=1 units=none
~ normamps=1000
New Load.h1 phases=1 bus1=b1.1 kV={V_LN / 1000} kW=1 kvar=0 model=1
New PVSystem.pv1 phases=1 bus1=b1.1 kV={V_LN / 1000} kVA=15 Pmpp=14 irradiance=1 pf=1 %cutin=0 %cutout=0
Set voltagebases=[{V_LN * np.sqrt(3) / 1000:.12g}]
CalcVoltageBases
"""
TWO_AGENTS = f"""\
H1,consumer,C1,Load.h1,load,1,0.02,1.0,0,0,,
PV1,producer,C1,PVSystem.pv1,pv,1,{A_PV},{B_PV},0,0,,
"""
PV_AVAIL = [0.0, 12.0]


def _two_bus_v(s_kw: float) -> complex:
    """Voltage at b1 [V] when b1 consumes s_kw [kW] at unity pf (negative: export), by hand."""
    v0 = SOURCE_PU * V_LN
    z = complex(R_OHM, X_OHM + X_SRC)
    v = complex(v0)
    for _ in range(200):
        v = v0 - z * np.conj(1000.0 * s_kw / v)
    return v


def _two_bus_target(v_pu: float) -> float:
    """Net consumption [kW] at b1 that puts |V_b1| at v_pu (bisection on the hand power flow)."""
    lo, hi = -30.0, 0.0  # lo overvolts, hi does not
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if abs(_two_bus_v(mid)) / V_LN > v_pu:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@pytest.fixture(scope="module")
def two_bus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Case, OpenDSSNetwork, ElementSet, np.ndarray]:
    root = _write_case(tmp_path_factory.mktemp("two"), "two-bus", TWO_BUS, TWO_AGENTS,
                       {"load": [1.0, 1.0], "pv": PV_AVAIL}, '["b1"]')
    case = load_case(root)
    return (case, *_setup(case))


def _run(case: Case, net: OpenDSSNetwork, es: ElementSet, pf: np.ndarray) -> AwareResult:
    return clear_aware(case, net, es, pf=pf, converge_pu=1e-9)


def test_two_bus_voltage_limit_binds_at_the_hand_values(two_bus: tuple[Case, OpenDSSNetwork, ElementSet, np.ndarray]
                                                        ) -> None:
    case, net, es, pf = two_bus
    # the blind market exports all 12 kW and overvolts
    assert abs(_two_bus_v(1.0 - 12.0)) / V_LN > case.network.vmax_pu
    res = _run(case, net, es, pf)
    target = case.network.vmax_pu - case.market.network_margin_pu
    s_hand = _two_bus_target(target)
    q_hand = 1.0 - s_hand  # PV output [kW]
    q = -res.market.p_kwh[1, 1]
    assert q == pytest.approx(q_hand, abs=1e-4)
    assert res.flow.v_pu[1, res.flow.node_names.index("b1.1")] == pytest.approx(target, abs=1e-7)
    assert res.residual.empty
    assert res.linearisation_error_pu < 1e-8
    # voltage price: the PV's local price equals its marginal cost, below the export price
    mc = B_PV + 2 * A_PV * q_hand
    price_v = np.asarray(res.market.price_voltage)
    assert price_v[1, 1] == pytest.approx(mc - EXPORT, abs=1e-5)
    assert price_v[1, 0] == pytest.approx(mc - EXPORT, abs=1e-5)  # same bus, same price
    assert np.abs(price_v[0]).max() < 1e-9  # night: no row binds
    # the dual [currency per pu]: price = dual · dV/dp / Δt with dV/dp from the hand power flow
    h = 1e-3
    dv_dp = (abs(_two_bus_v(s_hand + h)) - abs(_two_bus_v(s_hand - h))) / (2 * h) / V_LN
    assert res.constraints is not None
    row = [j for j, (t, n) in enumerate(zip(res.constraints.step, res.constraints.name, strict=True))
           if t == 1 and n == "bus.b1.1"]
    assert len(row) == 1
    assert res.duals[row[0]] == pytest.approx((mc - EXPORT) / dv_dp, rel=1e-4)
    assert res.step_iterations[0] == 1 and res.step_iterations[1] >= 2


def test_voltage_dual_equals_welfare_finite_difference(two_bus: tuple[Case, OpenDSSNetwork, ElementSet, np.ndarray]
                                                       ) -> None:
    case, net, es, pf = two_bus
    eps = 5e-4  # relaxation of V_max [pu]
    base = _run(case, net, es, pf)
    relaxed_case = replace(case, network=replace(case.network, vmax_pu=case.network.vmax_pu + eps))
    relaxed = _run(relaxed_case, net, es, pf)
    tighter_case = replace(case, network=replace(case.network, vmax_pu=case.network.vmax_pu - eps))
    tighter = _run(tighter_case, net, es, pf)
    fd = (float(np.sum(relaxed.market.welfare)) - float(np.sum(tighter.market.welfare))) / (2 * eps)
    assert base.constraints is not None
    dual = float(np.sum(base.duals[np.asarray(base.constraints.step) == 1]))
    assert fd > 0
    assert dual == pytest.approx(fd, rel=1e-3)


# --------------------------------------------------------------------------- a three-bus feeder

FEEDER = f"""\
Clear
Set DefaultBaseFrequency=50
New Circuit.f phases=1 basekV={V_LN / 1000} pu=1.0 angle=0 bus1=src R1=0 X1={X_SRC} R0=0 X0={X_SRC}
New Line.l1 phases=1 bus1=src.1 bus2=b1.1 rmatrix=[0.15] xmatrix=[0.05] cmatrix=[0] length=1 units=none normamps=1000
New Line.l2 phases=1 bus1=b1.1 bus2=b2.1 rmatrix=[0.15] xmatrix=[0.05] cmatrix=[0] length=1 units=none normamps=1000
New Load.h1 phases=1 bus1=b1.1 kV={V_LN / 1000} kW=1 kvar=0 model=1
New Load.h2 phases=1 bus1=b2.1 kV={V_LN / 1000} kW=1 kvar=0 model=1
New PVSystem.pv1 phases=1 bus1=b1.1 kV={V_LN / 1000} kVA=12 Pmpp=11 irradiance=1 pf=1 %cutin=0 %cutout=0
New PVSystem.pv2 phases=1 bus1=b2.1 kV={V_LN / 1000} kVA=12 Pmpp=11 irradiance=1 pf=1 %cutin=0 %cutout=0
Set voltagebases=[{V_LN * np.sqrt(3) / 1000:.12g}]
CalcVoltageBases
"""
FEEDER_AGENTS = """\
H1,consumer,C1,Load.h1,load,1,0.02,2.0,0,0.5,,
PV1,producer,C1,PVSystem.pv1,pv,1,0.01,0.05,0,0,,
H2,consumer,C1,Load.h2,load,1,0.02,2.0,0,0.5,,
PV2,producer,C1,PVSystem.pv2,pv,1,0.01,0.05,0,0,,
"""


def _feeder(root: Path, load: list[float], pv: list[float]) -> tuple[Case, OpenDSSNetwork, ElementSet, np.ndarray]:
    case = load_case(_write_case(root, "feeder", FEEDER, FEEDER_AGENTS, {"load": load, "pv": pv}, '["b1", "b2"]'))
    return (case, *_setup(case))


def _violations(case: Case, res_flow: object) -> tuple[int, int]:
    v = check_limits(res_flow, vmin_pu=case.network.vmin_pu, vmax_pu=case.network.vmax_pu)  # type: ignore[arg-type]
    volt = v[v["kind"] == "voltage"]
    return int((volt["value"] > volt["limit"]).sum()), int((volt["value"] < volt["limit"]).sum())


def test_aware_removes_midday_overvoltage_and_evening_undervoltage(tmp_path: Path) -> None:
    case, net, es, pf = _feeder(tmp_path, load=[1.0, 1.0, 2.0, 8.0], pv=[0.0, 10.0, 4.0, 0.0])
    blind_market = clear_market(case)
    blind_flow = net.run_series(es, dispatch_kw(case, blind_market), pf=None)
    over, under = _violations(case, blind_flow)
    assert over > 0 and under > 0  # the feeder does what it was built for
    assert blind_flow.v_pu[1].max() > 1.05 and blind_flow.v_pu[3].min() < 0.95
    res = clear_aware(case, net, es, pf=pf)
    assert _violations(case, res.flow) == (0, 0)
    assert res.residual.empty
    assert res.stop_reason == "no violations"
    assert float(np.sum(res.market.welfare)) <= float(np.sum(blind_market.welfare)) + 1e-9
    # the cure: PV curtailed at midday, consumption reduced in the evening
    assert np.sum(-res.market.p_kwh[1, [1, 3]]) < np.sum(-blind_market.p_kwh[1, [1, 3]]) - 1.0
    assert np.sum(res.market.p_kwh[3, [0, 2]]) < np.sum(blind_market.p_kwh[3, [0, 2]]) - 1.0
    assert res.linearisation_error_pu < case.market.network_margin_pu
    # the market's keywords reach every clearing: the QP on every step gives the same dispatch
    qp = clear_aware(case, net, es, pf=pf, market_kw={"method": "qp"})
    assert "fast" not in qp.market.solver
    assert np.abs(qp.market.p_kwh - res.market.p_kwh).max() < 1e-5


def test_aware_equals_blind_when_no_limit_binds(tmp_path: Path) -> None:
    case, net, es, pf = _feeder(tmp_path, load=[1.0, 1.5, 2.0, 3.0], pv=[0.0, 3.0, 1.0, 0.0])
    blind = clear_market(case)
    # watch_pu puts every monitored voltage row into the clearing, none of them binds
    # (every row, not only those of violated steps, and none merged into a parallel one)
    res = clear_aware(case, net, es, pf=pf, watch_pu=0.2, defer_near=False, merge_cos=1.0)
    assert res.constraints is not None and len(res.constraints.name) >= 2 * case.time.steps
    assert np.abs(res.duals).max() < 1e-6
    assert np.asarray(res.market.welfare) == pytest.approx(np.asarray(blind.welfare), abs=1e-6)
    assert np.abs(res.market.p_kwh - blind.p_kwh).max() < 1e-6
    assert np.abs(res.market.s_kwh - blind.s_kwh).max() < 1e-6
    market = np.asarray(res.market.price)
    ok = np.isfinite(market)
    assert np.abs(market[ok] - np.asarray(blind.price)[ok]).max() < 1e-6
    pv_price = np.asarray(res.market.price_voltage)
    assert np.nanmax(np.abs(pv_price)) < 1e-6
    # and with nothing near a limit, no row is built at all
    plain = clear_aware(case, net, es, pf=pf)
    assert plain.constraints is None and plain.outer_iterations == 1
    assert np.asarray(plain.market.welfare) == pytest.approx(np.asarray(blind.welfare), abs=1e-12)


# --------------------------------------------------------------------------- residual causes

LATERAL = FEEDER.replace("Set voltagebases", f"""\
New Line.l3 phases=1 bus1=src.1 bus2=b3.1 rmatrix=[0.15] xmatrix=[0.05] cmatrix=[0] length=1 units=none normamps=1000
New Load.p3 phases=1 bus1=b3.1 kV={V_LN / 1000} kW=1 kvar=0 model=1
Set voltagebases""")
LATERAL_AGENTS = """\
H1,consumer,C1,Load.h1,load,1,0.02,2.0,0,0,,
PV1,producer,C1,PVSystem.pv1,pv,1,0.01,0.05,0,0,,
H2,consumer,C1,Load.h2,load,1,0.02,2.0,0,0,,
PV2,producer,C1,PVSystem.pv2,pv,1,0.01,0.05,0,0,,
P3,passive,,Load.p3,p3,1,0,0,0,0,,
"""


def test_residual_violations_carry_their_cause(tmp_path: Path) -> None:
    """Midday overvoltage: curtailable PV cures it. Evening undervoltage under inflexible loads:
    the rows' slacks stay positive. A passive load on its own lateral from a stiff source: no
    agent has any sensitivity to its bus."""
    root = _write_case(tmp_path, "lateral", LATERAL, LATERAL_AGENTS,
                       {"load": [1.0, 8.0], "pv": [10.0, 0.0], "p3": [20.0, 20.0]}, '["b1", "b2", "b3"]')
    case = load_case(root)
    net, es, pf = _setup(case)
    res = clear_aware(case, net, es, pf=pf)
    r = res.residual
    assert set(r["step"]) == {0, 1}
    unreachable = r[r["element"] == "b3.1"]
    assert len(unreachable) == 2
    assert unreachable["cause"].str.startswith("no agent has sensitivity above 1e-06 pu/kW").all()
    evening = r[(r["step"] == 1) & (r["element"] != "b3.1")]
    assert len(evening) >= 1 and set(evening["element"]) <= {"b1.1", "b2.1"}
    assert evening["cause"].str.startswith("slack > 0").all()
    assert (evening["value"] < evening["limit"]).all()
    # midday: no violation left at b1/b2 (the PV was curtailed)
    midday = r[(r["step"] == 0) & (r["element"] != "b3.1")]
    assert midday.empty
    assert res.flow.v_pu[0, res.flow.node_names.index("b2.1")] <= case.network.vmax_pu
    assert res.stop_reason.startswith("only violations the market cannot remove")
    summary = res.summary()
    assert summary["network_residual_violations"] == len(r) == 3
    assert summary["network_residual_by_kind"] == {"voltage": 3}
    assert summary["network_outer_iterations"] == res.outer_iterations == len(res.history)


def test_perturbed_sensitivities_give_the_same_clearing(two_bus: tuple[Case, OpenDSSNetwork, ElementSet, np.ndarray]
                                                        ) -> None:
    case, net, es, pf = two_bus
    a = clear_aware(case, net, es, pf=pf, converge_pu=1e-9)
    b = clear_aware(case, net, es, pf=pf, converge_pu=1e-9, method="perturbed")
    assert b.method == "perturbed"
    assert np.abs(a.market.p_kwh - b.market.p_kwh).max() < 1e-5
    assert a.duals == pytest.approx(b.duals, rel=1e-4)


@pytest.mark.parametrize("horizon", [4])
def test_multi_period_aware_market_is_within_limits(tmp_path: Path, horizon: int) -> None:
    case, net, es, pf = _feeder(tmp_path, load=[1.0, 1.0, 2.0, 8.0], pv=[0.0, 10.0, 4.0, 0.0])
    case = replace(case, market=replace(case.market, horizon=horizon))
    blind = clear_market(case)
    res = clear_aware(case, net, es, pf=pf)
    assert res.market.horizon == horizon
    assert _violations(case, res.flow) == (0, 0)
    assert res.residual.empty
    assert float(np.sum(res.market.welfare)) <= float(np.sum(blind.welfare)) + 1e-9
