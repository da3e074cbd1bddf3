"""Command-line interface: ``gridmarket run | check | report | new-case``.

Every :class:`~gridmarket.errors.GridmarketError` becomes a few readable lines and exit
status 2; an unexpected exception is a bug: exit status 1, with the traceback only under
``--debug``.
"""

from __future__ import annotations

import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gridmarket import __version__
from gridmarket.errors import GridmarketError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Energy-community markets with batteries on real OpenDSS grids.")
err = Console(stderr=True)
out = Console()

_state = {"debug": False}

CaseArg = Annotated[Optional[Path], typer.Argument(help="Case folder (default: the embedded IEEE EU LV case).")]


def _version(value: bool) -> None:
    if value:
        out.print(f"gridmarket {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of unexpected errors.")] = False,
) -> None:
    _state["debug"] = debug


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
        tasks: dict[str, int] = {}

        def update(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done, total=total)

        yield update


@app.command()
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
    target = out_dir if out_dir is not None else Path("results") / c.name
    prepare_out_dir(target, overwrite=overwrite)  # refuse before any work
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
def check(case: CaseArg = None) -> None:
    """Validate CASE without running it: files, keys, profiles, and every element in the network."""
    from gridmarket.case import load_case
    from gridmarket.study import check_network

    c = load_case(_case_path(case))
    info = check_network(c)
    out.print(f"case {c.name!r} is valid: {len(c.agents)} agents in {len(c.communities)} communities,"
              f" {c.time.steps} steps of {c.time.step_hours:g} h; {info}")


@app.command()
def report(results: Annotated[Path, typer.Argument(help="A results folder written by `gridmarket run`.")]) -> None:
    """Rebuild report.html and the figures of a results folder."""
    from gridmarket.report import build_report

    path = build_report(results)
    out.print(f"report written to [bold]{path}[/bold]")


@app.command("new-case")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gridmarket`` command; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    _state["debug"] = "--debug" in args
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            app(args=args, prog_name="gridmarket", standalone_mode=False)
    except GridmarketError as exc:
        err.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except (typer.Abort, KeyboardInterrupt):
        err.print("interrupted; no results were written")
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        if _state["debug"]:
            traceback.print_exc()
        err.print(f"[bold red]internal error:[/bold red] {type(exc).__name__}: {escape(str(exc))}\n"
                  "This is a bug in gridmarket; please report it with the command you ran"
                  " (rerun with --debug for the traceback).", highlight=False)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
