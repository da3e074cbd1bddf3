"""One study step, used by every run: market → dispatch → power flow → limits, over a chunk of
steps, with the tables of the results contract (:mod:`gridmarket.contract`) built once.

:func:`run_iteration` runs one iteration of the placement loop over the whole horizon, in
chunks of ``chunk_steps`` steps: each chunk's market is cleared with the batteries' SoC carried
from the previous chunk, dispatched into the one :class:`Engine` (compiled once per run), its
power flow solved and its limits checked. Each chunk's per-step tables go to a :class:`Sink`:
:class:`MemorySink` keeps them (short runs, whose iterations keep their market and power-flow
results), :class:`StreamSink` appends them to Parquet files (long runs: memory flat in the
number of steps). :func:`~gridmarket.study.loop.run_study` calls it per iteration and
:func:`~gridmarket.study.long_run.run_long` once, so both count and write alike.

Counting rule (shared MODEL.md): a violation is one (bus, step), (line, step) or
(transformer, step) pair out of limits, whatever the number of phases; a step whose power flow
did not converge counts once (kind ``nonconvergence``) and is in ``violations`` too, so a
collapsed step never reads as "no violations".
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

from gridmarket import contract
from gridmarket.case.model import Agent, Case, GridPrices
from gridmarket.enums import AgentKind, NetworkMode
from gridmarket.errors import CaseError, GridmarketError, NetworkError, PowerFlowError, Problem, in_iteration
from gridmarket.market import MarketResult, clear_market
from gridmarket.network import OpenDSSNetwork, PowerFlowResult, check_limits, monitored_mask
from gridmarket.study.dispatch import dispatch_kw
from gridmarket.topology import bus_name

__all__ = [
    "BATTERY_PREFIX", "Engine", "IterationOutcome", "MemorySink", "Sink", "StreamSink", "Tally",
    "attach_agents", "check_network", "dispatch_kw", "run_iteration", "slice_case", "with_banks",
]

#: name prefix of batteries placed by the loop: ``SBU_<bus>``
BATTERY_PREFIX = "SBU_"

#: per-step files of the contract, in the order a chunk writes them
STEP_FILES = ("market.parquet", "communities.parquet", "violations.parquet", "voltages.parquet", "steps.parquet")

_KINDS = ("voltage", "current", "transformer", "nonconvergence")


# ---------------------------------------------------------------------------- case helpers

def slice_case(case: Case, start: int, stop: int) -> Case:
    """The steps ``start .. stop − 1`` of ``case`` as a case of their own.

    Profiles, grid prices and timestamps are cut; everything else (agents, options) is
    shared. Step 0 of the result is step ``start`` of ``case``.
    """
    steps = case.time.steps
    if not 0 <= start < stop <= steps:
        msg = f"cannot slice steps {start}..{stop} of a case of {steps} steps"
        raise ValueError(msg)
    if start == 0 and stop == steps:
        return case
    t = case.time
    new_start = None if t.start is None else t.start + pd.Timedelta(hours=t.step_hours * start)
    return replace(
        case,
        time=replace(t, steps=stop - start, start=new_start),
        grid=GridPrices(import_price=case.grid.import_price[start:stop],
                        export_price=case.grid.export_price[start:stop]),
        profile_kw=case.profile_kw[start:stop],
    )


def with_banks(case: Case, banks: Mapping[str, int], communities: Mapping[str, str]) -> Case:
    """The case with one battery agent per placed bank (``SBU_<bus>``, element ``bus:<bus>``)."""
    new = [Agent(name=f"{BATTERY_PREFIX}{bus}", kind=AgentKind.BATTERY, community=communities[bus],
                 element=f"bus:{bus}", units=units) for bus, units in sorted(banks.items())]
    if not new:
        return case
    prof = np.hstack([case.profile_kw, np.zeros((case.time.steps, len(new)))])
    prof.setflags(write=False)
    return replace(case, agents=case.agents + tuple(new), profile_kw=prof)


def customer_buses(case: Case, agent_bus: Mapping[str, str]) -> list[str]:
    """Buses where the case's agents connect (``monitored_buses = "customers"``), sorted."""
    return sorted({agent_bus[a.name] for a in case.agents if a.name in agent_bus})


def _monitored(net: OpenDSSNetwork, case: Case, agent_bus: Mapping[str, str]) -> np.ndarray:
    return monitored_mask(net.node_names, net.buses, case.network.monitored_buses,
                          customer_buses=customer_buses(case, agent_bus))


# ---------------------------------------------------------------------------- network checks

def check_network(case: Case, net: OpenDSSNetwork | None = None) -> str:
    """Check the case against its compiled network and report every mismatch at once
    (:func:`attach_agents` on ``net``, or on a network compiled here).

    :func:`~gridmarket.study.run_study`, :func:`~gridmarket.study.long_run.run_long` and
    ``gridmarket check`` / ``run`` make exactly these checks.

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
    rows = {a.name: i for i, a in enumerate(case.agents)}

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
    if not problems:  # every element exists: their ratings (what the power flow would refuse)
        from gridmarket.case.ratings import rating_problems

        problems += rating_problems(case, net, where)
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
    mb = case.network.monitored_buses
    if not (isinstance(mb, str) and mb.lower() == "customers"):
        try:
            monitored_mask(net.node_names, net.buses, mb)
        except NetworkError as exc:
            problems.append(Problem("case.toml", "[network].monitored_buses", str(exc)))
    if problems:
        raise CaseError(problems, case=case.name)
    return [created.get(a.name, a.element) for a in case.agents]


# ---------------------------------------------------------------------------- the engine

class Engine:
    """The compiled network of a run, with the elements of the case's agents and of the
    batteries placed by the loop, the monitored nodes, and the downstream bus of every line
    and transformer. Compiled once per run; :meth:`ensure` adds and resizes placed banks.

    ``case.network.source_pu`` is applied after compiling (through
    ``OpenDSSNetwork.set_source_pu`` where the engine has it, else the source's ``pu``).
    """

    def __init__(self, case: Case) -> None:
        self.case = case
        self.net = OpenDSSNetwork(case.network.master)
        pu = case.network.source_pu
        if pu is not None:
            setter = getattr(self.net, "set_source_pu", None)
            if setter is not None:
                setter(pu)
            else:  # before the engine had a setter: the circuit's source element
                self.net.command(f"Vsource.source.pu={pu:.12g}")
        self.elements: dict[str, str] = dict(zip(case.agent_names, attach_agents(case, self.net), strict=True))
        self.units: dict[str, int] = {a.name: a.units for a in case.agents if a.bus is not None}
        self.agent_bus: dict[str, str] = dict(zip(
            self.elements, self.net.element_buses(self.net.resolve(list(self.elements.values()))), strict=True))
        self.mask = _monitored(self.net, case, self.agent_bus)
        names = np.asarray(self.net.node_names, dtype=object)[self.mask]
        self.node_bus = np.array([s.rsplit(".", 1)[0] for s in names], dtype=object)
        self.node_phase = np.array([int(s.rsplit(".", 1)[1]) for s in names], dtype=np.int16)
        self.monitored_buses = frozenset(self.node_bus.tolist())
        codes, words = pd.factorize(pd.Series(self.node_bus, dtype=object))
        self._bus_codes = codes.astype(np.int32)
        self._bus_words = pa.array([str(w) for w in words], type=pa.string())
        #: line or transformer element -> its downstream bus (the topology's one rule)
        self.downstream: dict[str, str] = dict(self.net.topology.downstream_buses())

    # -- elements
    def ensure(self, case: Case) -> list[str]:
        """Element names of every agent of ``case``, creating placed batteries as needed and
        resizing banks that grew."""
        b = case.battery
        new: list[str] = []
        for a in case.agents:
            if a.kind is AgentKind.BATTERY and a.name in self.elements and self.units.get(a.name) != a.units:
                self.net.resize_battery(self.elements[a.name], kw_rated=a.units * b.unit_kw,
                                        kwh=a.units * b.unit_kwh)
                self.units[a.name] = a.units
            if a.name not in self.elements:
                assert a.bus is not None
                self.units[a.name] = a.units
                self.elements[a.name] = self.net.add_battery(a.name, a.bus, kw_rated=a.units * b.unit_kw,
                                                             kwh=a.units * b.unit_kwh)
                new.append(a.name)
        if new:  # one look-up for all new banks (one per bank lists every element of its class: quadratic)
            buses = self.net.element_buses(self.net.resolve([self.elements[n] for n in new]))
            self.agent_bus.update(zip(new, buses, strict=True))
        return [self.elements[a.name] for a in case.agents]

    def network_lines(self) -> pd.DataFrame:
        """network_lines.csv: lines (and transformers, where the engine lists them) by element
        name, their buses and the downstream bus placement uses."""
        lines = self.net.lines
        names = [str(n) for n in lines.index]
        frame = pd.DataFrame({"element": names, "bus1": lines["bus1"].to_numpy(), "bus2": lines["bus2"].to_numpy(),
                              "downstream_bus": [self.downstream.get(n, "") for n in names], "kind": "line"})
        tx = _transformer_table(self.net)
        if len(tx):
            tx = tx.assign(downstream_bus=[self.downstream.get(n, "") for n in tx["element"]], kind="transformer")
            frame = pd.concat([frame, tx[list(frame.columns)]], ignore_index=True)
        return contract.conform(frame, "network_lines.csv")

    def network_buses(self) -> pd.DataFrame:
        """network_buses.csv: coordinates, base voltage, distance from the source and customers."""
        buses = self.net.buses.reset_index().rename(columns={"index": "bus"})
        if "bus" not in buses.columns:
            buses = buses.rename(columns={buses.columns[0]: "bus"})
        counts = pd.Series(list(self.agent_bus.values()), dtype=object).value_counts()
        buses["customers"] = buses["bus"].map(counts).fillna(0).astype(np.int64)
        km = self.net.topology.distance_km()
        buses["distance_km"] = buses["bus"].map(km).astype(float)
        return contract.conform(buses[[c for c in contract.table("network_buses.csv").names if c in buses.columns]],
                                "network_buses.csv")

    def pv_kwp(self, case: Case) -> float | None:
        """Σ Pmpp of the producers' PVSystems [kWp], None when the engine cannot tell."""
        try:
            dss = self.net.dss
            total = 0.0
            for a in case.agents_of(AgentKind.PRODUCER):
                cls, _, name = self.elements[a.name].partition(".")
                if cls.lower() != "pvsystem":
                    continue
                dss.PVsystems.Name(name)
                total += float(dss.PVsystems.Pmpp())
            return total
        except Exception:  # noqa: BLE001  (an engine without PV access: the summary leaves it out)
            return None


def _transformer_table(net: OpenDSSNetwork) -> pd.DataFrame:
    """element, bus1, bus2 of every transformer in the engine's topology (first two windings)."""
    ends: dict[str, list[str]] = {}
    for e in net.topology.edges:
        if e.kind == "transformer":
            lst = ends.setdefault(e.name.lower(), [])
            for b in (bus_name(e.bus1), bus_name(e.bus2)):
                if b not in lst:
                    lst.append(b)
    rows = [(name, b[0], b[1]) for name, b in ends.items() if len(b) >= 2]
    return pd.DataFrame(rows, columns=["element", "bus1", "bus2"])


# ---------------------------------------------------------------------------- counting

@dataclass
class Tally:
    """Violation counts of an iteration, added chunk by chunk (the counting rule above).

    ``owners[kind]`` are the buses (voltage) and elements (current: ``line.x``, transformer:
    ``transformer.x``) out of limits in some step, which placement reads.
    """

    pairs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_KINDS, 0))
    owners: dict[str, set[str]] = field(default_factory=lambda: {k: set() for k in _KINDS})
    steps_violated: int = 0
    v_min_pu: float = math.inf
    v_max_pu: float = -math.inf
    loading_max: float = -math.inf

    def add(self, viol: pd.DataFrame, steps: int) -> np.ndarray:
        """Add one chunk's violation rows (steps ``0 .. steps − 1`` of the chunk); return the
        violations per step of the chunk."""
        per_step = np.zeros(steps, dtype=np.int32)
        if not len(viol):
            return per_step
        kind = viol["kind"].astype(str).to_numpy()
        owner = contract.violation_owner(kind, viol["element"].to_numpy())
        step = viol["step"].to_numpy(dtype=np.int64)
        df = pd.DataFrame({"kind": kind, "owner": owner, "step": step}).drop_duplicates()
        for k, n in df["kind"].value_counts().items():
            self.pairs[str(k)] = self.pairs.get(str(k), 0) + int(n)
        for k, grp in df.groupby("kind")["owner"]:
            self.owners.setdefault(str(k), set()).update(grp.tolist())
        np.add.at(per_step, df["step"].to_numpy(), 1)
        self.steps_violated += int(np.count_nonzero(per_step))
        value = viol["value"].to_numpy(dtype=float)
        limit = viol["limit"].to_numpy(dtype=float)
        volt = kind == "voltage"
        low, high = volt & (value < limit), volt & (value > limit)
        if low.any():
            self.v_min_pu = min(self.v_min_pu, float(value[low].min()))
        if high.any():
            self.v_max_pu = max(self.v_max_pu, float(value[high].max()))
        cur = kind == "current"
        if cur.any():
            self.loading_max = max(self.loading_max, float((value[cur] / limit[cur]).max()))
        return per_step

    @property
    def counts(self) -> dict[str, Any]:
        """Totals: ``violations`` (all kinds), one count per kind, distinct buses and lines
        violated, steps with any violation, worst voltages [pu] and loading [%] (NaN: none)."""
        p = self.pairs
        return {
            "violations": int(sum(p.values())),
            "voltage_violations": int(p.get("voltage", 0)), "current_violations": int(p.get("current", 0)),
            "transformer_violations": int(p.get("transformer", 0)),
            "nonconverged_steps": int(p.get("nonconvergence", 0)),
            "buses_violated": len(self.owners.get("voltage", ())),
            "lines_violated": len(self.owners.get("current", ())),
            "transformers_violated": len(self.owners.get("transformer", ())),
            "steps_violated": self.steps_violated,
            "v_min_pu": self.v_min_pu if math.isfinite(self.v_min_pu) else math.nan,
            "v_max_pu": self.v_max_pu if math.isfinite(self.v_max_pu) else math.nan,
            "loading_max_percent": self.loading_max * 100.0 if math.isfinite(self.loading_max) else math.nan,
        }

    def violated_buses(self, downstream: Mapping[str, str], monitored: frozenset[str] | None = None) -> set[str]:
        """Buses placement acts on: each voltage violation's bus, each overloaded line's or
        transformer's downstream bus; only monitored buses when ``monitored`` is given."""
        out = set(self.owners.get("voltage", ()))
        for kind in ("current", "transformer"):
            out.update(downstream[e] for e in self.owners.get(kind, ()) if e in downstream)
        if monitored is not None:
            out &= monitored
        return out


# ---------------------------------------------------------------------------- sinks

class Sink(Protocol):
    """Where the per-step tables of the chunks go."""

    def write(self, file: str, columns: Mapping[str, Any]) -> None: ...


class MemorySink:
    """Keeps every chunk's tables as Arrow tables; :meth:`frame` concatenates a file's."""

    def __init__(self) -> None:
        self.tables: dict[str, list[pa.Table]] = {f: [] for f in STEP_FILES}

    def write(self, file: str, columns: Mapping[str, Any]) -> None:
        self.tables[file].append(contract.to_arrow(columns, file))

    def frame(self, file: str) -> pd.DataFrame:
        parts = self.tables[file]
        t = pa.concat_tables(parts) if parts else contract.table(file).schema.empty_table()
        return contract.to_frame(t, file)


class StreamSink:
    """Appends every chunk's tables to the Parquet files of ``folder`` (one writer per file)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.streams: dict[str, contract.ParquetStream] = {}
        self.seconds = 0.0

    def write(self, file: str, columns: Mapping[str, Any]) -> None:
        t0 = time.perf_counter()
        if file not in self.streams:
            self.streams[file] = contract.ParquetStream(self.folder, file)
        self.streams[file].write(columns)
        self.seconds += time.perf_counter() - t0

    def close(self) -> dict[str, Path]:
        """Close every file (each per-step file exists, possibly empty); their paths."""
        for f in STEP_FILES:
            if f not in self.streams:
                self.streams[f] = contract.ParquetStream(self.folder, f)
        for s in self.streams.values():
            s.close()
        return {f: s.path for f, s in self.streams.items()}


# ---------------------------------------------------------------------------- one iteration

@dataclass
class IterationOutcome:
    """What one iteration over the whole horizon gave (no per-step arrays unless kept)."""

    welfare: float  #: reported welfare summed over the steps [currency]
    welfare_realised: float  #: without the batteries' v·ΔE terms [currency]
    stored_energy_value: float  #: Σ v_end·(E_end − E_start) [currency]
    breakdown: dict[str, float]  #: part -> currency, parts sum to welfare_realised
    solver: str  #: "fast", "clarabel", "fast+clarabel" or "none"
    tally: Tally
    counts: dict[str, Any]
    chunks: int
    stage_s: dict[str, float]
    market: MarketResult | None = None  #: kept when the horizon was one chunk and ``keep``
    flow: PowerFlowResult | None = None
    violations: pd.DataFrame | None = None
    network: list[dict[str, Any]] = field(default_factory=list)  #: aware market: its summary per chunk
    aware: Any = None  #: aware market: gridmarket.study.aware.AwareTally (residual rows, relief values), else None


Progress = Callable[[int, int], None]  #: (steps done, steps total)


def _step_times(case: Case) -> np.ndarray:
    idx = case.time.index
    if isinstance(idx, pd.DatetimeIndex):
        return np.asarray(idx, dtype="datetime64[ns]")
    return np.full(len(idx), np.datetime64("NaT"), dtype="datetime64[ns]")


@dataclass(frozen=True)
class _Labels:
    """The case's names as dictionary codes (text columns built once, tiled per chunk)."""

    agents: pa.Array
    kinds: pa.Array
    kind_codes: np.ndarray
    comms: pa.Array
    comm_codes: np.ndarray  #: per agent ('' for passive agents)
    community_codes: np.ndarray  #: per market community (communities frame order)
    buses: pa.Array
    bus_codes: np.ndarray

    @classmethod
    def of(cls, case: Case, agent_bus: Mapping[str, str]) -> _Labels:
        kinds = [a.kind.value for a in case.agents]
        comms = [(a.community or "") if a.kind is not AgentKind.PASSIVE else "" for a in case.agents]
        kind_words = sorted(set(kinds))
        comm_words = sorted(set(comms) | set(case.communities))
        buses = [agent_bus.get(a.name, "") for a in case.agents]
        bus_words = sorted(set(buses))
        kind_at = {w: i for i, w in enumerate(kind_words)}  # dicts, not list.index: linear in agents
        comm_at = {w: i for i, w in enumerate(comm_words)}
        bus_at = {w: i for i, w in enumerate(bus_words)}
        return cls(agents=pa.array(case.agent_names, type=pa.string()),
                   kinds=pa.array(kind_words, type=pa.string()),
                   kind_codes=np.array([kind_at[k] for k in kinds], dtype=np.int32),
                   comms=pa.array(comm_words, type=pa.string()),
                   comm_codes=np.array([comm_at[c] for c in comms], dtype=np.int32),
                   community_codes=np.array([comm_at[c] for c in case.communities], dtype=np.int32),
                   buses=pa.array(bus_words, type=pa.string()),
                   bus_codes=np.array([bus_at[b] for b in buses], dtype=np.int32))


def _dict(codes: np.ndarray, words: pa.Array) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(np.asarray(codes, dtype=np.int32)), words)


def _market_columns(labels: _Labels, res: MarketResult, k: int, s0: int, times: np.ndarray) -> dict[str, Any]:
    df = res.market
    n = len(labels.agents)
    steps = len(times)
    if len(df) != n * steps or (n and df["agent"].iloc[:n].tolist() != labels.agents.to_pylist()):
        msg = f"market frame is not step-major with agents in case order ({len(df)} rows)"
        raise RuntimeError(msg)
    price = df["price"].to_numpy(dtype=float)
    cols: dict[str, Any] = {
        "iteration": np.full(n * steps, k, dtype=np.int32),
        "step": np.repeat(np.arange(s0, s0 + steps, dtype=np.int64), n),
        "time": np.repeat(times, n),
        "agent": _dict(np.tile(np.arange(n, dtype=np.int32), steps), labels.agents),
        "kind": _dict(np.tile(labels.kind_codes, steps), labels.kinds),
        "community": _dict(np.tile(labels.comm_codes, steps), labels.comms),
        "bus": _dict(np.tile(labels.bus_codes, steps), labels.buses),
        "price_energy": df["price_energy"].to_numpy(dtype=float) if "price_energy" in df.columns else price,
        "price_voltage": (df["price_voltage"].to_numpy(dtype=float) if "price_voltage" in df.columns
                          else np.where(np.isnan(price), np.nan, 0.0)),
        "price_congestion": (df["price_congestion"].to_numpy(dtype=float) if "price_congestion" in df.columns
                             else np.where(np.isnan(price), np.nan, 0.0)),
    }
    for c in ("P_kw", "S_kw", "phi_kw", "alpha_kw", "beta_kw", "soc", "price", "payment"):
        cols[c] = df[c].to_numpy(dtype=float)
    return cols


def _community_columns(labels: _Labels, res: MarketResult, k: int, s0: int, times: np.ndarray) -> dict[str, Any]:
    df = res.communities
    nc = len(labels.community_codes)
    steps = len(times)
    return {"iteration": np.full(nc * steps, k, dtype=np.int32),
            "step": np.repeat(np.arange(s0, s0 + steps, dtype=np.int64), nc),
            "time": np.repeat(times, nc),
            "community": _dict(np.tile(labels.community_codes, steps), labels.comms),
            **{c: df[c].to_numpy(dtype=float) for c in ("price", "import_kwh", "export_kwh", "welfare")}}


def _values(case: Case) -> np.ndarray:
    """v_n per step [currency/kWh]: a number, or "mean-price" (mean of import and export price)."""
    value = case.battery.value
    if isinstance(value, str):
        return (np.asarray(case.grid.import_price, dtype=float) + np.asarray(case.grid.export_price, dtype=float)) / 2
    return np.full(case.time.steps, float(value))


def _valued_energy(case: Case, res: MarketResult, soc_start: Mapping[str, float] | None) -> float:
    """Σ_t Σ_b v_t·ΔE_{b,t} [currency] of a cleared slice, from its SoC path:
    ``ΔE_t = cap·(SoC_t − SoC_{t−1}·(1 − λ_sd))`` (both battery models)."""
    bats = [i for i, a in enumerate(case.agents) if a.kind is AgentKind.BATTERY]
    if not bats or case.time.steps == 0:
        return 0.0
    b = case.battery
    cap = np.array([case.agents[i].units * b.unit_kwh for i in bats])
    soc = np.asarray(res.soc)[:, bats]
    start = np.array([(soc_start or {}).get(case.agents[i].name, b.soc_init) for i in bats])
    prev = np.vstack([start, soc[:-1]])
    de = cap * (soc - prev * (1.0 - b.self_discharge))
    return float((_values(case)[:, None] * de).sum())


def _stored_value(case: Case, soc_end: Mapping[str, float] | None) -> float:
    """Σ_b v_end·(E_end − E_start) over the run [currency] (v_end: the last step's value)."""
    bats = [a for a in case.agents if a.kind is AgentKind.BATTERY]
    if not bats or not soc_end or case.time.steps == 0:
        return 0.0
    b = case.battery
    de = sum(a.units * b.unit_kwh * (soc_end[a.name] - b.soc_init) for a in bats)
    return float(_values(case)[-1] * de)


#: keywords of clear_market for a slice of a longer run (cyclic SoC at the end of the run)
_SLICE_KW = {"steps_after", "soc_target"} <= set(inspect.signature(clear_market).parameters)


def realised_part(realised: float | None, welfare: np.ndarray, valued: float) -> float:
    """A slice's realised welfare [currency]: the market's, else reported minus valued energy."""
    return float(realised) if realised is not None else float(welfare.sum()) - valued


def _combine_solvers(solvers: list[str]) -> str:
    parts = {p for s in solvers for p in str(s).split("+") if p and p != "none"}
    order = [p for p in ("fast", "clarabel") if p in parts] + sorted(parts - {"fast", "clarabel"})
    return "+".join(order) if order else "none"


def run_iteration(engine: Engine, case: Case, index: int, sink: Sink, *, chunk_steps: int | None = None,
                  power_flow: str = "auto", market_kw: Mapping[str, Any] | None = None,
                  progress: Progress | None = None, keep: bool = False) -> IterationOutcome:
    """Market → dispatch → power flow → limits of ``case`` (the iteration's agents, placed
    batteries included) over its whole horizon, in chunks; tables to ``sink``.

    Parameters
    ----------
    engine : Engine
        The run's network (placed batteries are created or resized here).
    case : Case
        The iteration's case.
    index : int
        The iteration (the ``iteration`` column).
    sink : Sink
        Receives each chunk's per-step tables (:data:`STEP_FILES`).
    chunk_steps : int, optional
        Steps per chunk (default: the whole horizon in one chunk).
    power_flow : {"auto", "shapes", "snapshot"}
        Engine method; ``"auto"``: ``"shapes"`` (one yearly-mode session over the chunks) when
        the elements allow it, else ``"snapshot"``.
    market_kw : mapping, optional
        Extra keywords of :func:`gridmarket.market.clear_market` (e.g. ``method="qp"``).
    progress : callable, optional
        ``progress(steps_done, steps_total)`` after each chunk (each step in a one-chunk
        snapshot run).
    keep : bool
        Keep the market result, power flow and violations (one-chunk runs only).

    Raises
    ------
    GridmarketError
        From the market or the engine, naming the iteration and step.
    """
    steps = case.time.steps
    chunk = max(1, int(chunk_steps or steps or 1))
    market_kw = dict(market_kw or {})
    t0 = time.perf_counter()
    try:
        elements = engine.ensure(case)
        es = engine.net.resolve(elements)
    except GridmarketError as exc:
        raise in_iteration(exc, index) from exc
    labels = _Labels.of(case, engine.agent_bus)
    pf = np.array([a.pf if a.pf is not None else np.nan for a in case.agents])
    pf_arg = None if np.isnan(pf).all() else pf
    aware = case.market.network is NetworkMode.AWARE
    session = None
    if power_flow in ("auto", "shapes") and not aware:  # the aware market runs its own power flows
        try:
            session = engine.net.shape_session(es)
        except ValueError:
            if power_flow == "shapes":
                raise
    stage = {"setup": time.perf_counter() - t0, "market": 0.0, "network": 0.0, "tables": 0.0}
    tally = Tally()
    soc: dict[str, float] | None = None
    lo, hi = case.battery.soc_min, case.battery.soc_max
    bat_idx = [i for i, a in enumerate(case.agents) if a.kind is AgentKind.BATTERY]
    welfare = realised = stored = 0.0
    target = {case.agents[i].name: case.battery.soc_init for i in bat_idx}  # cyclic: back where the run began
    breakdown: dict[str, float] = {}
    solvers: list[str] = []
    network_notes: list[dict[str, Any]] = []  # the aware market's summary per chunk
    tally_aware: Any = None  # ... and its residual rows and relief values (gridmarket.study.aware.AwareTally)
    n_chunks = 0
    res: MarketResult | None = None
    kept: tuple[Any, Any, Any] | None = None
    vmin, vmax = case.network.vmin_pu, case.network.vmax_pu
    try:
        for s0 in range(0, steps, chunk):
            s1 = min(steps, s0 + chunk)
            n_chunks += 1
            part = slice_case(case, s0, s1)
            t1 = time.perf_counter()
            slice_kw: dict[str, Any] = {}
            if _SLICE_KW and (s0 > 0 or s1 < steps):
                slice_kw = {"steps_after": steps - s1, "soc_target": target}
            flow = None
            try:
                if aware:
                    from gridmarket.study.aware import AwareTally, clear_aware  # below the loop, above the market

                    aw = clear_aware(part, engine.net, es, pf=pf_arg, monitored=engine.mask,
                                     market_kw={"soc_init": soc, **slice_kw, **market_kw})
                    res, flow = aw.market, aw.flow
                    network_notes.append(aw.summary())
                    tally_aware = tally_aware or AwareTally()
                    tally_aware.add(aw, s0)
                else:
                    res = clear_market(part, soc_init=soc, **slice_kw, **market_kw)
            except GridmarketError as exc:
                raise in_iteration(_in_horizon(exc, s0), index) from exc
            start_soc = soc
            if bat_idx:
                last = np.asarray(res.soc)[-1]
                soc = {case.agents[i].name: float(np.clip(last[i], lo, hi)) for i in bat_idx}
            kw = dispatch_kw(part, res)
            w = res.welfare.to_numpy(dtype=float)
            welfare += float(w.sum())
            r = getattr(res, "welfare_realised", None)
            valued = 0.0 if r is not None else _valued_energy(part, res, start_soc)
            realised += float(r) if r is not None else float(w.sum()) - valued
            sv = getattr(res, "stored_energy_value", None)
            if n_chunks == 1 and s1 == steps and sv is not None:
                stored = float(sv)
            parts = getattr(res, "welfare_breakdown", None)
            for name, value in (parts or {"unattributed": realised_part(r, w, valued)}).items():
                breakdown[name] = breakdown.get(name, 0.0) + float(value)
            solvers.append(str(getattr(res, "solver_used", None) or res.solver))
            t2 = time.perf_counter()
            stage["market"] += t2 - t1
            cb = None
            if progress is not None and session is None and n_chunks == 1 and s1 == steps:
                def cb(t: int) -> None:
                    progress(t + 1, steps)
            try:
                if flow is None:
                    flow = (session.run(kw, pf=pf_arg) if session is not None
                            else engine.net.run_series(es, kw, pf=pf_arg, progress=cb))
            except PowerFlowError as exc:
                raise in_iteration(_in_horizon(exc, s0), index) from exc
            except GridmarketError as exc:
                raise in_iteration(exc, index) from exc
            times = _step_times(part)
            viol = check_limits(flow, vmin_pu=vmin, vmax_pu=vmax, monitored_nodes=engine.mask, times=part.time.index)
            t3 = time.perf_counter()
            stage["network"] += t3 - t2
            per_step = tally.add(viol, s1 - s0)
            _write_chunk(sink, engine, labels, index, s0, times, res, flow, viol, w, per_step)
            stage["tables"] += time.perf_counter() - t3
            if keep and n_chunks == 1 and s1 == steps:
                kept = (res, flow, viol)
            if progress is not None:
                progress(s1, steps)
    finally:
        if session is not None:
            session.close()
    if not (n_chunks == 1 and res is not None and getattr(res, "stored_energy_value", None) is not None):
        stored = _stored_value(case, soc)
    return IterationOutcome(
        welfare=welfare, welfare_realised=realised, stored_energy_value=stored, breakdown=breakdown,
        solver=_combine_solvers(solvers), tally=tally, counts=tally.counts, chunks=n_chunks, stage_s=stage,
        market=kept[0] if kept else None, flow=kept[1] if kept else None, violations=kept[2] if kept else None,
        network=network_notes, aware=tally_aware)


def _in_horizon(exc: GridmarketError, s0: int) -> GridmarketError:
    """``exc`` of a chunk starting at step ``s0``, its step counted in the whole horizon."""
    if s0 == 0:
        return exc
    step = getattr(exc, "step", None)
    if isinstance(exc, PowerFlowError):
        return PowerFlowError(f"{exc} (step {None if step is None else s0 + step} of the horizon, "
                              f"in the chunk from step {s0})", step=None if step is None else s0 + step)
    return exc


def _write_chunk(sink: Sink, engine: Engine, labels: _Labels, k: int, s0: int, times: np.ndarray,
                 res: MarketResult, flow: PowerFlowResult, viol: pd.DataFrame, welfare: np.ndarray,
                 per_step: np.ndarray) -> None:
    L = len(times)
    sink.write("market.parquet", _market_columns(labels, res, k, s0, times))
    sink.write("communities.parquet", _community_columns(labels, res, k, s0, times))
    vs = viol["step"].to_numpy(dtype=np.int64)
    sink.write("violations.parquet", {
        "iteration": np.full(len(viol), k, dtype=np.int32), "step": vs + s0, "time": times[vs],
        "kind": viol["kind"], "element": viol["element"],
        "value": viol["value"].to_numpy(dtype=float), "limit": viol["limit"].to_numpy(dtype=float)})
    v = flow.v_pu[:, engine.mask]
    n = v.shape[1]
    sink.write("voltages.parquet", {
        "iteration": np.full(L * n, k, dtype=np.int32),
        "step": np.repeat(np.arange(s0, s0 + L, dtype=np.int32), n),
        "time": np.repeat(times, n),
        "bus": pa.DictionaryArray.from_arrays(pa.array(np.tile(engine._bus_codes, L)), engine._bus_words),
        "phase": np.tile(engine.node_phase, L), "v_pu": v.reshape(-1)})
    with np.errstate(invalid="ignore", divide="ignore"):
        loading = flow.i_amps / flow.norm_amps
    tx = getattr(flow, "transformer_loading", None)
    if tx is not None and np.size(tx):
        loading = np.hstack([loading, np.asarray(tx, dtype=float)])
    sink.write("steps.parquet", {
        "iteration": np.full(L, k, dtype=np.int32), "step": np.arange(s0, s0 + L, dtype=np.int64), "time": times,
        "welfare": welfare, "v_min_pu": _reduce(np.fmin, v, L), "v_max_pu": _reduce(np.fmax, v, L),
        "loading_max": _reduce(np.fmax, loading, L), "violations": per_step})


def _reduce(fn: np.ufunc, a: np.ndarray, steps: int) -> np.ndarray:
    if a.ndim != 2 or a.shape[1] == 0:
        return np.full(steps, np.nan)
    with np.errstate(invalid="ignore"):
        return np.asarray(fn.reduce(a, axis=1), dtype=float)
