"""Command-line interface: ``gridmarket run | check | report | new-case | sweep``.

Every :class:`~gridmarket.errors.GridmarketError` becomes a few readable lines and exit
status 2 (a usage error too); an unexpected exception is a bug: exit status 1 and a request
to report it, with the traceback only under ``--debug`` (which shows it for every error).
Ctrl-C gives exit status 130, SIGTERM 143 and SIGHUP 129 (handled alike), and says whether a
results folder was left (never a partial one, and the previous one is kept unless the new one
was complete). ``gridmarket sweep`` exits with status 3 (:data:`~gridmarket.sweep.cli.SOME_FAILED`)
when it finished but some scenarios failed. Warnings of gridmarket are one line each:
``warning: ...``; those of the libraries (numpy, matplotlib...) show only under ``--debug``.
Folders are written through :mod:`gridmarket.outdir` (``--overwrite`` replaces only a folder
gridmarket wrote). Other modules add commands through :data:`COMMAND_MODULES`.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from gridmarket import __version__, _threads  # noqa: F401 - before numpy: one BLAS thread for the command
from gridmarket import cli_cases as _cli_cases
from gridmarket.errors import GridmarketError, GridmarketWarning, ResultsError
from gridmarket.outdir import NAME_MAX, Terminated, termination_signals_as_interrupts

if TYPE_CHECKING:
    from gridmarket.case import Case
    from gridmarket.study import StudyResult

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Energy-community markets with batteries on real OpenDSS grids.")
err = Console(stderr=True, soft_wrap=True)  # piped: no hard wrap at 80 columns
out = Console(soft_wrap=True)

_state: dict[str, object] = {"debug": False}

CaseArg = Annotated[Path | None, typer.Argument(help="Case folder (default: the embedded IEEE EU LV case).")]


def _version(value: bool) -> None:
    if value:
        out.print(f"gridmarket {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of any error.")] = False,
) -> None:
    _state["debug"] = debug


def _records_interrupts(fn: Callable[..., None]) -> Callable[..., None]:
    """Keep the KeyboardInterrupt of a command for :func:`main` (typer turns it into exit 130
    and drops it, with its note on whether the results were complete)."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> None:
        try:
            fn(*args, **kwargs)
        except KeyboardInterrupt as exc:
            _state["interrupt"] = exc
            raise

    return wrapper


def _case_path(case: Path | None) -> Path:
    if case is not None:
        return case
    from gridmarket.cases import default_case_path

    return default_case_path()


@contextmanager
def _progress(quiet: bool, *, one_bar: str | None = None) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar; yields ``update(label, done, total)``.

    One bar per ``label`` (the stages of ``run``), or with ``one_bar`` a single bar named so
    whose description also shows the latest ``label`` (the scenarios of ``sweep``).
    """
    if quiet or not err.is_terminal:
        yield lambda label, done, total: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(),
                  console=err, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def update(label: str, done: int, total: int) -> None:
            key = label if one_bar is None else one_bar
            text = label if one_bar is None else f"{one_bar} (last: {escape(label)})"
            if key not in tasks:
                tasks[key] = bar.add_task(text, total=total)
            bar.update(tasks[key], completed=done, total=total, description=text)

        yield update


@app.command()
@_records_interrupts
def run(
    case: CaseArg = None,
    out_dir: Annotated[str | None, typer.Option("--out", "-o", help="Results folder"
                                                " (default: results/<case name>).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a results folder that gridmarket"
                                            " wrote (never any other folder).")] = False,
    no_report: Annotated[bool, typer.Option("--no-report", help="Skip report.html and the figures.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    compare: Annotated[bool, typer.Option("--compare", help="Also write comparison.csv: blind and aware market,"
                                          " without and with placed batteries (four more runs).")] = False,
) -> None:
    """Run the study loop on CASE: market, power flow, limits, battery placement, report."""
    from gridmarket.case import load_case
    from gridmarket.outdir import check_out_dir
    from gridmarket.study.run import run_to_folder

    start = _state.get("t0")  # main()'s start: the whole command
    t0 = start if isinstance(start, float) else time.perf_counter()
    path = _case_path(case)
    c = load_case(path)
    if out_dir is None:
        _check_folder_name(c.name, "the results folder results/<name>")
    target = check_out_dir(out_dir if out_dir is not None else Path("results") / c.name, kind="results",
                           overwrite=overwrite, protect=[path])  # refuse before any work
    # run_study makes every check of `gridmarket check` (check_case_network) on the network it
    # compiles, before any work: one compile, as in the API (a second compile of the same master
    # in one process is what `check` never does). A long horizon streams its per-step tables.
    with _progress(quiet) as update:
        extra: dict[str, Any] = {}
        if compare:  # before the report, which draws comparison.csv when present
            from gridmarket.study.compare import write_comparison

            extra["comparison"] = lambda folder: write_comparison(c, folder)
        if not no_report:  # drawn inside the folder before it is moved into place, with progress
            from functools import partial

            from gridmarket.report import build_report

            extra["report"] = partial(build_report, progress=update)
        res, written = run_to_folder(c, target, progress=update, extra=extra, t_command=t0)
    out.print(escape(run_summary(res, time.perf_counter() - t0)), highlight=False)
    out.print(f"results written to [bold]{escape(str(written))}[/bold]", highlight=False)


def _money(value: float, currency: str) -> str:
    """A money figure as the console shows every one: ``1,234.57 R$``."""
    return f"{value:,.2f} {currency}"


def run_summary(res: StudyResult, command_s: float) -> str:
    """The console summary of a run: stop reason, base and best iteration (realised welfare, net
    benefit and the value of stored energy with the currency, violations, battery units), what
    the batteries would have to cost to break even, and the loop's and the whole command's time [s].

    Iterations are compared on realised welfare (shared MODEL.md, *Reported welfare*): money and
    utility that changed hands, not the value the market puts on energy left in the batteries.
    """
    t = res.iteration_table()
    base, best = t.iloc[0], t.iloc[res.best]
    cur = res.case.currency
    n = len(t)
    lines = [
        f"case {res.case.name!r}: {n:,} iteration{'' if n == 1 else 's'}, stopped: {res.stop_reason}",
        f"  base    : realised welfare {_money(float(base.welfare_realised), cur)},"
        f" {int(base.violations):,} violations",
        f"  best #{res.best:<2}: realised welfare {_money(float(best.welfare_realised), cur)},"
        f" {int(best.violations):,} violations, {int(best.battery_units):,} battery unit(s)",
    ]
    if res.best != 0:
        from gridmarket import economics

        case = res.case
        gain = float(best.welfare_realised - base.welfare_realised)
        line = (f"  batteries: gain {_money(gain, cur)}, stored-energy value"
                f" {_money(float(best.stored_energy_value), cur)}, annuity {_money(float(best.battery_annuity), cur)},"
                f" net benefit {_money(float(best.net_benefit), cur)}")
        if not economics.costed(case.battery):
            line += " (not costed: set [battery] capex_per_kwh)"
        be = economics.break_even_capex_per_kwh(gain, float(best.battery_units), case.battery, case.time.steps,
                                                case.time.step_hours)
        if be is not None:
            line += f"; break-even capex {_money(be, cur)}/kWh"
        lines.append(line)
    lines.append(f"  time    : study loop {res.runtime_s:,.2f} s, whole command {command_s:,.2f} s")
    return "\n".join(lines)


@app.command()
@_records_interrupts
def check(case: CaseArg = None) -> None:
    """Validate CASE without running it: files, keys, profiles, and every element in the network."""
    from gridmarket.case import CaseWarning, load_case

    c = load_case(_case_path(case))
    info = check_case_network(c)
    out.print(f"case {c.name!r} is valid: {len(c.agents)} agents in {len(c.communities)}"
              f" {'community' if len(c.communities) == 1 else 'communities'},"
              f" {c.time.steps} steps of {c.time.step_hours:g} h; {info}")
    # the base case at no load and at peak load: a valid case can still be a meaningless study
    # (a source at the upper limit, most buses violated before any market, one-member communities)
    from gridmarket.cases.sanity import case_sanity

    report = case_sanity(c)
    out.print(f"base case: {report.summary()}", highlight=False, soft_wrap=True)
    for note in report.warnings:
        warnings.warn(CaseWarning(note), stacklevel=1)


def check_case_network(case: Case) -> str:
    """Every check of the case against its compiled network (:func:`gridmarket.study.check_network`,
    the same that :func:`~gridmarket.study.run_study` makes): one line describing the network,
    or a CaseError naming every agents.csv row and case.toml key that does not match it."""
    from gridmarket.study import check_network

    return check_network(case)


@app.command()
@_records_interrupts
def report(results: Annotated[Path, typer.Argument(help="A results folder written by `gridmarket run`.")]) -> None:
    """Rebuild report.html and the figures of a results folder."""
    from gridmarket.report import build_report

    folder = results.expanduser()
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        msg = f"cannot write the report into {folder}: the folder is not writable"
        raise ResultsError(msg)
    try:
        path = build_report(results)
    except OSError as exc:
        msg = f"cannot write the report into {folder}: {exc.strerror or exc}"
        if exc.filename:
            msg += f" ({exc.filename})"
        raise ResultsError(msg) from exc
    out.print(f"report written to [bold]{escape(str(path))}[/bold]", highlight=False)


# new-case and calibrate live in gridmarket.cli_cases (helper "cases"); registered here
app.command("new-case", short_help="Write a case folder from a known feeder or any OpenDSS feeder (.dss).")(
    _records_interrupts(_cli_cases.new_case))
app.command(short_help="Fit a case's source voltage to measured meter voltages.")(
    _records_interrupts(_cli_cases.calibrate))


@app.command(short_help="Run a case over the scenarios of a SWEEP.toml on Dask (exit 3: some failed).")
@_records_interrupts
def sweep(
    case: Annotated[Path, typer.Argument(help="The base case folder.")],
    sweep_toml: Annotated[Path, typer.Argument(metavar="SWEEP.toml", help="The scenarios: a grid"
                                               " (\\[parameters]) and/or a list (\\[\\[scenarios]]);"
                                               " see docs/sweep.md.")],
    out_dir: Annotated[str | None, typer.Option("--out", "-o", help="Sweep folder (default:"
                                                 " results/<case name>-<SWEEP file name without .toml>)."
                                                 " Rerunning into the same folder reuses the scenarios"
                                                 " already done.")] = None,
    scheduler: Annotated[str | None, typer.Option("--scheduler", metavar="ADDR|serial", help="A running"
                                                  " Dask scheduler (tcp://host:8786), or 'serial' (no Dask,"
                                                  " one scenario after the other). Default: a local cluster"
                                                  " started for this sweep.")] = None,
    workers: Annotated[int | None, typer.Option("--workers", "-w", min=1, help="Worker processes of the"
                                                " local cluster (default: one per CPU, at most one per"
                                                " scenario).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Run every scenario again, also those"
                                            " already done.")] = False,
    report: Annotated[bool | None, typer.Option("--report/--no-report", help="Write every scenario's"
                                                " report.html (default: \\[sweep].report of the file).",
                                                show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run CASE over the scenarios of SWEEP.toml, each an independent task on Dask: writes
    sweep.csv (one row per scenario: parameters, welfare, violations, batteries, runtime),
    sweep.png, sweep.html and each scenario's case and results folder. A failed scenario does not
    stop the others; exit status 3 when some failed (they are listed), 2 for a bad case or sweep
    file.
    \f
    :func:`gridmarket.sweep.cli.sweep_command` (:func:`gridmarket.sweep.run_sweep`) with a
    progress bar over the scenarios; format and behaviour in docs/sweep.md.
    """
    from gridmarket.sweep.cli import sweep_command
    from gridmarket.sweep.run import SERIAL

    if workers is not None and scheduler is not None:
        what = "serial runs" if scheduler == SERIAL else f"the scheduler {scheduler}"
        msg = f"--workers sizes the local cluster only; it does not apply to {what}"
        raise GridmarketError(msg)
    if out_dir is not None and not out_dir.strip():
        msg = "--out is empty: give the sweep folder to write (an unset variable in a script?)"
        raise ResultsError(msg)
    target = Path(out_dir) if out_dir is not None else _default_sweep_dir(case, sweep_toml)
    try:
        with _progress(quiet, one_bar="scenarios") as update:
            res = sweep_command(case, sweep_toml, target, scheduler=scheduler, workers=workers,
                                overwrite=overwrite, progress=update, report=report)
    except KeyboardInterrupt as exc:
        exc.add_note(f"the scenarios finished so far are kept in {target} and a rerun reuses them;"
                     " sweep.csv was not updated")
        raise
    out.print(escape(res.text), highlight=False, soft_wrap=True)
    if res.exit_code:
        raise typer.Exit(code=res.exit_code)


def _default_sweep_dir(case: Path, sweep_toml: Path) -> Path:
    """``results/<case name>-<sweep file stem>`` (beside ``run``'s ``results/<case name>``).

    Raises
    ------
    ResultsError
        The case name cannot name a folder.
    """
    from gridmarket.case import CaseWarning, load_case

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CaseWarning)  # as run_sweep, which reads the case again
        name = load_case(case).name
    _check_folder_name(name, "the sweep folder results/<name>-<sweep file name>", f"-{sweep_toml.stem}")
    return Path("results") / f"{name}-{sweep_toml.stem}"


def _check_folder_name(name: str, what: str, extra: str = "") -> None:
    """Refuse a case name that cannot name a folder (empty, ``.``, ``..``, with a slash, over 255 bytes).

    Raises
    ------
    ResultsError
        Naming ``[case].name`` and the way out (``--out DIR``).
    """
    if name.strip() in ("", ".", "..") or any(ch in name for ch in "/\\"):
        msg = f"case name {name!r} ([case].name in case.toml) cannot name {what}: choose the folder with --out DIR"
        raise ResultsError(msg)
    size = len(os.fsencode(name)) + (len(os.fsencode(extra)) if extra else 0)
    if size > NAME_MAX:
        msg = (f"case name {name[:40]!r}... ([case].name in case.toml) is too long to name {what} ({size} bytes;"
               f" file names may have at most {NAME_MAX}): choose the folder with --out DIR")
        raise ResultsError(msg)


#: click's exception base class, whether typer vendors click (typer >= 0.17) or not
_ClickException: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    """Print a warning of gridmarket as one line ``warning: ...`` (no source file and line).

    Only warnings of a gridmarket class (:class:`~gridmarket.errors.GridmarketWarning`, e.g.
    ``CaseWarning``) reach the user; those of the libraries (numpy, matplotlib, pandas) are
    shown only under ``--debug``, with their category.
    """
    if not issubclass(category, GridmarketWarning):
        if _state["debug"]:
            err.print(f"[dim]debug: {category.__name__}: {escape(str(message))} ({escape(filename)}:{lineno})[/dim]",
                      highlight=False, soft_wrap=True)
        return
    err.print(f"[bold yellow]warning:[/bold yellow] {escape(str(message))}", highlight=False, soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gridmarket`` command; returns the exit status.

    Exit statuses: 0 success; 2 a :class:`~gridmarket.errors.GridmarketError` (bad input or
    environment: printed as a few lines) or a command-line usage error; 3 ``gridmarket sweep``
    finished but some scenarios failed (:data:`~gridmarket.sweep.cli.SOME_FAILED`); 130 interrupted
    (Ctrl-C; no partial results folder is left), 143 / 129 the same for SIGTERM / SIGHUP; 1 an
    unexpected exception, i.e. a bug: a request
    to report it, and the traceback with ``--debug``. With ``--debug`` the traceback of a
    ``GridmarketError`` is shown too.
    """
    # the whole command: from the process's start when this is the `gridmarket` command itself
    _state["t0"] = time.perf_counter() - (_process_age_s() if argv is None else 0.0)
    from gridmarket.outdir import PUBLISHED

    PUBLISHED.clear()
    args = list(sys.argv[1:] if argv is None else argv)
    _state["debug"] = "--debug" in args
    _state.pop("interrupt", None)
    try:
        with warnings.catch_warnings(), termination_signals_as_interrupts():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            _register_commands()
            status = app(args=args, prog_name="gridmarket", standalone_mode=False)
        if status == 130 or "interrupt" in _state:  # typer's answer to Ctrl-C inside a command
            kept = _state.pop("interrupt", None)
            return _interrupted(kept if isinstance(kept, BaseException) else None)
        return int(status) if isinstance(status, int) else 0
    except GridmarketError as exc:
        if _state["debug"]:
            traceback.print_exc()
        err.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except (typer.Abort, KeyboardInterrupt) as exc:
        kept = _state.pop("interrupt", None)  # click turns the command's interrupt into Abort
        cause = kept if isinstance(kept, BaseException) else exc.__cause__ or exc.__context__
        return _interrupted(cause if isinstance(cause, KeyboardInterrupt) else exc)
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if isinstance(exc, _ClickException):
            exc.show()  # type: ignore[attr-defined]
            return int(getattr(exc, "exit_code", 2))
        if _state["debug"]:
            traceback.print_exc()
        err.print(f"[bold red]internal error:[/bold red] {type(exc).__name__}: {escape(str(exc))}\n"
                  "This is a bug in gridmarket; please report it with the command you ran"
                  " (rerun with --debug for the traceback).", highlight=False, soft_wrap=True)
        return 1


def _process_age_s() -> float:
    """Seconds since this process started (Linux ``/proc``; 0 where that is not available), so
    that the "whole command" time includes the interpreter's start and the imports."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat(5): start time after boot [clock ticks]
        uptime = float(Path("/proc/uptime").read_text().split()[0])  # [s]
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def _interrupted(exc: BaseException | None) -> int:
    """Say what an interrupt left behind (nothing, or a complete results folder).

    Status 130 for Ctrl-C (SIGINT), 128 + the signal's number for SIGTERM (143) and SIGHUP
    (129), as a shell reports a process ended by them.
    """
    from gridmarket.outdir import LAST_TERMINATION, PUBLISHED, RESULTS_WRITTEN_NOTE

    notes = getattr(exc, "__notes__", [])
    if not notes and PUBLISHED:  # the interrupt came after the folder was moved into place
        notes = [f"{RESULTS_WRITTEN_NOTE} {PUBLISHED[-1]}"]
    signum = exc.signum if isinstance(exc, Terminated) else (LAST_TERMINATION[0] if LAST_TERMINATION else None)
    what = "interrupted" if signum is None else f"stopped by {signal.Signals(signum).name}"
    err.print(f"{what}; {notes[-1]}" if notes else f"{what}; no results were written",
              highlight=False, soft_wrap=True)
    return 130 if signum is None else 128 + signum


# ------------------------------------------------------------------ commands of other modules

#: modules that add commands to ``gridmarket``: each has ``register(app: typer.Typer) -> None``,
#: called once before the command line is parsed (``new-case``/``calibrate`` live in their
#: own module; add its name here)
COMMAND_MODULES: tuple[str, ...] = ()


def _register_commands() -> None:
    """Let each of :data:`COMMAND_MODULES` add its commands to :data:`app` (once)."""
    if _state.get("registered"):
        return
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    _state["registered"] = True


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
