"""``monitored_buses = "customers"`` before and after the engine learns it.

Cases written by ``new-case`` monitor the buses where agents connect (``"customers"``); the
engine's :func:`gridmarket.network.monitored_mask` learns that value from another branch
(``customer_buses=``). Until then, tests that run such a case spell the customer buses out,
which is what ``"customers"`` means.
"""

from __future__ import annotations

import dataclasses
import inspect

from gridmarket.case import Case
from gridmarket.cases.sanity import BaseCaseGrid
from gridmarket.network import monitored_mask


def engine_knows_customers() -> bool:
    """True when the engine's monitored_mask takes the agents' buses (``customer_buses=``)."""
    return "customer_buses" in inspect.signature(monitored_mask).parameters


def runnable(case: Case) -> Case:
    """``case``, with ``"customers"`` spelled out as the agents' buses when the engine lacks it."""
    mon = case.network.monitored_buses
    if engine_knows_customers() or not (isinstance(mon, str) and mon == "customers"):
        return case
    buses = tuple(sorted(set(BaseCaseGrid(case).agent_buses)))
    return dataclasses.replace(case, network=dataclasses.replace(case.network, monitored_buses=buses))
