"""Terminal state of charge, realised welfare, its breakdown and the solver metadata
(shared MODEL.md, *Reported welfare*, *Terminal state of charge*; issues 11 and 12).

Expected numbers are derived here by hand from MODEL.md; the cyclic rule is checked on random
cases (hypothesis), against the independent cvxpy model with the terminal equality, and on
chunked runs (``steps_after``, as ``run_long`` clears a long run).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _market_cases import battery, consumer, make_case, random_case, reference_market
from gridmarket.case import load_case
from gridmarket.case.model import BatterySpec, Case
from gridmarket.cases import default_case_path
from gridmarket.enums import AgentKind, TerminalSoc
from gridmarket.errors import MarketError
from gridmarket.market import clear_market, create_model, market_data
from gridmarket.market.prices import WELFARE_PARTS
from test_market_fast import assert_matches_tight

CAP = 10.24  # kWh, one SBU
RATE = 2.56  # kWh per step: min(2.56 kW·1 h, 0.25·10.24) charge, min(2.56, 0.9375·10.24) discharge
ETA = 0.96
V = 0.5  # value of stored energy [currency/kWh]
CDEG = 0.02  # degradation [currency/kWh of throughput]
UTILITY = 1.5  # consumer's b [currency/kWh]
D = (1.0, 3.0)  # consumer demand per step [kWh]
IMPORT = (0.3, 0.9)  # π_imp per step
EXPORT = (0.1, 0.2)
EPS_TOL = 1e-4  # the ε tie-break moves prices by ~2εΦ and payments by ~1e-5


def two_step_case(terminal: str) -> Case:
    """A consumer and one SBU in one community over two steps: cheap grid, then dear grid."""
    spec = BatterySpec(value=V, degradation_cost=CDEG, self_discharge=0.0)
    return make_case([consumer("L1", "C1", b=UTILITY), battery("B1", "C1")], {"L1": list(D)},
                     import_price=IMPORT, export_price=EXPORT, battery_spec=spec, terminal_soc=terminal)


def bat_cols(case: Case) -> list[int]:
    return [i for i, a in enumerate(case.agents) if a.kind is AgentKind.BATTERY]


def capacity(case: Case) -> np.ndarray:
    return np.array([case.agents[i].units * case.battery.unit_kwh for i in bat_cols(case)])


# ----------------------------------------------------------------------------- the hand case

def test_two_step_battery_buys_low_sells_high_free_soc_by_hand() -> None:
    # step 0: λ ≤ π_imp = 0.3 < v·η − c_deg = 0.46: the battery charges at its rate, 2.56 kWh
    # (SoC 0.5 -> 0.5 + 0.96·2.56/10.24 = 0.74 <= 0.8); the community imports 1 + 2.56 kWh.
    # step 1: the community imports at λ = 0.9 > v/η + c_deg = 0.54: the battery discharges at its
    # rate, 2.56 kWh (its SoC allows 0.54·10.24·0.96); the consumer imports the rest, 0.44 kWh.
    r = clear_market(two_step_case("free"))
    ch, dis = RATE, RATE
    imp = (D[0] + ch, D[1] - dis)
    soc_end = 0.5 + (ETA * ch - dis / ETA) / CAP
    realised = UTILITY * sum(D) - IMPORT[0] * imp[0] - IMPORT[1] * imp[1] - CDEG * (ch + dis)
    stored = V * CAP * (soc_end - 0.5)  # v_end (E_end − E_start), negative: the run drains it
    assert r.s_kwh[:, 1] == pytest.approx([ch, -dis], abs=1e-6)
    assert r.soc[-1, 1] == pytest.approx(soc_end, abs=1e-9)
    assert r.welfare_realised == pytest.approx(realised, abs=1e-6)
    assert r.stored_energy_value == pytest.approx(stored, abs=1e-6)
    assert stored < -0.1
    # reported welfare adds the value the market puts on stored energy, v·ΣΔE (no self-discharge:
    # the same as the stored-energy value here)
    assert r.total_welfare == pytest.approx(realised + V * (ETA * ch - dis / ETA), abs=1e-6)
    # who gains, by payments at the community prices 0.3 and 0.9
    parts = r.welfare_breakdown
    assert parts["consumers"] == pytest.approx(UTILITY * sum(D) - (IMPORT[0] * D[0] + IMPORT[1] * D[1]), abs=EPS_TOL)
    assert parts["batteries_trading"] == pytest.approx(IMPORT[1] * dis - IMPORT[0] * ch, abs=EPS_TOL)
    assert parts["batteries_degradation"] == pytest.approx(-CDEG * (ch + dis), abs=1e-9)
    assert parts["grid_import_cost"] == pytest.approx(-(IMPORT[0] * imp[0] + IMPORT[1] * imp[1]), abs=1e-6)
    assert parts["grid_export_revenue"] == pytest.approx(0.0, abs=1e-9)
    assert parts["fees"] == 0.0
    assert parts["market_settlement"] == pytest.approx(-parts["grid_import_cost"], abs=EPS_TOL)
    assert parts["producers"] == 0.0


def test_two_step_battery_cyclic_soc_returns_to_its_start_by_hand() -> None:
    # step 0 as above (a one-step market does not see step 1; SoC 0.74 is inside the band of
    # SoC from which 0.5 is reachable in one step, [0.5 − 0.24, 0.5 + 0.26]).
    # step 1: the battery must end at 0.5: it discharges (0.74 − 0.5)·10.24·0.96 kWh, less than
    # the 2.56 it would like to; the consumer imports the rest.
    case = two_step_case("cyclic")
    r = clear_market(case)
    ch = RATE
    dis = (ETA * ch / CAP) * CAP * ETA
    imp = (D[0] + ch, D[1] - dis)
    realised = UTILITY * sum(D) - IMPORT[0] * imp[0] - IMPORT[1] * imp[1] - CDEG * (ch + dis)
    assert r.s_kwh[:, 1] == pytest.approx([ch, -dis], abs=1e-6)
    assert abs(r.soc[-1, 1] - 0.5) * CAP <= 1e-6
    assert r.welfare_realised == pytest.approx(realised, abs=1e-6)
    assert r.stored_energy_value == pytest.approx(0.0, abs=1e-6)
    # cyclic: the reported welfare's battery value terms cancel over the run
    assert r.total_welfare == pytest.approx(realised, abs=1e-6)
    # the fast path clears the forced discharge itself
    assert r.solver_used == "fast"
    q = clear_market(case, method="qp")
    assert q.solver_used == "clarabel"
    assert q.welfare_realised == pytest.approx(realised, abs=1e-6)


def test_cyclic_case_whose_start_cannot_reach_the_target_is_named() -> None:
    case = two_step_case("cyclic")
    with pytest.raises(MarketError, match="cyclic.*cannot end the run at its target 0.8") as info:
        clear_market(case, soc_target={"B1": 0.8}, soc_init={"B1": 0.2})
    assert info.value.group == "Battery-terminal-soc"


def test_paper_model_at_soc_max_needs_two_steps_to_come_back() -> None:
    # paper model: (10) η_ch S_ch <= (soc_max − SoC_prev)·cap forbids charging at soc_max, and
    # self-discharge lowers SoC: one step cannot end at soc_max again (named before solving);
    # two can (discharge a little, then charge back, the headroom then allows it).
    spec = BatterySpec(soc_init=0.8)
    one = make_case([consumer("L1", "C1"), battery("B1", "C1")], {"L1": [1.0]}, battery_model="paper",
                    battery_spec=spec, terminal_soc="cyclic")
    with pytest.raises(MarketError, match="cannot end the run at its target 0.8") as info:
        clear_market(one)
    assert info.value.group == "Battery-terminal-soc"
    two = make_case([consumer("L1", "C1"), battery("B1", "C1")], {"L1": [1.0, 1.0]}, battery_model="paper",
                    battery_spec=spec, terminal_soc="cyclic")
    r = clear_market(two)
    assert abs(r.soc[-1, 1] - 0.8) * CAP <= 1e-6


# ----------------------------------------------------------------------------- cyclic SoC holds

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_batteries=st.integers(1, 4), steps=st.integers(1, 12),
       horizon=st.sampled_from([1, 1, 2, 5, 24]), model=st.sampled_from(["physical", "paper"]),
       soc_init=st.floats(0.2, 0.79), n_communities=st.integers(1, 3))
def test_cyclic_soc_holds_for_every_battery(seed: int, n_batteries: int, steps: int, horizon: int, model: str,
                                            soc_init: float, n_communities: int) -> None:
    spec = BatterySpec(soc_init=soc_init, degradation_cost=0.01 * (seed % 3))
    case = random_case(seed, n_agents=10, n_communities=n_communities, n_batteries=n_batteries, steps=steps,
                       horizon=horizon, battery_model=model, battery_spec=spec, terminal_soc="cyclic")
    cols = bat_cols(case)
    cap = capacity(case)
    for method in ("auto", "qp"):
        r = clear_market(case, method=method)
        assert np.all(np.abs(r.soc[-1, cols] - soc_init) * cap <= 1e-6), (method, r.soc[-1, cols])
        assert np.all(r.soc[:, cols] >= spec.soc_min - 1e-9) and np.all(r.soc[:, cols] <= spec.soc_max + 1e-9)
        assert abs(r.stored_energy_value) <= 1e-6 * max(1.0, abs(case.grid.import_price).max())
        check_breakdown(r)


def test_cyclic_soc_holds_on_the_default_case_sequential_and_in_one_window() -> None:
    case = load_case(default_case_path())
    assert case.battery.terminal_soc is TerminalSoc.CYCLIC  # the default
    case = random_batteries(case)
    cols = bat_cols(case)
    cap = capacity(case)
    for horizon in (1, 6, case.time.steps):
        r = clear_market(case, horizon=horizon)
        assert np.all(np.abs(r.soc[-1, cols] - case.battery.soc_init) * cap <= 1e-6), horizon
        check_breakdown(r)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_batteries=st.integers(1, 4), steps=st.integers(2, 10),
       model=st.sampled_from(["physical", "paper"]), soc_init=st.floats(0.2, 0.79),
       n_communities=st.integers(1, 3), c_deg=st.sampled_from([0.0, 0.03]))
def test_fast_path_meets_the_band_like_a_tight_clarabel(seed: int, n_batteries: int, steps: int, model: str,
                                                        soc_init: float, n_communities: int, c_deg: float) -> None:
    # the KKT path with forced charges and discharges near the end against Clarabel at 1e-13
    spec = BatterySpec(soc_init=soc_init, degradation_cost=c_deg)
    case = random_case(seed, n_agents=10, n_communities=n_communities, n_batteries=n_batteries, steps=steps,
                       battery_model=model, battery_spec=spec, terminal_soc="cyclic")
    r = clear_market(case)
    assert r.solver_used in ("fast", "fast+clarabel")
    assert_matches_tight(case, r)


def test_forced_discharge_that_would_rather_burn_energy_goes_to_clarabel() -> None:
    # the last step forces a battery (a = 0.02) to discharge 5.6 kWh into a community priced at
    # 0.218: its marginal value of selling, ν + 2aS = 0.218 − 0.04·5.6 < 0, so the QP charges and
    # discharges at once (losses burn part of the forced energy); the fast path's units cannot,
    # it hands the step over and the result matches Clarabel at 1e-13
    spec = BatterySpec(soc_init=0.4337911357080221, a=0.02)
    case = random_case(7442, n_agents=2, n_communities=2, n_batteries=2, steps=8, battery_spec=spec,
                       trade_fee=0.01, terminal_soc="cyclic")
    r = clear_market(case)
    assert r.window_solver[-1] == "clarabel" and r.solver_used == "fast+clarabel"
    assert r.solution.sch[-1, 1] > 1e-3 and r.solution.sdis[-1, 1] > 1e-3  # both at once
    assert_matches_tight(case, r)
    with pytest.raises(MarketError, match="step 7: fast market path failed: a battery forced"):
        clear_market(case, method="fast")


def random_batteries(case: Case) -> Case:
    """``case`` with a battery bank of 1, 3 and 5 SBUs at three consumers (as the study places them)."""
    from _market_cases import with_agents

    buses = [a for a in case.agents if a.kind is AgentKind.CONSUMER][:3]
    return with_agents(case, [battery(f"SBU_{a.name}", a.community, units=u)
                              for a, u in zip(buses, (1, 3, 5), strict=True)])


@pytest.mark.parametrize("model", ["physical", "paper"])
def test_cyclic_window_equals_cvxpy_with_the_terminal_equality(model: str) -> None:
    # one window over the whole run: the engine's band is implied by the terminal equality, so
    # the independent model with SoC_end = soc_init is the same problem
    case = random_case(7, n_agents=10, n_communities=2, n_batteries=3, steps=8, horizon=8, battery_model=model,
                       terminal_soc="cyclic")
    r = clear_market(case)
    ref = reference_market(case, cyclic_end=True)
    assert r.total_welfare == pytest.approx(ref.welfare.sum(), rel=1e-6, abs=1e-6)
    cols = bat_cols(case)  # (the SoC path inside the window is not unique; where it ends is)
    assert np.max(np.abs(r.soc[-1, cols] - ref.soc[-1, cols])) < 1e-7


@pytest.mark.parametrize("horizon", [1, 3])
def test_chunks_with_steps_after_end_the_whole_run_at_its_start(horizon: int) -> None:
    # a long run cleared in slices with the SoC carried (run_long): the cyclic target applies at
    # the end of the whole run, not of each slice
    from gridmarket.study.long_run import slice_case

    case = random_case(11, n_agents=10, n_communities=2, n_batteries=3, steps=12, horizon=horizon,
                       terminal_soc="cyclic", battery_spec=BatterySpec(soc_init=0.35))
    whole = clear_market(case)
    cols = bat_cols(case)
    names = [case.agents[i].name for i in cols]
    start = dict.fromkeys(names, 0.35)
    soc = None
    socs = []
    for s0, s1 in ((0, 5), (5, 9), (9, 12)):
        res = clear_market(slice_case(case, s0, s1), soc_init=soc, soc_target=start, steps_after=12 - s1)
        soc = {n: float(res.soc[-1, i]) for n, i in zip(names, cols, strict=True)}
        socs.append(res.soc[:, cols])
    chained = np.vstack(socs)
    assert np.all(np.abs(chained[-1] - 0.35) * capacity(case) <= 1e-6)
    if horizon == 1:
        # a sequential market does not look ahead: slices and the whole run clear the same steps
        assert np.max(np.abs(chained - whole.soc[:, cols])) < 1e-6


# ----------------------------------------------------------------------------- breakdown, free, metadata

def check_breakdown(r) -> None:
    parts = r.welfare_breakdown
    assert tuple(parts) == WELFARE_PARTS
    assert abs(sum(parts.values()) - r.welfare_realised) <= 1e-9
    assert parts["grid_import_cost"] <= 0.0 and parts["grid_export_revenue"] >= 0.0 and parts["fees"] <= 0.0
    assert parts["batteries_degradation"] <= 0.0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_batteries=st.integers(0, 3), steps=st.integers(1, 6),
       horizon=st.sampled_from([1, 3]), terminal=st.sampled_from(["free", "cyclic"]),
       linked=st.booleans(), n_communities=st.integers(1, 3))
def test_breakdown_adds_up_to_realised_welfare(seed: int, n_batteries: int, steps: int, horizon: int,
                                               terminal: str, linked: bool, n_communities: int) -> None:
    case = random_case(seed, n_agents=12, n_communities=n_communities, n_batteries=n_batteries, steps=steps,
                       horizon=horizon, links="all" if linked else [], terminal_soc=terminal)
    r = clear_market(case)
    check_breakdown(r)
    # the settlement pays the grid and the fees (up to the payment imbalance of the solver)
    parts = r.welfare_breakdown
    grid = parts["grid_import_cost"] + parts["grid_export_revenue"] + parts["fees"]
    assert parts["market_settlement"] == pytest.approx(-grid, abs=1e-6 * (1 + abs(grid)))
    # realised + the batteries' value terms = reported welfare, term by term from the frames
    m = r.market
    b = m[m.kind == "battery"]
    assert (r.total_welfare - r.welfare_realised) == pytest.approx(
        stored_terms_by_hand(case, b), abs=1e-6)


def stored_terms_by_hand(case: Case, b) -> float:
    """Σ v δ ΔE from the market frame (S_kw, step), MODEL.md's battery term, sequential or windowed."""
    spec = case.battery
    if b.empty:
        return 0.0
    ip = np.asarray(case.grid.import_price)
    ep = np.asarray(case.grid.export_price)
    v_step = 0.5 * (ip + ep) if spec.value == "mean-price" else np.full(case.time.steps, float(spec.value))
    H = case.market.horizon
    keep = 1.0 - spec.self_discharge
    total = 0.0
    for step, s_kw in zip(b.step.to_numpy(), b.S_kw.to_numpy(), strict=True):
        s = s_kw * case.time.step_hours
        de = spec.eff_charge * max(s, 0.0) - max(-s, 0.0) / spec.eff_discharge
        w0 = (step // H) * H
        L = min(H, case.time.steps - w0)
        total += float(np.mean(v_step[w0:w0 + L])) * keep ** (w0 + L - 1 - step) * de
    return total


def test_free_soc_keeps_the_study_bounds_in_every_step() -> None:
    # "free" is the study's market: the SoC bound rows are [soc_min, soc_max] in every step,
    # so its QP is the one of the study (and the fast path meets the same limits)
    case = random_case(2, n_agents=8, n_communities=2, n_batteries=2, steps=6, terminal_soc="free")
    d = market_data(case)
    assert np.all(d.battery.band_lo == case.battery.soc_min) and np.all(d.battery.band_hi == case.battery.soc_max)
    m = create_model(d, 6)
    q, b = m.vectors(d.window(0, 6, d.soc_init))
    up = [blk for blk in m.blocks if blk.name == "Battery-soc-bounds"]
    assert np.all(b[up[0].rows] == case.battery.soc_max) and np.all(b[up[1].rows] == -case.battery.soc_min)
    # the cyclic case narrows only the last steps: with rates of ~0.25 of capacity per step, the
    # band is the whole range two or more steps before the end
    c = market_data(replace(case, battery=replace(case.battery, terminal_soc=TerminalSoc.CYCLIC)))
    assert np.all(c.battery.band_lo[:-3] == case.battery.soc_min)
    assert np.allclose(c.battery.band_lo[-1], c.battery.soc_init) and np.allclose(c.battery.band_hi[-1],
                                                                                  c.battery.soc_init)


@pytest.mark.parametrize("horizon", [1, 4])
def test_free_soc_equals_the_independent_cvxpy_model(horizon: int) -> None:
    case = random_case(5, n_agents=10, n_communities=2, n_batteries=3, steps=8, horizon=horizon,
                       terminal_soc="free")
    r = clear_market(case)
    ref = reference_market(case)
    assert r.total_welfare == pytest.approx(ref.welfare.sum(), rel=1e-6)


def test_price_columns_without_network_constraints() -> None:
    r = clear_market(two_step_case("free"))
    m = r.market
    assert np.array_equal(m.price_energy.to_numpy(), m.price.to_numpy(), equal_nan=True)
    assert (m.price_voltage == 0.0).all() and (m.price_congestion == 0.0).all()
    assert r.network_duals.shape == (0,) and r.network_slack.shape == (0,)


def test_solver_used_says_which_solver_cleared() -> None:
    case = two_step_case("free")
    assert clear_market(case).solver_used == "fast"
    assert clear_market(case, method="qp").solver_used == "clarabel"
    assert clear_market(case, horizon=2).solver_used == "clarabel"
    empty = make_case([], {}, steps=2)
    assert clear_market(empty).solver_used == "none"


def test_terminal_band_by_hand() -> None:
    # one SBU, physical model, no self-discharge: one step moves SoC up by at most
    # η·2.56/10.24 = 0.24 and down by at most (2.56/η)/10.24 = 0.2604; target 0.5, four steps
    from gridmarket.market.battery import BAND_MARGIN, terminal_band

    up, down = 0.96 * 0.25, 0.25 / 0.96
    lo, hi = terminal_band(steps=4, steps_after=0, target=np.array([0.5]), up=np.array([up]),
                           down=np.array([down]), keep=1.0, soc_min=0.2, soc_max=0.8)
    m = BAND_MARGIN
    assert lo[:, 0] == pytest.approx([0.2, 0.2, 0.5 - up + m, 0.5], abs=1e-15)
    assert hi[:, 0] == pytest.approx([0.8, 0.8, 0.5 + down - m, 0.5], abs=1e-15)
    # two steps of the run follow: the band of this slice's last step is the run's third-last
    lo2, hi2 = terminal_band(steps=4, steps_after=2, target=np.array([0.5]), up=np.array([up]),
                             down=np.array([down]), keep=1.0, soc_min=0.2, soc_max=0.8)
    assert lo2[-1, 0] == pytest.approx(0.2) and hi2[-1, 0] == pytest.approx(0.8)
    lo3, hi3 = terminal_band(steps=4, steps_after=1, target=np.array([0.5]), up=np.array([up]),
                             down=np.array([down]), keep=1.0, soc_min=0.2, soc_max=0.8)
    assert lo3[-1, 0] == pytest.approx(0.5 - up + m) and hi3[-1, 0] == pytest.approx(0.5 + down - m)
    # self-discharge: the band of the last-but-one step is (target ± rate)/keep
    keep = 1 - 1e-3
    lo4, hi4 = terminal_band(steps=2, steps_after=0, target=np.array([0.5]), up=np.array([up]),
                             down=np.array([down]), keep=keep, soc_min=0.2, soc_max=0.8)
    assert lo4[0, 0] == pytest.approx((0.5 - up + m) / keep) and hi4[0, 0] == pytest.approx((0.5 + down - m) / keep)
    # no charge rate to make up self-discharge at soc_max: no SoC reaches the target, named
    with pytest.raises(MarketError, match="cyclic"):
        terminal_band(steps=3, steps_after=0, target=np.array([0.8]), up=np.array([0.0]), down=np.array([down]),
                      keep=keep, soc_min=0.2, soc_max=0.8)
