"""Results of a run, and writing them atomically (shared CASE_FORMAT.md, *Results*).

A results folder is written to a temporary sibling folder and renamed into place only when
every file is complete: a run that fails or is interrupted leaves no results folder and no
stray temporary files. Files are byte-reproducible: fixed row order, fixed float format,
no timestamps except ``summary.json``'s ``run_at``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from gridmarket import contract
from gridmarket.contract import FLOAT_FORMAT
from gridmarket.outdir import (
    RESULTS_WRITTEN_NOTE,
    OutDir,
    check_out_dir,
    staged,
    write_bytes_atomic,
)
from gridmarket.outdir import interrupts_deferred as _interrupts_deferred  # noqa: F401 - the old name

__all__ = ["FLOAT_FORMAT", "RESULTS_WRITTEN_NOTE", "Results", "prepare_out_dir", "write_bytes_atomic", "write_results"]


@dataclass
class Results:
    """Everything a run produces, as tidy frames (columns as in CASE_FORMAT.md).

    ``tables`` maps a file name (``market.parquet``, ``iterations.csv``...) to its frame;
    ``summary`` is written to ``summary.json``. Files of the results contract
    (:data:`gridmarket.contract.TABLES`) are written through :func:`gridmarket.contract.write_table`
    (their columns and types checked); any other file as plain CSV or Parquet.
    """

    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: file name -> a file already written (a long run's streamed Parquet tables), moved into the folder
    files: dict[str, Path] = field(default_factory=dict)


def prepare_out_dir(out: Path, *, overwrite: bool, protect: Iterable[Path] = ()) -> Path:
    """Check that the results folder ``out`` may be written (:func:`gridmarket.outdir.check_out_dir`,
    kind ``"results"``); raise :class:`ResultsError` otherwise.

    Returns the absolute path. Nothing is created here: results appear only once complete.
    """
    return check_out_dir(out, kind="results", overwrite=overwrite, protect=protect).path


def _write_table(df: pd.DataFrame, path: Path) -> None:
    if path.name in contract.TABLES:
        contract.write_table(df, path.parent, path.name)
    elif path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")


def _place_file(src: Path, dst: Path) -> None:
    """Put an already written file into the folder: a hard link where the file system allows
    it (no copy of a year's tables), else a copy. The source stays for its owner to delete."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def write_results(results: Results, out: Path | OutDir, *, overwrite: bool = False,
                  extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``results`` to ``out`` atomically.

    Parameters
    ----------
    results : Results
        Summary and tables.
    out : Path or OutDir
        The results folder, or what :func:`gridmarket.outdir.check_out_dir` returned for it
        before the run (then a folder that appeared there during the run is never replaced).
        Written as a temporary sibling, then moved into place.
    overwrite : bool
        Replace an existing folder written by gridmarket (only after the new one is complete).
    extra : mapping, optional
        ``name -> callable(path)`` writers of further files (figures, report) run inside
        the temporary folder before it is moved into place.

    Raises
    ------
    ResultsError
        ``out`` exists (without ``overwrite``), is not gridmarket's to replace, or cannot be
        written (a file is in the way, no permission, disk full); nothing is left behind.

    Notes
    -----
    An exception, Ctrl-C or SIGTERM/SIGHUP at any point leaves either the complete new folder
    or none (with ``overwrite``: the old one, untouched), and no temporary files, and no parent
    folders created for it (:func:`gridmarket.outdir.staged`).
    """
    target = out if isinstance(out, OutDir) else check_out_dir(out, kind="results", overwrite=overwrite)
    with staged(target) as tmp:
        for name in sorted(results.tables):
            _write_table(results.tables[name], tmp / name)
        for name, src in sorted(results.files.items()):
            _place_file(Path(src), tmp / name)
        (tmp / "summary.json").write_text(json.dumps(results.summary, indent=2, default=_json_default) + "\n")
        for writer in (extra or {}).values():
            writer(tmp)
    return target.path


def _json_default(obj: object) -> object:
    if hasattr(obj, "item"):
        return obj.item()  # numpy scalars
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)
