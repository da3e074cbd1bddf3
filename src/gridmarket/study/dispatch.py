"""Stage III of shared MODEL.md: the cleared market as the kW of each agent's OpenDSS element.

Its own module so that the pipeline, the aware market's outer loop and the benchmarks share it
without importing each other.
"""

from __future__ import annotations

import numpy as np

from gridmarket.case.model import Case
from gridmarket.enums import AgentKind
from gridmarket.market import MarketResult

__all__ = ["dispatch_kw"]

#: dispatch magnitudes below this are solver round-off [kW]
_ROUND_OFF_KW = 1e-6


def dispatch_kw(case: Case, market: MarketResult) -> np.ndarray:
    """Stage III: the kW each agent's element gets per step, shape (steps, n_agents).

    Consumers: ``P/Δt`` (consumed); producers: ``−P/Δt`` (produced, positive, as the
    PVSystem's output); batteries: ``S/Δt`` (> 0 charging, drawn from the grid); passive
    agents: their profile [kW].
    """
    dt = case.time.step_hours
    kinds = np.array([a.kind.value for a in case.agents])
    kw = np.array(case.profile_kw, dtype=float, copy=True)
    p = np.asarray(market.p_kwh) / dt
    s = np.asarray(market.s_kwh) / dt
    cons = kinds == AgentKind.CONSUMER.value
    prod = kinds == AgentKind.PRODUCER.value
    bat = kinds == AgentKind.BATTERY.value
    kw[:, cons] = p[:, cons]
    # solver round-off can leave a producer at -1e-9 kW; that is zero output, not consumption
    produced = -p[:, prod]
    kw[:, prod] = np.where((produced < 0) & (produced > -_ROUND_OFF_KW), 0.0, produced)
    kw[:, bat] = s[:, bat]
    return kw
