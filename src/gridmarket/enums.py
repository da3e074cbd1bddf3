"""Enumerations for method choices; every function accepts the enum or its string value."""

from __future__ import annotations

from enum import Enum

__all__ = ["AgentKind", "BatteryModel", "NetworkMode", "PlacementRule", "TerminalSoc", "ViolationKind"]


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


class NetworkMode(str, Enum):
    """How the market sees the network (shared MODEL.md, *Network-aware market*)."""

    BLIND = "blind"  #: the study's market: prices only, limits checked after the power flow
    AWARE = "aware"  #: linearised voltage, line and transformer limits inside the clearing


class TerminalSoc(str, Enum):
    """Where batteries end the run (shared MODEL.md, *Terminal state of charge*)."""

    CYCLIC = "cyclic"  #: every battery ends at its initial SoC
    FREE = "free"  #: the market leaves it where it likes (the study's behaviour)


class PlacementRule(str, Enum):
    """How stage VI chooses where battery units go (shared MODEL.md, *Battery placement*)."""

    VIOLATIONS = "violations"  #: the study's rule: every violated bus gets a unit, banks grow on a ladder
    VALUE = "value"  #: aware market: where the network duals value the relief above the unit's annuity


class ViolationKind(str, Enum):
    """Kind of a limit violation (eqs. 19-20)."""

    VOLTAGE = "voltage"  #: a bus-phase outside [vmin_pu, vmax_pu]
    CURRENT = "current"  #: a line-phase above its normal ampacity
    TRANSFORMER = "transformer"  #: a transformer loading above its normal kVA rating
    NONCONVERGENCE = "nonconvergence"  #: the step's power flow did not converge (voltages NaN)
