"""Schema of ``case.toml`` (shared CASE_FORMAT.md) as pydantic models: one home for keys,
types and defaults. Cross-field rules (e.g. ``soc_min < soc_max``) live in
:mod:`gridmarket.case.io`, so that every problem is reported with its file and key.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

__all__ = ["CaseToml"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class CaseSection(_Section):
    name: str = "case"
    currency: str = "R$"


class NetworkSection(_Section):
    master: str  #: OpenDSS script, relative to the case folder
    vmin_pu: float = 0.95
    vmax_pu: float = 1.05
    monitored_buses: Literal["all", "lv"] | list[str] = "all"


class TimeSection(_Section):
    start: str | None = None
    steps: int = Field(gt=0)
    step_hours: float = 1.0


class MarketSection(_Section):
    horizon: int = Field(default=1, ge=1)
    battery_model: Literal["physical", "paper"] = "physical"
    trade_fee: float = Field(default=0.001, ge=0)
    tie_break: float = Field(default=1e-6, ge=0)


class GridSection(_Section):
    import_price: float | str = 0.80
    export_price: float | str = 0.30


class CommunitiesSection(_Section):
    links: Literal["all", "none"] | list[tuple[str, str]] = "all"


class BatterySection(_Section):
    unit_kw: float = Field(default=2.56, gt=0)
    unit_kwh: float = Field(default=10.24, gt=0)
    soc_min: float = Field(default=0.2, ge=0, le=1)
    soc_max: float = Field(default=0.8, ge=0, le=1)
    soc_init: float = Field(default=0.5, ge=0, le=1)
    eff_charge: float = Field(default=0.96, gt=0, le=1)
    eff_discharge: float = Field(default=0.96, gt=0, le=1)
    rate_charge: float = Field(default=0.25, gt=0)
    rate_discharge: float = Field(default=0.9375, gt=0)
    self_discharge: float = Field(default=1.72e-5, ge=0, lt=1)
    value: float | Literal["mean-price"] = "mean-price"
    degradation_cost: float = Field(default=0.0, ge=0)
    a: float = Field(default=0.0, ge=0)


class PlacementSection(_Section):
    ladder: list[int] = Field(default_factory=lambda: [1, 3, 5])
    max_iterations: int = Field(default=10, ge=1)
    stop_when_worse: StrictBool = True


class CaseToml(_Section):
    """The whole ``case.toml``; every section is optional except ``[network]`` and ``[time]``."""

    case: CaseSection = Field(default_factory=CaseSection)
    network: NetworkSection
    time: TimeSection
    market: MarketSection = Field(default_factory=MarketSection)
    grid: GridSection = Field(default_factory=GridSection)
    communities: CommunitiesSection = Field(default_factory=CommunitiesSection)
    battery: BatterySection = Field(default_factory=BatterySection)
    placement: PlacementSection = Field(default_factory=PlacementSection)
