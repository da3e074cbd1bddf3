"""Long runs: one iteration of the study (market → dispatch → power flow → limits) over a
horizon of thousands of steps (a year of hourly steps), in chunks, with flat memory.

The horizon is cut into chunks of ``chunk_steps`` steps. For each chunk the case is sliced
(profiles, prices, timestamps), the market is cleared with the batteries' state of charge
carried over from the previous chunk (``clear_market(chunk, soc_init=...)``), the cleared
powers are dispatched (:func:`gridmarket.study.loop.dispatch_kw`) into one OpenDSS engine that
lives for the whole run, and the limits are checked (:func:`gridmarket.network.check_limits`).
Each chunk's tables are appended to Parquet files (``pyarrow.parquet.ParquetWriter``) and
dropped, so memory does not grow with the number of steps. The files are written into a
temporary sibling folder that is renamed into place only when the run is complete.

Because the engine is one and its steps run in order, and each market step depends only on
the SoC before it, a chunked run gives the same results as one unchunked run (chunk size
only trades memory for per-chunk overheads).

With ``workers=2`` the power flow and limit checks of chunk ``k`` run in a second process
(its own OpenDSS engine) while this process clears the market of chunk ``k + 1``: a two-stage
pipeline over the two cores. The network stage still sees the chunks in order, so the
results are identical to ``workers=1``.

Results folder
--------------
``summary.json``
    case, steps, chunks, welfare [currency], violation counts (as
    :func:`gridmarket.network.count_violations`, over the whole horizon), runtime and the
    time spent per stage [s].
``market.parquet``
    :data:`gridmarket.market.MARKET_COLUMNS` with ``iteration`` first (0), one row per step and agent.
``communities.parquet``
    :data:`gridmarket.market.COMMUNITY_COLUMNS` with ``iteration`` first.
``voltages.parquet``
    ``iteration, step, bus, phase, v_pu`` for the monitored nodes.
``violations.parquet``
    ``iteration, step, time, kind, element, value, limit`` (``time`` as ``YYYY-MM-DDTHH:MM``
    text, or the step number when the case has no start).
``steps.parquet``
    One row per step: ``step, time, welfare`` [currency], ``v_min_pu``, ``v_max_pu`` (over the
    monitored nodes) [pu], ``loading_max`` (largest current / normal ampacity over the lines)
    [-], ``voltage_violations``, ``current_violations`` (buses resp. lines out of limits).
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import queue
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from gridmarket import __version__, contract
from gridmarket.case.model import Case, GridPrices
from gridmarket.enums import AgentKind
from gridmarket.errors import PowerFlowError
from gridmarket.market import COMMUNITY_COLUMNS, MARKET_COLUMNS, clear_market
from gridmarket.network import (
    OpenDSSNetwork,
    PowerFlowResult,
    check_limits,
    element_of,
    monitored_mask,
)
from gridmarket.network.opendss import ShapeSession
from gridmarket.network.violations import VIOLATION_COLUMNS
from gridmarket.results import prepare_out_dir
from gridmarket.study.loop import attach_agents, dispatch_kw

__all__ = ["LONG_RUN_FILES", "LongRunResult", "run_long", "slice_case"]

#: files of a long-run results folder
LONG_RUN_FILES = ("summary.json", "market.parquet", "communities.parquet", "voltages.parquet",
                  "violations.parquet", "steps.parquet")

Progress = Callable[[str, int, int], None]

_MARKET_FIELDS = contract.table("market.parquet").names
_COMMUNITY_FIELDS = contract.table("communities.parquet").names
assert set(MARKET_COLUMNS) <= set(_MARKET_FIELDS)
assert set(COMMUNITY_COLUMNS) <= set(_COMMUNITY_FIELDS)
assert set(VIOLATION_COLUMNS) <= set(contract.table("violations.parquet").names)


@dataclass(frozen=True)
class LongRunResult:
    """What :func:`run_long` wrote, and the totals over the horizon.

    Attributes
    ----------
    out_dir : pathlib.Path
        The results folder (complete).
    steps, chunks : int
        Steps run and chunks they were cut into.
    welfare : float
        Reported welfare summed over all steps [currency].
    counts : dict
        Violation counts over the horizon, keys as :data:`gridmarket.network.COUNT_COLUMNS`.
    runtime_s : float
        Wall time of the run [s], compile to rename.
    stage_s : dict
        Wall time per stage [s]: ``setup``, ``market``, ``network`` (dispatch, power flow,
        limits; in the worker when ``workers=2``), ``write``, ``wait`` (this process idle,
        waiting for the worker).
    """

    out_dir: Path
    steps: int
    chunks: int
    welfare: float
    counts: dict[str, float]
    runtime_s: float
    stage_s: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------- slicing

def slice_case(case: Case, start: int, stop: int) -> Case:
    """The steps ``start .. stop − 1`` of ``case`` as a case of their own.

    Profiles, grid prices and timestamps are cut; everything else (agents, options) is
    shared. Step 0 of the result is step ``start`` of ``case``.
    """
    steps = case.time.steps
    if not 0 <= start < stop <= steps:
        msg = f"cannot slice steps {start}..{stop} of a case of {steps} steps"
        raise ValueError(msg)
    t = case.time
    new_start = None if t.start is None else t.start + pd.Timedelta(hours=t.step_hours * start)
    return replace(
        case,
        time=replace(t, steps=stop - start, start=new_start),
        grid=GridPrices(import_price=case.grid.import_price[start:stop],
                        export_price=case.grid.export_price[start:stop]),
        profile_kw=case.profile_kw[start:stop],
    )


def _chunks(steps: int, chunk_steps: int) -> Iterator[tuple[int, int]]:
    for s0 in range(0, steps, chunk_steps):
        yield s0, min(steps, s0 + chunk_steps)


# ---------------------------------------------------------------------------- network stage

@dataclass
class _NetworkStage:
    """The OpenDSS engine with the case's elements, the monitored nodes and the counters.

    With ``power_flow`` ``"shapes"`` (or ``"auto"`` when the elements allow it) one
    :class:`~gridmarket.network.opendss.ShapeSession` spans all chunks: the chunked run is the
    unchunked run. :meth:`close` ends it.
    """

    case: Case
    power_flow: str = "auto"

    def __post_init__(self) -> None:
        case = self.case
        self.net = OpenDSSNetwork(case.network.master)
        self.es = self.net.resolve(attach_agents(case, self.net))  # checked; the case's batteries created
        pf = np.array([a.pf if a.pf is not None else np.nan for a in case.agents])
        self.pf = None if np.isnan(pf).all() else pf
        self.mask = monitored_mask(self.net.node_names, self.net.buses, case.network.monitored_buses)
        names = np.asarray(self.net.node_names)[self.mask]
        self.bus = np.array([s.rsplit(".", 1)[0] for s in names], dtype=object)
        self.phase = np.array([int(s.rsplit(".", 1)[1]) for s in names], dtype=np.int16)
        # node -> bus and conductor -> line indicator matrices, for per-step counts
        self._bus_codes, self._n_bus = _codes(self.bus)
        self._line_codes: np.ndarray | None = None
        self._n_line = 0
        self.seconds = 0.0
        self.session: ShapeSession | None = None
        if self.power_flow in ("auto", "shapes"):
            try:
                self.session = self.net.shape_session(self.es)
            except ValueError:
                if self.power_flow == "shapes":
                    raise
        self.method = "shapes" if self.session is not None else "snapshot"

    def close(self) -> None:
        if self.session is not None:
            self.session.close()

    def run(self, s0: int, kw: np.ndarray) -> dict[str, Any]:
        """Power flow and limits of the chunk starting at step ``s0``; plain arrays and frames
        (picklable). A step that does not converge raises with its step in the horizon."""
        t0 = time.perf_counter()
        case = self.case
        try:
            if self.session is not None:
                flow = self.session.run(kw, pf=self.pf)
            else:
                flow = self.net.run_series(self.es, kw, pf=self.pf)
        except PowerFlowError as exc:
            step = None if exc.step is None else s0 + exc.step
            msg = f"{exc} (step {step} of the horizon, in the chunk from step {s0})"
            raise PowerFlowError(msg, step=step) from exc
        viol = check_limits(flow, vmin_pu=case.network.vmin_pu, vmax_pu=case.network.vmax_pu,
                            monitored_nodes=self.mask, times=None)
        v = flow.v_pu[:, self.mask]
        per_step, counts, buses, lines = self._per_step(flow, v)
        out = {"s0": s0, "v": v, "viol": viol, "per_step": per_step, "counts": counts,
               "buses": buses, "lines": lines}
        self.seconds += time.perf_counter() - t0
        return out

    def _per_step(self, flow: PowerFlowResult, v: np.ndarray
                  ) -> tuple[dict[str, np.ndarray], dict[str, float], set[str], set[str]]:
        """Per-step extremes and counts, the chunk's totals (the counting rule of
        :func:`gridmarket.network.count_violations`) and the buses and lines out of limits."""
        vmin, vmax = self.case.network.vmin_pu, self.case.network.vmax_pu
        if self._line_codes is None:
            owners = element_of(flow.line_phase_names)
            self._line_codes, self._n_line = _codes(owners)
            self._line_words = np.unique(np.asarray(owners, dtype=str))
            self._bus_words = np.unique(np.asarray(self.bus, dtype=str))
        with np.errstate(invalid="ignore"):
            low, high = v < vmin, v > vmax
            bad_v = low | high
            bad_i = flow.i_amps > flow.norm_amps
            loading = flow.i_amps / flow.norm_amps
        steps = v.shape[0]
        n_v = _any_per_group(bad_v, self._bus_codes, self._n_bus)
        n_i = _any_per_group(bad_i, self._line_codes, self._n_line)
        per_step = {
            "v_min_pu": _nan_reduce(np.fmin.reduce, v, steps),
            "v_max_pu": _nan_reduce(np.fmax.reduce, v, steps),
            "loading_max": _nan_reduce(np.fmax.reduce, loading, steps),
            "voltage_violations": n_v,
            "current_violations": n_i,
        }
        counts = {
            "violations": int(n_v.sum() + n_i.sum()), "voltage_violations": int(n_v.sum()),
            "current_violations": int(n_i.sum()), "steps_violated": int(np.count_nonzero(n_v + n_i)),
            "v_min_pu": float(v[low].min()) if low.any() else math.nan,
            "v_max_pu": float(v[high].max()) if high.any() else math.nan,
            "loading_max_percent": float(loading[bad_i].max() * 100.0) if bad_i.any() else math.nan,
        }
        buses = set(self._bus_words[np.unique(self._bus_codes[bad_v.any(axis=0)])].tolist())
        lines = set(self._line_words[np.unique(self._line_codes[bad_i.any(axis=0)])].tolist())
        return per_step, counts, buses, lines


def _codes(names: np.ndarray | list[str]) -> tuple[np.ndarray, int]:
    uniq, inverse = np.unique(np.asarray(names, dtype=str), return_inverse=True)
    return inverse.reshape(-1), len(uniq)


def _nan_reduce(fn: Callable[..., np.ndarray], a: np.ndarray, steps: int) -> np.ndarray:
    if a.shape[1] == 0:
        return np.full(steps, np.nan)
    return np.asarray(fn(a, axis=1), dtype=float)


def _any_per_group(bad: np.ndarray, codes: np.ndarray, n: int) -> np.ndarray:
    """Per step, how many groups (buses, lines) have at least one bad member."""
    steps = bad.shape[0]
    if bad.shape[1] == 0:
        return np.zeros(steps, dtype=np.int32)
    t, k = np.nonzero(bad)
    pairs = np.unique(t * n + codes[k])
    return np.bincount(pairs // n, minlength=steps).astype(np.int32)


def _worker(case: Case, power_flow: str, inbox: Any, outbox: Any) -> None:
    """Second process of the pipeline: the network stage, chunk after chunk, in order."""
    try:
        stage = _NetworkStage(case, power_flow)
        outbox.put(("ready", (stage.bus, stage.phase, stage.method)))
        while True:
            item = inbox.get()
            if item is None:
                break
            s0, kw = item
            outbox.put(("ok", stage.run(s0, kw)))
        stage.close()
        outbox.put(("done", stage.seconds))
    except BaseException as exc:  # hand every failure to the parent, which raises it
        outbox.put(("error", exc))


# ---------------------------------------------------------------------------- writers

class _Writers:
    """One :class:`gridmarket.contract.ParquetStream` per table, opened lazily in the temporary folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._w: dict[str, contract.ParquetStream] = {}
        self.seconds = 0.0

    def write(self, name: str, columns: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        if name not in self._w:
            self._w[name] = contract.ParquetStream(self.folder, name)
        self._w[name].write(columns)
        self.seconds += time.perf_counter() - t0

    def close(self) -> None:
        for w in self._w.values():
            w.close()
        self._w.clear()


def _text(codes: np.ndarray, words: np.ndarray | list[str]) -> pa.DictionaryArray:
    """Dictionary-encoded text column: ``words[codes]``."""
    return pa.DictionaryArray.from_arrays(pa.array(np.asarray(codes, dtype=np.int32)),
                                          pa.array(list(words), type=pa.string()))


def _dict_text(column: pd.Series) -> pa.DictionaryArray:
    """A text column of a frame, dictionary-encoded by Arrow."""
    arr = pa.array(column, type=pa.string()) if len(column) else pa.array([], type=pa.string())
    return arr.dictionary_encode()


@dataclass(frozen=True)
class _Labels:
    """Per-agent and per-community labels of the case, as dictionary codes."""

    agents: list[str]
    kind_words: list[str]
    kind_codes: np.ndarray
    comm_words: list[str]
    comm_codes: np.ndarray  #: per agent ('' for passive agents)
    communities: list[str]  #: market communities, in the order of the communities frame

    @classmethod
    def of(cls, case: Case) -> _Labels:
        kinds = [a.kind.value for a in case.agents]
        comms = [(a.community or "") if a.kind is not AgentKind.PASSIVE else "" for a in case.agents]
        kind_words = sorted(set(kinds))
        comm_words = sorted(set(comms) | set(case.communities))
        return cls(agents=[a.name for a in case.agents], kind_words=kind_words,
                   kind_codes=np.array([kind_words.index(k) for k in kinds]), comm_words=comm_words,
                   comm_codes=np.array([comm_words.index(c) for c in comms]),
                   communities=list(case.communities))

    def market(self, df: pd.DataFrame, s0: int, times: np.ndarray) -> dict[str, Any]:
        """Columns of market.parquet for one chunk's market frame (step-major, agents in case order)."""
        n, steps = len(self.agents), len(times)
        _check_order(df, "agent", self.agents, steps)
        cols: dict[str, Any] = {c: df[c].to_numpy() for c in MARKET_COLUMNS[5:] if c in _MARKET_FIELDS}
        cols.update({
            "iteration": np.zeros(n * steps, dtype=np.int32),
            "step": df["step"].to_numpy(dtype=np.int64) + s0,
            "time": np.repeat(times, n),
            "agent": _text(np.tile(np.arange(n), steps), self.agents),
            "kind": _text(np.tile(self.kind_codes, steps), self.kind_words),
            "community": _text(np.tile(self.comm_codes, steps), self.comm_words),
        })
        return cols

    def communities_frame(self, df: pd.DataFrame, s0: int, steps: int) -> dict[str, Any]:
        """Columns of communities.parquet for one chunk."""
        nc = len(self.communities)
        _check_order(df, "community", self.communities, steps)
        codes = np.array([self.comm_words.index(c) for c in self.communities])
        cols: dict[str, Any] = {c: df[c].to_numpy() for c in COMMUNITY_COLUMNS[2:]}
        cols.update({"iteration": np.zeros(nc * steps, dtype=np.int32),
                     "step": df["step"].to_numpy(dtype=np.int64) + s0,
                     "community": _text(np.tile(codes, steps), self.comm_words)})
        return cols


def _check_order(df: pd.DataFrame, column: str, names: list[str], steps: int) -> None:
    """The frame has ``steps`` blocks of ``names`` in order (checked on its first block)."""
    n = len(names)
    if len(df) != n * steps or (n and df[column].iloc[:n].tolist() != names):
        msg = f"market frame is not step-major with {column}s in case order ({len(df)} rows)"
        raise RuntimeError(msg)


def _time_text(case: Case) -> np.ndarray:
    """The steps' start times (``datetime64[ns]``; NaT when the case has no start)."""
    idx = case.time.index
    if isinstance(idx, pd.DatetimeIndex):
        return np.asarray(idx, dtype="datetime64[ns]")
    return np.full(len(idx), np.datetime64("NaT"), dtype="datetime64[ns]")


# ---------------------------------------------------------------------------- the run

def run_long(case: Case, out_dir: Path | str, *, chunk_steps: int = 720, progress: Progress | None = None,
             workers: int = 1, power_flow: str = "auto", market_method: str | None = None,
             overwrite: bool = False) -> LongRunResult:
    """Run one iteration of the study over the whole horizon of ``case``, in chunks.

    Parameters
    ----------
    case : Case
        A validated case, e.g. ``gridmarket.cases.cr_mar.build_case(out, case=2, days=365)``.
        Batteries in its agents (``bus:`` elements) are created in the network and carry
        their SoC from chunk to chunk; no batteries are placed.
    out_dir : path
        Results folder; written as a temporary sibling and renamed into place when complete.
    chunk_steps : int, default 720
        Steps per chunk (30 days of hourly steps). Memory grows with this, not with the horizon.
    progress : callable, optional
        ``progress(label, steps_done, steps_total)`` after each chunk.
    workers : int, default 1
        1: everything in this process. 2: the network stage (power flow, limits) runs in a
        second process, pipelined with the market of the next chunk (same results).
    power_flow : {"auto", "shapes", "snapshot"}, default "auto"
        How the engine runs the steps (:meth:`gridmarket.network.OpenDSSNetwork.run_series`'s
        ``method``): ``"shapes"`` (one yearly-mode session over all chunks; fastest with PV),
        ``"snapshot"``, or ``"auto"``: shapes when the case's elements allow it (Loads and
        PVSystems, no Storage in the circuit).
    market_method : str, optional
        Passed to :func:`gridmarket.market.clear_market` as ``method`` (e.g. ``"qp"``); by
        default clear_market's own default.
    overwrite : bool
        Replace an existing ``out_dir``.

    Returns
    -------
    LongRunResult

    Raises
    ------
    ResultsError
        ``out_dir`` exists (without ``overwrite``) or cannot be written.
    MarketError, NetworkError, PowerFlowError
        From the stages, naming the step (within its chunk: the message gives the chunk's
        first step); nothing is left on disk.
    """
    if chunk_steps < 1:
        msg = f"chunk_steps must be >= 1, got {chunk_steps!r}"
        raise ValueError(msg)
    if workers not in (1, 2):
        msg = f"workers must be 1 or 2, got {workers!r}"
        raise ValueError(msg)
    if power_flow not in ("auto", "shapes", "snapshot"):
        msg = f"power_flow must be 'auto', 'shapes' or 'snapshot', got {power_flow!r}"
        raise ValueError(msg)
    t_start = time.perf_counter()
    out = prepare_out_dir(Path(out_dir), overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    proc = None
    try:
        if workers == 2 and "fork" not in mp.get_all_start_methods():
            workers = 1  # the pipeline forks the process (Linux, macOS); elsewhere run in one process
        if workers == 2:
            ctx = mp.get_context("fork")
            inbox, outbox = ctx.Queue(maxsize=2), ctx.Queue()
            proc = ctx.Process(target=_worker, args=(case, power_flow, inbox, outbox), daemon=True)
            proc.start()
        result = _run(case, tmp, out, chunk_steps=chunk_steps, progress=progress, power_flow=power_flow,
                      market_kw={} if market_method is None else {"method": market_method},
                      pipe=None if proc is None else (proc, inbox, outbox), t_start=t_start)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
        return result
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if proc is not None:
            if proc.is_alive():
                proc.kill()
            proc.join()


def _run(case: Case, tmp: Path, out: Path, *, chunk_steps: int, progress: Progress | None, power_flow: str,
         market_kw: dict[str, Any], pipe: tuple[Any, Any, Any] | None, t_start: float) -> LongRunResult:
    if pipe is None:
        stage = _NetworkStage(case, power_flow)
        try:
            return _run_stages(case, tmp, out, chunk_steps=chunk_steps, progress=progress, pipe=None, stage=stage,
                               market_kw=market_kw, t_start=t_start)
        finally:
            stage.close()
    return _run_stages(case, tmp, out, chunk_steps=chunk_steps, progress=progress, pipe=pipe, stage=None,
                       market_kw=market_kw, t_start=t_start)


def _run_stages(case: Case, tmp: Path, out: Path, *, chunk_steps: int, progress: Progress | None,
                pipe: tuple[Any, Any, Any] | None, stage: _NetworkStage | None, market_kw: dict[str, Any],
                t_start: float) -> LongRunResult:
    writers = _Writers(tmp)
    try:
        return _stream(case, tmp, out, writers, chunk_steps=chunk_steps, progress=progress, pipe=pipe, stage=stage,
                       market_kw=market_kw, t_start=t_start)
    finally:
        writers.close()


def _stream(case: Case, tmp: Path, out: Path, writers: _Writers, *, chunk_steps: int, progress: Progress | None,
            pipe: tuple[Any, Any, Any] | None, stage: _NetworkStage | None, market_kw: dict[str, Any],
            t_start: float) -> LongRunResult:
    """The chunk loop: market here, network here or in the worker, tables to ``writers``."""
    steps = case.time.steps
    t_market = t_wait = 0.0
    if stage is not None:
        mask_bus, mask_phase, method = stage.bus, stage.phase, stage.method
    else:
        proc, inbox, outbox = pipe
        mask_bus, mask_phase, method = _expect(outbox, proc, "ready")
    t_setup = time.perf_counter() - t_start
    bus_codes, bus_words = pd.factorize(pd.Series(mask_bus, dtype=object))
    bus_words = bus_words.astype(str)
    labels = _Labels.of(case)
    battery_names = [a.name for a in case.agents if a.kind is AgentKind.BATTERY]
    lo, hi = case.battery.soc_min, case.battery.soc_max
    soc: dict[str, float] | None = None
    soc_start = {a.name: case.battery.soc_init for a in case.agents if a.kind is AgentKind.BATTERY}  # cyclic target
    welfare = 0.0
    totals = {"violations": 0, "voltage_violations": 0, "current_violations": 0, "steps_violated": 0}
    worst = {"v_min_pu": math.inf, "v_max_pu": -math.inf, "loading_max_percent": -math.inf}
    buses: set[str] = set()
    lines: set[str] = set()
    pending: list[tuple[int, Case, Any]] = []  # chunks whose network stage is in flight
    n_chunks = 0

    def finish(s0: int, chunk: Case, res: Any, net_out: dict[str, Any]) -> None:
        nonlocal welfare
        times = _time_text(chunk)
        L = chunk.time.steps
        v = net_out["v"]
        n_nodes = v.shape[1]
        writers.write("voltages.parquet", {
            "iteration": np.zeros(L * n_nodes, dtype=np.int32),
            "step": np.repeat(np.arange(s0, s0 + L, dtype=np.int32), n_nodes),
            "time": np.repeat(times, n_nodes),
            "bus": _text(np.tile(bus_codes, L), bus_words), "phase": np.tile(mask_phase, L),
            "v_pu": v.reshape(-1)})
        viol = net_out["viol"]
        vs = viol["step"].to_numpy(dtype=np.int64)
        writers.write("violations.parquet", {
            "iteration": np.zeros(len(viol), dtype=np.int32), "step": vs + s0,
            "time": times[vs],
            "kind": _dict_text(viol["kind"]), "element": _dict_text(viol["element"]),
            "value": viol["value"].to_numpy(dtype=float), "limit": viol["limit"].to_numpy(dtype=float)})
        ps = net_out["per_step"]
        w = res.welfare.to_numpy(dtype=float)
        writers.write("steps.parquet", {
            "iteration": np.zeros(L, dtype=np.int32), "step": np.arange(s0, s0 + L, dtype=np.int64), "time": times,
            "welfare": w, "v_min_pu": ps["v_min_pu"], "v_max_pu": ps["v_max_pu"], "loading_max": ps["loading_max"],
            "violations": ps["voltage_violations"] + ps["current_violations"]})
        welfare += float(w.sum())
        c = net_out["counts"]
        for k in totals:
            totals[k] += int(c[k])
        for k, fn in (("v_min_pu", min), ("v_max_pu", max), ("loading_max_percent", max)):
            if not math.isnan(c[k]):
                worst[k] = fn(worst[k], c[k])
        buses.update(net_out["buses"])
        lines.update(net_out["lines"])
        if progress is not None:
            progress("long run", s0 + L, steps)

    for s0, s1 in _chunks(steps, chunk_steps):
        n_chunks += 1
        chunk = slice_case(case, s0, s1)
        t0 = time.perf_counter()
        res = clear_market(chunk, soc_init=soc, soc_target=soc_start, steps_after=steps - s1, **market_kw)
        if battery_names:
            last = res.soc[-1]
            soc = {a.name: float(np.clip(last[i], lo, hi)) for i, a in enumerate(chunk.agents)
                   if a.kind is AgentKind.BATTERY}
        kw = dispatch_kw(chunk, res)
        t_market += time.perf_counter() - t0
        times = _time_text(chunk)
        writers.write("market.parquet", labels.market(res.market, s0, times))
        writers.write("communities.parquet", labels.communities_frame(res.communities, s0, chunk.time.steps))
        if stage is not None:
            finish(s0, chunk, res, stage.run(s0, kw))
            continue
        proc, inbox, outbox = pipe  # type: ignore[misc]
        t0 = time.perf_counter()
        inbox.put((s0, kw))
        pending.append((s0, chunk, _Slim(res)))
        if len(pending) > 1:  # keep one chunk in flight while the next market clears
            s_prev, c_prev, r_prev = pending.pop(0)
            net_out = _expect(outbox, proc, "ok")
            t_wait += time.perf_counter() - t0
            finish(s_prev, c_prev, r_prev, net_out)
        else:
            t_wait += time.perf_counter() - t0
    t_net = 0.0
    if pipe is not None:
        proc, inbox, outbox = pipe
        t0 = time.perf_counter()
        while pending:
            s_prev, c_prev, r_prev = pending.pop(0)
            net_out = _expect(outbox, proc, "ok")
            finish(s_prev, c_prev, r_prev, net_out)
        inbox.put(None)
        t_net = float(_expect(outbox, proc, "done"))
        t_wait += time.perf_counter() - t0
    else:
        assert stage is not None
        t_net = stage.seconds
    writers.close()
    counts: dict[str, float] = {
        **totals, "buses_violated": len(buses), "lines_violated": len(lines),
        **{k: (v if math.isfinite(v) else math.nan) for k, v in worst.items()},
    }
    runtime = time.perf_counter() - t_start
    stage_s = {"setup": t_setup, "market": t_market, "network": t_net, "write": writers.seconds, "wait": t_wait}
    summary = {
        "case": case.name, "version": __version__, "kind": "long run (one iteration, no placement)",
        "steps": steps, "step_hours": case.time.step_hours, "chunk_steps": chunk_steps, "chunks": n_chunks,
        "workers": 1 if pipe is None else 2, "power_flow": method,
        "vmin_pu": case.network.vmin_pu, "vmax_pu": case.network.vmax_pu,
        "welfare": round(welfare, 10), "counts": {k: _json_number(v) for k, v in counts.items()},
        "runtime_s": round(runtime, 3), "stage_s": {k: round(v, 3) for k, v in stage_s.items()},
        "files": list(LONG_RUN_FILES),
    }
    (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    for name in LONG_RUN_FILES[1:]:
        if not (tmp / name).exists():  # a horizon of no steps still gets every file
            contract.ParquetStream(tmp, name).close()
    return LongRunResult(out_dir=out, steps=steps, chunks=n_chunks, welfare=welfare, counts=counts,
                         runtime_s=runtime, stage_s=stage_s)


class _Slim:
    """What :func:`_run`'s ``finish`` needs of a market result (keeps no big frames alive)."""

    def __init__(self, res: Any) -> None:
        self.welfare = res.welfare


def _expect(outbox: Any, proc: Any, kind: str) -> Any:
    """Next message of the worker, which must be ``kind``; re-raise the worker's error."""
    while True:
        try:
            tag, payload = outbox.get(timeout=1.0)
            break
        except queue.Empty:  # check that the worker is still there
            if not proc.is_alive():
                msg = f"the network worker stopped (exit code {proc.exitcode}) before sending {kind!r}"
                raise RuntimeError(msg) from None
    if tag == "error":
        raise payload
    if tag != kind:
        msg = f"network worker sent {tag!r}, expected {kind!r}"
        raise RuntimeError(msg)
    return payload


def _json_number(v: float) -> float | int | None:
    if isinstance(v, (int, np.integer)):
        return int(v)
    return None if math.isnan(v) else float(v)
