"""Stage VI with the aware market (``[placement] rule = "value"``; shared MODEL.md,
*Network-aware market*): battery units go where the network duals value the relief they give,
one unit per iteration, until the next unit's value is below its annuity.

The value of one more unit at bus ``b`` over the run [currency] is

    value_b = unit_kw · mean_{n at b} Σ_t Σ_r dual_r,t · |sens_r,n|

with ``dual_r,t`` the dual of network row ``r`` (step ``t``) of the aware clearing [currency per
unit of the row quantity], ``sens_r,n`` the row's sensitivity to agent ``n``'s net consumption
[unit per kW] and the mean over the market agents connected at ``b`` (a unit at the bus spans
its phases, the agents may sit on one). It is the welfare the limits would give back if a unit's
full power were available at ``b`` in every step where a row binds, in the direction that
relieves it: an upper bound (it ignores the energy a battery needs for that, and that the duals
fall as units are added, which the next iteration's clearing measures).

Stop (in this order): the unit placed last gained less realised welfare than its annuity
(:func:`gridmarket.economics.annuity`; the value above is an upper bound, this is the
measurement); the iteration had no binding network row; the best bus's value is below the
annuity of one unit or, when the case gives no battery cost, below :data:`NO_COST_THRESHOLD`
[currency]. The comparison (:mod:`gridmarket.study.compare`) reports the iteration with the
fewest violations and, among those, the highest net benefit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gridmarket import economics
from gridmarket.case.model import Agent, Case
from gridmarket.enums import AgentKind, NetworkMode, PlacementRule
from gridmarket.errors import CaseError, Problem

__all__ = ["NO_COST_THRESHOLD", "ValueStep", "bus_values", "check_rule", "next_unit"]

#: with no battery cost in the case, a unit worth less than this over the run is not placed [currency]
NO_COST_THRESHOLD = 0.01


def check_rule(case: Case) -> None:
    """Raise :class:`~gridmarket.errors.CaseError` when ``[placement] rule = "value"`` is asked
    for a blind market (there are no network duals to value relief with)."""
    if case.placement.rule is PlacementRule.VALUE and case.market.network is not NetworkMode.AWARE:
        raise CaseError([Problem("case.toml", "[placement].rule",
                                 '"value" places units by the network duals of the aware market; '
                                 'set [market] network = "aware" or use rule = "violations"')], case=case.name)


def bus_values(relief: np.ndarray, agents: Sequence[Agent], agent_bus: Mapping[str, str],
               unit_kw: float) -> pd.Series:
    """Value of one more unit at each bus with market agents [currency over the run], highest first.

    Parameters
    ----------
    relief : numpy.ndarray
        (n_agents,) ``Σ_t Σ_r dual_r,t · |sens_r,n|`` [currency per kW]
        (:func:`gridmarket.study.aware.relief_per_kw`, summed over the run), in ``agents`` order.
    agents : sequence of Agent
        The iteration's agents (placed batteries included).
    agent_bus : mapping
        Agent name -> bus (lower case, no phases).
    unit_kw : float
        Power of one Standard Battery Unit [kW].
    """
    rel = np.asarray(relief, dtype=float)
    if rel.size != len(agents):
        msg = f"relief has {rel.size} entries for {len(agents)} agents"
        raise ValueError(msg)
    rows = [(agent_bus[a.name], float(rel[k])) for k, a in enumerate(agents)
            if a.kind is not AgentKind.PASSIVE and a.name in agent_bus]
    if not rows:
        return pd.Series(dtype=float, name="value")
    df = pd.DataFrame(rows, columns=["bus", "relief"])
    per_bus = df.groupby("bus", sort=True)["relief"].mean() * float(unit_kw)
    # highest first, ties by bus name (groupby sorted the names; a stable sort keeps them)
    return per_bus.sort_values(ascending=False, kind="stable").rename("value")


@dataclass(frozen=True)
class ValueStep:
    """One placement round of the value rule.

    Attributes
    ----------
    banks : dict
        Bus -> units after the round (``banks`` unchanged when ``stop`` is set).
    bus : str or None
        Where the unit went (or would have gone).
    value : float
        That unit's value over the run [currency] (NaN: no bus).
    annuity : float
        One unit's annuity prorated to the run [currency] (0 when the case gives no cost).
    stop : str or None
        Why placement stops, None to go on.
    """

    banks: dict[str, int]
    bus: str | None
    value: float
    annuity: float
    stop: str | None


def next_unit(banks: Mapping[str, int], relief: np.ndarray | None, case: Case, agent_bus: Mapping[str, str],
              *, violations: int = 0, last_gain: float | None = None) -> ValueStep:
    """The value rule's next round after an iteration of ``case`` (its agents, placed banks
    included) whose aware clearings gave ``relief`` (None or all zero: no binding row).

    ``violations`` are the iteration's AC violations (they are reported by the loop; a unit is
    placed only where the duals say it relieves a row, which covers the violations the market
    could see). ``last_gain``: the realised welfare this iteration gained over the previous one
    [currency], i.e. what the unit placed last actually gave; when it is below that unit's
    annuity (or the no-cost threshold) placement stops: the relief value is an upper bound, and
    the measured gain says the bound no longer holds up."""
    spec, t = case.battery, case.time
    costed = economics.costed(spec)
    annuity = economics.annuity(1, spec, t.steps, t.step_hours) if costed else 0.0
    threshold = annuity if costed else NO_COST_THRESHOLD
    if last_gain is not None and last_gain < threshold:
        what = f"its annuity over the run ({annuity:.4g} {case.currency})" if costed else \
            f"{NO_COST_THRESHOLD:g} {case.currency} (no battery cost given)"
        return ValueStep(dict(banks), None, float("nan"), annuity,
                         f"the last unit placed gained {last_gain:.4g} {case.currency} of realised welfare,"
                         f" below {what}")
    values = (bus_values(relief, case.agents, agent_bus, spec.unit_kw) if relief is not None
              else pd.Series(dtype=float))
    cur = case.currency
    if values.empty or not np.any(values.to_numpy() > 0):
        why = ("no network row binds: the duals value no relief" if violations == 0 else
               f"no network row binds, {violations} violation(s) the market cannot see are left: "
               "the duals value no relief")
        return ValueStep(dict(banks), None, float("nan"), annuity, why)
    bus, value = str(values.index[0]), float(values.iloc[0])
    if value < threshold:
        if costed:
            why = (f"the next unit's relief value ({value:.4g} {cur} at bus {bus}) is below its annuity over the"
                   f" run ({annuity:.4g} {cur})")
        else:
            why = (f"the next unit's relief value ({value:.4g} {cur} at bus {bus}) is below {NO_COST_THRESHOLD:g}"
                   f" {cur}; the case gives no battery cost ([battery] capex_per_kwh, capex_per_kw), so units are"
                   " placed while they are worth anything")
        return ValueStep(dict(banks), bus, value, annuity, why)
    new = dict(banks)
    new[bus] = new.get(bus, 0) + 1
    return ValueStep(new, bus, value, annuity, None)
