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
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from gridmarket.errors import ResultsError

__all__ = ["FLOAT_FORMAT", "Results", "write_results", "prepare_out_dir"]

#: every float in a results CSV is written with this format (reproducible bytes)
FLOAT_FORMAT = "%.10g"


@dataclass
class Results:
    """Everything a run produces, as tidy frames (columns as in CASE_FORMAT.md).

    ``tables`` maps a file name (``market.csv``, ``voltages.parquet``...) to its frame;
    ``summary`` is written to ``summary.json``.
    """

    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def prepare_out_dir(out: Path, *, overwrite: bool) -> Path:
    """Check that ``out`` may be written; raise :class:`ResultsError` otherwise.

    Returns the absolute path. Nothing is created here: results appear only once complete.
    """
    out = Path(out).expanduser().absolute()
    if out.exists() and not overwrite:
        msg = f"results folder {out} already exists; pass --overwrite to replace it"
        raise ResultsError(msg)
    if out.exists() and not out.is_dir():
        msg = f"results path {out} exists and is not a folder"
        raise ResultsError(msg)
    parent = out.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        msg = f"cannot write results to {out}: {probe} is a file, not a folder"
        raise ResultsError(msg)
    if not os.access(probe, os.W_OK | os.X_OK):
        msg = f"cannot write results to {out}: {probe} is not writable"
        raise ResultsError(msg)
    return out


def _write_table(df: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")


def write_results(results: Results, out: Path, *, overwrite: bool = False,
                  extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``results`` to ``out`` atomically.

    Parameters
    ----------
    results : Results
        Summary and tables.
    out : Path
        The results folder. Written as a temporary sibling, then renamed into place.
    overwrite : bool
        Replace an existing folder (only after the new one is complete).
    extra : mapping, optional
        ``name -> callable(path)`` writers of further files (figures, report) run inside
        the temporary folder before it is moved into place.
    """
    out = prepare_out_dir(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for name in sorted(results.tables):
            _write_table(results.tables[name], tmp / name)
        (tmp / "summary.json").write_text(json.dumps(results.summary, indent=2, default=_json_default) + "\n")
        for writer in (extra or {}).values():
            writer(tmp)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _json_default(obj: object) -> object:
    if hasattr(obj, "item"):
        return obj.item()  # numpy scalars
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)
