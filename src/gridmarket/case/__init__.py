"""Case folders: reading, validating and the immutable in-memory model."""

from gridmarket.case.io import AGENT_COLUMNS, CaseWarning, load_case
from gridmarket.case.model import (
    Agent,
    BatterySpec,
    Case,
    GridPrices,
    MarketOptions,
    NetworkOptions,
    PlacementOptions,
    TimeOptions,
)

__all__ = [
    "AGENT_COLUMNS",
    "Agent",
    "BatterySpec",
    "Case",
    "CaseWarning",
    "GridPrices",
    "MarketOptions",
    "NetworkOptions",
    "PlacementOptions",
    "TimeOptions",
    "load_case",
]
