"""Identical batteries merged in the fast path (``gridmarket.market.fast.fast_plan(merge=True)``).

A placement loop adds many equal banks to a community; the fast path solves each class of
batteries that behave alike as one agent of weight m and writes its values back to every
member. Checked here, independently of the merging code:

* the merged result satisfies the KKT conditions of the full market (``kkt_violations``, written
  from MODEL.md, every battery on its own);
* it equals the same fast path without merging (dispatch and the unique prices to 1e-9), and
  Clarabel (``method="qp"``) to that solver's accuracy;
* the members of a class stay equal in every step, also after a step that Clarabel solves (its
  solution is symmetric only to its tolerance: the class takes its mean);
* batteries that differ in anything that matters (community, units, ``a``, initial SoC) are not merged.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

from _market_cases import battery, consumer, kkt_violations, make_case, producer
from gridmarket.case.model import BatterySpec
from gridmarket.market import clear_market, market_data
from gridmarket.market import fast as fast_module
from gridmarket.market import solve as solve_module
from gridmarket.market.network import NetworkConstraints

KKT_TOL = 1e-8


def bank_case(seed: int, *, steps: int = 48, per_class: int = 6, terminal_soc: str = "free", model: str = "physical"):
    """Three communities of consumers and PV, each with ``per_class`` equal 1-unit banks and a few
    3-unit banks (a loop's ladder), plus one battery of its own (a = 0.01)."""
    rng = np.random.default_rng(seed)
    comms = ["C1", "C2", "C3"]
    agents, prof = [], {}
    hours = np.arange(steps)
    for c in comms:
        for i in range(4):
            name = f"L{c}{i}"
            agents.append(consumer(name, c, a=float(rng.uniform(0.001, 0.01)), b=float(rng.uniform(0.9, 1.3)),
                                   flex=0.1))
            prof[name] = rng.uniform(0.3, 3.0, steps)
            name = f"PV{c}{i}"
            agents.append(producer(name, c, a=float(rng.uniform(0.001, 0.05)), b=float(rng.uniform(0.05, 0.5))))
            prof[name] = rng.uniform(1.0, 6.0) * np.clip(np.sin(np.pi * (hours % 24 - 6) / 12), 0, None)
        for k in range(per_class):
            agents.append(battery(f"B{c}u1_{k}", c, units=1))
        for k in range(3):
            agents.append(battery(f"B{c}u3_{k}", c, units=3))
        agents.append(battery(f"B{c}own", c, units=1, a=0.01))
    price = 0.8 + 0.2 * np.sin(2 * np.pi * hours / 24)
    return make_case(agents, prof, steps=steps, import_price=price, export_price=0.3, trade_fee=0.001,
                     battery_model=model, battery_spec=BatterySpec(soc_init=0.5), terminal_soc=terminal_soc)


def _unmerged(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = fast_module.fast_plan
    monkeypatch.setattr(solve_module, "fast_plan", lambda d, merge=True: plain(d, merge=False))


def test_classes_of_the_bank_case() -> None:
    d = market_data(bank_case(1))
    cls, reps = fast_module._battery_classes(d)
    names = d.battery.names
    groups: dict[int, set[str]] = {}
    for n, c in zip(names, cls.tolist(), strict=True):
        groups.setdefault(c, set()).add(n)
    want = []
    for c in ["C1", "C2", "C3"]:
        want += [{f"B{c}u1_{k}" for k in range(6)}, {f"B{c}u3_{k}" for k in range(3)}, {f"B{c}own"}]
    assert sorted(map(sorted, groups.values())) == sorted(map(sorted, want))
    # one representative per class, the class's first battery, classes in the order of their first
    firsts = sorted(min(map(names.index, g)) for g in groups.values())
    assert reps.tolist() == firsts
    p = fast_module.fast_plan(d)
    assert p.n_b == 9 and p.full is d and p.weight is not None
    assert p.weight[p.n_pq:].tolist() == [6, 3, 1] * 3


def test_different_soc_init_is_not_merged() -> None:
    case = bank_case(2)
    names = [a.name for a in case.agents if a.name.startswith("B")]
    soc = {n: 0.4 + 0.01 * k for k, n in enumerate(names)}
    d = market_data(case, soc_init=soc)
    cls, reps = fast_module._battery_classes(d)
    assert len(reps) == d.n_b
    assert fast_module.fast_plan(d).full is None


@pytest.mark.parametrize("terminal_soc", ["free", "cyclic"])
@pytest.mark.parametrize("model", ["physical", "paper"])
def test_merged_equals_unmerged_and_kkt(monkeypatch: pytest.MonkeyPatch, terminal_soc: str, model: str) -> None:
    case = bank_case(3, terminal_soc=terminal_soc, model=model)
    merged = clear_market(case, method="fast")
    with monkeypatch.context() as m:
        _unmerged(m)
        plain = clear_market(case, method="fast")
    assert merged.solver == plain.solver == "fast"
    # the same KKT point reached by other sums: equal to rounding (a SoC at a bound moves a limit by
    # its rounding, ~1e-9 kWh on a few kWh)
    np.testing.assert_allclose(merged.p_kwh, plain.p_kwh, rtol=0, atol=1e-8)
    np.testing.assert_allclose(merged.s_kwh, plain.s_kwh, rtol=0, atol=1e-8)
    np.testing.assert_allclose(merged.soc, plain.soc, rtol=0, atol=1e-8)
    np.testing.assert_allclose(merged.solution.lam, plain.solution.lam, rtol=0, atol=1e-8)
    assert merged.total_welfare == pytest.approx(plain.total_welfare, rel=1e-10)
    if terminal_soc == "free":  # the certificate knows the plain SoC bounds, not the cyclic band
        bad = {k: v for k, v in kkt_violations(case, merged).items() if v > KKT_TOL}
        assert not bad, f"KKT conditions violated: {bad}"
    qp = clear_market(case, method="qp")
    assert merged.total_welfare == pytest.approx(qp.total_welfare, rel=1e-6)
    np.testing.assert_allclose(merged.p_kwh, qp.p_kwh, rtol=0, atol=1e-4)


def _members_equal(res, case) -> None:
    """Every class's batteries have the same S and SoC in every step."""
    d = market_data(case)
    cls, _ = fast_module._battery_classes(d)
    s = res.solution
    for c in np.unique(cls):
        cols = np.flatnonzero(cls == c)
        for arr in (s.sch, s.sdis, s.soc):
            assert np.array_equal(arr[:, cols], np.repeat(arr[:, cols[:1]], len(cols), axis=1))


def test_members_stay_equal_after_clarabel_steps() -> None:
    """Steps with network rows go to Clarabel; the rows here never bind (rhs far above any flow)."""
    case = bank_case(4, steps=24)
    n = len(case.agents)
    steps = np.array([3, 10, 17])
    nc = NetworkConstraints(step=steps, name=("bus.x",) * 3, kind=("voltage",) * 3,
                            sens=sp.csr_matrix(np.full((3, n), 1e-3)), rhs=np.full(3, 1e6))
    res = clear_market(case, network=nc)
    assert res.solver == "fast+clarabel"
    assert [res.window_solver[t] for t in steps.tolist()] == ["clarabel"] * 3
    _members_equal(res, case)
    qp = clear_market(case, method="qp")
    # Clarabel places the split of S among equal batteries only to its tolerance: compare welfare and P
    assert res.total_welfare == pytest.approx(qp.total_welfare, rel=1e-6)
    pq = [k for k, a in enumerate(case.agents) if not a.name.startswith("B")]
    np.testing.assert_allclose(res.p_kwh[:, pq], qp.p_kwh[:, pq], rtol=0, atol=1e-4)
    # the SoC recursion holds for every battery across the Clarabel steps
    d = market_data(case)
    bt = d.battery
    soc0 = np.vstack([bt.soc_init[None, :], res.solution.soc[:-1]])
    want = bt.soc_after(soc0, res.solution.sch, res.solution.sdis)
    np.testing.assert_allclose(res.solution.soc, want, rtol=0, atol=1e-9)


def test_merged_fast_plan_keeps_unmerged_bits_without_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no two batteries alike the plan is the unmerged one, bit for bit."""
    case = bank_case(5, per_class=1)
    agents = tuple(a for a in case.agents if not a.name.startswith("B") or a.name.endswith("_0") or "own" in a.name)
    keep = [case.agents.index(a) for a in agents]
    case = replace(case, agents=agents, profile_kw=case.profile_kw[:, keep])
    d = market_data(case)
    assert len(fast_module._battery_classes(d)[1]) == d.n_b
    a = clear_market(case, method="fast")
    with monkeypatch.context() as m:
        _unmerged(m)
        b = clear_market(case, method="fast")
    assert np.array_equal(a.s_kwh, b.s_kwh) and np.array_equal(a.solution.mu_imp, b.solution.mu_imp)


def test_classes_do_not_rest_on_the_band_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every band hashing alike the exact column comparison decides: the same classes."""
    d = market_data(bank_case(6, terminal_soc="cyclic"))
    want = fast_module._battery_classes(d)
    import builtins

    monkeypatch.setattr(builtins, "hash", lambda _obj: 0)
    got = fast_module._battery_classes(d)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    # a band that differs in one step splits a class
    lo = d.battery.band_lo.copy()
    lo[-1, 0] += 1e-12
    d2 = replace(d, battery=replace(d.battery, band_lo=lo))
    cls, reps = fast_module._battery_classes(d2)
    assert len(reps) == len(want[1]) + 1 and cls[0] != cls[1]
