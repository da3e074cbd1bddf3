"""The comparison's price spread leaves out the rows the market could not meet (issue 13).

An unmet row keeps a slack whose dual is the penalty (``[market] network_penalty``), a modelling
device: the agents under it would show prices of ~100 currency/kWh and set the spread. Checked on
a market solved for real against prices computed by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from _market_cases import consumer, make_case, producer
from gridmarket.market import clear_market
from gridmarket.market.network import NetworkConstraints
from gridmarket.study.compare import market_price_spread, unmet_rows


def test_the_spread_leaves_out_the_penalty_of_an_unmet_row() -> None:
    # C1: L1 (a = 0.05, b = 1, flex = 1: P in [0, 12] kWh) and PV1 (10 kWh), grid 0.8 / 0.3.
    # Step 0, row −(p_L1 + p_PV1) <= 1 (met): both pay 0.3 − 0.2 = 0.1 (P_L1 = 9, dual 0.2).
    # Step 1, row p_L1 <= −100 (no dispatch meets it: P_L1 >= 0): its slack takes the rest at the
    # penalty π, L1 then buys nothing (its price 0.3 + π is far above b = 1), the community
    # exports 10 kWh at 0.3, slack = 100; L1's price 0.3 + π, PV1's 0.3.
    case = make_case([consumer("L1", "C1", a=0.05, b=1.0, flex=1.0), producer("PV1", "C1")],
                     {"L1": [12.0, 12.0], "PV1": [10.0, 10.0]}, import_price=0.8, export_price=0.3, links=[])
    pen = case.market.network_penalty
    net = NetworkConstraints(step=np.array([0, 1]), kind=("voltage", "transformer"),
                             name=("bus.b1.1", "transformer.t1"),
                             sens=sp.csr_matrix(np.array([[-1.0, -1.0], [1.0, 0.0]])), rhs=np.array([1.0, -100.0]))
    r = clear_market(case, network=net)
    assert r.p_kwh[:, 0] == pytest.approx([9.0, 0.0], abs=1e-3)
    assert r.network_slack == pytest.approx([0.0, 100.0], abs=1e-6)
    price = r.price_energy + r.price_voltage + r.price_congestion
    np.testing.assert_allclose(price, [[0.1, 0.1], [0.3 + pen, 0.3]], atol=1e-3)
    assert unmet_rows(r) == 1
    # with the unmet row's component the spread is the penalty's; without it, 0.3 − 0.1
    assert float(np.nanmax(price) - np.nanmin(price)) == pytest.approx(0.2 + pen, abs=1e-3)
    assert market_price_spread(r, case.time.step_hours) == pytest.approx(0.2, abs=1e-3)


def test_without_rows_the_spread_is_that_of_the_community_prices() -> None:
    # step 0: L1 buys where 1 − 0.1 P = 0.3 (P = 7), the community exports at 0.3; step 1 (PV
    # 1 kWh): where 1 − 0.1 P = 0.8 (P = 2), it imports 1 kWh at 0.8; the spread is 0.5
    case = make_case([consumer("L1", "C1", a=0.05, b=1.0, flex=1.0), producer("PV1", "C1")],
                     {"L1": [12.0, 12.0], "PV1": [10.0, 1.0]}, import_price=0.8, export_price=0.3, links=[])
    r = clear_market(case)
    assert r.p_kwh[:, 0] == pytest.approx([7.0, 2.0], abs=1e-3)
    assert unmet_rows(r) == 0
    assert market_price_spread(r, case.time.step_hours) == pytest.approx(0.5, abs=1e-4)
