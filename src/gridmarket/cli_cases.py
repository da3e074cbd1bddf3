"""``gridmarket new-case`` and ``gridmarket calibrate``: the plain functions and their typer commands.

:func:`new_case_command` and :func:`calibrate_command` take the options as arguments and return a
:class:`~gridmarket.sweep.cli.CommandResult` (text, path, warnings); :func:`new_case` and
:func:`calibrate` are the typer commands, registered by :mod:`gridmarket.cli` (which wraps them
in its interrupt handling). Errors the user can cause are GridmarketErrors (exit status 2);
warnings are ``warnings.warn(..., CaseWarning)``, which the CLI prints as ``warning: ...``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from gridmarket.errors import GridmarketError
from gridmarket.sweep.cli import CommandResult

__all__ = ["NEW_CASE_OPTIONS", "calibrate", "calibrate_command", "new_case", "new_case_command", "parse_settings"]

_out = Console()

#: keyword of :func:`gridmarket.cases.generic.new_case` -> command-line flag (feeder sources only)
NEW_CASE_OPTIONS: dict[str, str] = {
    "pv_kwp": "--pv-kwp", "pv_percent_of_peak": "--pv-percent", "communities": "--communities",
    "template": "--template", "settings": "--set", "import_price": "--import-price",
    "export_price": "--export-price", "steps": "--steps", "step_hours": "--step-hours", "start": "--start",
    "start_hour": "--start-hour", "loadshape": "--loadshape", "name": "--name",
}
_FEEDER_PANEL = "Feeder sources (.dss)"


# ---------------------------------------------------------------------------- plain functions

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


def new_case_command(source: str | Path, out: str | Path, *, overwrite: bool = False, study_case: int = 1,
                     data_dir: str | Path | None = None, source_pu: float | None = None, calibrated: bool = False,
                     check: bool = True, **options: Any) -> CommandResult:
    """``gridmarket new-case SOURCE OUT [options]``.

    Parameters
    ----------
    source : str or path
        ``default``, ``ieee_eu_lv``, ``cr_mar`` or the path of an OpenDSS feeder master (.dss).
    out : path
        Case folder to create.
    overwrite, study_case, data_dir
        As :func:`gridmarket.cases.write_case_source`.
    source_pu : float, optional
        ``[network] source_pu`` of the case [pu] (any source).
    calibrated : bool
        ``cr_mar`` only: fit ``source_pu`` to the feeder's meters (:func:`gridmarket.cases.cr_mar.build_case`).
    check : bool
        Run :func:`gridmarket.cases.sanity.case_sanity` on the case written; its warnings come
        back in ``CommandResult.warnings``.
    **options
        Feeder sources only, keyword arguments of :func:`gridmarket.cases.generic.new_case`
        (the keys of :data:`NEW_CASE_OPTIONS`); ``None`` values are dropped.

    Returns
    -------
    CommandResult
        A summary of the case written (agents, communities, source, base-case voltages).
    """
    from gridmarket.calibrate import write_source_pu
    from gridmarket.cases import FEEDER, source_kind, write_case_source

    given = {k: v for k, v in options.items() if v is not None}
    if isinstance(given.get("settings"), (list, tuple)):
        given["settings"] = parse_settings(given["settings"])
    unknown = sorted(set(given) - set(NEW_CASE_OPTIONS))
    if unknown:
        msg = f"unknown new-case option(s) {unknown}; valid: {', '.join(NEW_CASE_OPTIONS)}"
        raise GridmarketError(msg)
    kind = source_kind(source)
    if calibrated and kind != "cr_mar":
        msg = f"--calibrated applies to cr_mar (whose meters are in the shared data), not to {str(source)!r}"
        raise GridmarketError(msg)
    if source_pu is not None and not 0.5 < source_pu < 1.5:
        msg = f"--source-pu must lie between 0.5 and 1.5 pu, got {source_pu!r}"
        raise GridmarketError(msg)
    if kind == FEEDER and source_pu is not None:
        given["source_pu"] = source_pu
    if calibrated:
        from gridmarket.cases.cr_mar import build_case as build_cr

        if source_pu is not None:
            msg = "give --source-pu or --calibrated, not both (calibration fits the source voltage)"
            raise GridmarketError(msg)
        path = build_cr(Path(out), case=study_case, data_dir=data_dir, overwrite=overwrite,
                        calibrated=True)
    else:
        path = write_case_source(source, Path(out), study_case=study_case, data_dir=data_dir, overwrite=overwrite,
                                 options=given or None)
        if kind != FEEDER and source_pu is not None:
            write_source_pu(path, source_pu)
    text, notes = _describe(path, check=check)
    return CommandResult(text=text, path=path, warnings=notes)


def _describe(path: Path, *, check: bool) -> tuple[str, tuple[str, ...]]:
    from gridmarket.case import CaseWarning, load_case

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CaseWarning)
        case = load_case(path)
    kinds: dict[str, int] = {}
    for a in case.agents:
        kinds[a.kind.value] = kinds.get(a.kind.value, 0) + 1
    parts = ", ".join(f"{n} {k}(s)" for k, n in kinds.items())
    lines = [f"case {case.name!r} written to {path}: {parts}; {len(case.communities)} "
             f"{'community' if len(case.communities) == 1 else 'communities'} "
             f"({', '.join(case.communities)}); {case.time.steps} steps of {case.time.step_hours:g} h"]
    notes: tuple[str, ...] = ()
    if check:
        from gridmarket.cases.sanity import case_sanity

        try:
            report = case_sanity(case)
        except GridmarketError as exc:
            notes = (f"the base-case check of the new case failed: {exc}",)
        else:
            lines.append(f"base case: {report.summary()}")
            notes = report.warnings
    return "\n".join(lines), notes


def calibrate_command(case: str | Path, measured: str | Path, *, taps: Sequence[str] | str = (),
                      producers: bool = False, write: bool = False, per_meter: str | Path | None = None
                      ) -> CommandResult:
    """``gridmarket calibrate CASE MEASURED.csv [--tap T ...] [--with-pv] [--write] [--per-meter CSV]``.

    Returns
    -------
    CommandResult
        The fit, the bias and RMSE before and after (overall and the worst meters), and what was
        written (``--write``: ``[network] source_pu`` of ``case.toml``; ``--per-meter``: the
        per-meter table as CSV).
    """
    from gridmarket.calibrate import calibrate as fit
    from gridmarket.calibrate import write_source_pu
    from gridmarket.case import CaseWarning, load_case

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CaseWarning)
        c = load_case(Path(case))
    res = fit(c, Path(measured), taps=taps, producers=producers)
    lines = [res.text()]
    if per_meter is not None:
        target = Path(per_meter).expanduser()
        res.per_meter.to_csv(target, index=False, float_format="%.6f")
        lines.append(f"per-meter errors written to {target}")
    if write:
        written = write_source_pu(c.root, round(res.source_pu, 4))
        lines.append(f"[network] source_pu = {round(res.source_pu, 4):.4f} written to {written}"
                     + (" (fitted taps are not written: edit the feeder)" if res.taps else ""))
    else:
        lines.append("case unchanged (use --write to set [network] source_pu)")
    return CommandResult(text="\n".join(lines), path=c.root)


# ---------------------------------------------------------------------------- typer commands

def _check_new_case_options(source: str, out_dir: str | Path, feeder_flags: Sequence[str], *, study_case: int | None,
                            data_dir: Path | None, both_pv: bool, overwrite: bool) -> None:
    """Refuse ``new-case`` options that do not apply to ``source`` or to each other, naming their
    flags, and an existing case folder without ``--overwrite``, before any work.

    Raises
    ------
    GridmarketError
        Feeder options for a named source; ``--case`` for anything but ``cr_mar``; ``--data``
        for a feeder or ``default``; ``--pv-kwp`` with ``--pv-percent``; ``out_dir`` may not be
        written (:func:`gridmarket.outdir.check_out_dir`: exists without ``--overwrite``, not a
        case folder gridmarket wrote, the working or the source's folder, a name too long).
    """
    from gridmarket.cases import FEEDER, source_kind

    kind = source_kind(source)
    if kind and kind != FEEDER and feeder_flags:
        msg = (f"option(s) {', '.join(feeder_flags)} apply only to a feeder source (the path of an OpenDSS"
               f" master .dss), not to {kind!r}")
        raise GridmarketError(msg)
    wrong = [flag for flag, given, ok in (("--case", study_case is not None, ("cr_mar",)),
                                          ("--data", data_dir is not None, ("cr_mar", "ieee_eu_lv")))
             if given and kind and kind not in ok]
    if wrong:
        what = "a feeder source (.dss)" if kind == FEEDER else repr(kind)
        msg = (f"option(s) {', '.join(wrong)} do not apply to {what}: --case is for cr_mar, --data for cr_mar"
               " and ieee_eu_lv")
        raise GridmarketError(msg)
    if both_pv:
        msg = "give --pv-kwp or --pv-percent, not both"
        raise GridmarketError(msg)
    from gridmarket.outdir import check_out_dir

    source_path = Path(source).expanduser()
    protect = [source_path.parent if source_path.is_file() else source_path] if source_path.exists() else []
    check_out_dir(str(out_dir), kind="case", overwrite=overwrite, protect=protect, protect_what="source's folder",
                  option="OUT_DIR")


def _warn(notes: Sequence[str]) -> None:
    from gridmarket.case import CaseWarning

    for note in notes:
        warnings.warn(CaseWarning(note), stacklevel=2)


def new_case(
    source: Annotated[str, typer.Argument(help="'default' (copy of the embedded IEEE EU LV case), 'ieee_eu_lv'"
                                          " (that case rebuilt from ../shared/data), 'cr_mar' (the Costa Rica"
                                          " feeder in ../shared/data) or the path of any OpenDSS feeder's"
                                          " master file (.dss).")],
    out_dir: Annotated[str, typer.Argument(metavar="OUT_DIR", help="Folder to write the case into.")],
    study_case: Annotated[int | None, typer.Option("--case", help="cr_mar only: 1 (one dispersed community)"
                                                   " or 2 (five communities); default 1.")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data", help="cr_mar, ieee_eu_lv: folder holding the"
                                                  " feeder data (default: ../shared/data or"
                                                  " $GRIDMARKET_SHARED_DATA).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a case folder that gridmarket wrote"
                                            " (never any other folder).")] = False,
    source_pu: Annotated[float | None, typer.Option(
        "--source-pu", help="Source voltage \\[pu] set after the feeder is compiled (\\[network] source_pu);"
        " default: the feeder's own.")] = None,
    calibrated: Annotated[bool, typer.Option(
        "--calibrated", help="cr_mar only: fit \\[network] source_pu to the feeder's measured meter"
        " voltages.")] = False,
    pv_kwp: Annotated[float | None, typer.Option(
        "--pv-kwp", help="PV per household \\[kWp] (without it or --pv-percent: the feeder's own PVSystems).",
        rich_help_panel=_FEEDER_PANEL)] = None,
    pv_percent: Annotated[float | None, typer.Option(
        "--pv-percent", help="PV per household as % of its peak step-mean demand \\[%].",
        rich_help_panel=_FEEDER_PANEL)] = None,
    communities: Annotated[str | None, typer.Option(
        "--communities", metavar="RULE", help="transformer (default), branch, knn:K (groups of K nearest"
        " households) or a CSV path (columns load, community).", rich_help_panel=_FEEDER_PANEL)] = None,
    template: Annotated[Path | None, typer.Option(
        "--template", metavar="TOML", help="case.toml sections plus \\[consumers] and \\[producers] coefficients.",
        rich_help_panel=_FEEDER_PANEL)] = None,
    settings: Annotated[list[str] | None, typer.Option(
        "--set", metavar="KEY=VALUE", help="Override one setting over the template, e.g. --set"
        " grid.import_price=0.7 --set 'consumers.b=\\[0.9, 1.3]' (a TOML value; repeatable).",
        rich_help_panel=_FEEDER_PANEL)] = None,
    import_price: Annotated[float | None, typer.Option(
        "--import-price", help="Grid tariff \\[currency/kWh].", rich_help_panel=_FEEDER_PANEL)] = None,
    export_price: Annotated[float | None, typer.Option(
        "--export-price", help="Feed-in price \\[currency/kWh].", rich_help_panel=_FEEDER_PANEL)] = None,
    steps: Annotated[int | None, typer.Option(
        "--steps", help="Number of steps (default 24).", rich_help_panel=_FEEDER_PANEL)] = None,
    step_hours: Annotated[float | None, typer.Option(
        "--step-hours", help="Length of a step \\[h] (default 1).", rich_help_panel=_FEEDER_PANEL)] = None,
    start: Annotated[str | None, typer.Option(
        "--start", metavar="ISO", help="Timestamp of step 0, e.g. 2024-06-01T06:00 (labels the steps; a date"
        " only gets the time of --start-hour).", rich_help_panel=_FEEDER_PANEL)] = None,
    start_hour: Annotated[float | None, typer.Option(
        "--start-hour", help="Hour of the feeder's loadshapes at which step 0 begins \\[h] (default: the time"
        " of day of --start, else 0).", rich_help_panel=_FEEDER_PANEL)] = None,
    loadshape: Annotated[str | None, typer.Option(
        "--loadshape", help="Which shape of a load to use: auto (daily, yearly, duty; default), daily,"
        " yearly or duty.", rich_help_panel=_FEEDER_PANEL)] = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="\\[case].name (default: the master's file or folder name).",
        rich_help_panel=_FEEDER_PANEL)] = None,
) -> None:
    """Write a case folder built from a known feeder or from any OpenDSS feeder (.dss master):
    its loads become households with PV (the feeder's own, or one per household with --pv-kwp or
    --pv-percent), grouped into communities by a rule; rules and defaults in docs/sweep.md.
    Then a no-load and a peak-load power flow of the new case warn about a source voltage near a
    limit, a base case violated at most buses, or a community of one household.
    \f
    The feeder options are the keyword arguments of :func:`gridmarket.cases.generic.new_case`;
    an option that does not apply to SOURCE is an error naming its flag (exit status 2).
    """
    from gridmarket.cases import source_kind

    options: dict[str, Any] = {
        "pv_kwp": pv_kwp, "pv_percent_of_peak": pv_percent, "communities": communities, "template": template,
        "settings": settings or None, "import_price": import_price, "export_price": export_price, "steps": steps,
        "step_hours": step_hours, "start": start, "start_hour": start_hour, "loadshape": loadshape, "name": name,
    }
    given = {k: v for k, v in options.items() if v is not None}
    _check_new_case_options(source, out_dir, [NEW_CASE_OPTIONS[k] for k in given], study_case=study_case,
                            data_dir=data_dir, both_pv=pv_kwp is not None and pv_percent is not None,
                            overwrite=overwrite)
    if not source_kind(source):
        given = {}  # an unknown source: let write_case_source name it, not the options
    res = new_case_command(source, Path(out_dir), overwrite=overwrite, study_case=study_case or 1,
                           data_dir=data_dir, source_pu=source_pu, calibrated=calibrated, **given)
    path = res.path if res.path is not None else Path(out_dir)
    from gridmarket.outdir import mark_folder

    mark_folder(Path(path), "case")
    _out.print(escape(res.text), highlight=False, soft_wrap=True)
    _warn(res.warnings)
    _out.print(f"run it with: gridmarket run {escape(str(path))}", highlight=False, soft_wrap=True)


def calibrate(
    case: Annotated[Path, typer.Argument(help="Case folder.")],
    measured: Annotated[Path, typer.Argument(metavar="MEASURED.csv", help="Measured voltages: columns meter"
                                             " (agent or bus), time (ISO) or step, and v_pu or volts + v_base.")],
    taps: Annotated[list[str] | None, typer.Option(
        "--tap", metavar="TRANSFORMER", help="Also fit the primary (winding 1) tap of this transformer"
        " (repeatable); 'auto': of every transformer with a meter in its LV area.")] = None,
    with_pv: Annotated[bool, typer.Option(
        "--with-pv", help="Simulate producers at their profiles (default: off, as a feeder measured without"
        " the case's PV).")] = False,
    write: Annotated[bool, typer.Option("--write", help="Set \\[network] source_pu in case.toml to the fit"
                                        " (nothing else changes).")] = False,
    per_meter: Annotated[Path | None, typer.Option(
        "--per-meter", metavar="CSV", help="Write the per-meter bias and RMSE to this file.")] = None,
) -> None:
    """Fit the source voltage (and chosen taps) of CASE to measured meter voltages by least squares on
    real OpenDSS solves of the case's profiles; print the bias and RMSE before and after.
    \f
    :func:`calibrate_command` (:func:`gridmarket.calibrate.calibrate`).
    """
    chosen: Sequence[str] | str = "auto" if taps and [t.lower() for t in taps] == ["auto"] else (taps or ())
    res = calibrate_command(case, measured, taps=chosen, producers=with_pv, write=write, per_meter=per_meter)
    _out.print(escape(res.text), highlight=False, soft_wrap=True)
