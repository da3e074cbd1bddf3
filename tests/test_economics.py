"""Battery economics against numbers worked out by hand (shared MODEL.md, *Battery economics*)."""

from __future__ import annotations

import math

import pytest

from gridmarket.case.model import BatterySpec
from gridmarket.economics import (
    annuity,
    break_even_capex_per_kwh,
    capex,
    costed,
    crf,
    net_benefit,
)


def test_crf_by_hand() -> None:
    # r = 5 %, L = 12 years: 1.05^12 = 1.795856326..., CRF = 0.05 * 1.795856 / 0.795856 = 0.112825...
    g = 1.05 ** 12
    assert g == pytest.approx(1.7958563260221292, rel=1e-15)
    assert crf(0.05, 12) == pytest.approx(0.05 * 1.7958563260221292 / 0.7958563260221292, rel=1e-14)
    assert crf(0.05, 12) == pytest.approx(0.11282541002081532, rel=1e-12)
    # no discounting: straight-line
    assert crf(0.0, 10) == 0.1
    # one year at 10 %: pay back capital plus interest at once
    assert crf(0.10, 1) == pytest.approx(1.10)
    with pytest.raises(ValueError, match="lifetime"):
        crf(0.05, 0)


def test_annuity_and_net_benefit_by_hand() -> None:
    spec = BatterySpec(capex_per_kwh=800.0, capex_per_kw=100.0, om_per_year=0.02,
                       lifetime_years=10.0, discount_rate=0.0)
    assert costed(spec)
    assert not costed(BatterySpec())
    # 3 SBUs: 3 * (10.24 * 800 + 2.56 * 100) = 3 * (8192 + 256) = 25344
    assert capex(3, spec) == pytest.approx(25344.0)
    # yearly: 25344 * (0.1 + 0.02) = 3041.28; one day of 24 one-hour steps: / 365
    assert annuity(3, spec, 24, 1.0) == pytest.approx(3041.28 / 365.0)
    assert annuity(3, spec, 96, 0.25) == pytest.approx(3041.28 / 365.0)
    # a gain of 50 over the base minus that annuity
    assert net_benefit(150.0, 100.0, 3041.28 / 365.0) == pytest.approx(50.0 - 8.332273972602739)


def test_break_even_makes_net_benefit_zero() -> None:
    spec = BatterySpec(capex_per_kwh=800.0, capex_per_kw=100.0, om_per_year=0.01,
                       lifetime_years=12.0, discount_rate=0.05)
    gain, units, steps = 40.0, 5, 24
    x = break_even_capex_per_kwh(gain, units, spec, steps, 1.0)
    assert x is not None
    at_break_even = BatterySpec(capex_per_kwh=x, capex_per_kw=100.0, om_per_year=0.01,
                                lifetime_years=12.0, discount_rate=0.05)
    assert net_benefit(gain, 0.0, annuity(units, at_break_even, steps, 1.0)) == pytest.approx(0.0, abs=1e-9)
    # by hand, without the power cost: gain = x * 51.2 kWh * (CRF + om) * 24/8760
    plain = BatterySpec(capex_per_kwh=0.0, capex_per_kw=0.0, om_per_year=0.0, lifetime_years=12.0,
                        discount_rate=0.05)
    y = break_even_capex_per_kwh(gain, units, plain, steps, 1.0)
    assert y == pytest.approx(40.0 / (51.2 * 0.11282541002081532 * 24 / 8760))
    assert break_even_capex_per_kwh(gain, 0, spec, steps, 1.0) is None
    assert math.isfinite(y)
