"""The power-flow engine interface the study codes against.

:class:`PowerFlowEngine` is what a back-end has to offer: compile a feeder once (the
constructor), name and create the elements the market dispatches, set their powers in bulk and
solve a series of steps, and read voltages, currents and transformer loadings as numpy arrays
(:class:`~gridmarket.network.results.PowerFlowResult`), plus the tables and graph of the circuit.
:class:`~gridmarket.network.OpenDSSNetwork` implements it; a second engine (e.g. a batch
power-flow library) would implement the same methods. Sensitivities (d quantity / d injection)
come later, from :mod:`gridmarket.network.sensitivity`.

Sign convention (load reference, as everywhere): ``kw`` is the power a Load or Storage element
consumes (a discharging battery is negative) and the power a PVSystem or Generator produces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from gridmarket.network.elements import ElementSet
from gridmarket.network.results import PowerFlowResult
from gridmarket.topology import Topology

__all__ = ["PowerFlowEngine"]


@runtime_checkable
class PowerFlowEngine(Protocol):
    """A compiled feeder that solves series of power flows (see the module docstring)."""

    master: Path

    # ---------------------------------------------------------------- circuit tables

    @property
    def node_names(self) -> list[str]:
        """``"bus.phase"`` names, lower case, in the column order of ``PowerFlowResult.v_pu``."""
        ...

    @property
    def buses(self) -> pd.DataFrame:
        """Index lower-case bus name; columns ``kv_base`` (LN [kV]), ``x``, ``y``, ``n_nodes``."""
        ...

    @property
    def lines(self) -> pd.DataFrame:
        """Index ``"line.name"``; columns ``bus1``, ``bus2``, ``phases``, ``norm_amps`` [A],
        ``emerg_amps`` [A], ``length_km`` [km], ``switch``."""
        ...

    @property
    def transformers(self) -> pd.DataFrame:
        """Index ``"transformer.name"``; columns ``bus1``, ``bus2`` (first two windings),
        ``kva`` (normal rating of winding 1 [kVA])."""
        ...

    @property
    def source_bus(self) -> str:
        """Bus of the feeder head, lower case."""
        ...

    @property
    def topology(self) -> Topology:
        """The bus graph seen from the source."""
        ...

    def downstream_bus(self, line: str) -> str:
        """The bus of a series element farther from the source."""
        ...

    def downstream_buses(self) -> dict[str, str]:
        """``{"line.x": downstream bus}`` for every line."""
        ...

    def bus_distance(self, src: str) -> dict[str, int]:
        """Hops from ``src`` to every bus connected to it."""
        ...

    # ---------------------------------------------------------------- elements

    def resolve(self, elements: Sequence[str]) -> ElementSet:
        """Look ``"Class.name"`` elements up once for :meth:`run_series`."""
        ...

    def element_buses(self, elements: ElementSet) -> list[str]:
        """Bus of each element, lower case, without nodes."""
        ...

    def add_battery(self, name: str, bus: str, *, kw_rated: float, kwh: float) -> str:
        """Create a battery at ``bus`` (kW rating [kW], capacity [kWh]); its element name."""
        ...

    def resize_battery(self, element: str, *, kw_rated: float, kwh: float) -> None:
        """Change the rating of a battery made by :meth:`add_battery`."""
        ...

    def set_source_pu(self, pu: float) -> None:
        """Set the source voltage [pu of its base] after compiling."""
        ...

    # ---------------------------------------------------------------- solving

    def run_series(self, elements: ElementSet, kw: np.ndarray, *, kvar: np.ndarray | None = None,
                   pf: np.ndarray | None = None, progress: Callable[[int], None] | None = None,
                   ) -> PowerFlowResult:
        """Set the powers of each step [kW] in bulk and solve one power flow per step.

        A step that does not converge, even retried with the elements' own load models, is
        recorded (``converged[t]`` False, NaN voltages and currents) and the series goes on.
        """
        ...

    def close(self) -> None:
        """Release the engine's resources (temporary folders); idempotent."""
        ...
