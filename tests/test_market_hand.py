"""Market cases small enough to solve by hand (shared MODEL.md); every expected number is
derived here from first principles: marginal cost = marginal utility = price, the grid caps
prices to [π_exp, π_imp], a battery trades against its value of stored energy v.

Default data: import 0.8, export 0.3 currency/kWh, ε = 1e-6 (prices move by 2εΦ ≈ 1e-5).
"""

from __future__ import annotations

import numpy as np
import pytest

from _market_cases import battery, consumer, make_case, passive, producer, with_agents
from gridmarket.case.model import BatterySpec
from gridmarket.enums import BatteryModel
from gridmarket.market import (
    COMMUNITY_COLUMNS,
    MARKET_COLUMNS,
    MarketStatus,
    clear_market,
)

PRICE_TOL = 2e-5  # ε-tie-break shifts prices by 2εΦ
QTY_TOL = 1e-4  # ε shifts quantities by about 2εΦ/(2a) [kWh]
SPEC = BatterySpec()
KEEP = 1.0 - SPEC.self_discharge
ETA = SPEC.eff_charge  # = eff_discharge = 0.96


def row(result, agent: str, step: int = 0):
    m = result.market
    return m[(m.agent == agent) & (m.step == step)].iloc[0]


def comm(result, name: str, step: int = 0):
    c = result.communities
    return c[(c.community == name) & (c.step == step)].iloc[0]


# ----------------------------------------------------------------------------- one consumer + one PV

def test_pv_supplies_locally_at_its_marginal_cost() -> None:
    # consumer inflexible D = 2 kWh, utility b = 1; PV cost 0.1 q² + 0.1 q, available 5.
    # marginal cost at q = D: 2·0.1·2 + 0.1 = 0.5, inside (0.3, 0.8): no grid trade.
    D, a, b = 2.0, 0.1, 0.1
    case = make_case([consumer("L1", "C1", b=1.0), producer("PV1", "C1", a=a, b=b)], {"L1": [D], "PV1": [5.0]})
    r = clear_market(case)
    assert r.status is MarketStatus.OPTIMAL
    price = 2 * a * D + b
    assert comm(r, "C1").price == pytest.approx(price, abs=PRICE_TOL)
    assert row(r, "PV1").P_kw == pytest.approx(-D, abs=QTY_TOL)
    assert comm(r, "C1").import_kwh == pytest.approx(0.0, abs=QTY_TOL)
    assert comm(r, "C1").export_kwh == pytest.approx(0.0, abs=QTY_TOL)
    welfare = 1.0 * D - (a * D**2 + b * D)
    assert r.welfare[0] == pytest.approx(welfare, abs=1e-6)
    # the consumer buys (Φ < 0) and pays λ·D, the producer sells and receives it
    assert row(r, "L1").phi_kw == pytest.approx(-D, abs=QTY_TOL)
    assert row(r, "L1").payment == pytest.approx(price * D, abs=1e-4)
    assert row(r, "PV1").payment == pytest.approx(-price * D, abs=1e-4)
    assert tuple(r.market.columns) == MARKET_COLUMNS
    assert tuple(r.communities.columns) == COMMUNITY_COLUMNS


def test_expensive_pv_is_topped_up_by_import_at_the_import_price() -> None:
    # PV cost 0.3 q² + 0.1 q: marginal cost at 2 kWh is 1.3 > 0.8, so the PV produces until
    # 0.6 q + 0.1 = 0.8, q = 7/6, and the community imports the rest at 0.8.
    D, a, b, pi = 2.0, 0.3, 0.1, 0.8
    case = make_case([consumer("L1", "C1", b=1.0), producer("PV1", "C1", a=a, b=b)], {"L1": [D], "PV1": [5.0]})
    r = clear_market(case)
    q = (pi - b) / (2 * a)
    assert q == pytest.approx(7 / 6)
    assert row(r, "PV1").P_kw == pytest.approx(-q, abs=QTY_TOL)
    assert comm(r, "C1").price == pytest.approx(pi, abs=PRICE_TOL)
    assert comm(r, "C1").import_kwh == pytest.approx(D - q, abs=QTY_TOL)
    assert r.welfare[0] == pytest.approx(D - (a * q**2 + b * q) - pi * (D - q), abs=1e-6)
    s = r.settlements
    grid = s[(s.community == "C1") & (s.partner == "grid")].iloc[0]
    assert grid.payment == pytest.approx(pi * (D - q), abs=1e-5)


@pytest.mark.parametrize(("a", "b", "avail", "q_expected"), [
    (0.01, 0.05, 5.0, 5.0),  # marginal cost 0.15 at full output < 0.3: all of it, surplus 3 exported
    (0.05, 0.10, 10.0, 2.0),  # 0.1 q + 0.1 = 0.3 -> q = 2, one kWh exported
])
def test_surplus_is_sold_at_the_export_price(a: float, b: float, avail: float, q_expected: float) -> None:
    D, pe = 1.0, 0.3
    case = make_case([consumer("L1", "C1", b=1.0), producer("PV1", "C1", a=a, b=b)], {"L1": [D], "PV1": [avail]})
    r = clear_market(case)
    q = min(avail, (pe - b) / (2 * a))
    assert q == pytest.approx(q_expected)
    assert row(r, "PV1").P_kw == pytest.approx(-q, abs=QTY_TOL)
    assert comm(r, "C1").price == pytest.approx(pe, abs=PRICE_TOL)
    assert comm(r, "C1").export_kwh == pytest.approx(q - D, abs=QTY_TOL)
    assert r.welfare[0] == pytest.approx(D - (a * q**2 + b * q) + pe * (q - D), abs=1e-6)
    # exports are settled at the export price: the community receives pe per kWh
    assert r.market.payment.sum() == pytest.approx(-pe * (q - D), abs=1e-5)


def test_flexible_consumer_consumes_where_marginal_utility_meets_the_price() -> None:
    # utility b P − a P² = P − 0.1 P², P in [(1 − 0.5)·4, 4] = [2, 4].
    consumer_ = consumer("L1", "C1", a=0.1, b=1.0, flex=0.5)
    # free PV surplus, exported at 0.3: 1 − 0.2 P = 0.3 -> P = 3.5 (inside the bounds)
    r = clear_market(make_case([consumer_, producer("PV1", "C1")], {"L1": [4.0], "PV1": [10.0]}))
    assert row(r, "L1").P_kw == pytest.approx(3.5, abs=QTY_TOL)
    assert comm(r, "C1").price == pytest.approx(0.3, abs=PRICE_TOL)
    # no PV: import at 0.8 gives 1 − 0.2 P = 0.8 -> P = 1, below the floor: P = 2
    r = clear_market(make_case([consumer_], {"L1": [4.0]}))
    assert row(r, "L1").P_kw == pytest.approx(2.0, abs=QTY_TOL)
    assert r.welfare[0] == pytest.approx(2.0 - 0.1 * 4 - 0.8 * 2, abs=1e-6)


# ----------------------------------------------------------------------------- batteries

def test_battery_discharges_when_price_exceeds_v_over_eta() -> None:
    # v = mean price (0.8 + 0.3)/2 = 0.55. With only a consumer, the community would import at
    # 0.8 > v/η = 0.573: the battery discharges. D = 2 < rate 2.56, so it covers D and is the
    # marginal supplier: price = v/η (not 0.8); stored energy falls by D/η.
    v, D, cap = 0.55, 2.0, SPEC.unit_kwh
    case = make_case([consumer("L1", "C1", b=1.0), battery("B1", "C1")], {"L1": [D]})
    r = clear_market(case)
    assert row(r, "B1").S_kw == pytest.approx(-D, abs=QTY_TOL)
    assert comm(r, "C1").price == pytest.approx(v / ETA, abs=PRICE_TOL)
    assert row(r, "B1").soc == pytest.approx(0.5 * KEEP - D / ETA / cap, abs=1e-8)
    assert r.welfare[0] == pytest.approx(1.0 * D + v * (-D / ETA), abs=1e-6)
    # D = 3 > 2.56 kWh (rate limit = min(2.56 kW·1 h, 0.9375·10.24)): the rest is imported at 0.8
    r = clear_market(make_case([consumer("L1", "C1", b=1.0), battery("B1", "C1")], {"L1": [3.0]}))
    assert row(r, "B1").S_kw == pytest.approx(-2.56, abs=QTY_TOL)
    assert comm(r, "C1").price == pytest.approx(0.8, abs=PRICE_TOL)
    assert comm(r, "C1").import_kwh == pytest.approx(3.0 - 2.56, abs=QTY_TOL)


@pytest.mark.parametrize(("c_deg", "a"), [(0.05, 0.0), (0.0, 0.05), (0.0, 0.1)])
def test_degradation_and_quadratic_cost_raise_the_discharge_price(c_deg: float, a: float) -> None:
    # discharging S_dis costs v/η + c_deg + 2a·S_dis at the margin (f = −v S_dis/η − c_deg S_dis
    # − a S_dis²). Consumer D = 2, import 0.8: the battery discharges until that marginal cost
    # reaches 0.8 or D is covered; the price is the marginal cost, or 0.8 if the grid tops up.
    v, D = 0.55, 2.0
    spec = BatterySpec(degradation_cost=c_deg)
    case = make_case([consumer("L1", "C1", b=1.0), battery("B1", "C1", a=a)], {"L1": [D]}, battery_spec=spec)
    r = clear_market(case)
    base = v / ETA + c_deg
    s_dis = D if a == 0 else min(D, (0.8 - base) / (2 * a))
    price = 0.8 if s_dis < D else base + 2 * a * s_dis  # (0.0, 0.1): s_dis = 1.135, rest imported
    assert row(r, "B1").S_kw == pytest.approx(-s_dis, abs=QTY_TOL)
    assert comm(r, "C1").price == pytest.approx(price, abs=PRICE_TOL)
    welfare = D - v * s_dis / ETA - c_deg * s_dis - a * s_dis**2 - 0.8 * (D - s_dis)
    assert r.welfare[0] == pytest.approx(welfare, abs=1e-6)


def test_battery_charges_when_price_is_below_v_times_eta() -> None:
    # free PV surplus exported at 0.3 < v·η = 0.528: charge at the rate limit 2.56 kWh.
    case = make_case([consumer("L1", "C1"), producer("PV1", "C1"), battery("B1", "C1")], {"L1": [1.0], "PV1": [6.0]})
    r = clear_market(case)
    assert row(r, "B1").S_kw == pytest.approx(2.56, abs=QTY_TOL)
    assert comm(r, "C1").price == pytest.approx(0.3, abs=PRICE_TOL)
    assert comm(r, "C1").export_kwh == pytest.approx(6.0 - 1.0 - 2.56, abs=QTY_TOL)
    assert row(r, "B1").soc == pytest.approx(0.5 * KEEP + ETA * 2.56 / SPEC.unit_kwh, abs=1e-8)


@pytest.mark.parametrize(("model", "threshold"), [("physical", 0.7 * ETA), ("paper", 0.7)])
def test_battery_charge_sets_the_price_at_its_threshold(model: str, threshold: float) -> None:
    # v = 0.7. PV cost 0.1 q² + 0.1 q, consumer D = 1. Charging stops where the PV's marginal
    # cost 0.2 q + 0.1 equals the battery's threshold (v·η physical, v paper): S = q − D.
    # 0.3 < threshold < 0.8, so no grid trade. The models differ by the efficiency.
    spec = BatterySpec(value=0.7)
    case = make_case([consumer("L1", "C1"), producer("PV1", "C1", a=0.1, b=0.1), battery("B1", "C1")],
                     {"L1": [1.0], "PV1": [10.0]}, battery_spec=spec, battery_model=model)
    r = clear_market(case)
    q = (threshold - 0.1) / 0.2
    assert comm(r, "C1").price == pytest.approx(threshold, abs=PRICE_TOL)
    assert row(r, "B1").S_kw == pytest.approx(q - 1.0, abs=1e-4)
    stored = ETA * (q - 1.0) if model == "physical" else q - 1.0
    assert row(r, "B1").soc == pytest.approx(0.5 * KEEP + stored / SPEC.unit_kwh, abs=1e-5)
    assert r.battery_model is BatteryModel(model)


def test_battery_idles_inside_its_dead_band_and_discharges_above_v_over_eta() -> None:
    # v = 0.7: dead band [v·η, v/η] = [0.672, 0.729]. PV marginal cost 0.2 q + 0.1.
    spec = BatterySpec(value=0.7)
    agents = [consumer("L1", "C1", b=2.0), producer("PV1", "C1", a=0.1, b=0.1), battery("B1", "C1")]
    # D = 3: price 0.2·3 + 0.1 = 0.7 inside the band -> S = 0
    r = clear_market(make_case(agents, {"L1": [3.0], "PV1": [10.0]}, battery_spec=spec))
    assert row(r, "B1").S_kw == pytest.approx(0.0, abs=1e-4)
    assert comm(r, "C1").price == pytest.approx(0.7, abs=PRICE_TOL)
    # D = 4: 0.9 without the battery; it discharges until price = v/η, below import 0.8
    r = clear_market(make_case(agents, {"L1": [4.0], "PV1": [10.0]}, battery_spec=spec))
    q = (0.7 / ETA - 0.1) / 0.2
    assert comm(r, "C1").price == pytest.approx(0.7 / ETA, abs=PRICE_TOL)
    assert row(r, "B1").S_kw == pytest.approx(-(4.0 - q), abs=1e-4)
    assert comm(r, "C1").import_kwh == pytest.approx(0.0, abs=QTY_TOL)


def test_step_hours_scale_energy_and_rate_limits() -> None:
    # Δt = 0.5 h: 4 kW of demand is 2 kWh; the battery's rate limit is 2.56 kW·0.5 h = 1.28 kWh,
    # reported as -2.56 kW; the rest is imported.
    case = make_case([consumer("L1", "C1"), battery("B1", "C1")], {"L1": [4.0]}, step_hours=0.5)
    r = clear_market(case)
    assert row(r, "L1").P_kw == pytest.approx(4.0, abs=QTY_TOL)
    assert r.p_kwh[0, 0] == pytest.approx(2.0, abs=QTY_TOL)
    assert row(r, "B1").S_kw == pytest.approx(-2.56, abs=QTY_TOL)
    assert r.s_kwh[0, 1] == pytest.approx(-1.28, abs=QTY_TOL)
    assert comm(r, "C1").import_kwh == pytest.approx(2.0 - 1.28, abs=QTY_TOL)
    assert row(r, "B1").soc == pytest.approx(0.5 * KEEP - 1.28 / ETA / SPEC.unit_kwh, abs=1e-8)


def test_battery_added_to_a_case_like_the_study_loop_does() -> None:
    base = make_case([consumer("L1", "C1", b=1.0)], {"L1": [2.0, 2.0]})
    r0 = clear_market(base)
    r1 = clear_market(with_agents(base, [battery("SBU_b1", "C1", units=3)]))
    # import at 0.8 replaced by discharge at v/η: welfare rises by (0.8 − 0.55/η)·2 per step
    assert r1.total_welfare - r0.total_welfare == pytest.approx(2 * (0.8 - 0.55 / ETA) * 2.0, abs=1e-5)
    r2 = clear_market(with_agents(base, [battery("SBU_b1", "C1", units=3)]), soc_init={"SBU_b1": 0.3})
    assert r2.soc[0, 1] == pytest.approx(0.3 * KEEP - 2.0 / ETA / (3 * SPEC.unit_kwh), abs=1e-8)


# ----------------------------------------------------------------------------- communities

def test_surplus_reaches_the_linked_community_before_the_grid() -> None:
    # C1: PV cost 0.05 q² + 0.05 q (marginal 0.1 q + 0.05), no demand. C2: consumer D = 3.
    # Linked with fee τ = 0.01: C1 sells all 3 kWh to C2 at its marginal cost 0.35 (> export
    # 0.3, so nothing to the grid); C2 pays 0.35 + τ = 0.36 < 0.8.
    tau, D = 0.01, 3.0
    agents = [producer("PV1", "C1", a=0.05, b=0.05), consumer("L2", "C2", b=1.0)]
    prof = {"PV1": [10.0], "L2": [D]}
    r = clear_market(make_case(agents, prof, trade_fee=tau))
    mc = 0.1 * D + 0.05
    assert comm(r, "C1").price == pytest.approx(mc, abs=PRICE_TOL)
    assert comm(r, "C2").price == pytest.approx(mc + tau, abs=PRICE_TOL)
    assert comm(r, "C1").export_kwh == pytest.approx(D, abs=QTY_TOL)
    assert comm(r, "C2").import_kwh == pytest.approx(D, abs=QTY_TOL)
    s = r.settlements.set_index(["community", "partner"])
    assert s.loc[("C2", "C1"), "import_kwh"] == pytest.approx(D, abs=QTY_TOL)
    assert s.loc[("C2", "grid"), "import_kwh"] == pytest.approx(0.0, abs=QTY_TOL)
    assert s.loc[("C1", "grid"), "export_kwh"] == pytest.approx(0.0, abs=QTY_TOL)
    # the inter-community price (dual of 8) is what C1 receives; C2 pays it plus the fee
    assert s.loc[("C1", "C2"), "export_price"] == pytest.approx(mc, abs=PRICE_TOL)
    assert s.loc[("C2", "C1"), "import_price"] == pytest.approx(mc + tau, abs=PRICE_TOL)
    assert s.loc[("C2", "C1"), "fee"] == pytest.approx(tau * D, abs=1e-6)
    welfare = D - (0.05 * D**2 + 0.05 * D) - tau * D
    assert r.welfare[0] == pytest.approx(welfare, abs=1e-6)
    # community welfare: C1 gets its PV cost, C2 its utility and the fee (no price transfers)
    assert comm(r, "C1").welfare == pytest.approx(-(0.05 * D**2 + 0.05 * D), abs=1e-6)
    assert comm(r, "C2").welfare == pytest.approx(D - tau * D, abs=1e-6)
    # without the link: C2 imports from the grid at 0.8, C1 exports until 0.1 q + 0.05 = 0.3
    r0 = clear_market(make_case(agents, prof, trade_fee=tau, links=[]))
    q = 2.5
    assert comm(r0, "C2").price == pytest.approx(0.8, abs=PRICE_TOL)
    assert comm(r0, "C1").price == pytest.approx(0.3, abs=PRICE_TOL)
    assert r0.welfare[0] == pytest.approx(D - 0.8 * D - (0.05 * q**2 + 0.05 * q) + 0.3 * q, abs=1e-6)


def test_passive_agents_keep_their_profile_and_take_no_part() -> None:
    agents = [consumer("L1", "C1"), passive("X1"), producer("PV1", "C1", a=0.1, b=0.1)]
    r = clear_market(make_case(agents, {"L1": [2.0], "X1": [7.0], "PV1": [5.0]}))
    x = row(r, "X1")
    assert x.P_kw == 7.0 and x.community == "" and x.payment == 0.0 and np.isnan(x.price)
    assert comm(r, "C1").price == pytest.approx(0.5, abs=PRICE_TOL)  # as without X1
    assert r.p_kwh[0, 1] == 7.0
