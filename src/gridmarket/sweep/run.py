"""Run a sweep: every scenario an independent task on Dask (``dask.distributed``).

Each scenario writes its own case folder (:func:`gridmarket.sweep.apply.write_scenario_case`),
runs the study loop on it (:func:`gridmarket.study.run_study`, which compiles its own OpenDSS
engine inside the worker process) and writes its results folder atomically
(:func:`gridmarket.results.write_results`) with a ``scenario.json`` record. The sweep collects
one row per scenario into ``sweep.csv``.

Layout of a sweep's output folder::

    OUT/sweep.csv, sweep.png, sweep.html, sweep.toml (a copy of the input)
    OUT/scenarios/<id>/case/          the scenario's case (``gridmarket run`` can rerun it)
    OUT/scenarios/<id>/results/       its results folder, with scenario.json
    OUT/scenarios/<id>/error.txt      the traceback, when the scenario failed

A scenario is *done* when its results folder holds a ``scenario.json`` with the same
parameters and the same base-case fingerprint; a rerun reuses its row (``cached = True``)
instead of running it again. A failed scenario is reported with its error and never stops the
others, whether it raised inside its task or its worker died.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pandas as pd

from gridmarket.case import CaseWarning, load_case
from gridmarket.errors import GridmarketError
from gridmarket.results import write_bytes_atomic
from gridmarket.sweep.apply import base_master, write_scenario_case
from gridmarket.sweep.columns import INT_COLUMNS, RESULT_COLUMNS
from gridmarket.sweep.spec import Scenario, SweepSpec, read_sweep

__all__ = [
    "RESULT_COLUMNS",
    "SERIAL",
    "case_fingerprint",
    "run_scenario",
    "run_sweep",
    "sweep_table",
]

#: ``scheduler=SERIAL`` runs the scenarios one after the other in this process (no Dask).
SERIAL = "serial"
SCENARIO_FILE = "scenario.json"
SWEEP_CSV = "sweep.csv"

Progress = Callable[[str, int, int], None]


def case_fingerprint(case_dir: str | Path) -> str:
    """SHA-256 of the gridmarket version and the base case's files (case.toml, agents.csv,
    profiles.csv, its master).

    A scenario done on another version of the case (or of gridmarket) is run again. Files that
    the master redirects are not part of it.
    """
    from gridmarket import __version__

    root = Path(case_dir).resolve()
    h = hashlib.sha256(f"gridmarket {__version__}\n".encode())
    for path in (root / "case.toml", root / "agents.csv", root / "profiles.csv", base_master(root)):
        h.update(path.name.encode())
        try:
            h.update(path.read_bytes())
        except OSError:
            h.update(b"<missing>")
    return h.hexdigest()


def _display(value: Any) -> Any:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return value


def _one_line(exc: BaseException) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{type(exc).__name__}: {text}"


def _empty_row(sc: Scenario) -> dict[str, Any]:
    row: dict[str, Any] = {"scenario": sc.id}
    row.update({k: _display(v) for k, v in sc.params.items()})
    row.update({c: None for c in RESULT_COLUMNS})
    row.update(status="failed", error="", cached=False, warnings="", results="")
    return row


def run_scenario(case_dir: str | Path, scenario: Scenario, out_dir: str | Path, *, report: bool = False,
                 fingerprint: str = "") -> dict[str, Any]:
    """Run one scenario (the Dask task) and return its ``sweep.csv`` row.

    Never raises for a scenario's own failure: the row then has ``status = "failed"`` and the
    error, and ``scenarios/<id>/error.txt`` the traceback.

    Parameters
    ----------
    case_dir : path
        The base case folder.
    scenario : Scenario
    out_dir : path
        The sweep's output folder (shared by the workers).
    report : bool
        Also write ``report.html`` and the figures into the results folder.
    fingerprint : str
        :func:`case_fingerprint` of the base case, stored in ``scenario.json``.

    Returns
    -------
    dict
        ``scenario``, the parameters (lists as JSON text) and :data:`RESULT_COLUMNS`.
    """
    from gridmarket.results import write_results
    from gridmarket.study import run_study

    t0 = time.perf_counter()
    sdir = Path(out_dir) / "scenarios" / scenario.id
    row = _empty_row(scenario)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CaseWarning)
            case_path = write_scenario_case(case_dir, scenario.params, sdir / "case", name=scenario.id)
            case = load_case(case_path)
            study = run_study(case)
        table = study.iteration_table()
        base, best = table.iloc[0], table.iloc[study.best]
        row.update(
            status="ok", error="", welfare_base=float(base["welfare"]), welfare_best=float(best["welfare"]),
            violations_base=int(base["violations"]), violations_best=int(best["violations"]),
            battery_units=int(best["battery_units"]), iterations=len(table), best_iteration=int(study.best),
            stop_reason=study.stop_reason, warnings="; ".join(str(w.message) for w in caught),
            results=f"scenarios/{scenario.id}/results")
        row["runtime_s"] = round(time.perf_counter() - t0, 3)
        record = {"scenario": scenario.id, "params": scenario.params, "case": str(Path(case_dir).resolve()),
                  "fingerprint": fingerprint, "row": row}
        text = json.dumps(record, indent=2, default=str) + "\n"
        extra: dict[str, Callable[[Path], Any]] = {
            "scenario": lambda p: (p / SCENARIO_FILE).write_text(text, encoding="utf-8")}
        if report:
            from gridmarket.report import build_report

            extra["report"] = build_report
        write_results(study.to_results(), sdir / "results", overwrite=True, extra=extra)
        del study
        (sdir / "error.txt").unlink(missing_ok=True)
    except Exception as exc:  # a failed scenario must not stop the sweep: report it in its row
        row.update({c: None for c in RESULT_COLUMNS})
        row.update(status="failed", error=_one_line(exc), cached=False, warnings="", results="")
        sdir.mkdir(parents=True, exist_ok=True)
        (sdir / "error.txt").write_text("".join(traceback.format_exception(exc)), encoding="utf-8")
    row["runtime_s"] = round(time.perf_counter() - t0, 3)
    return row


def _cached_row(out: Path, sc: Scenario, fingerprint: str) -> dict[str, Any] | None:
    res = out / "scenarios" / sc.id / "results"
    try:
        record = json.loads((res / SCENARIO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = (json.dumps(record.get("params"), sort_keys=True, default=str) == sc.key()
            and record.get("fingerprint") == fingerprint and (res / "summary.json").is_file())
    if not same or not isinstance(record.get("row"), dict):
        return None
    row = _empty_row(sc)
    row.update({k: v for k, v in record["row"].items() if k in RESULT_COLUMNS})
    row["cached"] = True
    return row


def _execute(todo: Sequence[Scenario], case_dir: Path, out: Path, *, scheduler: str | None,
             n_workers: int | None, report: bool, fingerprint: str) -> Iterator[tuple[Scenario, dict[str, Any]]]:
    """Run ``todo`` and yield (scenario, row) as they finish."""
    if not todo:
        return
    if scheduler == SERIAL:
        for sc in todo:
            yield sc, run_scenario(case_dir, sc, out, report=report, fingerprint=fingerprint)
        return
    from distributed import Client, LocalCluster, as_completed

    with ExitStack() as stack:
        if scheduler is None:
            n = n_workers if n_workers is not None else (os.cpu_count() or 1)
            if n < 1:
                msg = f"n_workers must be >= 1, got {n}"
                raise GridmarketError(msg)
            # the scheduler always serves HTTP: ":0" takes a free port, so that clusters started
            # side by side never collide on 8787 (which distributed reports as a UserWarning)
            from gridmarket.outdir import children_ignore_interrupts

            with children_ignore_interrupts():  # Ctrl-C stops the sweep here, without a traceback per worker
                cluster = stack.enter_context(LocalCluster(
                    n_workers=min(n, len(todo)), threads_per_worker=1, processes=True,
                    dashboard_address=":0", silence_logs=logging.CRITICAL))
            client = stack.enter_context(Client(cluster))
        else:
            try:
                client = stack.enter_context(Client(scheduler))
            except (OSError, TimeoutError) as exc:
                msg = f"cannot connect to the Dask scheduler {scheduler!r}: {exc}"
                raise GridmarketError(msg) from exc
        run = uuid.uuid4().hex[:8]
        futures = {client.submit(run_scenario, str(case_dir), sc, str(out), report=report,
                                 fingerprint=fingerprint, key=f"gridmarket-{run}-{sc.index}-{sc.id}",
                                 pure=False): sc for sc in todo}
        for fut in as_completed(futures):
            sc = futures[fut]
            try:
                row = fut.result()
            except Exception as exc:  # the task itself died (worker lost, cancelled...)
                row = _empty_row(sc)
                row["error"] = _one_line(exc)
            yield sc, row


def sweep_table(spec: SweepSpec, rows: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """The tidy table of a sweep: one row per scenario in file order (``sweep.csv``)."""
    params: list[str] = []
    for sc in spec.scenarios:
        for k in sc.params:
            if k not in params:
                params.append(k)
    cols = ["scenario", *params, *RESULT_COLUMNS]
    data = [{c: rows.get(sc.id, _empty_row(sc)).get(c) for c in cols} for sc in spec.scenarios]
    table = pd.DataFrame(data, columns=cols)
    for c in INT_COLUMNS:
        table[c] = table[c].astype("Int64")
    for c in ("welfare_base", "welfare_best", "runtime_s"):
        table[c] = table[c].astype(float)
    table["cached"] = table["cached"].astype(bool)
    return table


def run_sweep(
    case_dir: str | Path,
    sweep_toml: str | Path | SweepSpec,
    out_dir: str | Path,
    *,
    scheduler: str | None = None,
    n_workers: int | None = None,
    progress: Progress | None = None,
    overwrite: bool = False,
    report: bool | None = None,
    figures: bool = True,
) -> pd.DataFrame:
    """Run every scenario of a sweep and write ``sweep.csv`` (plus figure and page).

    Parameters
    ----------
    case_dir : path
        The base case folder (validated once before any scenario starts).
    sweep_toml : path or SweepSpec
        The SWEEP.toml (format: ``docs/sweep.md``).
    out_dir : path
        The sweep's output folder (created). With a remote scheduler, every worker must see
        it (and the case) at the same path.
    scheduler : str, optional
        ``None``: a :class:`distributed.LocalCluster` of ``n_workers`` processes with one
        thread each, started for this sweep and closed after it; an address
        (``"tcp://host:8786"``): an existing Dask scheduler; ``"serial"``: no Dask, one
        scenario after the other in this process.
    n_workers : int, optional
        Workers of the local cluster (default: the machine's CPUs, at most one per scenario
        to run).
    progress : callable, optional
        ``progress(label, done, total)`` after each scenario (``label`` names it and its status).
    overwrite : bool
        Run every scenario again, even those already done.
    report : bool, optional
        Write each scenario's ``report.html`` (default: ``[sweep].report`` of the file).
    figures : bool
        Write ``sweep.png`` and ``sweep.html`` beside ``sweep.csv``.

    Returns
    -------
    pandas.DataFrame
        One row per scenario: ``scenario``, the parameters, then :data:`RESULT_COLUMNS`.

    Raises
    ------
    GridmarketError
        The sweep file or the base case is invalid, or the scheduler cannot be reached.
        Scenarios that fail do not raise: see their ``status`` and ``error``.
    """
    spec = sweep_toml if isinstance(sweep_toml, SweepSpec) else read_sweep(sweep_toml)
    case_path = Path(case_dir).expanduser().resolve()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CaseWarning)
        base_case = load_case(case_path)
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    if spec.source:
        write_bytes_atomic(out / "sweep.toml", spec.source.encode("utf-8"))
    fingerprint = case_fingerprint(case_path)
    total = len(spec.scenarios)
    rows: dict[str, dict[str, Any]] = {}
    todo: list[Scenario] = []
    done = 0
    for sc in spec.scenarios:
        cached = None if overwrite else _cached_row(out, sc, fingerprint)
        if cached is None:
            todo.append(sc)
            continue
        rows[sc.id] = cached
        done += 1
        if progress is not None:
            progress(f"{sc.id}: done earlier", done, total)
    flag = spec.report if report is None else report
    for sc, row in _execute(todo, case_path, out, scheduler=scheduler, n_workers=n_workers, report=flag,
                            fingerprint=fingerprint):
        rows[sc.id] = row
        done += 1
        if progress is not None:
            progress(f"{sc.id}: {row['status']}", done, total)
    table = sweep_table(spec, rows)
    csv = table.to_csv(index=False, float_format="%.10g", lineterminator="\n")
    write_bytes_atomic(out / SWEEP_CSV, csv.encode("utf-8"))
    if figures:
        from gridmarket.sweep.plots import write_sweep_page

        write_sweep_page(table, out, swept=spec.swept, title=spec.name, currency=base_case.currency)
    return table
