"""Bad market inputs and infeasible markets raise MarketError naming step, group and agents."""

from __future__ import annotations

import re
import warnings
from dataclasses import replace

import numpy as np
import pytest

from _market_cases import battery, consumer, make_case, producer
from gridmarket.case.io import CaseWarning
from gridmarket.case.model import BatterySpec
from gridmarket.errors import GridmarketError, MarketError
from gridmarket.market import MarketStatus, check_market, clear_market, market_data


def test_negative_available_pv_is_rejected_before_solving_with_exact_message() -> None:
    case = make_case([consumer("L1", "C1"), producer("PV1", "C1"), producer("PV2", "C1")],
                     {"L1": [3.0] * 3, "PV1": [1.0, -1.0, -2.0], "PV2": [0.0, 0.0, -0.5]})
    with pytest.raises(MarketError) as info:
        clear_market(case)
    assert str(info.value) == (
        "step 1: market inputs of case 'market-test' rejected before solving, 1 problem(s);"
        " first group: Producer-bounds-P\n"
        "  - step 1: Producer-bounds-P: available energy must be >= 0 (q in [0, available], eq. 16),"
        " got -1 kWh for PV1; 2 members in all: PV1, PV2")
    assert info.value.step == 1
    assert info.value.group == "Producer-bounds-P"
    assert isinstance(info.value, GridmarketError)


def test_initial_soc_outside_bounds_is_rejected() -> None:
    case = make_case([consumer("L1", "C1"), battery("B1", "C1")], {"L1": [1.0]})
    with pytest.raises(MarketError) as info:
        clear_market(case, soc_init={"B1": 0.1})
    assert str(info.value) == (
        "step 0: market inputs of case 'market-test' rejected before solving, 1 problem(s);"
        " first group: Battery-soc-bounds\n"
        "  - step 0: Battery-soc-bounds: SoC before step 0 must be within [soc_min, soc_max] = [0.2, 0.8],"
        " got 0.1 for B1")
    with pytest.raises(MarketError, match=r"soc_init names 'B9', which is not a battery agent"):
        clear_market(case, soc_init={"B9": 0.5})


def test_every_problem_is_listed_at_once() -> None:
    case = make_case([consumer("L1", "C1", a=-1.0, flex=1.5)], {"L1": [3.0, -1.0]},
                     import_price=[0.8, 0.2], export_price=[0.3, 0.3], trade_fee=-0.1)
    problems = check_market(market_data(case), horizon=0)
    groups = sorted(p.group for p in problems)
    assert groups == sorted(["Market-horizon", "Consumer-bounds-P", "Consumer-bounds-P", "Agent-objective",
                             "Grid-price", "Market-options"])
    with pytest.raises(MarketError, match=r"^step 1: market inputs .* 6 problem\(s\); first group:"):
        clear_market(case, horizon=0)


def _no_charging_case(steps: int):
    # the battery cannot charge (rate_charge = 0) and discharges to serve an expensive load:
    # from SoC 0.5 it reaches soc_min at step 1; at step 2 self-discharge pulls it below.
    spec = BatterySpec(rate_charge=0.0)
    return make_case([consumer("L1", "C1"), battery("B1", "C1")], {"L1": [3.0] * steps}, battery_spec=spec)


def test_infeasible_step_names_step_and_group_from_the_certificate() -> None:
    with pytest.raises(MarketError) as info:
        clear_market(_no_charging_case(5))
    e = info.value
    assert e.step == 2
    assert e.group == "Battery-soc-bounds"
    assert str(e).startswith("step 2: market infeasible (Clarabel status PrimalInfeasible); likely group:"
                             " battery SoC lower bound (Battery-soc-bounds, eq. (11')) for B1; also involved:")
    assert "Battery-soc-recursion" in str(e) and "Battery-rate-charge" in str(e)


def test_infeasible_window_names_its_first_infeasible_step() -> None:
    # a window of 3 steps plans around it (SoC stays feasible in steps 0-2) but leaves SoC at
    # its minimum: the next window fails at its first step.
    with pytest.raises(MarketError) as info:
        clear_market(_no_charging_case(5), horizon=3)
    assert info.value.step == 3
    assert str(info.value).endswith("; window steps 3-4")


def test_no_market_agents_gives_an_empty_market() -> None:
    from _market_cases import passive

    r = clear_market(make_case([passive("X1")], {"X1": [1.0, 2.0]}))
    assert r.status is MarketStatus.NOT_SOLVED
    assert r.total_welfare == 0.0
    np.testing.assert_allclose(r.market.P_kw, [1.0, 2.0])


def test_unbounded_market_is_named_from_the_primal_ray() -> None:
    # validation refuses import < export price; without it and without the ε tie-break the
    # grid is an unbounded arbitrage (buy at 0.2, sell at 0.3)
    from gridmarket.market import WindowSolver, create_model
    from gridmarket.market.solve import diagnose

    case = make_case([consumer("L1", "C1"), producer("PV1", "C1")], {"L1": [1.0], "PV1": [1.0]},
                     import_price=[0.2], export_price=[0.3], tie_break=0.0)
    with pytest.raises(MarketError, match=r"import price 0\.2 is below export price 0\.3"):
        clear_market(case)
    d = market_data(case)
    model = create_model(d, 1)
    w = d.window(0, 1, d.soc_init)
    out = WindowSolver(model).solve(w)
    assert out.status is MarketStatus.UNBOUNDED
    err = diagnose(model, w, out)
    assert err.group == "Objective" and err.step == 0
    assert str(err).startswith("step 0: market unbounded (Clarabel status DualInfeasible); likely group: objective")


# ----------------------------------------------------------------------------- scale (issue 15)

def _big_consumer_case(kw: float, *, with_battery: bool = False):
    """An inflexible consumer of ``kw`` kW (a = 0, b = 1) and a 3 kW PV (a = b = 0) in one
    community, a household of 2 kW in another; import 0.8, export 0.3, ε = 1e-6."""
    agents = [consumer("L1", "C1"), producer("PV1", "C1"), consumer("L2", "C2")]
    if with_battery:
        agents.append(battery("B1", "C2"))
    return make_case(agents, {"L1": [kw], "PV1": [3.0], "L2": [2.0]}, links=[])


@pytest.mark.parametrize("kw", [5e5, 1e6])
def test_a_consumer_within_the_documented_limit_clears_with_hand_values(kw: float) -> None:
    # By hand: all PV is used (its cost is 0, the price is positive), the rest is imported at
    # 0.8: welfare = b·D − 0.8·(D − 3) + (household: 2 − 0.8·2) = 0.2 D + 2.4 + 0.4.
    # The ε tie-break splits C1's import over its two agents (x = −Φ purchases, α imports):
    # α_n = x_n − u with u = (π_imp − λ)/(2ε), x_L + α_L = D, x_PV + α_PV = −3, x_L + x_PV = 0
    # give u = −(D − 3)/2, so λ_C1 = π_imp + ε (D − 3); C2 (2 kWh) is priced 0.8 + ε·2.
    # At the default ε that moves C1's price by ε·D (0.5 or 1 currency/kWh): the market warns
    # and proposes an ε under which the move is at most 1e-3 of the import price.
    case = _big_consumer_case(kw)
    D = kw
    for method in ("qp", "auto"):
        with pytest.warns(CaseWarning, match=r"tie_break = 1e-06 currency/kWh² is too large for an agent of "
                          r".* \(L1 at step 0\)") as rec:
            r = clear_market(case, method=method)
        assert r.total_welfare == pytest.approx(0.2 * D + 2.8, rel=1e-8)
        np.testing.assert_allclose(r.p_kwh[0], [D, -3.0, 2.0], rtol=0, atol=1e-4)
        assert r.price[0, 0] == pytest.approx(0.8 + 1e-6 * (D - 3.0), abs=1e-6)
        assert r.price[0, 1] == pytest.approx(0.8 + 1e-6 * 2.0, abs=1e-5)
    found = re.search(r"set \[market\] tie_break to (\S+) or less", str(rec[0].message))
    assert found is not None
    eps = float(found.group(1))
    small = replace(case, market=replace(case.market, tie_break=eps))
    for method in ("qp", "auto"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no warning with the proposed ε
            r = clear_market(small, method=method)
        assert r.total_welfare == pytest.approx(0.2 * D + 2.8, rel=1e-8)
        assert r.price[0, 0] == pytest.approx(0.8 + eps * (D - 3.0), abs=1e-6)
        assert abs(r.price[0, 0] - 0.8) <= 1e-3 * 0.8


def test_an_unscaled_solve_fails_and_the_message_names_the_scale_not_a_constraint() -> None:
    from gridmarket.market import WindowSolver, create_model
    from gridmarket.market.solve import diagnose

    for with_battery in (False, True):
        case = _big_consumer_case(1e6, with_battery=with_battery)
        d = market_data(case)
        model = create_model(d, 1)
        w = d.window(0, 1, d.soc_init)
        out = WindowSolver(model, scale=1.0).solve(w)  # what the market did before issue 15
        assert out.status is MarketStatus.INFEASIBLE
        err = diagnose(model, w, out)
        assert err.group == "Solver" and err.step == 0
        why = ("the window has no battery, so with unlimited grid imports and exports it is feasible"
               if not with_battery else "its infeasibility certificate does not hold")
        assert str(err).startswith(
            f"step 0: market not solved (Clarabel status {out.solver_status}): the solver reported it infeasible,"
            f" but {why}")
        assert "energies per step span 2 to 1e+06 kWh (largest: L1 at step 0)" in str(err)
        assert "Trade-sign" not in str(err)
