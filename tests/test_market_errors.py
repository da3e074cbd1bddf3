"""Bad market inputs and infeasible markets raise MarketError naming step, group and agents."""

from __future__ import annotations

import numpy as np
import pytest

from _market_cases import battery, consumer, make_case, producer
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
