"""Command-line interface: ``gridmarket run | check | report | new-case``.

Every :class:`~gridmarket.errors.GridmarketError` becomes a few readable lines and exit
status 2 (a usage error too); an unexpected exception is a bug: exit status 1 and a request
to report it, with the traceback only under ``--debug`` (which shows it for every error).
Ctrl-C gives exit status 130 and says whether a results folder was left (never a partial
one). Warnings are one line each: ``warning: ...``.
"""

from __future__ import annotations

import functools
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from gridmarket import __version__
from gridmarket.errors import CaseError, GridmarketError, NetworkError, Problem, ResultsError

if TYPE_CHECKING:
    from gridmarket.case import Case

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Energy-community markets with batteries on real OpenDSS grids.")
err = Console(stderr=True)
out = Console()

_state: dict[str, object] = {"debug": False}

CaseArg = Annotated[Optional[Path], typer.Argument(help="Case folder (default: the embedded IEEE EU LV case).")]


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
def _progress(quiet: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar; yields ``update(label, done, total)``."""
    if quiet or not err.is_terminal:
        yield lambda label, done, total: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def update(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done, total=total)

        yield update


@app.command()
@_records_interrupts
def run(
    case: CaseArg = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Results folder"
                                                    " (default: results/<case name>).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing results folder.")] = False,
    no_report: Annotated[bool, typer.Option("--no-report", help="Skip report.html and the figures.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run the study loop on CASE: market, power flow, limits, battery placement, report."""
    from gridmarket.case import load_case
    from gridmarket.results import prepare_out_dir, write_results
    from gridmarket.study import run_study

    path = _case_path(case)
    c = load_case(path)
    if out_dir is None and (c.name.strip() in ("", ".", "..") or any(ch in c.name for ch in "/\\")):
        msg = (f"case name {c.name!r} ([case].name in case.toml) cannot name the results folder"
               " results/<name>: choose the folder with --out DIR")
        raise ResultsError(msg)
    target = out_dir if out_dir is not None else Path("results") / c.name
    prepare_out_dir(target, overwrite=overwrite)  # refuse before any work
    check_case_network(c)  # every mismatch with the network, named by file and row or key
    with _progress(quiet) as update:
        res = run_study(c, progress=update)
    extra = {}
    if not no_report:
        from gridmarket.report import build_report

        extra["report"] = build_report
    written = write_results(res.to_results(), target, overwrite=overwrite, extra=extra)
    out.print(res.summary_text())
    out.print(f"results written to [bold]{escape(str(written))}[/bold]")


@app.command()
@_records_interrupts
def check(case: CaseArg = None) -> None:
    """Validate CASE without running it: files, keys, profiles, and every element in the network."""
    from gridmarket.case import load_case

    c = load_case(_case_path(case))
    info = check_case_network(c)
    out.print(f"case {c.name!r} is valid: {len(c.agents)} agents in {len(c.communities)} communities,"
              f" {c.time.steps} steps of {c.time.step_hours:g} h; {info}")


def check_case_network(case: Case) -> str:
    """Every check ``gridmarket check`` makes once the network is compiled: each agent's
    element or bus exists (:func:`gridmarket.study.check_network`) and each of
    ``[network].monitored_buses`` is a bus of the network.

    Returns
    -------
    str
        One line describing the network.

    Raises
    ------
    CaseError
        Naming the agents.csv rows and case.toml keys that do not match the network.
    NetworkError
        The master does not compile (OpenDSS's message, with file and line).
    """
    from gridmarket.network import OpenDSSNetwork, monitored_mask
    from gridmarket.study import check_network

    net = OpenDSSNetwork(case.network.master)
    problems: list[Problem] = []
    try:
        info = check_network(case, net)
    except CaseError as exc:
        problems.extend(exc.problems)
        info = ""
    reported = {p.where for p in problems}
    b = case.battery
    for i, a in enumerate(case.agents):
        where = f"row {i + 2} ({a.name})"
        if a.bus is None or where in reported:
            continue
        try:  # on this throw-away network: the bus's nodes exist, the name is free
            net.add_battery(a.name, a.bus, kw_rated=a.units * b.unit_kw, kwh=a.units * b.unit_kwh)
        except (NetworkError, ValueError) as exc:
            text = str(exc)
            if text.endswith("already exists in " + net.master.name):
                text = (f"gridmarket creates this battery as Load.{a.name}, which already exists in"
                        f" {net.master.name}; give the agent another name")
            problems.append(Problem("agents.csv", where, f"element {a.element!r}: {text}"))
    try:
        monitored_mask(net.node_names, net.buses, case.network.monitored_buses)
    except NetworkError as exc:
        problems.append(Problem("case.toml", "[network].monitored_buses", str(exc)))
    if problems:
        raise CaseError(problems, case=case.name)
    return info


@app.command()
@_records_interrupts
def report(results: Annotated[Path, typer.Argument(help="A results folder written by `gridmarket run`.")]) -> None:
    """Rebuild report.html and the figures of a results folder."""
    from gridmarket.report import build_report

    path = build_report(results)
    out.print(f"report written to [bold]{path}[/bold]")


@app.command("new-case")
@_records_interrupts
def new_case(
    source: Annotated[str, typer.Argument(help="'cr_mar' (the Costa Rica feeder in ../shared/data)"
                                          " or 'default' (the embedded IEEE EU LV case).")],
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the case into.")],
    study_case: Annotated[int, typer.Option("--case", help="cr_mar: 1 (one dispersed community)"
                                            " or 2 (five communities).")] = 1,
    data_dir: Annotated[Optional[Path], typer.Option("--data", help="Folder holding cr_mar/ (default:"
                                                     " ../shared/data or $GRIDMARKET_SHARED_DATA).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing folder.")] = False,
) -> None:
    """Write a case folder built from a known feeder."""
    from gridmarket.cases import write_case_source

    path = write_case_source(source, out_dir, study_case=study_case, data_dir=data_dir, overwrite=overwrite)
    out.print(f"case written to [bold]{path}[/bold]; run it with: gridmarket run {path}")


#: click's exception base class, whether typer vendors click (typer >= 0.17) or not
_ClickException: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    """Print a warning as one line ``warning: ...`` (no source file and line of gridmarket)."""
    err.print(f"[bold yellow]warning:[/bold yellow] {escape(str(message))}", highlight=False, soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gridmarket`` command; returns the exit status.

    Exit statuses: 0 success; 2 a :class:`~gridmarket.errors.GridmarketError` (bad input or
    environment: printed as a few lines) or a command-line usage error; 130 interrupted
    (Ctrl-C; no results folder is left); 1 an unexpected exception, i.e. a bug: a request
    to report it, and the traceback with ``--debug``. With ``--debug`` the traceback of a
    ``GridmarketError`` is shown too.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    _state["debug"] = "--debug" in args
    _state.pop("interrupt", None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
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
        return _interrupted(exc)
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


def _interrupted(exc: BaseException | None) -> int:
    """Say what an interrupt left behind (nothing, or a complete results folder); status 130."""
    notes = getattr(exc, "__notes__", [])
    err.print(f"interrupted; {notes[-1]}" if notes else "interrupted; no results were written",
              highlight=False, soft_wrap=True)
    return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
