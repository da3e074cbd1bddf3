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
import signal
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from gridmarket import contract
from gridmarket.contract import FLOAT_FORMAT
from gridmarket.errors import ResultsError

__all__ = ["FLOAT_FORMAT", "Results", "prepare_out_dir", "write_bytes_atomic", "write_results"]

#: note added to a KeyboardInterrupt that arrived after the results folder was complete
RESULTS_WRITTEN_NOTE = "the results were complete before the interrupt:"


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

    Raises
    ------
    ResultsError
        ``out`` exists (without ``overwrite``) or cannot be written (a file is in the way,
        no permission, disk full); nothing is left behind.

    Notes
    -----
    An exception or Ctrl-C (``KeyboardInterrupt``) at any point leaves either the complete
    new folder or none (with ``overwrite``: the old one, untouched), and no temporary files,
    and no parent folders created for it. The rename into place and the clean-up hold a
    Ctrl-C back until they are done.
    """
    out = prepare_out_dir(out, overwrite=overwrite)
    committed = False
    created: list[Path] = []
    tmp: Path | None = None
    try:
        with _interrupts_deferred():
            for parent in reversed(out.parents):
                if not parent.exists():
                    parent.mkdir()
                    created.append(parent)
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        for name in sorted(results.tables):
            _write_table(results.tables[name], tmp / name)
        for name, src in sorted(results.files.items()):
            _place_file(Path(src), tmp / name)
        (tmp / "summary.json").write_text(json.dumps(results.summary, indent=2, default=_json_default) + "\n")
        for writer in (extra or {}).values():
            writer(tmp)
        try:
            with _interrupts_deferred():
                if out.exists():
                    old = out.parent / f".{out.name}.old-{os.getpid()}"
                    out.rename(old)
                    try:
                        tmp.rename(out)
                    except BaseException:
                        old.rename(out)
                        raise
                    committed = True
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    tmp.rename(out)
                    committed = True
        except KeyboardInterrupt as exc:
            if committed:  # Ctrl-C during the rename, delivered after it: the folder is whole
                exc.add_note(f"{RESULTS_WRITTEN_NOTE} {out}")
            raise
    except BaseException as exc:
        with _interrupts_deferred():
            if tmp is not None and tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            for parent in reversed(created):
                with suppress(OSError):  # not empty: something else was put there meanwhile
                    parent.rmdir()
        if isinstance(exc, OSError) and not isinstance(exc, ResultsError):
            msg = f"cannot write results to {out}: {exc.strerror or exc}"
            if exc.filename:
                msg += f" ({exc.filename})"
            raise ResultsError(msg) from exc
        raise
    return out


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    """Write one file whole or not at all: ``payload`` goes to a temporary file beside ``path``,
    which is then moved into place (a reader never sees half a file)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) inside the block and deliver it at its end.

    Used around the renames and the clean-up, so that an interrupt cannot leave half a
    rename or a stray temporary folder. Outside the main thread (where signal handlers
    cannot be set) the block runs as is.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield  # no Python handler can be set here (another thread, or one installed outside Python)
        return
    pending: list[tuple[int, Any]] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending and callable(previous):
            previous(*pending[0])  # Python's default handler raises KeyboardInterrupt here
        elif pending and previous == signal.SIG_DFL:
            signal.raise_signal(signal.SIGINT)


def _json_default(obj: object) -> object:
    if hasattr(obj, "item"):
        return obj.item()  # numpy scalars
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)
