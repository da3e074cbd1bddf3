"""The pool formulation of trade links equals the arc formulation (issue 14).

MODEL.md writes inter-community trade on arcs (eq. 8); :mod:`gridmarket.market.pool` replaces
every clique of linked communities by one pool. Both formulations are solved here by Clarabel
with tolerances tightened to 1e-13 (and the pool one also by the fast path) on random cases with
full and partial link sets; welfare, dispatch and the unique community prices must agree to 1e-6.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from _market_cases import random_case
from gridmarket.market import WindowSolver, clear_market, create_model, market_data, solver_settings
from gridmarket.market._data import GRID, POOL
from gridmarket.market.pool import ARC_CLIQUE_MAX, link_arcs
from gridmarket.market.prices import Solution, community_welfare, payment_imbalance
from gridmarket.market.solve import _extract
from test_market_fast import free_prices

TIGHT = 1e-13


def tight(case, *, pools: bool, horizon: int = 1) -> Solution:
    """Every window of ``case`` on Clarabel at 1e-13, SoC carried."""
    d = market_data(case, pools=pools)
    s = solver_settings()
    s.tol_gap_abs = s.tol_gap_rel = s.tol_feas = TIGHT
    s.tol_ktratio = 1e-10
    s.max_iter = 500
    sol = Solution.empty(d)
    soc = d.soc_init.copy()
    solvers: dict[int, WindowSolver] = {}
    for t in range(0, d.steps, horizon):
        L = min(horizon, d.steps - t)
        ws = solvers.setdefault(L, WindowSolver(create_model(d, L), s))
        w = d.window(t, L, soc)
        out = ws.solve(w)
        assert out.solver_status in ("Solved", "AlmostSolved")
        _extract(ws.model, w, out.x, out.z, sol)
        soc = np.clip(sol.soc[t + L - 1], case.battery.soc_min, case.battery.soc_max)
    return sol


def assert_same(case, a: Solution, b: Solution, *, unique: np.ndarray | None = None, tol: float = 1e-6,
                a_pools: bool | None = True) -> None:
    """Welfare per step, P, S, SoC, community imports/exports and (unique) prices to ``tol``; ``a``
    solved with ``pools=a_pools``, ``b`` with arcs."""
    da, db = market_data(case, pools=a_pools), market_data(case, pools=False)
    wa = community_welfare(da, a).sum(axis=1)
    wb = community_welfare(db, b).sum(axis=1)
    np.testing.assert_allclose(wa, wb, rtol=tol, atol=tol)
    np.testing.assert_allclose(a.p, b.p, atol=tol)
    np.testing.assert_allclose(a.s, b.s, atol=1e-4)  # batteries sharing a marginal role split by ε alone
    np.testing.assert_allclose(a.gimp - a.gexp, b.gimp - b.gexp, atol=1e-4)
    keep = np.ones_like(a.lam, dtype=bool) if unique is None else unique
    np.testing.assert_allclose(a.lam[keep], b.lam[keep], atol=tol)


LINKS = {
    "all": "all",
    "triangle and single": [("C1", "C2"), ("C2", "C3"), ("C1", "C3")],
    "two pairs": [("C1", "C2"), ("C3", "C4")],
    "chain (not a clique) and none": [("C1", "C2"), ("C2", "C3")],
    "chain and pair": [("C1", "C2"), ("C2", "C3"), ("C4", "C5")],
}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("links", list(LINKS))
def test_pool_equals_arcs_on_random_cases(links: str, seed: int) -> None:
    case = random_case(seed, n_agents=25, n_communities=5, n_batteries=3, steps=4, links=LINKS[links],
                       trade_fee=0.01)
    pooled, arcs = tight(case, pools=True), tight(case, pools=False)
    dp = market_data(case, pools=True)
    if links != "chain (not a clique) and none":
        assert dp.n_pool >= 1 and len(dp.pool_arcs)
    r = clear_market(case, pools=True)
    assert_same(case, pooled, arcs, unique=~free_prices(case, r))
    # the payments still balance, community by community, with the pool's settlement
    assert np.abs(payment_imbalance(dp, pooled)).max() < 1e-6


@pytest.mark.parametrize("seed", [3, 4])
def test_pool_equals_arcs_in_multi_period_windows(seed: int) -> None:
    case = random_case(seed, n_agents=16, n_communities=4, n_batteries=3, steps=6, links="all", horizon=3,
                       trade_fee=0.02)
    pooled, arcs = tight(case, pools=True, horizon=3), tight(case, pools=False, horizon=3)
    assert_same(case, pooled, arcs, tol=1e-5, unique=~free_prices(case, clear_market(case, method="qp")))
    r = clear_market(case, pools=True)
    assert r.solver == "clarabel"
    # at Clarabel's default tolerance: the total (the split over the steps of a window is loose)
    total = community_welfare(market_data(case, pools=True), pooled).sum()
    assert r.total_welfare == pytest.approx(total, rel=1e-6)


@pytest.mark.parametrize("seed", [5, 6])
def test_fast_path_on_a_pool_equals_the_arcs(seed: int) -> None:
    case = random_case(seed, n_agents=60, n_communities=20, n_batteries=4, steps=5, links="all", trade_fee=0.01)
    fast = clear_market(case, pools=True, method="fast")
    assert fast.solver == "fast"
    arcs = tight(case, pools=False)
    assert_same(case, fast.solution, arcs, unique=~free_prices(case, fast))
    # the default pools this clique (more than ARC_CLIQUE_MAX communities) and is the same result
    assert market_data(case).n_pool == 1
    np.testing.assert_allclose(clear_market(case).welfare.to_numpy(), fast.welfare.to_numpy(), atol=1e-9)
    s = fast.settlements
    assert set(s.partner) == {"grid", "pool"}
    # the pool balances: what its members import equals what they export into it
    pool = s[s.partner == "pool"].groupby("step")[["import_kwh", "export_kwh"]].sum()
    np.testing.assert_allclose(pool.import_kwh, pool.export_kwh, atol=1e-9)
    # importers pay the pool price plus the fee, exporters receive the pool price
    row = s[s.partner == "pool"]
    np.testing.assert_allclose(row.import_price - row.export_price, case.market.trade_fee, atol=1e-12)


def test_link_arcs_pools_cliques_only_and_is_linear() -> None:
    # a clique of 12 (pooled by default), a clique of 3 (kept as arcs by default), a chain of 3
    clique = [(i, j) for i in range(12) for j in range(i + 1, 12)]
    pairs = np.array(clique + [(12, 13), (13, 14), (12, 14), (15, 16), (16, 17)])
    arcs = link_arcs(18, pairs)
    assert arcs.n_pool == 1 and ARC_CLIQUE_MAX < 12
    assert (arcs.partner == POOL).sum() == 12
    assert (arcs.partner >= 0).sum() == 2 * 5  # triangle and chain keep both directions of each link
    assert (arcs.partner[:18] == GRID).all() and (arcs.comm[:18] == np.arange(18)).all()
    links = np.flatnonzero(arcs.partner >= 0)
    assert (arcs.rev[arcs.rev[links]] == links).all()
    assert (arcs.comm[arcs.rev[links]] == arcs.partner[links]).all()
    every = link_arcs(18, pairs, pools=True)
    assert every.n_pool == 2 and (every.partner == POOL).sum() == 15
    none = link_arcs(18, pairs, pools=False)
    assert none.n_pool == 0 and (none.partner >= 0).sum() == 2 * len(pairs)
    # 800 communities, all linked: 319,600 pairs read in well under a second, 800 pool arcs
    n = 800
    i, j = np.triu_indices(n, 1)
    t0 = time.perf_counter()
    big = link_arcs(n, np.column_stack([i, j]))
    assert time.perf_counter() - t0 < 2.0
    assert len(big.comm) == 2 * n and big.n_pool == 1


def test_fast_path_clears_three_hundred_linked_communities_without_falling_back() -> None:
    # links = "all" over 300 communities: 44,850 pairs, one pool of 300 members
    case = random_case(8, n_agents=900, n_communities=300, n_batteries=6, steps=3, trade_fee=0.01)
    d = market_data(case)
    assert d.n_pool == 1 and d.n_arc == 2 * 300 and len(d.link_arcs) == 0
    t0 = time.perf_counter()
    fast = clear_market(case)
    assert time.perf_counter() - t0 < 10.0
    assert fast.solver == "fast" and fast.window_solver == ("fast",) * 3
    ref = tight(case, pools=True)
    np.testing.assert_allclose(fast.welfare.to_numpy(), community_welfare(d, ref).sum(axis=1), rtol=1e-6)
    np.testing.assert_allclose(fast.solution.p, ref.p, atol=1e-5)
    keep = ~free_prices(case, fast)
    np.testing.assert_allclose(fast.solution.lam[keep], ref.lam[keep], atol=1e-6)
    assert len(fast.settlements) == 3 * 2 * 300


@pytest.mark.parametrize("seed", [9, 10])
def test_fast_path_with_a_pool_beside_cliques_kept_as_arcs(seed: int) -> None:
    # by default a clique of 12 communities is pooled, a triangle keeps its arcs, C16 trades alone
    names = [f"C{k + 1}" for k in range(16)]
    links = [(names[i], names[j]) for i in range(12) for j in range(i + 1, 12)]
    links += [("C13", "C14"), ("C14", "C15"), ("C13", "C15")]
    case = random_case(seed, n_agents=64, n_communities=16, n_batteries=4, steps=4, links=links, trade_fee=0.01)
    d = market_data(case)
    assert d.n_pool == 1 and len(d.pool_arcs) == 12 and len(d.link_arcs) == 6
    fast = clear_market(case, method="fast")
    arcs = tight(case, pools=False)
    assert_same(case, fast.solution, arcs, unique=~free_prices(case, fast), a_pools=None)
    assert np.abs(payment_imbalance(d, fast.solution)).max() < 1e-6
