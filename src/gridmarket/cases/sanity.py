"""Is a case worth running? A no-load and a peak-load power flow of its base case, and warnings.

:func:`case_sanity` compiles the case's network (applying ``[network] source_pu`` with
:meth:`~gridmarket.network.OpenDSSNetwork.set_source_pu`), runs two power flows without market
and batteries and warns, with numbers, when

- the source voltage sits within ``margin_pu`` of a voltage limit (``vmin_pu + margin`` or
  ``vmax_pu − margin``), or outside the limits;
- the no-load voltages of the monitored buses do (every monitored bus sits near the source
  voltage at night, so a high source leaves no room for PV and a low one none for load);
- the base case violates the limits at more than ``majority`` (half) of the monitored buses in
  either flow (the battery loop would then chase the source, not the load);
- most monitored buses have no agent (``"lv"`` or ``"all"`` on a feeder of cable joints: the loop
  would place batteries where no customer is);
- a community has a single member household (a market of one: it only trades with the grid and
  other communities).

The flows: **no load** sets every agent's element to 0 kW (elements that are not agents keep
their compiled power); **peak load** is the step with the largest total demand of consumers
and passive agents, every agent at its profile in that step (consumers and passive agents
consume, producers produce their available power, batteries idle). Monitored buses follow
``[network] monitored_buses``; ``"customers"`` means the buses of the agents' elements.

``gridmarket new-case`` prints the warnings of the case it wrote; ``gridmarket check`` may call
:func:`case_sanity` and print ``report.warnings`` (and ``report.summary()``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from gridmarket.case import Case
from gridmarket.enums import AgentKind
from gridmarket.network import OpenDSSNetwork, PowerFlowResult, element_of, monitored_mask

__all__ = ["BaseCaseGrid", "SanityReport", "case_sanity"]

#: default margin from a voltage limit that is worth a warning [pu]
MARGIN_PU = 0.01
#: share of the monitored buses above which a violated base case is worth a warning
MAJORITY = 0.5


class BaseCaseGrid:
    """A case's network compiled with its agents' elements, its source voltage and its monitored
    nodes: the power flows of the base case (no market, no batteries) used by :func:`case_sanity`
    and :mod:`gridmarket.calibrate`.

    Parameters
    ----------
    case : Case
        A validated case; its ``bus:`` batteries are created (and left idle).
    source_pu : float, optional
        Source voltage [pu] (default: ``case.network.source_pu``, else the feeder's own).
    """

    def __init__(self, case: Case, *, source_pu: float | None = None) -> None:
        from gridmarket.study.pipeline import attach_agents

        self.case = case
        self.net = OpenDSSNetwork(case.network.master)
        # "customers" needs the agents' buses, known only once they are attached: check the rest with "all"
        plain = dataclasses.replace(case, network=dataclasses.replace(case.network, monitored_buses="all"))
        self.element_names = attach_agents(plain, self.net)
        self.elements = self.net.resolve(self.element_names)
        self.agent_buses = self.net.element_buses(self.elements)
        self.feeder_source_pu = self._read_source_pu()
        self.set_source(source_pu if source_pu is not None else case.network.source_pu)
        self.node_names = list(self.net.node_names)
        self.node_bus = np.asarray(element_of(self.node_names))
        mon = case.network.monitored_buses
        self.mask = monitored_mask(self.node_names, self.net.buses, mon, customer_buses=self.agent_buses)
        self.monitored = mon if isinstance(mon, str) else f"{len(mon)} named buses"
        pf = np.array([a.pf if a.pf is not None else np.nan for a in case.agents])
        self.pf = None if np.isnan(pf).all() else pf
        self._kinds = np.array([a.kind.value for a in case.agents])

    def _read_source_pu(self) -> float:
        return float(self.net.source_pu)

    def set_source(self, pu: float | None) -> None:
        """Set the source voltage [pu] (``None`` leaves the feeder's own)."""
        if pu is not None:
            self.net.set_source_pu(float(pu))
        self.source_pu = float(pu) if pu is not None else self.feeder_source_pu

    def base_kw(self, *, producers: bool = True) -> np.ndarray:
        """Element powers of the base case per step, shape (steps, n_agents) [kW]: consumers and
        passive agents at their demand, producers at their available power (0 with
        ``producers=False``), batteries idle (the engine's sign rules)."""
        kw = np.array(self.case.profile_kw, dtype=float, copy=True)
        kw[:, self._kinds == AgentKind.BATTERY.value] = 0.0
        if not producers:
            kw[:, self._kinds == AgentKind.PRODUCER.value] = 0.0
        return kw

    def demand_kw(self) -> np.ndarray:
        """Total demand of consumers and passive agents per step, shape (steps,) [kW]."""
        use = np.isin(self._kinds, [AgentKind.CONSUMER.value, AgentKind.PASSIVE.value])
        return np.asarray(self.case.profile_kw, dtype=float)[:, use].sum(axis=1)

    def solve(self, kw: np.ndarray) -> PowerFlowResult:
        """One power flow per row of ``kw`` (steps, n_agents) [kW]."""
        return self.net.run_series(self.elements, np.atleast_2d(kw), pf=self.pf)


@dataclass(frozen=True)
class SanityReport:
    """The base case of a case at no load and at peak load, and what is worth a warning.

    Voltages are over the monitored nodes [pu of each node's base]; bus counts are buses with a
    monitored node outside ``[vmin_pu, vmax_pu]``.
    """

    source_pu: float  #: source voltage in effect [pu]
    source_from_case: bool  #: True when [network] source_pu set it, False: the feeder's own
    vmin_pu: float
    vmax_pu: float
    margin_pu: float
    monitored: str  #: "customers", "lv", "all" or "<n> named buses"
    monitored_buses: int
    no_load_min_pu: float
    no_load_max_pu: float
    peak_step: int
    peak_demand_kw: float
    peak_min_pu: float
    peak_max_pu: float
    violated_buses_no_load: int
    violated_buses_peak: int
    community_sizes: dict[str, int]  #: community -> consumer households
    warnings: tuple[str, ...]

    def summary(self) -> str:
        """One line with the figures."""
        return (f"source {self.source_pu:.4f} pu; monitored buses ({self.monitored}): {self.monitored_buses};"
                f" no load {self.no_load_min_pu:.4f}-{self.no_load_max_pu:.4f} pu,"
                f" {self.violated_buses_no_load} violated; peak load (step {self.peak_step},"
                f" {self.peak_demand_kw:,.1f} kW) {self.peak_min_pu:.4f}-{self.peak_max_pu:.4f} pu,"
                f" {self.violated_buses_peak} violated; limits {self.vmin_pu:g}-{self.vmax_pu:g} pu")


def _violated_buses(flow: PowerFlowResult, grid: BaseCaseGrid, vmin: float, vmax: float) -> int:
    v = flow.v_pu[:, grid.mask]
    bad = ((v < vmin) | (v > vmax)).any(axis=0)
    return len(set(grid.node_bus[grid.mask][bad].tolist()))


def _range(flow: PowerFlowResult, mask: np.ndarray) -> tuple[float, float]:
    v = flow.v_pu[:, mask]
    if v.size == 0 or np.isnan(v).all():
        return math.nan, math.nan
    return float(np.nanmin(v)), float(np.nanmax(v))


def case_sanity(case: Case, *, margin_pu: float = MARGIN_PU, majority: float = MAJORITY,
                grid: BaseCaseGrid | None = None) -> SanityReport:
    """No-load and peak-load power flows of ``case``'s base case and the warnings they call for
    (the rules of the module docstring).

    Parameters
    ----------
    case : Case
        A validated case (:func:`gridmarket.case.load_case`).
    margin_pu : float
        Distance from a voltage limit that is worth a warning [pu], default 0.01.
    majority : float
        Share of the monitored buses violated in the base case that is worth a warning, default 0.5.
    grid : BaseCaseGrid, optional
        The compiled base case (compiled here when not given).

    Returns
    -------
    SanityReport
        Figures and ``warnings`` (one sentence each, with numbers; empty when all is well).

    Raises
    ------
    CaseError, NetworkError, PowerFlowError
        As :func:`gridmarket.study.check_network`, or a base-case flow that does not converge.
    """
    g = grid or BaseCaseGrid(case)
    vmin, vmax = case.network.vmin_pu, case.network.vmax_pu
    n_agents = len(case.agents)
    no_load = g.solve(np.zeros((1, n_agents)))
    demand = g.demand_kw()
    peak = int(np.argmax(demand)) if demand.size else 0
    at_peak = g.solve(g.base_kw()[peak:peak + 1])
    n_mon = len(set(g.node_bus[g.mask].tolist()))
    nl_lo, nl_hi = _range(no_load, g.mask)
    pk_lo, pk_hi = _range(at_peak, g.mask)
    bad_nl = _violated_buses(no_load, g, vmin, vmax)
    bad_pk = _violated_buses(at_peak, g, vmin, vmax)
    sizes: dict[str, int] = {}
    for a in case.agents:
        if a.kind is AgentKind.CONSUMER and a.community is not None:
            sizes[a.community] = sizes.get(a.community, 0) + 1

    out: list[str] = []
    s = g.source_pu
    where = "[network] source_pu" if case.network.source_pu is not None else "the feeder's own source voltage"
    fix = "set [network] source_pu (new-case --source-pu, or gridmarket calibrate against meters)"
    if math.isfinite(s) and not vmin + margin_pu <= s <= vmax - margin_pu:
        out.append(f"the source voltage is {s:.4f} pu ({where}), within {margin_pu:g} pu of or beyond the limits"
                   f" {vmin:g}-{vmax:g} pu: the feeder has no room for voltage rise or drop; {fix}")
    if math.isfinite(nl_hi) and nl_hi > vmax - margin_pu:
        out.append(f"at no load the monitored buses sit at {nl_lo:.4f}-{nl_hi:.4f} pu, within {margin_pu:g} pu of"
                   f" the upper limit {vmax:g} pu (source {s:.4f} pu): any PV export will violate it; {fix}")
    if math.isfinite(nl_lo) and nl_lo < vmin + margin_pu:
        out.append(f"at no load the monitored buses sit at {nl_lo:.4f}-{nl_hi:.4f} pu, within {margin_pu:g} pu of"
                   f" the lower limit {vmin:g} pu (source {s:.4f} pu): any load will violate it; {fix}")
    for label, bad in (("no load", bad_nl), (f"peak load (step {peak})", bad_pk)):
        if n_mon and bad > majority * n_mon:
            out.append(f"the base case at {label} violates the voltage limits at {bad} of {n_mon} monitored buses"
                       f" ({100.0 * bad / n_mon:.0f} %; monitored: {g.monitored}); batteries cannot fix a feeder"
                       " whose source or monitoring is off")
    customer_buses = set(g.agent_buses)
    idle = sorted(set(g.node_bus[g.mask].tolist()) - customer_buses)
    if g.monitored != "customers" and len(idle) > n_mon / 2:
        out.append(f"{len(idle)} of the {n_mon} monitored buses ({g.monitored}) have no agent, e.g. "
                   f"{', '.join(idle[:5])}: their violations place batteries where no customer is; consider"
                   ' [network] monitored_buses = "customers"')
    lonely = [c for c, n in sizes.items() if n == 1]
    if lonely:
        out.append(f"{len(lonely)} of {len(sizes)} communities have a single household"
                   f" ({', '.join(lonely[:10])}{' ...' if len(lonely) > 10 else ''}): a market of one")
    return SanityReport(
        source_pu=s, source_from_case=case.network.source_pu is not None, vmin_pu=vmin, vmax_pu=vmax,
        margin_pu=margin_pu, monitored=g.monitored, monitored_buses=n_mon, no_load_min_pu=nl_lo,
        no_load_max_pu=nl_hi, peak_step=peak, peak_demand_kw=float(demand[peak]) if demand.size else 0.0,
        peak_min_pu=pk_lo, peak_max_pu=pk_hi, violated_buses_no_load=bad_nl, violated_buses_peak=bad_pk,
        community_sizes=sizes, warnings=tuple(out))
