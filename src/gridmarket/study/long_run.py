"""Long runs: one iteration of the study (market → dispatch → power flow → limits) over a
horizon of thousands of steps (a year of hourly steps), in chunks, with flat memory.

This is :func:`gridmarket.study.run_study` limited to one iteration, with its per-step tables
streamed to Parquet (the same :func:`gridmarket.study.pipeline.run_iteration` that every
iteration of the loop runs): the horizon is cut into chunks of ``chunk_steps`` steps, each
chunk's market is cleared with the batteries' state of charge carried over from the previous
chunk, dispatched into one OpenDSS engine that lives for the whole run, and its limits
checked; each chunk's tables are appended to the Parquet files and dropped. The folder is a
complete results folder (:mod:`gridmarket.contract`), written whole or not at all, and
``gridmarket report`` reads it.

Because the engine is one and its steps run in order, and each market step depends only on
the SoC before it, a chunked run gives the same results as one unchunked run (chunk size
only trades memory for per-chunk overheads).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gridmarket import contract
from gridmarket.case.model import Case
from gridmarket.outdir import check_out_dir
from gridmarket.results import write_results
from gridmarket.study.loop import run_study
from gridmarket.study.pipeline import STEP_FILES, slice_case

__all__ = ["LONG_RUN_FILES", "LongRunResult", "run_long", "slice_case"]

#: files of a long-run results folder
LONG_RUN_FILES = ("summary.json", "iterations.csv", "welfare_breakdown.csv", "batteries.csv", "agents.csv",
                  "network_buses.csv", "network_lines.csv", *STEP_FILES)

Progress = Callable[[str, int, int], None]


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
        Violation counts over the horizon (:class:`gridmarket.study.pipeline.Tally`).
    runtime_s : float
        Wall time of the run [s], compile to rename.
    stage_s : dict
        Wall time per stage [s]: ``setup``, ``market``, ``network`` (dispatch, power flow,
        limits), ``tables`` (building and streaming the per-step tables), ``write`` (the
        folder: small tables, summary, move into place).
    """

    out_dir: Path
    steps: int
    chunks: int
    welfare: float
    counts: dict[str, Any]
    runtime_s: float
    stage_s: dict[str, float] = field(default_factory=dict)


def run_long(case: Case, out_dir: Path | str, *, chunk_steps: int = 720, progress: Progress | None = None,
             power_flow: str = "auto", market_method: str | None = None,
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
    power_flow : {"auto", "shapes", "snapshot"}, default "auto"
        How the engine runs the steps: ``"shapes"`` (one yearly-mode session over all chunks),
        ``"snapshot"``, or ``"auto"``: shapes when the horizon is cut into chunks and the case's
        elements allow it (Loads and PVSystems, no Storage in the circuit).
    market_method : str, optional
        Passed to :func:`gridmarket.market.clear_market` as ``method`` (e.g. ``"qp"``).
    overwrite : bool
        Replace an existing ``out_dir``.

    Raises
    ------
    ResultsError
        ``out_dir`` exists (without ``overwrite``) or cannot be written.
    MarketError, NetworkError, PowerFlowError
        From the stages, naming the step of the horizon; nothing is left on disk.
    """
    if chunk_steps < 1:
        msg = f"chunk_steps must be >= 1, got {chunk_steps!r}"
        raise ValueError(msg)
    if power_flow not in ("auto", "shapes", "snapshot"):
        msg = f"power_flow must be 'auto', 'shapes' or 'snapshot', got {power_flow!r}"
        raise ValueError(msg)
    t_start = time.perf_counter()
    target = check_out_dir(Path(out_dir), kind="results", overwrite=overwrite)
    out = target.path
    stream_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.stream-", dir=nearest_folder(out)))
    try:
        study = run_study(case, max_iterations=1, stream=True, stream_dir=stream_dir, chunk_steps=chunk_steps,
                          power_flow=power_flow, market_kw={} if market_method is None else {"method": market_method},
                          progress=None if progress is None else (lambda _l, d, t: progress("long run", d, t)))
        it = study.iterations[0]
        t_write = time.perf_counter()
        results = study.to_results()
        chunks = -(-case.time.steps // chunk_steps) if case.time.steps else 0
        results.summary.update({"kind": "long run (one iteration, no placement)", "chunks": chunks,
                                "counts": {k: _json_number(v) for k, v in it.counts.items()},
                                "stage_s": {k: round(v, 3) for k, v in it.stage_s.items()}})
        write_results(results, target, overwrite=overwrite)
        stage = dict(it.stage_s, write=time.perf_counter() - t_write)
        close = getattr(study.network, "close", None)  # the engine's private output folder
        if close is not None:
            close()
    finally:
        shutil.rmtree(stream_dir, ignore_errors=True)
    return LongRunResult(out_dir=out, steps=case.time.steps, chunks=chunks, welfare=it.welfare, counts=it.counts,
                         runtime_s=time.perf_counter() - t_start, stage_s=stage)


def nearest_folder(path: Path) -> Path:
    """The nearest existing folder at or above ``path``'s parent (streamed files written there
    are on the results' file system: they are linked into the folder, not copied)."""
    probe = Path(path).absolute().parent
    while not probe.exists():
        probe = probe.parent
    return probe


def _json_number(v: Any) -> Any:
    if isinstance(v, float) and v != v:  # NaN
        return None
    return v


assert set(contract.TABLES) >= set(LONG_RUN_FILES[1:])
