"""Network stage: the OpenDSS power-flow engine and the limit checks of eqs. (19)-(20).

This package is the only part of the project that imports :mod:`opendssdirect`. Layout:

- :mod:`.engine`: :class:`PowerFlowEngine`, the interface the study codes against;
- :mod:`.opendss`: :class:`OpenDSSNetwork`, the OpenDSS engine, built in layers:
  :mod:`.core` (compile, commands, cache) -> :mod:`.tables` (buses, lines, topology, layout)
  -> :mod:`.dispatch` (resolving and creating elements) -> :mod:`.series` (solving series);
- :mod:`.elements` (:class:`ElementSet`, input checks), :mod:`.results`
  (:class:`PowerFlowResult`), :mod:`._dss` (C-API plumbing);
- :mod:`.inspect`: reads a feeder once, read-only and in a private DSS context, for the case
  builders and the sweep;
- :mod:`.violations`: limit checks on the engine's numpy results.

The bus graph itself (hops, km, downstream buses) is :mod:`gridmarket.topology`, pure.
"""

from gridmarket.network.engine import PowerFlowEngine
from gridmarket.network.opendss import (
    SUPPORTED_CLASSES,
    ElementSet,
    OpenDSSNetwork,
    PowerFlowResult,
    ShapeSession,
)
from gridmarket.network.violations import (
    COUNT_COLUMNS,
    VIOLATION_COLUMNS,
    ViolationCounts,
    check_limits,
    count_violations,
    element_of,
    monitored_mask,
)

__all__ = [
    "COUNT_COLUMNS",
    "SUPPORTED_CLASSES",
    "VIOLATION_COLUMNS",
    "ElementSet",
    "OpenDSSNetwork",
    "PowerFlowEngine",
    "PowerFlowResult",
    "ShapeSession",
    "ViolationCounts",
    "check_limits",
    "count_violations",
    "element_of",
    "monitored_mask",
]
