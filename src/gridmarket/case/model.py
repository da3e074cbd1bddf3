"""Immutable, validated in-memory form of a case folder (shared CASE_FORMAT.md).

Everything here has passed validation: names are unique, profiles are finite and have
``steps`` rows, prices are per step. Arrays are read-only.

Units: energy per step in kWh inside the market, power in kW for the network
(``kW = kWh / step_hours``), prices in currency/kWh, voltages in pu.
Sign convention (load reference): consumption positive, production negative,
battery ``S > 0`` charging.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gridmarket.enums import AgentKind, BatteryModel

__all__ = [
    "Agent",
    "BatterySpec",
    "Case",
    "GridPrices",
    "MarketOptions",
    "NetworkOptions",
    "PlacementOptions",
    "TimeOptions",
]


@dataclass(frozen=True)
class NetworkOptions:
    """``[network]``: the OpenDSS master and the limits of eq. (19)."""

    master: Path  #: absolute path of the OpenDSS master script
    vmin_pu: float = 0.95
    vmax_pu: float = 1.05
    monitored_buses: str | tuple[str, ...] = "all"  #: "all" | "lv" | bus names (lower case)


@dataclass(frozen=True)
class TimeOptions:
    """``[time]``: the horizon of the run."""

    steps: int
    step_hours: float = 1.0  #: Δt [h]
    start: pd.Timestamp | None = None

    @property
    def index(self) -> pd.DatetimeIndex | pd.RangeIndex:
        """Timestamps of the steps, or 0..steps-1 when no start is given."""
        if self.start is None:
            return pd.RangeIndex(self.steps, name="step")
        return pd.date_range(self.start, periods=self.steps,
                             freq=pd.Timedelta(hours=self.step_hours), name="time")


@dataclass(frozen=True)
class MarketOptions:
    """``[market]``: horizon, battery model, fees."""

    horizon: int = 1  #: steps per QP; 1 = sequential, as in the study
    battery_model: BatteryModel = BatteryModel.PHYSICAL
    trade_fee: float = 0.001  #: τ [currency/kWh] on inter-community imports
    tie_break: float = 1e-6  #: ε [currency/kWh²]


@dataclass(frozen=True)
class GridPrices:
    """``[grid]``: upstream grid tariff and feed-in price per step [currency/kWh]."""

    import_price: np.ndarray  #: shape (steps,), π_imp
    export_price: np.ndarray  #: shape (steps,), π_exp <= π_imp


@dataclass(frozen=True)
class BatterySpec:
    """``[battery]``: the Standard Battery Unit (study Table III) and battery economics."""

    unit_kw: float = 2.56  #: rated power of one SBU [kW]
    unit_kwh: float = 10.24  #: capacity of one SBU [kWh]
    soc_min: float = 0.2  #: [fraction of capacity]
    soc_max: float = 0.8
    soc_init: float = 0.5
    eff_charge: float = 0.96
    eff_discharge: float = 0.96
    rate_charge: float = 0.25  #: λ_ch, max charge per step [fraction of capacity]
    rate_discharge: float = 0.9375  #: λ_dis
    self_discharge: float = 1.72e-5  #: λ_sd per step
    value: float | str = "mean-price"  #: v_n [currency/kWh] or "mean-price"
    degradation_cost: float = 0.0  #: c_deg [currency/kWh of throughput]
    a: float = 0.0  #: quadratic cost on S [currency/kWh²]


@dataclass(frozen=True)
class PlacementOptions:
    """``[placement]``: the SBU ladder of stage VI."""

    ladder: tuple[int, ...] = (1, 3, 5)
    max_iterations: int = 10
    stop_when_worse: bool = True


@dataclass(frozen=True)
class Agent:
    """One market agent (a row of ``agents.csv``).

    ``element`` is the OpenDSS element as written (``Load.Load053``) or ``bus:NAME`` for a
    battery the tool creates. Coefficients: ``a`` [currency/kWh²], ``b`` [currency/kWh],
    ``c`` [currency].
    """

    name: str
    kind: AgentKind
    community: str | None
    element: str
    profile: str | None = None
    scale: float = 1.0
    a: float = 0.0
    b: float = 0.0
    c: float = 0.0
    flex: float = 0.0
    units: int = 0
    pf: float | None = None

    @property
    def bus(self) -> str | None:
        """Bus name for ``bus:NAME`` batteries (as written, may include ``.1.2``), else None."""
        return self.element[4:] if self.element.lower().startswith("bus:") else None


@dataclass(frozen=True)
class Case:
    """A validated case: options, agents and per-agent profiles.

    ``profile_kw`` has shape (steps, n_agents): the agent's profile column times its scale
    [kW, mean over the step]; demand for consumers and passive agents, available power
    (positive) for producers, zeros for batteries.
    """

    name: str
    root: Path
    network: NetworkOptions
    time: TimeOptions
    market: MarketOptions
    grid: GridPrices
    battery: BatterySpec
    placement: PlacementOptions
    agents: tuple[Agent, ...]
    communities: tuple[str, ...]  #: sorted by first appearance in agents.csv
    links: tuple[tuple[str, str], ...]  #: unordered pairs of communities that may trade
    profile_kw: np.ndarray
    currency: str = "R$"
    extra_profiles: tuple[str, ...] = field(default=())  #: profile columns no agent uses

    @property
    def agent_names(self) -> list[str]:
        return [a.name for a in self.agents]

    def agents_of(self, kind: AgentKind | str) -> list[Agent]:
        kind = AgentKind(kind)
        return [a for a in self.agents if a.kind is kind]
