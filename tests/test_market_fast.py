"""The fast KKT path of the sequential market (gridmarket.market.fast) against the general QP.

Three independent checks:

* an exact KKT certificate written from MODEL.md (``_market_cases.kkt_violations``, no engine
  code): the fast result must satisfy every condition of the ε-regularised QP, prices
  included, to rounding;
* the Clarabel path with tolerances tightened to 1e-13 (the ε split of Φ, α, β changes the
  objective by only ε·δ², far below Clarabel's default 1e-9 gap: its default answer places the
  split only to ~1e-2 kWh, see gridmarket.market.fast): welfare to 1e-6 relative, P, S, SoC,
  prices and payments to 1e-6 absolute;
* the default Clarabel path (``method="qp"``): everything to that path's own accuracy.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _market_cases import (
    battery,
    consumer,
    kkt_violations,
    make_case,
    passive,
    producer,
    random_case,
    with_agents,
)
from gridmarket.case import load_case
from gridmarket.case.model import BatterySpec
from gridmarket.cases import default_case_path
from gridmarket.enums import AgentKind, TerminalSoc
from gridmarket.errors import MarketError
from gridmarket.market import (
    MarketMethod,
    Solution,
    WindowSolver,
    clear_market,
    create_model,
    market_data,
    solver_settings,
)
from gridmarket.market import fast as fast_module
from gridmarket.market.prices import community_welfare
from gridmarket.market.solve import _extract

KKT_TOL = 1e-8  # kWh or currency/kWh
TIGHT = 1e-13  # Clarabel tolerances of the reference solve


def tight_clarabel(case, **kw) -> tuple[Solution, list[str]]:
    """The sequential market on Clarabel with tolerances tightened to 1e-13 (SoC carried)."""
    d = market_data(case, **kw)
    s = solver_settings()
    s.tol_gap_abs = s.tol_gap_rel = s.tol_feas = TIGHT
    s.tol_ktratio = 1e-10
    s.max_iter = 500
    ws = WindowSolver(create_model(d, 1), s)
    sol = Solution.empty(d)
    soc = d.soc_init.copy()
    statuses = []
    for t in range(d.steps):
        w = d.window(t, 1, soc)
        out = ws.solve(w)
        statuses.append(out.solver_status)
        _extract(ws.model, w, out.x, out.z, sol)
        soc = np.clip(sol.soc[t], case.battery.soc_min, case.battery.soc_max)
    return sol, statuses


def free_prices(case, result, *, trade_tol: float = 1e-9) -> np.ndarray:
    """(steps, communities) True where a community's price is not unique: it does not trade and
    every unit of its agents sits on a bound (no consumer or producer strictly between its
    bounds, no battery strictly between zero and its limit), so a whole range of prices clears
    it (e.g. a community of idle PV, or a battery idle inside its dead band [η v, v/η]).

    ``trade_tol`` (kWh) is the volume below which the community counts as not trading: a
    community whose agents all sit on bounds and that trades only a trickle with a neighbour
    takes the neighbour's price plus or minus the fee, depending on the trickle's direction,
    and a solver accurate to 1e-4 kWh may put that trickle either way."""
    dt = case.time.step_hours
    spec = case.battery
    comms = list(case.communities)
    sol = result.solution
    T = case.time.steps
    free = np.ones((T, len(comms)), dtype=bool)
    tol = 1e-7
    market = [a for a in case.agents if a.kind is not AgentKind.PASSIVE]
    keep = 1.0 - spec.self_discharge
    k_pq = k_b = 0
    for a in market:
        c = comms.index(a.community)
        if a.kind is AgentKind.BATTERY:
            cap = a.units * spec.unit_kwh
            soc0 = np.r_[spec.soc_init, sol.soc[:-1, k_b]]
            room_c = np.minimum(min(a.units * spec.unit_kw * dt, spec.rate_charge * cap),
                                (spec.soc_max - keep * soc0) * cap)
            room_d = np.minimum(min(a.units * spec.unit_kw * dt, spec.rate_discharge * cap),
                                (keep * soc0 - spec.soc_min) * cap)
            ch, dis = sol.sch[:, k_b], sol.sdis[:, k_b]
            inside = ((ch > tol) & (ch < room_c * 0.9 - tol)) | ((dis > tol) & (dis < room_d * 0.9 - tol))
            k_b += 1
        else:
            e = case.profile_kw[:, case.agent_names.index(a.name)] * dt
            lo, hi = ((1 - a.flex) * e, e) if a.kind is AgentKind.CONSUMER else (-e, 0.0 * e)
            x = sol.p[:, k_pq]
            inside = (x > lo + tol) & (x < hi - tol)
            k_pq += 1
        free[:, c] &= ~inside
    trades = (sol.gimp > trade_tol) | (sol.gexp > trade_tol)
    return free & ~trades


def assert_kkt(case, result, **kw) -> None:
    bad = {k: v for k, v in kkt_violations(case, result, **kw).items() if v > KKT_TOL}
    assert not bad, f"KKT conditions violated: {bad}"


def assert_matches_tight(case, result, *, split_tol: float = 1e-3, **kw) -> None:
    """Against Clarabel at 1e-13: welfare to 1e-6 relative; P and the (unique) prices to 1e-6
    absolute; the ε split (Φ, α, β, and S among batteries sharing a marginal role, hence SoC and
    payments) to ``split_tol``: even tightened, Clarabel places it only to ~4e-4 kWh on large cases
    (the split moves the objective by ε·δ² ~ 1e-13); the KKT certificate checks it exactly."""
    ref, statuses = tight_clarabel(case, **kw)
    # steps up to the first that Clarabel does not fully solve (its SoC then drifts)
    n = next((t for t, st_ in enumerate(statuses) if st_ != "Solved"), len(statuses))
    k = slice(0, n)
    s = result.solution
    d = market_data(case, **kw)
    w_ref = community_welfare(d, ref).sum(axis=1)
    np.testing.assert_allclose(result.welfare.to_numpy()[k], w_ref[k], rtol=1e-6, atol=1e-7)
    assert result.welfare.to_numpy()[k].sum() == pytest.approx(w_ref[k].sum(), rel=1e-6, abs=1e-7)
    np.testing.assert_allclose(s.p[k], ref.p[k], atol=1e-6)
    # batteries with the same threshold sharing a marginal role (in one community, or in
    # communities of one pool) split it by the ε term alone, like Φ: S to split_tol, SoC to
    # split_tol/10 (Clarabel walks onto the fast value as its tolerance tightens; the KKT
    # certificate checks every battery exactly)
    np.testing.assert_allclose((s.sch - s.sdis)[k], (ref.sch - ref.sdis)[k], atol=split_tol)
    np.testing.assert_allclose(s.soc[k], ref.soc[k], atol=split_tol / 10)
    unique = ~free_prices(case, result)[k]
    np.testing.assert_allclose(s.lam[k][unique], ref.lam[k][unique], atol=1e-6)
    c = d.comm  # payments of the agents: −λΦ + μ_imp α − μ_exp β
    pf = -s.lam[:, c] * s.phi + s.mu_imp[:, c] * s.alpha - s.mu_exp[:, c] * s.beta
    pr = -ref.lam[:, c] * ref.phi + ref.mu_imp[:, c] * ref.alpha - ref.mu_exp[:, c] * ref.beta
    np.testing.assert_allclose(pf[k], pr[k], atol=split_tol)  # ≈ λ·(P + S): follows the split of S
    for name in ("phi", "alpha", "beta"):
        np.testing.assert_allclose(getattr(s, name)[k], getattr(ref, name)[k], atol=split_tol)


def assert_matches_qp(case, fast, qp) -> None:
    """Against the default Clarabel path, to its accuracy: welfare, dispatch, (unique) prices
    and payments.

    Clarabel's default 1e-9 gap leaves ε-level decisions loose: P of agents with a small ``a``
    (its price error over 2a: ~1e-4 kWh), the split of a marginal role among twin batteries
    (~3e-3 kWh, and the price they set ~1e-5). Its SoC carries that into later steps: a battery
    that the exact split fills one step, Clarabel's fills the next (S differs by ~2e-2 kWh
    there), and reported welfare by up to ~2e-5 relative over a few steps. Against the tight
    solve all of these agree to 1e-6 (:func:`assert_matches_tight`).
    """
    assert fast.total_welfare == pytest.approx(qp.total_welfare, rel=1e-4, abs=1e-9)
    np.testing.assert_allclose(fast.welfare.to_numpy(), qp.welfare.to_numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fast.p_kwh, qp.p_kwh, atol=1e-3)
    np.testing.assert_allclose(fast.s_kwh, qp.s_kwh, atol=5e-2)
    np.testing.assert_allclose(fast.soc, qp.soc, atol=5e-3)
    # a community on bounds trading a trickle (< 1e-3 kWh, the default path's accuracy) sets its
    # price one fee above or below its neighbour's, by the trickle's direction: compare those
    # prices only to within the fee (twice, through a pool)
    unique = ~free_prices(case, fast)
    firm = ~free_prices(case, fast, trade_tol=1e-3) & ~free_prices(case, qp, trade_tol=1e-3)
    np.testing.assert_allclose(fast.price[firm], qp.price[firm], atol=1e-4)
    trickle = unique & ~firm
    assert np.all(np.abs(fast.price[trickle] - qp.price[trickle]) <= 2 * case.market.trade_fee + 1e-4)
    assert tuple(fast.market.columns) == tuple(qp.market.columns)
    assert fast.market.shape == qp.market.shape and fast.communities.shape == qp.communities.shape
    assert fast.settlements.shape == qp.settlements.shape
    # payments ≈ λ·(P + S): the ε split of Φ, α, β moves them only by (μ − λ)·δ (ε-small), but
    # Clarabel's loose split of a marginal role among batteries shows through S
    np.testing.assert_allclose(fast.market.payment.to_numpy(), qp.market.payment.to_numpy(), atol=5e-2)
    assert fast.payment_imbalance < 1e-8


# ----------------------------------------------------------------------------- hand cases

SPEC7 = BatterySpec(value=0.7)


def _hand_cases() -> dict[str, object]:
    """The set-ups of tests/test_market_hand.py."""
    one = [consumer("L1", "C1", b=1.0)]
    return {
        "pv-local": make_case(one + [producer("PV1", "C1", a=0.1, b=0.1)], {"L1": [2.0], "PV1": [5.0]}),
        "pv-import": make_case(one + [producer("PV1", "C1", a=0.3, b=0.1)], {"L1": [2.0], "PV1": [5.0]}),
        "pv-export-all": make_case(one + [producer("PV1", "C1", a=0.01, b=0.05)], {"L1": [1.0], "PV1": [5.0]}),
        "pv-export-some": make_case(one + [producer("PV1", "C1", a=0.05, b=0.1)], {"L1": [1.0], "PV1": [10.0]}),
        "flex-free-pv": make_case([consumer("L1", "C1", a=0.1, b=1.0, flex=0.5), producer("PV1", "C1")],
                                  {"L1": [4.0], "PV1": [10.0]}),
        "flex-floor": make_case([consumer("L1", "C1", a=0.1, b=1.0, flex=0.5)], {"L1": [4.0]}),
        "battery-marginal": make_case(one + [battery("B1", "C1")], {"L1": [2.0]}),
        "battery-rate": make_case(one + [battery("B1", "C1")], {"L1": [3.0]}),
        "battery-degradation": make_case(one + [battery("B1", "C1")], {"L1": [2.0]},
                                         battery_spec=BatterySpec(degradation_cost=0.05)),
        "battery-quadratic": make_case(one + [battery("B1", "C1", a=0.1)], {"L1": [2.0]}),
        "battery-charges": make_case([consumer("L1", "C1"), producer("PV1", "C1"), battery("B1", "C1")],
                                     {"L1": [1.0], "PV1": [6.0]}),
        "battery-threshold-physical": make_case(
            [consumer("L1", "C1"), producer("PV1", "C1", a=0.1, b=0.1), battery("B1", "C1")],
            {"L1": [1.0], "PV1": [10.0]}, battery_spec=SPEC7),
        "battery-threshold-paper": make_case(
            [consumer("L1", "C1"), producer("PV1", "C1", a=0.1, b=0.1), battery("B1", "C1")],
            {"L1": [1.0], "PV1": [10.0]}, battery_spec=SPEC7, battery_model="paper"),
        "battery-dead-band": make_case(
            [consumer("L1", "C1", b=2.0), producer("PV1", "C1", a=0.1, b=0.1), battery("B1", "C1")],
            {"L1": [3.0, 4.0], "PV1": [10.0, 10.0]}, battery_spec=SPEC7),
        "half-hour-steps": make_case([consumer("L1", "C1"), battery("B1", "C1")], {"L1": [4.0]}, step_hours=0.5),
        "study-loop-battery": with_agents(make_case(one, {"L1": [2.0, 2.0]}), [battery("SBU_b1", "C1", units=3)]),
        "linked": make_case([producer("PV1", "C1", a=0.05, b=0.05), consumer("L2", "C2", b=1.0)],
                            {"PV1": [10.0], "L2": [3.0]}, trade_fee=0.01),
        "unlinked": make_case([producer("PV1", "C1", a=0.05, b=0.05), consumer("L2", "C2", b=1.0)],
                              {"PV1": [10.0], "L2": [3.0]}, trade_fee=0.01, links=[]),
        "passive": make_case([consumer("L1", "C1"), passive("X1"), producer("PV1", "C1", a=0.1, b=0.1)],
                             {"L1": [2.0], "X1": [7.0], "PV1": [5.0]}),
    }


HAND = _hand_cases()


@pytest.mark.parametrize("name", list(HAND))
def test_hand_cases_agree_with_clarabel(name: str) -> None:
    case = HAND[name]
    r = clear_market(case, method="fast")
    assert r.solver == "fast" and set(r.window_solver) == {"fast"}
    assert_kkt(case, r)
    assert_matches_qp(case, r, clear_market(case, method="qp"))
    assert_matches_tight(case, r, split_tol=1e-6)


def test_auto_is_fast_for_the_sequential_market() -> None:
    r = clear_market(HAND["battery-marginal"])
    assert r.solver == "fast"
    assert clear_market(HAND["battery-marginal"], method="qp").solver == "clarabel"
    assert clear_market(HAND["battery-marginal"], method=MarketMethod.QP).solver == "clarabel"
    with pytest.raises(ValueError, match="fastest"):
        clear_market(HAND["battery-marginal"], method="fastest")


# ----------------------------------------------------------------------------- random cases

@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_agents=st.integers(2, 16), n_communities=st.integers(1, 4),
       n_batteries=st.integers(0, 4), steps=st.integers(1, 5), model=st.sampled_from(["physical", "paper"]),
       linked=st.booleans(), passive_share=st.sampled_from([0.0, 0.2]), fee=st.sampled_from([0.001, 0.01, 0.05]),
       a_bat=st.sampled_from([0.0, 0.02]), c_deg=st.sampled_from([0.0, 0.03]))
def test_random_cases_agree_with_clarabel(seed: int, n_agents: int, n_communities: int, n_batteries: int,
                                          steps: int, model: str, linked: bool, passive_share: float, fee: float,
                                          a_bat: float, c_deg: float) -> None:
    n_communities = min(n_communities, n_agents)
    spec = BatterySpec(soc_init=0.2 + 0.6 * (seed % 7) / 6, a=a_bat, degradation_cost=c_deg)
    case = random_case(seed, n_agents=n_agents, n_communities=n_communities, n_batteries=n_batteries, steps=steps,
                       battery_model=model, links="all" if linked else [], passive_share=passive_share,
                       trade_fee=fee, battery_spec=spec)
    r = clear_market(case)
    assert r.solver == ("fast" if case.communities else "none")
    assert_kkt(case, r)
    assert_matches_tight(case, r)
    assert_matches_qp(case, r, clear_market(case, method="qp"))


def test_large_case_with_five_pooled_communities() -> None:
    # the benchmark's shape, smaller: many agents, five communities trading through one pool
    case = random_case(3, n_agents=120, n_communities=5, n_batteries=6, steps=8, trade_fee=0.001)
    r = clear_market(case, method="fast")
    assert_kkt(case, r)
    assert_matches_tight(case, r)
    assert_matches_qp(case, r, clear_market(case, method="qp"))


# ----------------------------------------------------------------------------- study cases

def free_soc(case):
    """``case`` with ``[battery] terminal_soc = "free"``: the KKT certificate of
    ``_market_cases`` states the study's SoC bounds, not the cyclic rule's band near the end
    (tests/test_market_terminal.py covers the cyclic market)."""
    return replace(case, battery=replace(case.battery, terminal_soc=TerminalSoc.FREE))


def test_default_case_agrees_with_clarabel() -> None:
    case = free_soc(load_case(default_case_path()))
    r = clear_market(case)
    assert r.solver == "fast"
    assert_kkt(case, r)
    assert_matches_qp(case, r, clear_market(case, method="qp"))
    assert_matches_tight(case, r)


def test_cr_mar_case_agrees_with_clarabel(cr_mar_dir: Path, tmp_path: Path) -> None:
    from gridmarket.cases.cr_mar import build_case

    case = load_case(build_case(tmp_path / "case2", case=2, data_dir=cr_mar_dir.parent))
    # with batteries at a few buses, as the study loop places them
    buses = [a for a in case.agents if a.kind is AgentKind.CONSUMER][:3]
    case = free_soc(with_agents(case, [battery(f"SBU_{a.name}", a.community, units=u)
                                       for a, u in zip(buses, (1, 3, 5), strict=True)]))
    r = clear_market(case)
    assert r.solver == "fast"
    assert_kkt(case, r)
    assert_matches_qp(case, r, clear_market(case, method="qp"))
    assert_matches_tight(case, r)


# ----------------------------------------------------------------------------- fallback

def test_multi_period_windows_fall_back_to_clarabel() -> None:
    case = random_case(5, n_agents=10, n_communities=2, n_batteries=2, steps=4, horizon=2)
    r = clear_market(case)
    assert r.solver == "clarabel" and set(r.window_solver) == {"clarabel"} and len(r.window_solver) == 2
    with pytest.raises(MarketError, match="fast path does not apply: horizon 2"):
        clear_market(case, method="fast")
    # horizon 1 asked for explicitly: fast again
    assert clear_market(case, horizon=1).solver == "fast"


@pytest.mark.parametrize(("what", "links", "fee", "tie"), [
    ("chain of links", [("C1", "C2"), ("C2", "C3")], 0.01, 1e-6),
    ("no fee on links", "all", 0.0, 1e-6),
    ("no tie-break", "all", 0.01, 0.0),
])
def test_unsupported_cases_are_cleared_by_clarabel(what: str, links, fee: float, tie: float) -> None:
    case = random_case(8, n_agents=12, n_communities=3, n_batteries=1, steps=3, links=links, trade_fee=fee)
    case = replace(case, market=replace(case.market, tie_break=tie))
    r = clear_market(case)
    assert r.solver == "clarabel", what
    q = clear_market(case, method="qp")
    assert r.total_welfare == q.total_welfare
    with pytest.raises(MarketError, match="fast path does not apply"):
        clear_market(case, method="fast")


def test_steps_the_fast_path_cannot_settle_go_to_clarabel(monkeypatch: pytest.MonkeyPatch) -> None:
    # one active-set iteration is too few for some steps (here step 2): they go to Clarabel one
    # by one, and the SoC each leaves carries on into the next step, whichever path solves it
    case = random_case(12, n_agents=24, n_communities=3, n_batteries=3, steps=6)
    full = clear_market(case, method="fast")
    monkeypatch.setattr(fast_module, "MAX_ITER", 1)
    r = clear_market(case)
    assert r.solver == "fast+clarabel"
    assert "clarabel" in r.window_solver and "fast" in r.window_solver
    assert len(r.window_solver) == len(r.window_status) == case.time.steps
    q = clear_market(case, method="qp")
    assert r.total_welfare == pytest.approx(q.total_welfare, rel=1e-6)
    # against the pure fast run: the steps Clarabel solved carry its ~1e-5 accuracy on batteries
    # into the next SoC; against the Clarabel run: its own accuracy (see assert_matches_qp)
    np.testing.assert_allclose(r.soc, full.soc, atol=1e-4, equal_nan=True)
    np.testing.assert_allclose(r.soc, q.soc, atol=5e-3, equal_nan=True)
    np.testing.assert_allclose(r.price, full.price, atol=1e-6)
    with pytest.raises(MarketError, match="fast market path failed") as err:
        clear_market(case, method="fast")
    assert err.value.group == "Market-method" and err.value.step is not None


def test_infeasible_step_is_diagnosed_by_clarabel() -> None:
    # SoC before step 0 at its minimum and no charge rate: self-discharge forces a charge the
    # battery cannot take; the fast path hands the step over and Clarabel names the problem
    spec = BatterySpec(soc_init=0.2, rate_charge=0.0)
    case = make_case([consumer("L1", "C1"), battery("B1", "C1")], {"L1": [1.0]}, battery_spec=spec)
    with pytest.raises(MarketError) as err:
        clear_market(case)
    assert err.value.step == 0
    assert "infeasible" in str(err.value)


# ----------------------------------------------------------------------------- link topologies

TOPOLOGIES = {
    "two pairs": [("C1", "C2"), ("C3", "C4")],
    "pair and singles": [("C2", "C3")],
    "triangle and single": [("C1", "C2"), ("C2", "C3"), ("C1", "C3")],
}


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("topology", list(TOPOLOGIES))
def test_several_pools_agree_with_clarabel(topology: str, seed: int) -> None:
    # cliques that do not reach every community: each its own pool, the rest trade with the grid alone
    case = random_case(seed, n_agents=24, n_communities=4, n_batteries=3, steps=4, links=TOPOLOGIES[topology],
                       trade_fee=0.01)
    r = clear_market(case)
    assert r.solver == "fast"
    assert_kkt(case, r)
    assert_matches_tight(case, r)
    assert_matches_qp(case, r, clear_market(case, method="qp"))


def test_a_non_clique_link_topology_goes_to_clarabel() -> None:
    case = random_case(4, n_agents=12, n_communities=3, n_batteries=1, steps=2, links=[("C1", "C2"), ("C2", "C3")])
    r = clear_market(case)
    assert r.solver == "clarabel"
    with pytest.raises(MarketError, match="not all linked pairwise"):
        clear_market(case, method="fast")


def test_a_result_pickles_and_builds_the_same_frames_after() -> None:
    # a result crosses process boundaries (Dask tasks, the year run's worker); its frames are
    # built on first use, so the builder must travel with it
    import pickle

    case = HAND["linked"]
    r = clear_market(case)
    back = pickle.loads(pickle.dumps(r))
    assert back.total_welfare == r.total_welfare
    for name in ("market", "communities", "settlements"):
        pd_frame, back_frame = getattr(r, name), getattr(back, name)
        assert back_frame.equals(pd_frame), name
