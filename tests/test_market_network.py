"""Network constraints in the market clearing (issue 13): rows ``sens @ p_t − slack <= rhs``.

Checked against values computed by hand, against the market without rows, and the duals
against finite differences of welfare when a row's right-hand side is relaxed.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from _market_cases import consumer, make_case, producer, random_case
from gridmarket.errors import MarketError
from gridmarket.market import clear_market
from gridmarket.market.network import NetworkConstraints, row_table


def rows(step, kind, sens, rhs, name=None) -> NetworkConstraints:
    sens = np.atleast_2d(np.asarray(sens, dtype=float))
    R = sens.shape[0]
    return NetworkConstraints(step=np.asarray(step, dtype=np.int64).reshape(R), kind=tuple(kind),
                              name=tuple(name or [f"bus.{r}" for r in range(R)]), sens=sp.csr_matrix(sens),
                              rhs=np.asarray(rhs, dtype=float).reshape(R))


@pytest.mark.parametrize("method", ["auto", "qp"])
@pytest.mark.parametrize("horizon", [1, 3])
def test_no_rows_is_the_market_without_network(method: str, horizon: int) -> None:
    case = random_case(7, n_agents=20, n_communities=3, n_batteries=2, steps=6, horizon=horizon)
    base = clear_market(case, method=method)
    empty = NetworkConstraints.empty(len(case.agents))
    r = clear_market(case, method=method, network=empty)
    assert r.solver == base.solver
    np.testing.assert_allclose(r.welfare.to_numpy(), base.welfare.to_numpy(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(r.p_kwh, base.p_kwh, rtol=0, atol=1e-9)
    np.testing.assert_allclose(r.s_kwh, base.s_kwh, rtol=0, atol=1e-9)
    np.testing.assert_allclose(r.price, base.price, rtol=0, atol=1e-9)
    # price components: the community price, nothing else
    for res in (r, base):
        m = res.market
        np.testing.assert_allclose(res.price_energy.ravel(), m.price.to_numpy(), equal_nan=True)
        assert np.nanmax(np.abs(res.price_voltage)) == 0.0 and np.nanmax(np.abs(res.price_congestion)) == 0.0
        assert res.network_duals.size == 0 and res.network_congestion_rent == 0.0


def _export_case(steps: int = 1, step_hours: float = 1.0):
    # C1: consumer L1 (a = 0.05, b = 1, flex = 1: P in [0, 12] kWh) and PV1 (10 kWh, free) per
    # step whatever its length; grid 0.8 / 0.3
    kw = 1.0 / step_hours
    return make_case([consumer("L1", "C1", a=0.05, b=1.0, flex=1.0), producer("PV1", "C1")],
                     {"L1": [12.0 * kw] * steps, "PV1": [10.0 * kw] * steps}, import_price=0.8, export_price=0.3,
                     links=[], step_hours=step_hours)


def test_a_binding_export_limit_matches_the_hand_solution() -> None:
    # Without the row: the community exports its surplus at 0.3, so L1 consumes where
    # 1 − 0.1 P = 0.3, P = 7, and 3 kWh leave. The row −(p_L1 + p_PV1) <= 1 (net injection
    # at most 1 kW, e.g. an overvoltage) binds: both agents face 0.3 − μ (sens = −1 each);
    # PV stays at 10 while 0.3 − μ > 0, so 10 − P = 1, P = 9, 1 − 0.1·9 = 0.3 − μ, μ = 0.2.
    # Welfare: 9 − 0.05·81 + 0.3·1 = 5.25 (5.45 without the row). The hand values leave out the
    # ε tie-break (1e-6 currency/kWh² on trades), which moves prices by ~2e-5 and, with
    # a = 0.05, P by ~2e-4 kWh: energies are checked to 1e-3 kWh, prices to 1e-4.
    case = _export_case(steps=2)
    free = clear_market(case)
    assert free.p_kwh[0] == pytest.approx([7.0, -10.0], abs=1e-3)
    assert free.welfare[0] == pytest.approx(5.45, abs=1e-4)
    net = rows([0], ["voltage"], [[-1.0, -1.0]], [1.0])
    r = clear_market(case, network=net)
    assert r.window_solver == ("clarabel", "fast")  # only the step with a row leaves the fast path
    assert r.solver == "fast+clarabel"
    assert r.p_kwh[0] == pytest.approx([9.0, -10.0], abs=1e-3)
    assert r.p_kwh[1] == pytest.approx([7.0, -10.0], abs=1e-3)
    assert r.welfare[0] == pytest.approx(5.25, abs=1e-4)
    assert r.network_duals[0] == pytest.approx(0.2, abs=1e-4)
    assert r.network_slack[0] == pytest.approx(0.0, abs=1e-7)
    np.testing.assert_allclose(r.price_energy[0], [0.3, 0.3], atol=1e-4)
    np.testing.assert_allclose(r.price_voltage[0], [-0.2, -0.2], atol=1e-4)
    np.testing.assert_allclose(r.price_congestion[0], [0.0, 0.0], atol=1e-12)
    # L1 consumes where its marginal utility equals its total price
    total = r.price_energy[0] + r.price_voltage[0] + r.price_congestion[0]
    assert total[0] == pytest.approx(1.0 - 0.1 * 9.0, abs=1e-4)
    # the DSO collects μ·(row quantity): 0.2 · 1, what the agents pay through the voltage part
    assert r.network_congestion_rent == pytest.approx(0.2, abs=1e-4)
    # ... exactly what the agents pay through the voltage part of their prices
    assert float((r.price_voltage[0] * r.p_kwh[0]).sum()) == pytest.approx(r.network_congestion_rent, abs=1e-9)
    assert r.network_penalty_cost == pytest.approx(0.0, abs=1e-5)
    # the same as a current row: the component moves to congestion
    c = clear_market(case, network=rows([0], ["current"], [[-1.0, -1.0]], [1.0]))
    np.testing.assert_allclose(c.price_congestion[0], [-0.2, -0.2], atol=1e-4)
    np.testing.assert_allclose(c.price_voltage[0], [0.0, 0.0], atol=1e-12)
    # the market table carries the parts, and price is their sum
    m = r.market[r.market.step == 0]
    np.testing.assert_allclose(m.price_voltage, [-0.2, -0.2], atol=1e-4)
    np.testing.assert_allclose(m.price, m.price_energy + m.price_voltage + m.price_congestion, atol=1e-12)


@pytest.mark.parametrize("k", [1e3, 1e5])
def test_a_binding_row_on_a_scaled_market_is_the_hand_solution_scaled(k: float) -> None:
    # The export case with every energy k times larger and a and the tie-break ε divided by k (so
    # the prices stay): the market is solved in scaled units (solve.kwh_scale), the window with its
    # row without Clarabel's iterative refinement. Hand solution, from the unscaled one: P = 9k,
    # the row's dual 0.2 per kW (its rhs is k times larger, its coefficients the same), welfare
    # 5.25k (the ε term moves prices by ~2e-5 as unscaled, P by ~2e-4·k).
    case = make_case([consumer("L1", "C1", a=0.05 / k, b=1.0, flex=1.0), producer("PV1", "C1")],
                     {"L1": [12.0 * k] * 2, "PV1": [10.0 * k] * 2}, import_price=0.8, export_price=0.3, links=[],
                     tie_break=1e-6 / k)
    r = clear_market(case, network=rows([0], ["voltage"], [[-1.0, -1.0]], [1.0 * k]))
    assert r.window_solver[0] == "clarabel"
    assert r.p_kwh[0] == pytest.approx([9.0 * k, -10.0 * k], rel=1e-4)
    assert r.p_kwh[1] == pytest.approx([7.0 * k, -10.0 * k], rel=1e-4)
    assert r.network_duals[0] == pytest.approx(0.2, abs=1e-4)
    assert r.welfare[0] == pytest.approx(5.25 * k, rel=1e-4)
    np.testing.assert_allclose(r.price_voltage[0], [-0.2, -0.2], atol=1e-4)


def test_half_hour_steps_price_per_kwh_from_a_row_in_kw() -> None:
    # The same market in steps of 0.5 h (12 kWh = 24 kW of demand, 10 kWh = 20 kW of PV); the row
    # limits the net injection to 2 kW = 1 kWh per step. In energy the optimum is the hourly one
    # (P = 9 kWh, 0.2 currency per kWh of relief); per kW of rhs the dual is 0.2·Δt = 0.1, and a
    # kWh more consumed raises p by 1/Δt kW: the voltage component is 0.1·(−1)/0.5 = −0.2 per kWh,
    # again L1's marginal utility 1 − 0.1·9 = 0.1 minus the energy price 0.3.
    case = _export_case(step_hours=0.5)
    r = clear_market(case, network=rows([0], ["voltage"], [[-1.0, -1.0]], [2.0]))
    assert r.p_kwh[0] == pytest.approx([9.0, -10.0], abs=1e-3)
    assert r.network_duals[0] == pytest.approx(0.1, abs=1e-4)
    np.testing.assert_allclose(r.price_voltage[0], [-0.2, -0.2], atol=2e-4)
    total = r.price_energy[0] + r.price_voltage[0]
    assert total[0] == pytest.approx(1.0 - 0.1 * 9.0, abs=2e-4)
    # rent: 0.1 per kW × 2 kW = 0.2 = what the agents pay per kWh through the voltage part
    assert r.network_congestion_rent == pytest.approx(0.2, abs=1e-4)
    assert float((r.price_voltage[0] * r.p_kwh[0]).sum()) == pytest.approx(r.network_congestion_rent, abs=1e-9)


def test_a_limit_no_agent_can_meet_is_a_priced_slack() -> None:
    # an inflexible consumer of 5 kWh under a row p_L1 <= 2: the slack is 3, its dual the penalty
    case = make_case([consumer("L1", "C1"), producer("PV1", "C1")], {"L1": [5.0], "PV1": [1.0]}, links=[])
    net = rows([0], ["transformer"], [[1.0, 0.0]], [2.0], name=["transformer.tx1"])
    r = clear_market(case, network=net)
    pen = case.market.network_penalty
    assert r.network_slack[0] == pytest.approx(3.0, abs=1e-6)
    assert r.network_duals[0] == pytest.approx(pen, rel=1e-6)
    assert r.network_penalty_cost == pytest.approx(3.0 * pen, rel=1e-6)
    t = row_table(net, r.network_duals, r.network_slack)
    assert t.to_dict("records")[0] | {"dual": 0, "slack": 0} == {
        "step": 0, "element": "transformer.tx1", "kind": "transformer", "rhs": 2.0, "dual": 0, "slack": 0,
        "binding": True, "unmet": True}
    # the welfare is the market's own (the penalty is reported apart): 5·1 − 0.8·4
    assert r.welfare[0] == pytest.approx(5.0 - 0.8 * 4.0, abs=1e-6)
    assert r.p_kwh[0] == pytest.approx([5.0, -1.0], abs=1e-6)


def _welfare(case, net, window: slice) -> float:
    return float(clear_market(case, network=net).welfare.to_numpy()[window].sum())


@pytest.mark.parametrize("horizon", [1, 3])
def test_duals_equal_the_finite_difference_of_welfare(horizon: int) -> None:
    # rows on the flexible consumers and batteries (who can lower their net consumption) at
    # steps 1 and 4, right-hand sides below the unconstrained values
    case = random_case(11, n_agents=16, n_communities=2, n_batteries=2, steps=6, horizon=horizon)
    free = clear_market(case)
    rng = np.random.default_rng(3)
    n = len(case.agents)
    sens = np.zeros((2, n))
    able = [i for i, a in enumerate(case.agents) if a.kind.value == "battery" or a.flex > 0]
    for r in range(2):
        pick = rng.choice(able, size=3, replace=False)
        sens[r, pick] = rng.uniform(0.2, 1.0, 3)
    steps = np.array([1, 4])
    p = (free.p_kwh + free.s_kwh) / case.time.step_hours
    q0 = np.array([sens[r] @ p[steps[r]] for r in range(2)])
    rhs = q0 - 0.3  # both bind
    net = rows(steps, ["voltage", "current"], sens, rhs)
    r = clear_market(case, network=net)
    assert (r.network_duals > 1e-2).any() and np.abs(r.network_slack).max() < 1e-6
    h = 1e-3
    for k in range(2):
        up, dn = rhs.copy(), rhs.copy()
        up[k] += h
        dn[k] -= h
        # the dual is the marginal welfare of the row's own window (a later window starts from
        # the SoC this one leaves, which the rolling market does not price)
        w0 = steps[k] // horizon * horizon
        window = slice(w0, w0 + horizon)
        fd = (_welfare(case, rows(steps, ["voltage", "current"], sens, up), window)
              - _welfare(case, rows(steps, ["voltage", "current"], sens, dn), window)) / (2 * h)
        assert r.network_duals[k] == pytest.approx(fd, rel=1e-3, abs=1e-4)


def test_bad_rows_are_named_and_the_fast_method_refuses_rows() -> None:
    case = _export_case()
    with pytest.raises(MarketError, match=r"sens has shape \(1, 3\), expected \(1, 2\)"):
        clear_market(case, network=rows([0], ["voltage"], [[1.0, 1.0, 1.0]], [1.0]))
    with pytest.raises(MarketError, match=r"row 0 \(bus\.0\): step 5 is outside the case's steps 0\.\.0"):
        clear_market(case, network=rows([5], ["voltage"], [[1.0, 1.0]], [1.0]))
    with pytest.raises(MarketError, match=r"row 0 \(bus\.0\): kind 'power' is not one of voltage, current"):
        clear_market(case, network=rows([0], ["power"], [[1.0, 1.0]], [1.0]))
    with pytest.raises(MarketError, match=r"rhs or sensitivities are not finite"):
        clear_market(case, network=rows([0], ["voltage"], [[1.0, np.nan]], [1.0]))
    with pytest.raises(MarketError, match=r"step 0: fast market path failed: the step has network constraints"):
        clear_market(case, network=rows([0], ["voltage"], [[-1.0, -1.0]], [1.0]), method="fast")


def test_rows_in_a_pooled_market_leave_the_other_steps_to_the_fast_path() -> None:
    # 20 communities all linked (one pool); a row on the batteries and flexible consumers at step 2
    case = random_case(12, n_agents=60, n_communities=20, n_batteries=4, steps=4, trade_fee=0.01)
    free = clear_market(case)
    able = [i for i, a in enumerate(case.agents) if a.kind.value == "battery" or a.flex > 0]
    sens = np.zeros((1, len(case.agents)))
    sens[0, able[:6]] = 1.0
    q0 = sens[0] @ ((free.p_kwh + free.s_kwh)[2] / case.time.step_hours)
    net = rows([2], ["transformer"], sens, [q0 - 0.5])
    r = clear_market(case, network=net)
    assert r.window_solver == ("fast", "fast", "clarabel", "fast")
    qp = clear_market(case, network=net, method="qp")
    assert r.network_duals[0] > 1e-3 and r.network_duals[0] == pytest.approx(qp.network_duals[0], abs=1e-5)
    np.testing.assert_allclose(r.welfare.to_numpy(), qp.welfare.to_numpy(), rtol=1e-4)
    np.testing.assert_allclose(r.p_kwh, qp.p_kwh, atol=1e-3)
    # steps before the row are the free market's
    np.testing.assert_allclose(r.p_kwh[:2], free.p_kwh[:2], atol=1e-12)


def test_reuse_repeats_the_steps_whose_rows_and_soc_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    # rows on steps 0, 2 and 4 of a market with batteries; cleared again with the same rows the
    # market takes every step from the earlier clearing (no QP); with step 2's row changed, step 2
    # and the steps after it whose SoC moved are solved again, and the result is the fresh one
    from gridmarket.market import solve as solve_mod

    case = random_case(3, n_agents=12, n_communities=2, n_batteries=2, steps=6, horizon=1)
    n = len(case.agents)
    sens = np.zeros((3, n))
    sens[:, :4] = 1.0
    base = clear_market(case)
    load = base.p_kwh[:, :4].sum(axis=1) + base.s_kwh[:, :4].sum(axis=1)
    net = rows([0, 2, 4], ["transformer"] * 3, sens, load[[0, 2, 4]] - 0.5)
    first = clear_market(case, network=net)
    assert first.network_duals.max() > 0  # the rows bind
    calls = []
    real = solve_mod.WindowSolver.solve_rows

    def counted(self, w, *a, **k):
        calls.append(w.start)
        return real(self, w, *a, **k)

    monkeypatch.setattr(solve_mod.WindowSolver, "solve_rows", counted)
    again = clear_market(case, network=net, reuse=first)
    assert calls == []
    for name in ("p_kwh", "s_kwh", "soc", "price", "network_duals", "network_slack"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    assert again.window_solver == first.window_solver and again.window_status == first.window_status
    moved = rows([0, 2, 4], ["transformer"] * 3, sens, load[[0, 2, 4]] - [0.5, 1.0, 0.5])
    fresh = clear_market(case, network=moved)
    calls.clear()
    part = clear_market(case, network=moved, reuse=first)
    assert 0 not in calls and 2 in calls  # step 0 repeated, step 2 solved again
    np.testing.assert_allclose(part.p_kwh, fresh.p_kwh, atol=1e-7)
    np.testing.assert_allclose(part.network_duals, fresh.network_duals, atol=1e-7)
    np.testing.assert_allclose(part.welfare.to_numpy(), fresh.welfare.to_numpy(), atol=1e-7)


def test_steps_with_rows_solved_side_by_side_give_the_sequential_result(monkeypatch: pytest.MonkeyPatch) -> None:
    # no battery: the steps with rows are independent and their QPs run in threads; the result
    # is the one of solving them one after the other, bit for bit, and each step's row holds
    from gridmarket.market import solve as solve_mod

    case = random_case(5, n_agents=14, n_communities=3, n_batteries=0, steps=6, horizon=1)
    n = len(case.agents)
    base = clear_market(case)
    sens = np.zeros((4, n))
    sens[:, :5] = 1.0
    load = base.p_kwh[:, :5].sum(axis=1)
    net = rows([0, 1, 3, 5], ["transformer"] * 4, sens, load[[0, 1, 3, 5]] - 0.3)
    monkeypatch.setattr(solve_mod, "QP_THREADS", 4)
    side = clear_market(case, network=net)
    assert (side.network_duals > 0).all()  # every row binds (two at the penalty, with a slack)
    monkeypatch.setattr(solve_mod, "QP_THREADS", 1)
    one = clear_market(case, network=net)
    for name in ("p_kwh", "price", "network_duals", "network_slack"):
        np.testing.assert_array_equal(getattr(side, name), getattr(one, name))
    assert side.window_solver == one.window_solver and side.window_status == one.window_status
    np.testing.assert_array_equal(side.welfare.to_numpy(), one.welfare.to_numpy())
    # each row holds: its value is at most its right-hand side plus its slack
    value = side.p_kwh[[0, 1, 3, 5], :5].sum(axis=1)
    assert np.all(value <= net.rhs + side.network_slack + 1e-6)
