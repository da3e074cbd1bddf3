"""The study loop (stages I-VII of shared MODEL.md): market -> dispatch -> power flow ->
limits -> battery placement, repeated until the violations are gone, the ladder is
exhausted, or the violations rise above the best iteration's.

Every iteration is kept; the best is the one with the fewest violations (ties: higher
welfare).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from gridmarket import __version__, contract
from gridmarket.case.model import Agent, Case
from gridmarket.enums import AgentKind
from gridmarket.errors import CaseError, GridmarketError, NetworkError, Problem, in_iteration
from gridmarket.market import MarketResult, clear_market
from gridmarket.network import (
    OpenDSSNetwork,
    PowerFlowResult,
    check_limits,
    count_violations,
    monitored_mask,
)
from gridmarket.results import Results
from gridmarket.study.placement import battery_community, next_banks, violated_buses

__all__ = ["Iteration", "StudyResult", "run_study", "attach_agents", "check_network", "dispatch_kw", "BATTERY_PREFIX"]

#: name prefix of batteries placed by the loop: ``SBU_<bus>``
BATTERY_PREFIX = "SBU_"

Progress = Callable[[str, int, int], None]

#: dispatch magnitudes below this are solver round-off [kW]
_ROUND_OFF_KW = 1e-6


@dataclass
class Iteration:
    """One pass of the loop: the banks it ran with and what came out."""

    index: int
    banks: dict[str, int]  #: bus -> SBUs placed by the loop before this iteration
    case: Case  #: the case with the placed batteries as agents
    market: MarketResult
    flow: PowerFlowResult
    violations: pd.DataFrame
    counts: dict[str, Any]
    welfare: float  #: total reported welfare over the horizon [currency]


@dataclass
class StudyResult:
    """All iterations of a study run, the best one, and why it stopped."""

    case: Case
    iterations: list[Iteration]
    best: int
    stop_reason: str
    runtime_s: float
    buses: pd.DataFrame  #: network buses (bus, x, y, kv_base), as network_buses.csv
    lines: pd.DataFrame  #: network lines (element, bus1, bus2, downstream_bus, kind), as network_lines.csv
    agent_buses: dict[str, str] = field(default_factory=dict)  #: agent -> bus
    agent_elements: dict[str, str] = field(default_factory=dict)  #: agent -> OpenDSS element
    network: OpenDSSNetwork | None = None  #: the engine, left at the last step solved
    solver: str = "clarabel"

    # ------------------------------------------------------------------ tables
    def iteration_table(self) -> pd.DataFrame:
        rows = []
        for it in self.iterations:
            c = it.counts
            rows.append({
                "iteration": it.index, "welfare": it.welfare, "violations": c["violations"],
                "voltage_violations": c["voltage_violations"], "current_violations": c["current_violations"],
                "buses_violated": c["buses_violated"], "lines_violated": c["lines_violated"],
                "battery_units": int(sum(it.banks.values())),
            })
        return pd.DataFrame(rows)

    def to_results(self) -> Results:
        """The results tables (:data:`gridmarket.contract.TABLES`) and summary."""
        case = self.case
        market, comms, viols, volts, bats = [], [], [], [], []
        for it in self.iterations:
            m = it.market.market.copy()
            m.insert(0, "iteration", it.index)
            m["bus"] = m["agent"].map(self.agent_buses).fillna("")
            market.append(m)
            cm = it.market.communities.copy()
            cm.insert(0, "iteration", it.index)
            comms.append(cm)
            v = it.violations.copy()
            v.insert(0, "iteration", it.index)
            viols.append(v)
            volts.append(_voltage_frame(it.index, it.flow, self._monitored))
            for agent in it.case.agents_of(AgentKind.BATTERY):
                units = agent.units
                bats.append({"iteration": it.index, "agent": agent.name,
                             "bus": self.agent_buses.get(agent.name, agent.bus or ""),
                             "community": agent.community or "",
                             "units": units, "kw": units * case.battery.unit_kw,
                             "kwh": units * case.battery.unit_kwh})
        agents_rows = []
        last = self.iterations[-1].case
        for a in last.agents:
            agents_rows.append({"agent": a.name, "kind": a.kind.value, "community": a.community or "",
                                "element": a.element, "bus": self.agent_buses.get(a.name, "")})
        table = self.iteration_table()
        summary = {
            "case": case.name, "version": __version__, "currency": case.currency,
            "battery_model": case.market.battery_model.value, "horizon": case.market.horizon,
            "solver": self.solver, "steps": case.time.steps, "step_hours": case.time.step_hours,
            "vmin_pu": case.network.vmin_pu, "vmax_pu": case.network.vmax_pu,
            "iterations": len(self.iterations), "best_iteration": self.best, "stop_reason": self.stop_reason,
            "welfare": [round(float(w), 10) for w in table["welfare"]],
            "violations": [int(v) for v in table["violations"]],
            "runtime_s": round(self.runtime_s, 3),
        }
        viol_cols = list(contract.table("violations.parquet").names)
        customers = pd.Series(list(self.agent_buses.values()), dtype=object).value_counts()
        buses = self.buses.assign(customers=self.buses["bus"].map(customers).fillna(0).astype(np.int64))
        tables = {
            "iterations.csv": table,
            "market.parquet": pd.concat(market, ignore_index=True),
            "communities.parquet": pd.concat(comms, ignore_index=True),
            "violations.parquet": (pd.concat(viols, ignore_index=True)[viol_cols] if viols
                                   else pd.DataFrame(columns=viol_cols)),
            "voltages.parquet": pd.concat(volts, ignore_index=True),
            "batteries.csv": pd.DataFrame(bats, columns=list(contract.table("batteries.csv").names)),
            "agents.csv": pd.DataFrame(agents_rows, columns=list(contract.table("agents.csv").names)),
            "network_buses.csv": buses,
            "network_lines.csv": self.lines,
        }
        return Results(summary=summary, tables=tables)

    _monitored: np.ndarray | None = None

    def summary_text(self) -> str:
        t = self.iteration_table()
        base, best = t.iloc[0], t.iloc[self.best]
        cur = self.case.currency
        lines = [f"case {self.case.name!r}: {len(t)} iteration(s), stopped: {self.stop_reason}",
                 f"  base   : welfare {base.welfare:,.2f} {cur}, {int(base.violations)} violations",
                 f"  best #{self.best}: welfare {best.welfare:,.2f} {cur}, {int(best.violations)} violations,"
                 f" {int(best.battery_units)} SBU(s)",
                 f"  runtime {self.runtime_s:.2f} s"]
        return "\n".join(lines)


def _voltage_frame(iteration: int, flow: PowerFlowResult, mask: np.ndarray | None) -> pd.DataFrame:
    names = np.asarray(flow.node_names)
    v = flow.v_pu
    if mask is not None:
        names, v = names[mask], v[:, mask]
    steps, n = v.shape
    bus = np.array([s.rsplit(".", 1)[0] for s in names])
    phase = np.array([int(s.rsplit(".", 1)[1]) for s in names], dtype=np.int16)
    return pd.DataFrame({
        "iteration": np.full(steps * n, iteration, dtype=np.int32),
        "step": np.repeat(np.arange(steps, dtype=np.int32), n),
        "bus": np.tile(bus, steps), "phase": np.tile(phase, steps),
        "v_pu": v.reshape(-1),
    })


# ---------------------------------------------------------------------------- dispatch

def dispatch_kw(case: Case, market: MarketResult) -> np.ndarray:
    """Stage III: the kW each agent's element gets per step, shape (steps, n_agents).

    Consumers: ``P/Δt`` (consumed); producers: ``−P/Δt`` (produced, positive, as the
    PVSystem's output); batteries: ``S/Δt`` (> 0 charging, drawn from the grid); passive
    agents: their profile [kW].
    """
    dt = case.time.step_hours
    kinds = np.array([a.kind.value for a in case.agents])
    kw = np.array(case.profile_kw, dtype=float, copy=True)
    p = np.asarray(market.p_kwh) / dt
    s = np.asarray(market.s_kwh) / dt
    cons = kinds == AgentKind.CONSUMER.value
    prod = kinds == AgentKind.PRODUCER.value
    bat = kinds == AgentKind.BATTERY.value
    kw[:, cons] = p[:, cons]
    # solver round-off can leave a producer at -1e-9 kW; that is zero output, not consumption
    produced = -p[:, prod]
    kw[:, prod] = np.where((produced < 0) & (produced > -_ROUND_OFF_KW), 0.0, produced)
    kw[:, bat] = s[:, bat]
    return kw


# ---------------------------------------------------------------------------- network

def _agent_rows(case: Case) -> dict[str, int]:
    return {a.name: i for i, a in enumerate(case.agents)}


def check_network(case: Case, net: OpenDSSNetwork | None = None) -> str:
    """Check the case against its compiled network and report every mismatch at once
    (:func:`attach_agents` on ``net``, or on a network compiled here).

    :func:`run_study`, :func:`~gridmarket.study.long_run.run_long` and ``gridmarket check`` /
    ``run`` make exactly these checks.

    Parameters
    ----------
    case : Case
    net : OpenDSSNetwork, optional
        The case's compiled network (compiled here when not given); the batteries of the
        ``bus:`` agents are created in it.

    Returns
    -------
    str
        One line describing the network.

    Raises
    ------
    CaseError
        Naming every agents.csv row and case.toml key that does not match the network.
    NetworkError
        The master does not compile (OpenDSS's message, with file and line).
    """
    net = net or OpenDSSNetwork(case.network.master)
    attach_agents(case, net)
    return f"network has {len(net.buses)} buses, {len(net.lines)} lines; all {len(case.agents)} elements found"


def attach_agents(case: Case, net: OpenDSSNetwork) -> list[str]:
    """Check the case against ``net`` and create the battery of every ``bus:`` agent in it.

    Checks that each agent's element exists; that each ``bus:`` agent's bus exists and its
    battery can be created (the nodes of a split-phase ``bus.1.2`` exist, the name
    ``Load.<agent>`` is free); and that each of ``[network].monitored_buses`` is a bus of the
    network.

    Returns
    -------
    list of str
        The element of every agent in case order (``Load.<agent>`` for a ``bus:`` agent).

    Raises
    ------
    CaseError
        Naming every agents.csv row and case.toml key that does not match the network.
    """
    problems: list[Problem] = []
    rows = _agent_rows(case)

    def where(a: Agent) -> str:
        return f"row {rows[a.name] + 2} ({a.name})"

    fixed = [a for a in case.agents if a.bus is None]
    try:
        net.resolve([a.element for a in fixed])
    except NetworkError:
        for a in fixed:
            try:
                net.resolve([a.element])
            except NetworkError as exc:
                problems.append(Problem("agents.csv", where(a), str(exc)))
    known = set(net.buses.index)
    created: dict[str, str] = {}
    b = case.battery
    for a in case.agents:
        if a.bus is None:
            continue
        if a.bus.split(".")[0].lower() not in known:
            problems.append(Problem("agents.csv", where(a),
                                    f"element {a.element!r}: bus {a.bus.split('.')[0]!r} is not in the network"))
            continue
        try:
            created[a.name] = net.add_battery(a.name, a.bus, kw_rated=a.units * b.unit_kw, kwh=a.units * b.unit_kwh)
        except (NetworkError, ValueError) as exc:
            text = str(exc)
            if text.endswith("already exists in " + net.master.name):
                text = (f"gridmarket creates this battery as Load.{a.name}, which already exists in"
                        f" {net.master.name}; give the agent another name")
            problems.append(Problem("agents.csv", where(a), f"element {a.element!r}: {text}"))
    try:
        monitored_mask(net.node_names, net.buses, case.network.monitored_buses)
    except NetworkError as exc:
        problems.append(Problem("case.toml", "[network].monitored_buses", str(exc)))
    if problems:
        raise CaseError(problems, case=case.name)
    return [created.get(a.name, a.element) for a in case.agents]


class _Grid:
    """The compiled network plus the elements of the case's agents (and placed batteries)."""

    def __init__(self, case: Case) -> None:
        self.net = OpenDSSNetwork(case.network.master)
        # agent -> element name in the network; the case's own batteries are created here
        self.elements: dict[str, str] = dict(zip(case.agent_names, attach_agents(case, self.net), strict=True))
        # battery agent -> SBUs its element is rated for
        self.units: dict[str, int] = {a.name: a.units for a in case.agents if a.bus is not None}
        self.agent_bus: dict[str, str] = dict(zip(
            self.elements, self.net.element_buses(self.net.resolve(list(self.elements.values()))), strict=True))

    def _battery(self, name: str, bus: str, units: int, case: Case) -> str:
        b = case.battery
        self.units[name] = units
        return self.net.add_battery(name, bus, kw_rated=units * b.unit_kw, kwh=units * b.unit_kwh)

    def ensure(self, case: Case) -> list[str]:
        """Element names of every agent of ``case``, creating placed batteries as needed
        and resizing banks that grew."""
        b = case.battery
        for a in case.agents:
            if a.kind is AgentKind.BATTERY and a.name in self.elements and self.units.get(a.name) != a.units:
                self.net.resize_battery(self.elements[a.name], kw_rated=a.units * b.unit_kw,
                                        kwh=a.units * b.unit_kwh)
                self.units[a.name] = a.units
            if a.name not in self.elements:
                assert a.bus is not None
                self.elements[a.name] = self._battery(a.name, a.bus, a.units, case)
                self.agent_bus[a.name] = self.net.element_buses(self.net.resolve([self.elements[a.name]]))[0]
        return [self.elements[a.name] for a in case.agents]


def with_banks(case: Case, banks: dict[str, int], communities: dict[str, str]) -> Case:
    """The case with one battery agent per placed bank (``SBU_<bus>``, element ``bus:<bus>``)."""
    new = [Agent(name=f"{BATTERY_PREFIX}{bus}", kind=AgentKind.BATTERY, community=communities[bus],
                 element=f"bus:{bus}", units=units) for bus, units in sorted(banks.items())]
    if not new:
        return case
    prof = np.hstack([case.profile_kw, np.zeros((case.time.steps, len(new)))])
    prof.setflags(write=False)
    return replace(case, agents=case.agents + tuple(new), profile_kw=prof)


def network_lines(net: OpenDSSNetwork) -> pd.DataFrame:
    """network_lines.csv: every line by its element name (``"line.x"``, the name violations use
    without the phase), its buses and the downstream bus placement uses."""
    lines = net.lines
    down = net.downstream_buses()
    names = [str(n) for n in lines.index]
    return pd.DataFrame({"element": names, "bus1": lines["bus1"].to_numpy(), "bus2": lines["bus2"].to_numpy(),
                         "downstream_bus": [down.get(n, "") for n in names], "kind": "line"},
                        columns=list(contract.table("network_lines.csv").names))


# ---------------------------------------------------------------------------- the loop

def run_study(case: Case, *, progress: Progress | None = None, max_iterations: int | None = None) -> StudyResult:
    """Run the study loop on ``case`` (stages I-VII).

    Parameters
    ----------
    case : Case
        A validated case.
    progress : callable, optional
        ``progress(label, done, total)``, called as steps complete.
    max_iterations : int, optional
        Overrides ``[placement].max_iterations``.

    Returns
    -------
    StudyResult
        Every iteration, the best one and the stop reason.
    """
    t0 = time.perf_counter()
    grid = _Grid(case)
    net = grid.net
    limit = max_iterations or case.placement.max_iterations
    bus_comms: dict[str, list[str]] = {}
    for a in case.agents:
        if a.community is not None:
            bus_comms.setdefault(grid.agent_bus[a.name], []).append(a.community)
    mask = monitored_mask(net.node_names, net.buses, case.network.monitored_buses)
    bus_community = {b: sorted(set(cs))[0] for b, cs in bus_comms.items()}
    line_bus = net.downstream_buses()
    banks: dict[str, int] = {}
    bank_comm: dict[str, str] = {}
    iterations: list[Iteration] = []
    best = 0
    stop = ""
    steps = case.time.steps
    for k in range(limit):
        ci = with_banks(case, banks, bank_comm)
        try:
            elements = grid.ensure(ci)
            res = clear_market(ci)
        except GridmarketError as exc:
            raise in_iteration(exc, k) from exc
        kw = dispatch_kw(ci, res)
        pf = np.array([a.pf if a.pf is not None else np.nan for a in ci.agents])
        label = f"iteration {k}: power flow"

        def cb(t: int, label: str = label) -> None:
            if progress is not None:
                progress(label, t + 1, steps)

        es = net.resolve(elements)
        # elements of batteries placed earlier but not part of this case stay at 0 kW
        try:
            flow = net.run_series(es, kw, pf=None if np.isnan(pf).all() else pf, progress=cb)
        except GridmarketError as exc:
            raise in_iteration(exc, k) from exc
        viol = check_limits(flow, vmin_pu=case.network.vmin_pu, vmax_pu=case.network.vmax_pu,
                            monitored_nodes=mask, times=case.time.index)
        counts = count_violations(viol, bus_community=bus_community, line_bus=line_bus)
        welfare = float(np.sum(res.welfare))
        iterations.append(Iteration(k, dict(banks), ci, res, flow, viol, counts, welfare))
        n = counts["violations"]
        bt = iterations[best]
        if k > 0 and (n < bt.counts["violations"] or (n == bt.counts["violations"] and welfare > bt.welfare)):
            best = k
        if n == 0:
            stop = "no violations"
            break
        if case.placement.stop_when_worse and n > iterations[best].counts["violations"]:
            stop = f"violations rose above the best iteration's ({iterations[best].counts['violations']})"
            break
        grown = next_banks(banks, violated_buses(viol, net.downstream_bus), case.placement.ladder)
        if grown == banks:
            stop = "ladder exhausted at every violated bus"
            break
        for bus in grown:
            if bus not in bank_comm:
                comm = battery_community(bus, bus_comms, net.bus_distance)
                if comm is None:
                    msg = f"no community can take a battery at bus {bus!r}: no market agent is connected to it"
                    raise NetworkError(msg)
                bank_comm[bus] = comm
        banks = grown
    else:
        stop = f"reached max_iterations = {limit}"
    buses = net.buses.reset_index().rename(columns={"index": "bus"})
    out = StudyResult(case=case, iterations=iterations, best=best, stop_reason=stop,
                      runtime_s=time.perf_counter() - t0,
                      buses=buses[[c for c in ("bus", "x", "y", "kv_base") if c in buses.columns]],
                      lines=network_lines(net),
                      agent_buses=dict(grid.agent_bus), agent_elements=dict(grid.elements), network=net)
    out._monitored = mask
    return out
