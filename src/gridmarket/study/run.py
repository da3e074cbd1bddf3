"""A study run into a results folder: what ``gridmarket run`` does between loading the case and
printing the summary, for short and long horizons alike."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gridmarket.case.model import Case
from gridmarket.outdir import OutDir, check_out_dir
from gridmarket.results import write_results
from gridmarket.study.long_run import nearest_folder
from gridmarket.study.loop import STREAM_STEPS, StudyProgress, StudyResult, run_study

__all__ = ["run_to_folder"]


def run_to_folder(case: Case, out: Path | str | OutDir, *, overwrite: bool = False,
                  progress: Callable[[str, int, int], None] | None = None,
                  on_progress: Callable[[StudyProgress], None] | None = None,
                  extra: Mapping[str, Callable[[Path], Any]] | None = None, stream: bool | str = "auto",
                  t_command: float | None = None) -> tuple[StudyResult, Path]:
    """Run the study loop on ``case`` and write its results folder ``out`` atomically.

    A horizon longer than :data:`~gridmarket.study.loop.STREAM_STEPS` (or ``stream=True``)
    streams every iteration's per-step tables to Parquet files beside ``out`` (hidden, on the
    same file system) as the loop runs; they are linked into the folder when it is written and
    removed in every case. ``extra`` writers (the report) run inside the folder before it is
    moved into place (:func:`gridmarket.results.write_results`).

    Parameters
    ----------
    out : path or OutDir
        The results folder, or what :func:`gridmarket.outdir.check_out_dir` returned for it
        before the run (the CLI checks it before any work); a path is checked here.
    t_command : float, optional
        ``time.perf_counter()`` when the command started: ``summary.json`` gets
        ``command_runtime_s`` up to the end of writing the tables.

    Returns
    -------
    (StudyResult, Path)
        The run and the folder written.
    """
    target = out if isinstance(out, OutDir) else check_out_dir(out, kind="results", overwrite=overwrite)
    streamed = (case.time.steps > STREAM_STEPS) if stream == "auto" else bool(stream)
    stream_dir = (Path(tempfile.mkdtemp(prefix=f".{target.path.name}.stream-", dir=nearest_folder(target.path)))
                  if streamed else None)
    try:
        res = run_study(case, progress=progress, on_progress=on_progress, stream=streamed, stream_dir=stream_dir)
        if t_command is not None:
            res.command_runtime_s = time.perf_counter() - t_command
        written = write_results(res.to_results(), target, overwrite=overwrite, extra=extra)
    finally:
        if stream_dir is not None:
            shutil.rmtree(stream_dir, ignore_errors=True)
    return res, written
