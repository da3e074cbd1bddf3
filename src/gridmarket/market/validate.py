"""Cheap checks run before any QP is built, so that a bad input names its culprit.

Every rule returns problems worded as group + rule + bad value + members; the first problem
(in step order) gives the :class:`~gridmarket.errors.MarketError` its ``step`` and ``group``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from gridmarket.case.io import CaseWarning
from gridmarket.case.model import BatterySpec
from gridmarket.errors import MarketError
from gridmarket.market._data import CONSUMER, PRODUCER, MarketData

__all__ = ["TIE_BREAK_PRICE_SHARE", "MarketProblem", "assert_valid_market", "check_market", "tie_break_note"]

#: the tie-break ε may move an agent's price by at most this share of the highest import price:
#: welfare then moves by about its square (shared MODEL.md: less than 1e-6 relative)
TIE_BREAK_PRICE_SHARE = 1e-3

_SHOW = 5  # members named in a message


@dataclass(frozen=True)
class MarketProblem:
    """One broken rule of the market inputs.

    Attributes
    ----------
    group : str
        Constraint group the rule protects, e.g. ``"Battery-soc-bounds"``.
    message : str
        Rule and offending value, e.g. ``"SoC before step 0 must be within [0.2, 0.8], got 0.1"``.
    members : tuple of str
        Agents (or other names) concerned.
    step : int or None
        First step concerned, or None when the rule is not tied to a step.
    """

    group: str
    message: str
    members: tuple[str, ...] = ()
    step: int | None = None

    def __str__(self) -> str:
        head = f"step {self.step}: " if self.step is not None else ""
        who = ""
        if len(self.members) > 1:
            more = f" and {len(self.members) - _SHOW} more" if len(self.members) > _SHOW else ""
            who = f"; {len(self.members)} members in all: {', '.join(self.members[:_SHOW])}{more}"
        return f"{head}{self.group}: {self.message}{who}"


def _step_rule(bad: np.ndarray, values: np.ndarray, names: list[str], group: str, rule: str,
               unit: str) -> list[MarketProblem]:
    """A (steps, k) mask of violations -> one problem naming the first step and all members."""
    if not bad.any():
        return []
    t, k = np.argwhere(bad)[0]
    members = tuple(names[j] for j in np.flatnonzero(bad.any(axis=0)))
    return [MarketProblem(group, f"{rule}, got {values[t, k]:g} {unit} for {names[k]}".rstrip(),
                          members, int(t))]


def check_market(data: MarketData, *, horizon: int) -> list[MarketProblem]:
    """All broken rules of the market inputs (empty when the QP can be built).

    Parameters
    ----------
    data : MarketData
        The case's market arrays, with the SoC before step 0 already resolved.
    horizon : int
        Steps per QP window (>= 1).
    """
    out: list[MarketProblem] = []
    spec = data.case.battery
    pq_names = [data.names[m] for m in data.pq]
    bat_names = [data.names[m] for m in data.bat]
    e = data.energy_kwh
    kind_pq = data.kind[data.pq]
    if horizon < 1:
        out.append(MarketProblem("Market-horizon", f"horizon must be >= 1 step, got {horizon}"))
    if data.step_hours <= 0 or not np.isfinite(data.step_hours):
        out.append(MarketProblem("Market-time", f"step_hours must be > 0, got {data.step_hours:g}"))
    out += _step_rule(~np.isfinite(e), e, pq_names, "Agent-profile", "profile energy must be finite", "kWh")
    fin = np.where(np.isfinite(e), e, 0.0)
    out += _step_rule((fin < 0) & (kind_pq == CONSUMER)[None, :], fin, pq_names, "Consumer-bounds-P",
                      "demand must be >= 0 (eq. 15)", "kWh")
    out += _step_rule((fin < 0) & (kind_pq == PRODUCER)[None, :], fin, pq_names, "Producer-bounds-P",
                      "available energy must be >= 0 (q in [0, available], eq. 16)", "kWh")
    bad = (data.flex < 0) | (data.flex > 1) | ~np.isfinite(data.flex)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        out.append(MarketProblem("Consumer-bounds-P", f"flex must be in [0, 1], got {data.flex[k]:g}"
                                 f" for {pq_names[data.flex_p[k]]}",
                                 tuple(pq_names[j] for j in data.flex_p[bad])))
    for coef, label in ((data.a_pq, "a"), (data.b_pq, "b")):
        bad = ~np.isfinite(coef) | ((coef < 0) if label == "a" else False)
        if np.any(bad):
            k = int(np.flatnonzero(bad)[0])
            out.append(MarketProblem("Agent-objective", f"{label} must be finite{' and >= 0' if label == 'a' else ''}"
                                     f" (concave welfare), got {coef[k]:g} for {pq_names[k]}",
                                     tuple(pq_names[j] for j in np.flatnonzero(bad))))
    ip, ep = data.import_price, data.export_price
    for arr, label in ((ip, "import_price"), (ep, "export_price")):
        bad = ~np.isfinite(arr)
        if bad.any():
            out.append(MarketProblem("Grid-price", f"{label} must be finite, got {arr[bad][0]:g}",
                                     step=int(np.flatnonzero(bad)[0])))
    below = np.flatnonzero(np.isfinite(ip) & np.isfinite(ep) & (ip < ep))
    if len(below):
        t = int(below[0])
        out.append(MarketProblem("Grid-price", f"import price {ip[t]:g} is below export price {ep[t]:g}"
                                 f" ({len(below)} step(s)); the grid would be an unbounded arbitrage", step=t))
    if not (np.isfinite(data.trade_fee) and data.trade_fee >= 0):
        out.append(MarketProblem("Market-options", f"trade_fee must be >= 0, got {data.trade_fee:g}"))
    if not (np.isfinite(data.tie_break) and data.tie_break >= 0):
        out.append(MarketProblem("Market-options", f"tie_break must be >= 0, got {data.tie_break:g}"))
    if data.n_b:
        out += _battery_rules(data, spec, bat_names)
    return out


def _battery_rules(data: MarketData, spec: BatterySpec, names: list[str]) -> list[MarketProblem]:
    out: list[MarketProblem] = []
    bad = ~(data.cap_kwh > 0)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        out.append(MarketProblem("Battery-units", "a battery needs units >= 1 and unit_kwh > 0, got capacity"
                                 f" {data.cap_kwh[k]:g} kWh for {names[k]}", tuple(np.asarray(names)[bad])))
    if not 0 <= spec.soc_min <= spec.soc_max <= 1:
        out.append(MarketProblem("Battery-soc-bounds", "need 0 <= soc_min <= soc_max <= 1, got"
                                 f" [{spec.soc_min:g}, {spec.soc_max:g}]"))
    bad = ~((data.soc_init >= spec.soc_min) & (data.soc_init <= spec.soc_max))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        out.append(MarketProblem("Battery-soc-bounds", f"SoC before step 0 must be within [soc_min, soc_max] ="
                                 f" [{spec.soc_min:g}, {spec.soc_max:g}], got {data.soc_init[k]:g} for {names[k]}",
                                 tuple(np.asarray(names)[bad]), step=0))
    for label, v in (("eff_charge", spec.eff_charge), ("eff_discharge", spec.eff_discharge)):
        if not 0 < v <= 1:
            out.append(MarketProblem("Battery-soc-recursion", f"{label} must be in (0, 1], got {v:g}"))
    for label, v in (("rate_charge", spec.rate_charge), ("rate_discharge", spec.rate_discharge),
                     ("unit_kw", spec.unit_kw)):
        if not (np.isfinite(v) and v >= 0):
            out.append(MarketProblem("Battery-rate", f"{label} must be >= 0, got {v:g}"))
    if not 0 <= spec.self_discharge < 1:
        out.append(MarketProblem("Battery-soc-recursion", f"self_discharge must be in [0, 1), got"
                                 f" {spec.self_discharge:g}"))
    if not (np.isfinite(spec.degradation_cost) and spec.degradation_cost >= 0):
        out.append(MarketProblem("Battery-objective", f"degradation_cost must be >= 0, got {spec.degradation_cost:g}"))
    bad = ~(np.isfinite(data.a_bat) & (data.a_bat >= 0))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        out.append(MarketProblem("Battery-objective", f"a must be >= 0, got {data.a_bat[k]:g} for {names[k]}",
                                 tuple(np.asarray(names)[bad])))
    bt = data.battery
    if bt.cyclic and data.steps and not out:
        # the SoC before step 0 must reach the band of step 0 (the run's target stays reachable)
        lim = bt.limits(data.soc_init[None, :], slice(0, 1))
        bad = ((lim.lb_ch > np.maximum(lim.ub_ch, 0.0) + 1e-9) | (lim.lb_dis > lim.ub_dis + 1e-9))[0]
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            out.append(MarketProblem(
                "Battery-terminal-soc", f"terminal_soc = 'cyclic': from SoC {data.soc_init[k]:g} before step 0 the"
                f" battery cannot end the run at its target {bt.soc_target[k]:g} within its rate limits (charge"
                f" {bt.sch_max[k]:g}, discharge {bt.sdis_max[k]:g} kWh per step) over"
                f" {data.steps + bt.steps_after} step(s) for {names[k]}; use terminal_soc = 'free' or other limits",
                tuple(np.asarray(names)[bad]), step=0))
    bad = ~np.isfinite(data.value_step)
    if bad.any():
        out.append(MarketProblem("Battery-objective", f"value v must be finite, got {data.value_step[bad][0]:g}",
                                 step=int(np.flatnonzero(bad)[0])))
    return out


def tie_break_note(data: MarketData) -> str | None:
    """Why the case's tie-break ε is too large for its agents, or None.

    An agent trading ``x`` kWh in a step has its price moved by ``2ε·x`` (``ν = λ + 2εx``,
    :mod:`gridmarket.market.fast`); with the largest energy of an agent in a step ``E`` [kWh]
    this may reach ``2ε·E``. Above :data:`TIE_BREAK_PRICE_SHARE` of the highest import price the
    prices and the flexible agents' dispatch move visibly (an inflexible consumer of 1e6 kWh per
    step raises its community's price by ε·1e6 = 1 currency/kWh at the default ε).
    """
    eps = float(data.tie_break)
    if eps <= 0.0 or not data.steps or not data.n_m:
        return None
    e = data.energy_kwh
    # the largest |energy| without an |e| copy of the (steps, agents) array: this runs every clearing
    big_e = max(float(np.max(e, initial=0.0)), -float(np.min(e, initial=0.0)))
    big = max(big_e, float(np.max(data.sch_max, initial=0.0)), float(np.max(data.sdis_max, initial=0.0)))
    scale = float(np.max(np.abs(data.import_price), initial=0.0)) or 1.0
    shift = 2.0 * eps * big
    if shift <= TIE_BREAK_PRICE_SHARE * scale:
        return None
    where = ""
    if e.size and big_e == big:
        t, n = np.unravel_index(int(np.argmax(np.abs(e))), e.shape)
        where = f" ({data.names[int(data.pq[n])]} at step {int(t)})"
    limit = TIE_BREAK_PRICE_SHARE * scale / (2.0 * big)
    unit = 10.0 ** np.floor(np.log10(limit))
    limit = float(np.floor(limit / unit) * unit)  # one significant digit, rounded down
    return (f"case {data.case.name!r}: [market] tie_break = {eps:g} currency/kWh² is too large for an agent of "
            f"{big:.3g} kWh per step{where}: the tie-break can move its price by {shift:.3g} currency/kWh "
            f"(the import price is {scale:g}), so prices and dispatch are off; set [market] tie_break to "
            f"{limit:.1g} or less")


def assert_valid_market(data: MarketData, *, horizon: int) -> None:
    """Raise one :class:`MarketError` summing up every problem :func:`check_market` finds;
    warn (:class:`~gridmarket.case.io.CaseWarning`) when the tie-break is too large for the
    case's agents (:func:`tie_break_note`)."""
    note = tie_break_note(data)
    if note is not None:
        warnings.warn(CaseWarning(note), stacklevel=3)
    problems = check_market(data, horizon=horizon)
    if not problems:
        return
    problems = sorted(problems, key=lambda p: (p.step is None, p.step or 0))
    first = problems[0]
    lines = "\n".join(f"  - {p}" for p in problems)
    where = f"step {first.step}: " if first.step is not None else ""
    msg = (f"{where}market inputs of case {data.case.name!r} rejected before solving,"
           f" {len(problems)} problem(s); first group: {first.group}\n{lines}")
    raise MarketError(msg, step=first.step, group=first.group)
