"""Enumerations for method choices; every function accepts the enum or its string value."""

from __future__ import annotations

from enum import Enum

__all__ = ["AgentKind", "BatteryModel", "ViolationKind"]


class AgentKind(str, Enum):
    """What an agent is in the market (shared MODEL.md, *Sets*)."""

    CONSUMER = "consumer"  #: an OpenDSS Load, P >= 0
    PRODUCER = "producer"  #: a PV system (or generator), P <= 0
    BATTERY = "battery"  #: a storage unit, S > 0 charging
    PASSIVE = "passive"  #: follows its profile, takes no part in the market


class BatteryModel(str, Enum):
    """Battery state-of-charge model (shared MODEL.md, *Batteries*)."""

    PHYSICAL = "physical"  #: efficiencies inside the SoC recursion (9')
    PAPER = "paper"  #: the study's literal eqs. (9)-(13)


class ViolationKind(str, Enum):
    """Kind of a limit violation (eqs. 19-20)."""

    VOLTAGE = "voltage"
    CURRENT = "current"
