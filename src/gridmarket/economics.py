"""Battery economics (shared MODEL.md, *Battery economics*): what the placed battery units cost,
spread over the run, and the capex at which they would break even.

All money is in the case currency. A bank of ``k`` Standard Battery Units costs

    capex = k · (unit_kwh · capex_per_kwh + unit_kw · capex_per_kw)

and its equivalent annual cost is ``capex · (CRF + om_per_year)`` with the capital recovery
factor ``CRF = r (1 + r)^L / ((1 + r)^L − 1)`` (``r`` the discount rate, ``L`` the lifetime in
years; ``CRF = 1/L`` when ``r = 0``). The annuity is prorated to the run by
``steps · step_hours / 8760``. The net benefit of an iteration is its realised welfare gain
over iteration 0 minus that prorated annuity.

Everything here is linear in the number of units, so only the total count of units matters.
"""

from __future__ import annotations

import math

from gridmarket.case.model import BatterySpec

__all__ = [
    "HOURS_PER_YEAR",
    "annuity",
    "break_even_capex_per_kwh",
    "capex",
    "costed",
    "crf",
    "net_benefit",
    "run_fraction_of_year",
]

#: hours of the year the annuity is spread over (a non-leap year, as in MODEL.md)
HOURS_PER_YEAR = 8760.0


def crf(rate: float, years: float) -> float:
    """Capital recovery factor [1/year]: the share of an investment repaid each year.

    Parameters
    ----------
    rate : float
        Discount rate r [fraction per year], ``>= 0``.
    years : float
        Lifetime L [years], ``> 0``.
    """
    if years <= 0:
        msg = f"lifetime must be positive, got {years} years"
        raise ValueError(msg)
    if rate < 0:
        msg = f"discount rate must not be negative, got {rate}"
        raise ValueError(msg)
    if rate == 0:
        return 1.0 / years
    growth = (1.0 + rate) ** years
    return rate * growth / (growth - 1.0)


def costed(spec: BatterySpec) -> bool:
    """Whether the case gives any battery cost (``capex_per_kwh`` or ``capex_per_kw`` above 0)."""
    return spec.capex_per_kwh > 0 or spec.capex_per_kw > 0


def capex(units: float, spec: BatterySpec) -> float:
    """Installed cost of ``units`` Standard Battery Units [currency]."""
    return float(units) * (spec.unit_kwh * spec.capex_per_kwh + spec.unit_kw * spec.capex_per_kw)


def run_fraction_of_year(steps: int, step_hours: float) -> float:
    """Length of the run as a fraction of a year: ``steps · step_hours / 8760``."""
    return steps * step_hours / HOURS_PER_YEAR


def annuity(units: float, spec: BatterySpec, steps: int, step_hours: float) -> float:
    """Annualised cost of ``units`` SBUs (capital and O&M), prorated to the run [currency]."""
    yearly = capex(units, spec) * (crf(spec.discount_rate, spec.lifetime_years) + spec.om_per_year)
    return yearly * run_fraction_of_year(steps, step_hours)


def net_benefit(welfare_realised: float, base_welfare_realised: float, battery_annuity: float) -> float:
    """Realised welfare gain over the base iteration minus the batteries' prorated annuity [currency]."""
    return (welfare_realised - base_welfare_realised) - battery_annuity


def break_even_capex_per_kwh(gain: float, units: float, spec: BatterySpec, steps: int,
                             step_hours: float) -> float | None:
    """The capex per kWh of capacity at which ``units`` SBUs break even over the run.

    ``gain`` is the realised welfare gain over the base iteration [currency]. The case's
    ``capex_per_kw`` and ``om_per_year`` are kept as given; the returned value is the
    ``capex_per_kwh`` [currency/kWh] at which the net benefit is zero. It is negative when the
    power-related cost alone already exceeds the gain, and ``None`` when there are no units
    (nothing to cost) or the run has no length.
    """
    if units <= 0 or steps <= 0 or step_hours <= 0:
        return None
    factor = (crf(spec.discount_rate, spec.lifetime_years) + spec.om_per_year) \
        * run_fraction_of_year(steps, step_hours)
    kwh = float(units) * spec.unit_kwh
    power_cost = float(units) * spec.unit_kw * spec.capex_per_kw * factor
    value = (gain - power_cost) / (kwh * factor)
    return value if math.isfinite(value) else None
