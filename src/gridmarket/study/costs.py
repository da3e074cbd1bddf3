"""Battery economics as the study reports them (shared MODEL.md, *Battery economics*): the
annuity of an iteration's placed units prorated to the run, and the break-even capex.

Uses :mod:`gridmarket.economics` when it is there; until then the same formulas here.
"""

from __future__ import annotations

import math

from gridmarket.case.model import BatterySpec

__all__ = ["annuity", "break_even_capex_per_kwh", "costed"]


def _crf(rate: float, years: float) -> float:
    """Capital recovery factor ``r(1+r)^L / ((1+r)^L − 1)`` (``1/L`` at r = 0) [1/year]."""
    if years <= 0:
        return math.inf
    if rate == 0:
        return 1.0 / years
    g = (1.0 + rate) ** years
    return rate * g / (g - 1.0)


def _annuity(units: float, spec: BatterySpec, steps: int, step_hours: float) -> float:
    capex = units * (spec.unit_kwh * spec.capex_per_kwh + spec.unit_kw * spec.capex_per_kw)
    if capex == 0:
        return 0.0
    return capex * (_crf(spec.discount_rate, spec.lifetime_years) + spec.om_per_year) * steps * step_hours / 8760.0


def _break_even(gain: float, units: float, spec: BatterySpec, steps: int, step_hours: float) -> float | None:
    if units <= 0 or steps <= 0:
        return None
    per_kwh = units * spec.unit_kwh * (_crf(spec.discount_rate, spec.lifetime_years) + spec.om_per_year) \
        * steps * step_hours / 8760.0
    fixed = _annuity(units, _with(spec, capex_per_kwh=0.0), steps, step_hours)
    return (gain - fixed) / per_kwh if per_kwh > 0 else None


def _with(spec: BatterySpec, **kw: float) -> BatterySpec:
    from dataclasses import replace

    return replace(spec, **kw)


try:  # the lead's module (interface of the brief); same formulas
    from gridmarket.economics import annuity as _econ_annuity  # type: ignore[import-not-found,unused-ignore]
    from gridmarket.economics import break_even_capex_per_kwh as _econ_break_even  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - before economics.py lands
    _econ_annuity = None
    _econ_break_even = None


def annuity(units: float, spec: BatterySpec, steps: int, step_hours: float) -> float:
    """Annuity of ``units`` SBUs prorated to ``steps · step_hours`` hours [currency]:
    ``capex·(CRF + om_per_year)·steps·step_hours/8760``, capex ``= units·(unit_kwh·capex_per_kwh
    + unit_kw·capex_per_kw)``."""
    if _econ_annuity is not None:
        return float(_econ_annuity(units, spec, steps, step_hours))
    return _annuity(units, spec, steps, step_hours)


def break_even_capex_per_kwh(gain: float, units: float, spec: BatterySpec, steps: int,
                             step_hours: float) -> float | None:
    """The capex per kWh [currency/kWh] at which ``gain`` (realised welfare over iteration 0
    [currency]) equals the annuity of ``units`` (capex per kW, O&M, lifetime and rate as given);
    None without units."""
    if _econ_break_even is not None:
        out = _econ_break_even(gain, units, spec, steps, step_hours)
        return None if out is None else float(out)
    return _break_even(gain, units, spec, steps, step_hours)


def costed(spec: BatterySpec) -> bool:
    """Whether the case gives the batteries a cost."""
    return spec.capex_per_kwh > 0 or spec.capex_per_kw > 0
