"""Agents asked for more power than their OpenDSS element is rated for, found before a run.

The power flow refuses a set power above an element's rating (a PVSystem's Pmpp/kVA, a
Storage's kWrated) at the step where the market dispatches it; this module finds the same
mismatch from the case alone, so that ``gridmarket check`` (and the checks at the start of
``run``) name the agents.csv row and column instead of the element and step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from gridmarket.enums import AgentKind
from gridmarket.errors import Problem

if TYPE_CHECKING:
    from gridmarket.case.model import Agent, Case
    from gridmarket.network import OpenDSSNetwork

__all__ = ["rating_problems"]

#: relative tolerance of a rating, as the power flow's own check [-]
RATING_RTOL = 1e-6


def _element_ratings_kw(net: OpenDSSNetwork, elements: list[str]) -> np.ndarray:
    """Largest power each element can give or take [kW] (``inf``: no limit), in the order given."""
    es = net.resolve(elements)
    p_max = np.full(len(elements), np.inf)
    for g in getattr(es, "_groups", ()):
        p_max[np.asarray(g.cols, dtype=int)] = np.asarray(g.p_max_kw, dtype=float)
    return p_max


def rating_problems(case: Case, net: OpenDSSNetwork, where: Callable[[Agent], str]) -> list[Problem]:
    """Producers whose available power (profile × scale) peaks above their element's rating,
    and battery agents on a Storage element rated below ``units × [battery].unit_kw``.

    Parameters
    ----------
    case : Case
    net : OpenDSSNetwork
        The case's compiled network, in which every fixed element of the case exists.
    where : callable
        ``agent -> "row N (name)"`` as the caller names agents.csv rows.

    Returns
    -------
    list of Problem
        One per agent, naming the column to change (``scale`` or ``units``), the peak and the
        rating [kW], and the largest value that fits.
    """
    kinds = (AgentKind.PRODUCER, AgentKind.BATTERY)
    idx = [k for k, a in enumerate(case.agents) if a.bus is None and a.kind in kinds]
    if not idx:
        return []
    agents = [case.agents[k] for k in idx]
    p_max = _element_ratings_kw(net, [a.element for a in agents])
    problems: list[Problem] = []
    unit_kw = case.battery.unit_kw
    for k, a, cap in zip(idx, agents, p_max, strict=True):
        if not np.isfinite(cap):
            continue
        limit = cap * (1 + RATING_RTOL) + 1e-9
        if a.kind is AgentKind.PRODUCER:
            col = np.asarray(case.profile_kw[:, k], dtype=float)
            t = int(np.argmax(col))
            peak = float(col[t])
            if peak > limit:
                fit = a.scale * cap / peak
                problems.append(Problem("agents.csv", f"{where(a)}, column 'scale'",
                                        f"profile {a.profile!r} × scale {a.scale:g} peaks at {peak:.6g} kW (step {t}),"
                                        f" above the rating of {a.element} ({cap:.6g} kW); use a scale of at most"
                                        f" {fit:.6g} or a larger element"))
        elif a.units * unit_kw > limit:
            fit = int(cap // unit_kw)
            problems.append(Problem("agents.csv", f"{where(a)}, column 'units'",
                                    f"{a.units} unit(s) × [battery].unit_kw {unit_kw:g} kW = {a.units * unit_kw:.6g}"
                                    " kW,"
                                    f" above the rating of {a.element} ({cap:.6g} kW); use at most {fit} unit(s)"
                                    " or a larger element"))
    return problems
