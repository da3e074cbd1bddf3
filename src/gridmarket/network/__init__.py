"""Network stage: the OpenDSS power-flow engine and the limit checks of eqs. (19)-(20).

:mod:`gridmarket.network.opendss` is the only module of the project that imports
:mod:`opendssdirect`; :mod:`gridmarket.network.violations` works on its numpy results.
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
