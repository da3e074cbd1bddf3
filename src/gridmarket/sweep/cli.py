"""Plain functions behind ``gridmarket new-case`` (feeder sources) and ``gridmarket sweep``.

They take the command line's options as arguments, do the work and return the text to print
and the exit status; the typer wiring lives in :mod:`gridmarket.cli`. Errors the user can cause
are raised as :class:`~gridmarket.errors.GridmarketError` (the CLI prints them, exit status 2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridmarket.errors import GridmarketError

__all__ = ["SOME_FAILED", "CommandResult", "new_case_command", "parse_settings", "sweep_command"]

#: exit status of ``gridmarket sweep`` when it finished but some scenarios failed
SOME_FAILED = 3

_NEW_CASE_OPTIONS = ("pv_kwp", "pv_percent_of_peak", "communities", "template", "settings", "import_price",
                     "export_price", "steps", "step_hours", "start", "start_hour", "loadshape", "name")


@dataclass(frozen=True)
class CommandResult:
    """What a command prints (``text``) and its exit status.

    Exit statuses: 0 everything ran; :data:`SOME_FAILED` (3) the sweep finished but some
    scenarios failed (listed in ``text``). Input errors are raised as GridmarketError (the CLI's
    status 2) and bugs as other exceptions (status 1), as for every command.
    """

    text: str
    exit_code: int = 0
    path: Path | None = None


def new_case_command(source: str | Path, out: str | Path, *, overwrite: bool = False, study_case: int = 1,
                     data_dir: str | Path | None = None, **options: Any) -> CommandResult:
    """``gridmarket new-case SOURCE OUT [options]``.

    Parameters
    ----------
    source : str or path
        ``default``, ``ieee_eu_lv``, ``cr_mar`` or the path of an OpenDSS feeder master (.dss).
    out : path
        Case folder to create.
    overwrite, study_case, data_dir
        As :func:`gridmarket.cases.write_case_source`.
    **options
        Feeder sources only, keyword arguments of :func:`gridmarket.cases.generic.new_case`:
        ``pv_kwp``, ``pv_percent_of_peak``, ``communities``, ``template``, ``settings``,
        ``import_price``, ``export_price``, ``steps``, ``step_hours``, ``start``,
        ``start_hour``, ``loadshape``, ``name``. ``None`` values are dropped (option not given).

    Returns
    -------
    CommandResult
        A summary of the case written (agents, communities, PV).
    """
    from gridmarket.cases import write_case_source

    given = {k: v for k, v in options.items() if v is not None}
    if isinstance(given.get("settings"), (list, tuple)):
        given["settings"] = parse_settings(given["settings"])
    unknown = sorted(set(given) - set(_NEW_CASE_OPTIONS))
    if unknown:
        msg = f"unknown new-case option(s) {unknown}; valid: {', '.join(_NEW_CASE_OPTIONS)}"
        raise GridmarketError(msg)
    path = write_case_source(source, Path(out), study_case=study_case, data_dir=data_dir, overwrite=overwrite,
                             options=given or None)
    return CommandResult(text=_describe(path), path=path)


def parse_settings(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["grid.import_price=0.7", "consumers.b=[0.9, 1.3]"]`` -> a settings mapping.

    Each value is read as a TOML value (number, string, list, boolean); a bare word that is
    not valid TOML is taken as a string.
    """
    import tomllib

    out: dict[str, Any] = {}
    for item in items:
        key, eq, text = str(item).partition("=")
        if not eq or not key.strip():
            msg = f"--set takes section.key=value, got {item!r}"
            raise GridmarketError(msg)
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        out[key.strip()] = value
    return out


def _describe(path: Path) -> str:
    import warnings

    from gridmarket.case import CaseWarning, load_case

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CaseWarning)
        case = load_case(path)
    kinds: dict[str, int] = {}
    for a in case.agents:
        kinds[a.kind.value] = kinds.get(a.kind.value, 0) + 1
    parts = ", ".join(f"{n} {k}(s)" for k, n in kinds.items())
    return (f"case {case.name!r} written to {path}: {parts}; {len(case.communities)} "
            f"{'community' if len(case.communities) == 1 else 'communities'} "
            f"({', '.join(case.communities)}); {case.time.steps} steps of {case.time.step_hours:g} h")


def sweep_command(case: str | Path, sweep_toml: str | Path, out: str | Path, *, scheduler: str | None = None,
                  workers: int | None = None, overwrite: bool = False,
                  progress: Callable[[str, int, int], None] | None = None, report: bool | None = None
                  ) -> CommandResult:
    """``gridmarket sweep CASE SWEEP.toml --out OUT [--scheduler ADDR|serial] [--workers N] [--overwrite]``.

    Returns
    -------
    CommandResult
        A summary (scenarios ok / failed / reused, the best scenario, where the files are) and
        exit status 0 when every scenario finished, :data:`SOME_FAILED` when some failed (their
        errors listed).
    """
    from gridmarket.sweep.run import run_sweep

    table = run_sweep(case, sweep_toml, out, scheduler=scheduler, n_workers=workers, progress=progress,
                      overwrite=overwrite, report=report)
    ok = table[table["status"] == "ok"]
    failed = table[table["status"] != "ok"]
    out_path = Path(out).expanduser().resolve()
    lines = [f"{len(table)} scenario(s): {len(ok)} ok ({int(ok['cached'].sum())} reused), {len(failed)} failed"]
    if len(ok):
        best = ok.sort_values(["violations_best", "welfare_best"], ascending=[True, False], kind="stable").iloc[0]
        lines.append(f"fewest violations: {best['scenario']} ({int(best['violations_best'])} violations, "
                     f"welfare {best['welfare_best']:,.2f}, {int(best['battery_units'])} SBU(s))")
    for _, r in failed.iterrows():
        lines.append(f"  failed {r['scenario']}: {r['error']}")
    lines.append(f"table: {out_path / 'sweep.csv'}; page: {out_path / 'sweep.html'}")
    return CommandResult(text="\n".join(lines), exit_code=SOME_FAILED if len(failed) else 0, path=out_path)
