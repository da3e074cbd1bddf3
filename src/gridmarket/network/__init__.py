"""Network stage: the OpenDSS power-flow engine and the limit checks of eqs. (19)-(20).

This package is the only part of the project that imports :mod:`opendssdirect`:
:mod:`gridmarket.network.opendss` is the engine (compile, set powers, solve, read arrays) and
:mod:`gridmarket.network.inspect` reads a feeder once, read-only and in a private DSS
context, for the case builders and the sweep. :mod:`gridmarket.network.violations` works on
the engine's numpy results.
"""

from gridmarket.network.opendss import (
    SUPPORTED_CLASSES,
    ElementSet,
    OpenDSSNetwork,
    PowerFlowResult,
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
    "PowerFlowResult",
    "ViolationCounts",
    "check_limits",
    "count_violations",
    "element_of",
    "monitored_mask",
]
