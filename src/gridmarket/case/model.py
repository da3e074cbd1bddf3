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
from typing import Any

import numpy as np
import pandas as pd

from gridmarket.case import schema as _schema
from gridmarket.enums import AgentKind, BatteryModel, NetworkMode, PlacementRule, TerminalSoc

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


def _default(section: type[_schema.BaseModel], key: str) -> Any:
    """The default of ``[section].key``: defaults live once, in :mod:`gridmarket.case.schema`."""
    f = section.model_fields[key]
    return f.default_factory() if f.default_factory is not None else f.default  # type: ignore[call-arg]


_N, _T, _M = _schema.NetworkSection, _schema.TimeSection, _schema.MarketSection
_B, _P = _schema.BatterySection, _schema.PlacementSection


@dataclass(frozen=True)
class NetworkOptions:
    """``[network]``: the OpenDSS master and the limits of eq. (19)."""

    master: Path  #: absolute path of the OpenDSS master script
    vmin_pu: float = _default(_N, "vmin_pu")
    vmax_pu: float = _default(_N, "vmax_pu")
    #: "all" | "lv" | "customers" | bus names (lower case)
    monitored_buses: str | tuple[str, ...] = _default(_N, "monitored_buses")
    source_pu: float | None = _default(_N, "source_pu")  #: source voltage set after compiling [pu]


@dataclass(frozen=True)
class TimeOptions:
    """``[time]``: the horizon of the run."""

    steps: int
    step_hours: float = _default(_T, "step_hours")  #: Δt [h]
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

    horizon: int = _default(_M, "horizon")  #: steps per QP; 1 = sequential, as in the study
    battery_model: BatteryModel = BatteryModel(_default(_M, "battery_model"))
    trade_fee: float = _default(_M, "trade_fee")  #: τ [currency/kWh] on inter-community imports
    tie_break: float = _default(_M, "tie_break")  #: ε [currency/kWh²]
    network: NetworkMode = NetworkMode(_default(_M, "network"))  #: blind (the study) or aware
    network_margin_pu: float = _default(_M, "network_margin_pu")  #: δ [pu]
    network_penalty: float = _default(_M, "network_penalty")  #: slack price [currency per kWh-equivalent]
    network_iterations: int = _default(_M, "network_iterations")  #: outer iterations at most


@dataclass(frozen=True)
class GridPrices:
    """``[grid]``: upstream grid tariff and feed-in price per step [currency/kWh]."""

    import_price: np.ndarray  #: shape (steps,), π_imp
    export_price: np.ndarray  #: shape (steps,), π_exp <= π_imp


@dataclass(frozen=True)
class BatterySpec:
    """``[battery]``: the Standard Battery Unit (study Table III) and battery economics."""

    unit_kw: float = _default(_B, "unit_kw")  #: rated power of one SBU [kW]
    unit_kwh: float = _default(_B, "unit_kwh")  #: capacity of one SBU [kWh]
    soc_min: float = _default(_B, "soc_min")  #: [fraction of capacity]
    soc_max: float = _default(_B, "soc_max")
    soc_init: float = _default(_B, "soc_init")
    eff_charge: float = _default(_B, "eff_charge")
    eff_discharge: float = _default(_B, "eff_discharge")
    rate_charge: float = _default(_B, "rate_charge")  #: λ_ch, max charge per step [fraction of capacity]
    rate_discharge: float = _default(_B, "rate_discharge")  #: λ_dis
    self_discharge: float = _default(_B, "self_discharge")  #: λ_sd per step
    value: float | str = _default(_B, "value")  #: v_n [currency/kWh] or "mean-price"
    degradation_cost: float = _default(_B, "degradation_cost")  #: c_deg [currency/kWh of throughput]
    a: float = _default(_B, "a")  #: quadratic cost on S [currency/kWh²]
    terminal_soc: TerminalSoc = TerminalSoc(_default(_B, "terminal_soc"))  #: cyclic or free
    capex_per_kwh: float = _default(_B, "capex_per_kwh")  #: installed cost [currency/kWh]
    capex_per_kw: float = _default(_B, "capex_per_kw")  #: installed cost [currency/kW]
    om_per_year: float = _default(_B, "om_per_year")  #: O&M [fraction of capex per year]
    lifetime_years: float = _default(_B, "lifetime_years")  #: L [years]
    discount_rate: float = _default(_B, "discount_rate")  #: r [fraction per year]

    def __post_init__(self) -> None:
        object.__setattr__(self, "terminal_soc", TerminalSoc(self.terminal_soc))


@dataclass(frozen=True)
class PlacementOptions:
    """``[placement]``: the SBU ladder of stage VI."""

    ladder: tuple[int, ...] = tuple(_default(_P, "ladder"))
    max_iterations: int = _default(_P, "max_iterations")
    stop_when_worse: bool = _default(_P, "stop_when_worse")
    rule: PlacementRule = PlacementRule(_default(_P, "rule"))  #: the study's rule or value-based (aware)


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
