"""The study loop (stages I-VII of shared MODEL.md): market -> dispatch -> power flow ->
limits -> battery placement, repeated until the violations are gone, the ladder is
exhausted, or the violations rise above the best iteration's.

Each iteration is one :func:`gridmarket.study.pipeline.run_iteration` over the whole horizon
(the step that :func:`~gridmarket.study.long_run.run_long` uses too). Short horizons keep each
iteration's market and power-flow results in memory; long ones (``stream``) append the
per-step tables of every iteration to Parquet files as they go, so memory stays flat in the
number of steps. Stop rules and the best iteration: :mod:`gridmarket.study.rules`.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gridmarket import __version__, contract
from gridmarket import economics as costs
from gridmarket.case.model import Case
from gridmarket.enums import AgentKind, NetworkMode, PlacementRule
from gridmarket.errors import NetworkError
from gridmarket.market import MarketResult
from gridmarket.network import OpenDSSNetwork, PowerFlowResult
from gridmarket.results import Results
from gridmarket.study import rules
from gridmarket.study.pipeline import (
    BATTERY_PREFIX,
    STEP_FILES,
    Engine,
    IterationOutcome,
    MemorySink,
    StreamSink,
    attach_agents,
    check_network,
    dispatch_kw,
    run_iteration,
    with_banks,
)
from gridmarket.study.placement import battery_community, next_banks
from gridmarket.study.value_placement import check_rule
from gridmarket.study.value_placement import next_unit as value_unit

__all__ = ["BATTERY_PREFIX", "STREAM_STEPS", "CHUNK_STEPS", "Iteration", "StudyProgress", "StudyResult",
           "attach_agents", "check_network", "dispatch_kw", "run_study", "with_banks"]

#: horizons longer than this stream their per-step tables to Parquet (``stream="auto"``)
STREAM_STEPS = 1000
#: steps per chunk of a streamed run (30 days of hourly steps)
CHUNK_STEPS = 720

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class StudyProgress:
    """Where a run is, for a progress line with an ETA.

    Attributes
    ----------
    iteration : int
        The iteration running.
    max_iterations : int
        The loop's limit (it may stop earlier).
    done, total : int
        Steps of this iteration solved, and its horizon.
    elapsed_s : float
        Wall time since the run started [s].
    eta_s : float or None
        Estimated seconds to the end of this iteration (from the rate so far); None before
        the first chunk is done.
    """

    iteration: int
    max_iterations: int
    done: int
    total: int
    elapsed_s: float
    eta_s: float | None

    @property
    def text(self) -> str:
        """``"iteration 2 (of at most 10): 4,380/8,760 steps, 12.3 s, ETA 3.1 s"``."""
        eta = "" if self.eta_s is None else f", ETA {self.eta_s:.1f} s"
        return (f"iteration {self.iteration} (of at most {self.max_iterations}): {self.done:,}/{self.total:,} steps,"
                f" {self.elapsed_s:.1f} s{eta}")


@dataclass
class Iteration:
    """One pass of the loop: the banks it ran with and what came out.

    ``market``, ``flow`` and ``violations`` are kept for in-memory runs only (None when the
    iteration was streamed to files).
    """

    index: int
    banks: dict[str, int]  #: bus -> SBUs placed by the loop before this iteration
    case: Case  #: the case with the placed batteries as agents
    market: MarketResult | None
    flow: PowerFlowResult | None
    violations: pd.DataFrame | None
    counts: dict[str, Any]
    welfare: float  #: total reported welfare over the horizon [currency]
    welfare_realised: float = math.nan  #: without the batteries' v·ΔE [currency]
    stored_energy_value: float = 0.0  #: Σ v_end·(E_end − E_start) [currency]
    battery_annuity: float = 0.0  #: annuity of the placed units prorated to the run [currency]
    breakdown: dict[str, float] = field(default_factory=dict)  #: realised welfare by part [currency]
    solver: str = "none"  #: what cleared this iteration's market
    runtime_s: float = 0.0
    stage_s: dict[str, float] = field(default_factory=dict)
    network: list[dict[str, Any]] = field(default_factory=list)  #: aware market's outer loop, per chunk
    aware: Any = None  #: aware market: gridmarket.study.aware.AwareTally (residual rows, relief values), else None

    @property
    def battery_units(self) -> int:
        return int(sum(self.banks.values()))

    @property
    def score(self) -> rules.Score:
        return rules.Score(int(self.counts["violations"]), self.welfare_realised, self.welfare)


@dataclass
class StudyResult:
    """All iterations of a study run, the best one, and why it stopped."""

    case: Case
    iterations: list[Iteration]
    best: int
    stop_reason: str
    runtime_s: float
    buses: pd.DataFrame  #: network_buses.csv
    lines: pd.DataFrame  #: network_lines.csv (element, bus1, bus2, downstream_bus, kind)
    agent_buses: dict[str, str] = field(default_factory=dict)  #: agent -> bus
    agent_elements: dict[str, str] = field(default_factory=dict)  #: agent -> OpenDSS element
    network: OpenDSSNetwork | None = None  #: the engine, left at the last step solved
    files: dict[str, Path] = field(default_factory=dict)  #: streamed per-step tables (long runs)
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)  #: per-step tables (in-memory runs)
    params: dict[str, Any] = field(default_factory=dict)  #: run parameters for summary.json
    command_runtime_s: float | None = None  #: set by the caller that writes the folder

    @property
    def solver(self) -> str:
        """What cleared the markets of the whole run (``"fast"``, ``"clarabel"``, ``"fast+clarabel"``)."""
        parts = {p for it in self.iterations for p in it.solver.split("+") if p and p != "none"}
        order = [p for p in ("fast", "clarabel") if p in parts] + sorted(parts - {"fast", "clarabel"})
        return "+".join(order) if order else "none"

    # ------------------------------------------------------------------ tables
    def iteration_table(self) -> pd.DataFrame:
        """iterations.csv (columns of :data:`gridmarket.contract.TABLES`)."""
        base = self.iterations[0].welfare_realised if self.iterations else math.nan
        rows = []
        for it in self.iterations:
            c = it.counts
            rows.append({
                "iteration": it.index, "welfare": it.welfare, "welfare_realised": it.welfare_realised,
                "stored_energy_value": it.stored_energy_value, "battery_annuity": it.battery_annuity,
                "net_benefit": (it.welfare_realised - base) - it.battery_annuity,
                "violations": c["violations"], "voltage_violations": c["voltage_violations"],
                "current_violations": c["current_violations"],
                "transformer_violations": c.get("transformer_violations", 0),
                "nonconverged_steps": c.get("nonconverged_steps", 0),
                "buses_violated": c["buses_violated"], "lines_violated": c["lines_violated"],
                "battery_units": it.battery_units,
            })
        return contract.conform(pd.DataFrame(rows, columns=list(contract.table("iterations.csv").names)),
                                "iterations.csv")

    def breakdown_table(self) -> pd.DataFrame:
        """welfare_breakdown.csv: iteration, part, value [currency]."""
        rows = [{"iteration": it.index, "part": part, "value": value}
                for it in self.iterations for part, value in it.breakdown.items()]
        return contract.conform(pd.DataFrame(rows, columns=["iteration", "part", "value"]), "welfare_breakdown.csv")

    def battery_table(self) -> pd.DataFrame:
        """batteries.csv: every battery agent of every iteration."""
        b = self.case.battery
        rows = [{"iteration": it.index, "agent": a.name, "bus": self.agent_buses.get(a.name, a.bus or ""),
                 "community": a.community or "", "units": a.units, "kw": a.units * b.unit_kw,
                 "kwh": a.units * b.unit_kwh}
                for it in self.iterations for a in it.case.agents_of(AgentKind.BATTERY)]
        return contract.conform(pd.DataFrame(rows, columns=list(contract.table("batteries.csv").names)),
                                "batteries.csv")

    def agent_table(self) -> pd.DataFrame:
        """agents.csv: the agents of the last iteration."""
        rows = [{"agent": a.name, "kind": a.kind.value, "community": a.community or "", "element": a.element,
                 "bus": self.agent_buses.get(a.name, "")} for a in self.iterations[-1].case.agents]
        return contract.conform(pd.DataFrame(rows, columns=list(contract.table("agents.csv").names)), "agents.csv")

    def summary(self) -> dict[str, Any]:
        """summary.json."""
        case = self.case
        table = self.iteration_table()
        best = self.iterations[self.best]
        gain = best.welfare_realised - self.iterations[0].welfare_realised
        be = (costs.break_even_capex_per_kwh(gain, best.battery_units, case.battery, case.time.steps,
                                             case.time.step_hours) if best.battery_units else None)
        return {
            "case": case.name, "version": __version__, "currency": case.currency,
            "battery_model": case.market.battery_model.value, "horizon": case.market.horizon,
            "network_mode": case.market.network.value, "terminal_soc": case.battery.terminal_soc.value,
            "solver": self.solver, "solver_used": [it.solver for it in self.iterations],
            "steps": case.time.steps, "step_hours": case.time.step_hours,
            "vmin_pu": case.network.vmin_pu, "vmax_pu": case.network.vmax_pu,
            "iterations": len(self.iterations), "best_iteration": self.best, "stop_reason": self.stop_reason,
            "welfare": [round(float(w), 10) for w in table["welfare"]],
            "welfare_realised": [round(float(w), 10) for w in table["welfare_realised"]],
            "net_benefit": [round(float(w), 10) for w in table["net_benefit"]],
            "violations": [int(v) for v in table["violations"]],
            "nonconverged_steps": [int(v) for v in table["nonconverged_steps"]],
            "battery_costed": costs.costed(case.battery),
            **({"network_aware": [it.network for it in self.iterations]}
               if case.market.network is NetworkMode.AWARE else {}),
            "break_even_capex_per_kwh": None if be is None or not math.isfinite(be) else round(be, 6),
            **self.params,
            "runtime_s": round(self.runtime_s, 3),
            "command_runtime_s": None if self.command_runtime_s is None else round(self.command_runtime_s, 3),
        }

    def to_results(self) -> Results:
        """The results tables (:data:`gridmarket.contract.TABLES`) and summary; a streamed run's
        per-step tables are files to move into the folder (``Results.files``)."""
        tables: dict[str, pd.DataFrame] = {
            "iterations.csv": self.iteration_table(),
            "welfare_breakdown.csv": self.breakdown_table(),
            "batteries.csv": self.battery_table(),
            "agents.csv": self.agent_table(),
            "network_buses.csv": self.buses,
            "network_lines.csv": self.lines,
        }
        tables.update(self.frames)
        if any(it.aware is not None for it in self.iterations):  # network_residual.csv
            from gridmarket.study.aware import RESIDUAL_FILE
            tables[RESIDUAL_FILE] = pd.concat([it.aware.residual_frame(it.index) for it in self.iterations
                                               if it.aware is not None], ignore_index=True)
        return Results(summary=self.summary(), tables=tables, files=dict(self.files))

    def summary_text(self) -> str:
        t = self.iteration_table()
        base, best = t.iloc[0], t.iloc[self.best]
        cur = self.case.currency
        lines = [f"case {self.case.name!r}: {len(t)} iteration(s), stopped: {self.stop_reason}",
                 f"  base   : welfare {base.welfare:,.2f} {cur} (realised {base.welfare_realised:,.2f}),"
                 f" {int(base.violations)} violations",
                 f"  best #{self.best}: welfare {best.welfare:,.2f} {cur} (realised {best.welfare_realised:,.2f},"
                 f" net benefit {best.net_benefit:,.2f}), {int(best.violations)} violations,"
                 f" {int(best.battery_units)} SBU(s)",
                 f"  runtime {self.runtime_s:.2f} s"]
        return "\n".join(lines)

    def cleanup(self) -> None:
        """Delete the streamed files' folder (after they were moved, or when they are not wanted)."""
        folders = {p.parent for p in self.files.values()}
        for f in folders:
            shutil.rmtree(f, ignore_errors=True)
        self.files.clear()


# ---------------------------------------------------------------------------- the loop

def run_study(case: Case, *, progress: Progress | None = None, max_iterations: int | None = None,
              stream: bool | str = "auto", stream_dir: Path | None = None, chunk_steps: int | None = None,
              power_flow: str = "auto", market_kw: Mapping[str, Any] | None = None,
              on_progress: Callable[[StudyProgress], None] | None = None) -> StudyResult:
    """Run the study loop on ``case`` (stages I-VII).

    Parameters
    ----------
    case : Case
        A validated case.
    progress : callable, optional
        ``progress(label, done, total)`` as steps complete (label ``"iteration k: power flow"``).
    max_iterations : int, optional
        Overrides ``[placement].max_iterations``.
    stream : bool or "auto"
        Append every iteration's per-step tables to Parquet files instead of keeping them
        (memory flat in the number of steps); ``"auto"``: when the horizon is longer than
        :data:`STREAM_STEPS`. A streamed result's iterations keep no market or power flow.
    stream_dir : path, optional
        Where a streamed run writes its files (a new temporary folder by default; see
        :meth:`StudyResult.cleanup`).
    chunk_steps : int, optional
        Steps per chunk: default the whole horizon in memory, :data:`CHUNK_STEPS` streamed.
    power_flow : {"auto", "shapes", "snapshot"}
        See :func:`gridmarket.study.pipeline.run_iteration`; ``"auto"`` is ``"snapshot"`` for an
        in-memory run (one series per iteration, as the study ran it) and shapes-if-possible
        for a streamed one.
    market_kw : mapping, optional
        Extra keywords of :func:`gridmarket.market.clear_market`.
    on_progress : callable, optional
        Called with a :class:`StudyProgress` (iteration, steps, elapsed, ETA) as steps complete.

    Returns
    -------
    StudyResult
        Every iteration, the best one and the stop reason.
    """
    t0 = time.perf_counter()
    steps = case.time.steps
    streamed = (steps > STREAM_STEPS) if stream == "auto" else bool(stream)
    chunk = chunk_steps or (CHUNK_STEPS if streamed else max(steps, 1))
    check_rule(case)
    engine = Engine(case)
    net = engine.net
    limit = max_iterations or case.placement.max_iterations
    bus_comms: dict[str, list[str]] = {}
    for a in case.agents:
        if a.community is not None:
            bus_comms.setdefault(engine.agent_bus[a.name], []).append(a.community)
    sink: MemorySink | StreamSink
    folder: Path | None = None
    if streamed:
        folder = Path(stream_dir) if stream_dir is not None else Path(tempfile.mkdtemp(prefix="gridmarket-stream-"))
        folder.mkdir(parents=True, exist_ok=True)
        sink = StreamSink(folder)
    else:
        sink = MemorySink()
    banks: dict[str, int] = {}
    bank_comm: dict[str, str] = {}
    iterations: list[Iteration] = []
    stop: str | None = None
    spec = case.battery
    try:
        for k in range(limit):
            ci = with_banks(case, banks, bank_comm)
            t_it = time.perf_counter()
            report = _reporter(k, limit, steps, t0, progress, on_progress)
            out = run_iteration(engine, ci, k, sink, chunk_steps=chunk, market_kw=market_kw,
                                power_flow="snapshot" if power_flow == "auto" and not streamed else power_flow,
                                progress=report, keep=not streamed)
            it = _iteration(k, banks, ci, out, spec, time.perf_counter() - t_it)
            iterations.append(it)
            scores = [i.score for i in iterations]
            if case.placement.rule is PlacementRule.VALUE:  # where the aware market's duals value relief
                step = value_unit(banks, None if out.aware is None else out.aware.relief, ci, engine.agent_bus,
                                  violations=int(out.counts["violations"]),
                                  last_gain=it.welfare_realised - iterations[-2].welfare_realised if k else None)
                grown, stop = step.banks, step.stop or (rules.max_iterations_reached(limit) if k + 1 >= limit
                                                        else None)
            else:
                grown = next_banks(banks, out.tally.violated_buses(engine.downstream, engine.monitored_buses),
                                   case.placement.ladder)
                stop = rules.stop_reason(scores, placement_changes=grown != banks, limit=limit,
                                         stop_when_worse=case.placement.stop_when_worse)
            if stop is not None:
                break
            for bus in grown:
                if bus not in bank_comm:
                    comm = battery_community(bus, bus_comms, net.bus_distance)
                    if comm is None:
                        msg = f"no community can take a battery at bus {bus!r}: no market agent is connected to it"
                        raise NetworkError(msg)
                    bank_comm[bus] = comm
            banks = grown
        files = sink.close() if isinstance(sink, StreamSink) else {}
    except BaseException:
        if isinstance(sink, StreamSink):
            sink.close()
        if folder is not None and stream_dir is None:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    if case.placement.rule is PlacementRule.VALUE:
        # units go where their value exceeds their annuity: the best iteration is judged net of it
        best = rules.best_iteration([rules.net_score(i.score, i.battery_annuity) for i in iterations])
    else:
        best = rules.best_iteration([i.score for i in iterations])
    frames = {} if streamed else {f: sink.frame(f) for f in STEP_FILES}  # type: ignore[union-attr]
    result = StudyResult(case=case, iterations=iterations, best=best,
                       stop_reason=stop or rules.max_iterations_reached(limit),
                       runtime_s=time.perf_counter() - t0, buses=engine.network_buses(), lines=engine.network_lines(),
                       agent_buses=dict(engine.agent_bus), agent_elements=dict(engine.elements), network=net,
                       files=files, frames=frames, params=_params(case, engine, streamed, chunk))
    if folder is not None and stream_dir is None:  # our own temporary folder: gone with the result
        weakref.finalize(result, shutil.rmtree, str(folder), True)
    return result


def _iteration(k: int, banks: Mapping[str, int], case: Case, out: IterationOutcome, spec: Any,
               runtime: float) -> Iteration:
    units = int(sum(banks.values()))
    return Iteration(index=k, banks=dict(banks), case=case, market=out.market, flow=out.flow,
                     violations=out.violations, counts=out.counts, welfare=out.welfare,
                     welfare_realised=out.welfare_realised, stored_energy_value=out.stored_energy_value,
                     battery_annuity=costs.annuity(units, spec, case.time.steps, case.time.step_hours),
                     breakdown=out.breakdown, solver=out.solver, runtime_s=runtime, stage_s=out.stage_s,
                     network=out.network, aware=out.aware)


def _reporter(k: int, limit: int, steps: int, t0: float, progress: Progress | None,
              on_progress: Callable[[StudyProgress], None] | None) -> Callable[[int, int], None] | None:
    if progress is None and on_progress is None:
        return None
    label = f"iteration {k}: power flow"
    t_start = time.perf_counter()

    def report(done: int, total: int) -> None:
        if progress is not None:
            progress(label, done, total)
        if on_progress is not None:
            now = time.perf_counter()
            rate = done / (now - t_start) if done and now > t_start else 0.0
            eta = (total - done) / rate if rate > 0 else None
            on_progress(StudyProgress(k, limit, done, total, now - t0, eta))

    return report


def _params(case: Case, engine: Engine, streamed: bool, chunk: int) -> dict[str, Any]:
    kinds: dict[str, int] = {}
    for a in case.agents:
        kinds[a.kind.value] = kinds.get(a.kind.value, 0) + 1
    pv = engine.pv_kwp(case)
    return {
        "mean_import_price": float(np.mean(case.grid.import_price)) if case.time.steps else None,
        "mean_export_price": float(np.mean(case.grid.export_price)) if case.time.steps else None,
        "agents": kinds, "communities": len(case.communities),
        "pv_kwp": None if pv is None else round(pv, 6),
        "streamed": streamed, "chunk_steps": chunk,
    }
