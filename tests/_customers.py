"""``monitored_buses = "customers"`` before and after the study learns it.

Cases written by ``new-case`` monitor the buses where agents connect (``"customers"``); the
engine's :func:`gridmarket.network.monitored_mask` takes them as ``customer_buses=``, and the
study passes them on from another branch. Until it does, tests that run such a case spell the
customer buses out, which is what ``"customers"`` means.
"""

from __future__ import annotations

import dataclasses

from gridmarket.case import Case
from gridmarket.cases.sanity import BaseCaseGrid
from gridmarket.errors import CaseError
from gridmarket.study import check_network


def study_takes_customers(case: Case) -> bool:
    """True when the study's network check accepts ``case`` (with ``"customers"``, or without it)."""
    try:
        check_network(case)
    except (CaseError, ValueError) as exc:  # main today: monitored_mask's ValueError escapes the check
        if "customers" in str(exc):
            return False
        raise
    return True


def runnable(case: Case) -> Case:
    """``case``, with ``"customers"`` spelled out as the agents' buses when the study lacks it."""
    mon = case.network.monitored_buses
    if not (isinstance(mon, str) and mon == "customers") or study_takes_customers(case):
        return case
    buses = tuple(sorted(set(BaseCaseGrid(case).agent_buses)))
    return dataclasses.replace(case, network=dataclasses.replace(case.network, monitored_buses=buses))
