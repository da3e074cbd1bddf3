"""Invariants of every cleared market, on randomly generated cases (hypothesis).

Each check recomputes an equation of shared MODEL.md from the result frames alone:
balances (2)–(8), SoC recursion and bounds (9)–(13), sign rules (14)–(17), prices inside
[π_exp, π_imp] and payments that balance.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _market_cases import random_case
from gridmarket.market import clear_market

TOL = 1e-6  # kWh
PRICE_TOL = 1e-4  # currency/kWh (ε tie-break)


def _matrix(frame, column: str, index: str = "step", columns: str = "agent"):
    return frame.pivot(index=index, columns=columns, values=column)


def check_invariants(case, r) -> None:
    dt = case.time.step_hours
    spec = case.battery
    m = r.market
    agents = list(case.agent_names)
    kinds = {a.name: a.kind.value for a in case.agents}
    P = _matrix(m, "P_kw")[agents] * dt
    S = _matrix(m, "S_kw")[agents] * dt
    phi = _matrix(m, "phi_kw")[agents] * dt
    alpha = _matrix(m, "alpha_kw")[agents] * dt
    beta = _matrix(m, "beta_kw")[agents] * dt
    market_agents = [a for a in agents if kinds[a] != "passive"]
    comm_of = {a.name: a.community for a in case.agents}
    # (2) agent balance
    bal = (P + S + phi - alpha + beta)[market_agents]
    assert np.abs(bal.to_numpy()).max(initial=0) < TOL
    c = r.communities.set_index(["step", "community"])
    s = r.settlements
    for com in case.communities:
        members = [a for a in market_agents if comm_of[a] == com]
        # (3) community balance
        assert np.abs(phi[members].sum(axis=1).to_numpy()).max(initial=0) < TOL
        cc = c.xs(com, level="community")
        # (4)-(5)
        assert np.allclose(alpha[members].sum(axis=1).to_numpy(), cc.import_kwh.to_numpy(), atol=TOL)
        assert np.allclose(beta[members].sum(axis=1).to_numpy(), cc.export_kwh.to_numpy(), atol=TOL)
        # (6)-(7): split over partners, the grid always among them
        mine = s[s.community == com].groupby("step")
        assert np.allclose(mine.import_kwh.sum().to_numpy(), cc.import_kwh.to_numpy(), atol=TOL)
        assert np.allclose(mine.export_kwh.sum().to_numpy(), cc.export_kwh.to_numpy(), atol=TOL)
        assert set(s[s.community == com].partner) == {"grid"} | {
            d for pair in case.links if com in pair for d in pair if d != com}
        # prices between export and import price
        lam = cc.price.to_numpy()
        assert np.all(lam >= case.grid.export_price - PRICE_TOL)
        assert np.all(lam <= case.grid.import_price + PRICE_TOL)
        # payments of the community's agents = what it pays its partners
        pay = _matrix(m, "payment")[members].sum(axis=1).to_numpy()
        assert np.allclose(pay, mine.payment.sum().to_numpy(), atol=1e-6)
    # (8) imports of c from j = exports of j to c
    for cname, dname in case.links:
        for x, y in ((cname, dname), (dname, cname)):
            imp = s[(s.community == x) & (s.partner == y)].import_kwh.to_numpy()
            exp = s[(s.community == y) & (s.partner == x)].export_kwh.to_numpy()
            assert np.allclose(imp, exp, atol=TOL)
    # (17) signs of trades
    assert (alpha[market_agents].to_numpy() >= -TOL).all() and (beta[market_agents].to_numpy() >= -TOL).all()
    assert (s.import_kwh >= -TOL).all() and (s.export_kwh >= -TOL).all()
    # (14)-(16) bounds and signs of P
    prof = case.profile_kw * dt
    for i, a in enumerate(case.agents):
        p = P[a.name].to_numpy()
        if a.kind.value == "consumer":
            assert (p <= prof[:, i] + TOL).all() and (p >= (1 - a.flex) * prof[:, i] - TOL).all()
            assert (p >= -TOL).all()
        elif a.kind.value == "producer":
            assert (p <= TOL).all() and (-p <= prof[:, i] + TOL).all()
        elif a.kind.value == "passive":
            assert np.allclose(p, prof[:, i])
    # batteries: (9)/(9'), SoC bounds, rate limits (12)-(13), paper (10)-(11)
    soc = _matrix(m, "soc")
    keep = 1 - spec.self_discharge
    paper = r.battery_model.value == "paper"
    for a in case.agents:
        if a.kind.value != "battery":
            continue
        cap = a.units * spec.unit_kwh
        sv = S[a.name].to_numpy()
        ch, dis = np.clip(sv, 0, None), np.clip(-sv, 0, None)
        de = (ch - dis) if paper else (spec.eff_charge * ch - dis / spec.eff_discharge)
        x = soc[a.name].to_numpy()
        prev = np.concatenate([[spec.soc_init], x[:-1]])
        assert np.allclose(x, keep * prev + de / cap, atol=1e-7)
        assert (x >= spec.soc_min - 1e-7).all() and (x <= spec.soc_max + 1e-7).all()
        assert (ch <= min(a.units * spec.unit_kw * dt, spec.rate_charge * cap) + TOL).all()
        assert (dis <= min(a.units * spec.unit_kw * dt, spec.rate_discharge * cap) + TOL).all()
        if paper:
            assert (spec.eff_charge * ch <= (spec.soc_max - prev) * cap + 1e-6).all()
            assert (spec.eff_discharge * dis <= (prev - spec.soc_min) * cap + 1e-6).all()
    # welfare adds up; passive agents neither pay nor trade
    assert np.isclose(r.communities.welfare.sum(), r.total_welfare, atol=1e-8)
    per_step = r.communities.groupby("step").welfare.sum().reindex(r.welfare.index, fill_value=0.0)
    assert np.allclose(r.welfare.to_numpy(), per_step.to_numpy())  # (no communities: welfare 0)
    assert (m[m.kind == "passive"].payment == 0).all()
    assert r.payment_imbalance < 1e-6


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_agents=st.integers(2, 14), n_communities=st.integers(1, 3),
       n_batteries=st.integers(0, 3), steps=st.integers(1, 5), horizon=st.integers(1, 3),
       model=st.sampled_from(["physical", "paper"]), linked=st.booleans(),
       passive_share=st.sampled_from([0.0, 0.2]), fee=st.sampled_from([0.0, 0.01]))
def test_invariants_hold_on_random_cases(seed: int, n_agents: int, n_communities: int, n_batteries: int,
                                         steps: int, horizon: int, model: str, linked: bool,
                                         passive_share: float, fee: float) -> None:
    n_communities = min(n_communities, n_agents)
    case = random_case(seed, n_agents=n_agents, n_communities=n_communities, n_batteries=n_batteries,
                       steps=steps, horizon=horizon, battery_model=model, links="all" if linked else [],
                       passive_share=passive_share, trade_fee=fee)
    r = clear_market(case)
    check_invariants(case, r)
