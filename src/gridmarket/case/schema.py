"""Schema of ``case.toml`` (shared CASE_FORMAT.md) as pydantic models: one home for keys,
types, units, defaults and the rule each key obeys. Cross-field rules (e.g.
``soc_min < soc_max``) live in :mod:`gridmarket.case.io`, so that every problem is reported
with its file and key.

Magnitudes are bounded (e.g. ``unit_kw <= 1e6``, money ``<= 1e9``) far above any real case, so
that a unit mistake is an error rather than an overflow inside the market.

Types are **strict**: ``steps = "4"``, ``steps = true`` or ``vmin_pu = "0.95"`` are errors, not
silently converted (an integer is accepted where a float is expected), and ``nan``/``inf``
are refused everywhere.
"""

from __future__ import annotations

import datetime as _dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CaseToml", "EXPECTED"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class CaseSection(_Section):
    name: str = Field(default="case", description="free text, names the results folder")
    currency: str = Field(default="R$", description="currency symbol of all money values")


class NetworkSection(_Section):
    master: str = Field(description="OpenDSS master script, relative to the case folder")
    vmin_pu: float = Field(default=0.95, gt=0, description="lower voltage limit, eq. (19) [pu]")
    vmax_pu: float = Field(default=1.05, gt=0, description="upper voltage limit, eq. (19) [pu]")
    monitored_buses: Literal["all", "lv", "customers"] | list[str] = Field(
        default="all", description='buses whose voltages are checked: "all", "lv" (base below 1 kV), '
                                   '"customers" (buses where agents connect) or names')
    source_pu: float | None = Field(
        default=None, gt=0.5, lt=1.5,
        description="source voltage set after the feeder is compiled [pu]; none: the feeder's own")


class TimeSection(_Section):
    start: str | _dt.datetime | _dt.date | None = Field(
        default=None, description="timestamp of the first step (ISO 8601); none: steps are numbered")
    steps: int = Field(gt=0, description="number of steps of the run")
    step_hours: float = Field(default=1.0, gt=0, le=8784, description="step length Δt [h], at most a leap year")


class MarketSection(_Section):
    horizon: int = Field(default=1, ge=1, description="steps per QP; 1 = sequential, as in the study")
    battery_model: Literal["physical", "paper"] = Field(default="physical", description="MODEL.md, Batteries")
    trade_fee: float = Field(default=0.001, ge=0, le=1e9,
                             description="τ, fee on inter-community imports [currency/kWh]")
    tie_break: float = Field(default=1e-6, ge=0, le=1e3, description="ε, tie-break weight [currency/kWh²]")
    network: Literal["blind", "aware"] = Field(
        default="blind", description='"blind": the study\'s market; "aware": network limits inside the clearing')
    network_margin_pu: float = Field(default=0.002, ge=0, le=0.1,
                                     description="δ, margin kept from the voltage limits by the aware market [pu]")
    network_penalty: float = Field(default=100.0, gt=0, le=1e9,
                                   description="price of a network-constraint slack [currency per kWh-equivalent]")
    network_iterations: int = Field(default=6, ge=1, le=100,
                                    description="outer iterations (clear → AC power flow) of the aware market at most")


class GridSection(_Section):
    import_price: float | str = Field(default=0.80, description="π_imp, tariff [currency/kWh] or a profiles column")
    export_price: float | str = Field(default=0.30, description="π_exp, feed-in price [currency/kWh] or a column")


class CommunitiesSection(_Section):
    links: Literal["all", "none"] | list[list[str]] = Field(
        default="all", description='communities that may trade with each other: "all", "none" or pairs')


class BatterySection(_Section):
    unit_kw: float = Field(default=2.56, gt=0, le=1e6, description="rated power of one SBU [kW]")
    unit_kwh: float = Field(default=10.24, gt=0, le=1e6, description="capacity of one SBU [kWh]")
    soc_min: float = Field(default=0.2, ge=0, le=1, description="lowest state of charge [fraction]")
    soc_max: float = Field(default=0.8, ge=0, le=1, description="highest state of charge [fraction]")
    soc_init: float = Field(default=0.5, ge=0, le=1, description="state of charge before step 0 [fraction]")
    eff_charge: float = Field(default=0.96, gt=0, le=1, description="η_ch, charging efficiency")
    eff_discharge: float = Field(default=0.96, gt=0, le=1, description="η_dis, discharging efficiency")
    rate_charge: float = Field(default=0.25, gt=0, le=1e6, description="λ_ch, charge per step [fraction of capacity]")
    rate_discharge: float = Field(default=0.9375, gt=0, le=1e6, description="λ_dis [fraction of capacity per step]")
    self_discharge: float = Field(default=1.72e-5, ge=0, lt=1, description="λ_sd [fraction per step]")
    value: float | Literal["mean-price"] = Field(default="mean-price",
                                                 description="v_n, value of stored energy [currency/kWh]")
    degradation_cost: float = Field(default=0.0, ge=0, le=1e9, description="c_deg per kWh of throughput [currency/kWh]")
    a: float = Field(default=0.0, ge=0, le=1e9, description="quadratic cost on S [currency/kWh²]")
    terminal_soc: Literal["cyclic", "free"] = Field(
        default="cyclic", description='"cyclic": every battery ends the run at soc_init; "free": the study')
    capex_per_kwh: float = Field(default=0.0, ge=0, le=1e9, description="installed cost per kWh [currency/kWh]")
    capex_per_kw: float = Field(default=0.0, ge=0, le=1e9, description="installed cost per kW [currency/kW]")
    om_per_year: float = Field(default=0.0, ge=0, le=1, description="O&M per year [fraction of capex]")
    lifetime_years: float = Field(default=12.0, gt=0, le=100, description="economic lifetime L [years]")
    discount_rate: float = Field(default=0.05, ge=0, le=1, description="discount rate r [fraction per year]")


class PlacementSection(_Section):
    ladder: list[int] = Field(default_factory=lambda: [1, 3, 5],
                              description="bank sizes [SBU] a violated bus grows through, increasing")
    max_iterations: int = Field(default=10, ge=1, description="iterations of the study loop at most")
    stop_when_worse: bool = Field(default=True, description="stop when violations rise above the best")
    rule: Literal["violations", "value"] = Field(
        default="violations", description='"violations": the study\'s rule; "value": where the aware '
                                          "market's network duals value the relief above a unit's annuity")


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


#: What a key accepts, in words, for keys whose type is a choice (used in error messages).
EXPECTED: dict[tuple[str, str], str] = {
    ("network", "monitored_buses"): '"all", "lv", "customers" or a list of bus names',
    ("market", "network"): '"blind" or "aware"',
    ("battery", "terminal_soc"): '"cyclic" or "free"',
    ("placement", "rule"): '"violations" or "value"',
    ("time", "start"): 'an ISO 8601 timestamp such as "2024-03-01T00:00"',
    ("market", "battery_model"): '"physical" or "paper"',
    ("grid", "import_price"): "a number [currency/kWh] or the name of a profiles.csv column",
    ("grid", "export_price"): "a number [currency/kWh] or the name of a profiles.csv column",
    ("communities", "links"): '"all", "none" or a list of pairs such as [["C1", "C2"]]',
    ("battery", "value"): 'a number [currency/kWh] or "mean-price"',
    ("placement", "ladder"): "a list of whole numbers of SBUs such as [1, 3, 5]",
}
