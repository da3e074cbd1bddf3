"""The fast path's battery recursion (``gridmarket.market.fast._run_batteries``), vectorised over
batteries, against a plain one-battery-at-a-time recursion written here from its definition.

The SoC guesses decide which steps of a batch the fast path keeps, so the vectorised
recursion must give the same bits as the scalar one, not only values close to them: the
comparison is exact. Cases cover the physical and paper models, free and cyclic terminal SoC
(a band that forces charge or discharge near the end), self-discharge and every flag pattern.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from _market_cases import random_case
from gridmarket.case.model import BatterySpec
from gridmarket.market import fast as fast_module
from gridmarket.market import market_data


def scalar_run(p: fast_module.FastPlan, soc: np.ndarray, steps: np.ndarray, ch_hi: np.ndarray, ch_lo: np.ndarray,
               dis_lo: np.ndarray, dis_hi: np.ndarray, sch: np.ndarray, sdis: np.ndarray) -> np.ndarray:
    """SoC before each row, one battery and one row at a time with Python floats.

    A battery at ``ch_hi`` charges up to the band's top, its rate and (paper) its headroom, at
    ``ch_lo`` what the band's bottom forces; at ``dis_lo`` it discharges down to the band's
    bottom, its rate and headroom, at ``dis_hi`` only what the band's top forces; otherwise it
    keeps ``sch``/``sdis`` [kWh]. Then ``SoC ← clip(keep·SoC + (g_ch S_ch − g_dis S_dis)/cap)``.
    """
    d = p.data
    bt = d.battery
    n, nb = sch.shape
    out = np.empty((n, nb))
    for b in range(nb):
        s = float(soc[b])
        cap, rc, rd = float(d.cap_kwh[b]), float(d.sch_max[b]), float(d.sdis_max[b])
        for j in range(n):
            out[j, b] = s
            lo, hi = float(bt.band_lo[steps[j], b]), float(bt.band_hi[steps[j], b])
            c, dd = float(sch[j, b]), float(sdis[j, b])
            if ch_hi[j, b]:
                c = max(min((hi - p.keep * s) * cap / p.g_ch, rc), 0.0)
                if bt.paper:
                    c = min(c, (bt.soc_max - s) * cap / bt.eff_charge)
            elif ch_lo[j, b]:
                c = max((lo - p.keep * s) * cap / p.g_ch, 0.0)
            if dis_lo[j, b]:
                dd = min(-((lo - p.keep * s) * cap) / p.g_dis, rd)
                if bt.paper:
                    dd = min(dd, (s - bt.soc_min) * cap / bt.eff_discharge)
                dd = max(dd, 0.0)
            elif dis_hi[j, b]:
                dd = max((p.keep * s - hi) * cap / p.g_dis, 0.0)
            s = p.keep * s + (p.g_ch * c - p.g_dis * dd) / cap
            s = min(max(s, bt.soc_min), bt.soc_max)
    return out


def _plan(seed: int, model: str, terminal: str, self_discharge: float, steps: int,
          n_batteries: int = 9) -> fast_module.FastPlan:
    spec = BatterySpec(soc_init=0.5, self_discharge=self_discharge)
    case = random_case(seed, n_agents=10, n_communities=2, n_batteries=n_batteries, steps=steps, battery_model=model,
                       battery_spec=spec, terminal_soc=terminal)
    return fast_module.fast_plan(market_data(case), merge=False)


@pytest.mark.parametrize("model", ["physical", "paper"])
@pytest.mark.parametrize("terminal", ["free", "cyclic"])
@pytest.mark.parametrize("self_discharge", [0.0, 0.01])
@pytest.mark.parametrize("n_batteries", [3, 12])  # the Python-float path (few batteries) and the numpy one
def test_vectorised_recursion_is_bitwise_the_scalar_one(model: str, terminal: str, self_discharge: float,
                                                        n_batteries: int) -> None:
    steps = 40
    p = _plan(7, model, terminal, self_discharge, steps, n_batteries)
    assert (p.n_b <= fast_module.SCALAR_BATTERIES) == (n_batteries == 3)
    nb = p.n_b
    rng = np.random.default_rng(11)
    if terminal == "cyclic":
        # the band narrows at the end of the run: a forced charge or discharge happens there
        assert (p.data.battery.band_lo[-1] > p.data.battery.soc_min).any()
    for trial in range(20):
        start = int(rng.integers(0, steps - 1))
        rows = np.arange(start, steps)
        n = len(rows)
        flags = rng.random((4, n, nb)) < rng.uniform(0.0, 0.7)
        # the fast path's flags, and overlapping ones (the upper charge limit and a discharge at its
        # limit win over the other flag of their unit)
        ch_hi, ch_lo, dis_lo, dis_hi = flags
        sch = rng.uniform(0.0, 1.2, (n, nb)) * p.data.sch_max * (rng.random((n, nb)) < 0.5)
        sdis = rng.uniform(0.0, 1.2, (n, nb)) * p.data.sdis_max * (rng.random((n, nb)) < 0.5)
        soc = rng.uniform(p.data.battery.soc_min, p.data.battery.soc_max, nb)
        if trial % 5 == 0:
            soc[: nb // 2] = p.data.battery.soc_min  # batteries starting at a SoC bound
            soc[nb // 2:] = p.data.battery.soc_max
        got = fast_module._run_batteries(p, soc, rows, ch_hi, ch_lo, dis_lo, dis_hi, sch, sdis)
        want = scalar_run(p, soc, rows, ch_hi, ch_lo, dis_lo, dis_hi, sch, sdis)
        assert got.shape == (n, nb)
        assert np.array_equal(got, want), f"trial {trial}: max diff {np.max(np.abs(got - want))}"
        # the recursion's own invariants: row 0 is the start, every SoC inside the bounds
        assert np.array_equal(got[0], soc)
        assert (got >= p.data.battery.soc_min).all() and (got <= p.data.battery.soc_max).all()


def test_recursion_hand_values() -> None:
    """One battery, no losses (paper gains 1, keep 1): charge to the top, idle, discharge to the bottom."""
    p = _plan(3, "physical", "free", 0.0, 4)
    p = replace(p, g_ch=1.0, g_dis=1.0)
    nb = p.n_b
    bt = p.data.battery
    cap = p.data.cap_kwh
    soc = np.full(nb, 0.5)
    rows = np.arange(3)
    f = np.zeros((3, nb), dtype=bool)
    ch_hi = f.copy()
    ch_hi[0] = True
    dis_lo = f.copy()
    dis_lo[2] = True
    zero = np.zeros((3, nb))
    got = fast_module._run_batteries(p, soc, rows, ch_hi, f, dis_lo, f, zero, zero)
    rate = p.data.sch_max / cap  # SoC gained at the full charge rate
    after0 = np.minimum(0.5 + rate, bt.band_hi[0])
    np.testing.assert_allclose(got[1], after0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(got[2], after0, rtol=0, atol=1e-15)  # idle: unchanged
    assert got.shape == (3, nb)
