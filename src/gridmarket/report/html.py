"""One self-contained, offline ``report.html`` per results folder.

The page answers the question first (headline: base → best iteration), then shows the
interactive figures (plotly, with plotly.js inlined once: no CDN, no network), the tables
(long lists summarised, with the file that holds them all), the run's parameters, and the PNG
figures for papers (embedded as data URIs and written beside the page).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from gridmarket.report._load import load_results
from gridmarket.report.figures import FigureSpec, Progress, png_jobs, run_job, write_figures
from gridmarket.report.format import number
from gridmarket.report.headline import headline, headline_html, run_parameters
from gridmarket.report.interactive import (
    battery_figure,
    breakdown_figure,
    comparison_figure,
    duration_figure,
    figure_div,
    heatmap_figure,
    monthly_figure,
    plotly_script,
    profile_figure,
    voltage_time_figure,
)
from gridmarket.report.interactive_map import map_figure
from gridmarket.report.network_map import has_coordinates
from gridmarket.report.style import step_times
from gridmarket.report.tables import (
    MAX_LISTED,
    community_table,
    format_community_table,
    format_iteration_table,
    format_violation_table,
    iteration_table,
    to_html,
    violation_table,
)
from gridmarket.report.views import (
    COMPARISON_COLUMNS,
    ResultsView,
    after_iteration,
    base_iteration,
    best_iteration,
    finite_setting,
    has_distances,
    setting,
    worst_step,
)
from gridmarket.results import write_bytes_atomic

__all__ = ["REPORT_NAME", "InteractiveFigure", "build_report", "interactive_jobs", "render_html"]

REPORT_NAME = "report.html"
#: banks drawn in the per-battery view (the ones with the highest throughput)
TOP_BANKS = 8

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;
max-width:1250px;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.8em;
border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{background:#fff3e0;font-weight:600}
table.headline td{font-size:1.15em}p.lead{font-size:1.15em}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#555;max-width:900px}
.note{background:#f7f7f7;border-left:4px solid #bbb;padding:.5em 1em;color:#555}
.small{font-size:.85em;color:#666}
"""

_DEFINITION = ("A violation is one (bus, line or transformer, step) pair out of limits; the phases of a "
               "bus or line in the same step count once. This count is used everywhere on this page; "
               "per-phase rows (violations.parquet) appear only where a column says so. Units: power kW, "
               "energy kWh, prices currency/kWh, voltages pu. Load reference: consumption positive, "
               "production negative, battery power positive when charging.")


@dataclass(frozen=True)
class InteractiveFigure:
    """An interactive figure still to draw: ``draw()`` returns the plotly figure."""

    key: str  #: id of its ``<figure>`` (``ifig-<key>``) and plot ``<div>`` (``plot-<key>``)
    title: str
    caption: str
    draw: Callable[[], go.Figure]


def _kv_table(rows: list[tuple[str, Any]], *, table_id: str = "") -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    ident = f' id="{table_id}"' if table_id else ""
    return f'<table class="summary"{ident}><tbody>{body}</tbody></table>'


def _run_rows(data: Any) -> list[tuple[str, Any]]:
    runtime = finite_setting(data, "runtime_s", float("nan"))
    command = finite_setting(data, "command_runtime_s", float("nan"))
    vmin = finite_setting(data, "vmin_pu", 0.95)
    vmax = finite_setting(data, "vmax_pu", 1.05)
    horizon = setting(data, "horizon", "—")
    if horizon == 1:
        horizon = "1 (sequential: one market per step)"
    solver = setting(data, "solver_used", None)
    if isinstance(solver, list):
        solver = ", ".join(f"it. {k}: {s}" for k, s in enumerate(solver))
    rows = [
        ("Case", setting(data, "case", "—")),
        ("gridmarket version", setting(data, "version", "—")),
        ("Battery model", setting(data, "battery_model", "—")),
        ("Market horizon [steps]", horizon),
        ("Solver used", solver if solver is not None else setting(data, "solver", "—")),
        ("Iterations", setting(data, "iterations", len(data.iterations))),
        ("Base iteration", base_iteration(data)),
        ("Best iteration", best_iteration(data)),
        ("Step length [h]", f"{finite_setting(data, 'step_hours', 1.0):g}"),
        ("Voltage limits [pu]", f"{vmin:g} – {vmax:g}"),
        ("Currency", setting(data, "currency", "—") or "—"),
        ("Runtime [s]", f"{runtime:.1f}" if runtime == runtime else "—"),  # the loop; test_cli matches this row
    ]
    if command == command:
        rows.append(("Whole command runtime [s]", number(command, 1)))
    return rows


def interactive_jobs(data: Any, view: ResultsView) -> tuple[list[InteractiveFigure], list[str]]:
    """The interactive figures of a loaded results folder (not yet drawn) and skip notes."""
    base, best, after = base_iteration(data), best_iteration(data), after_iteration(data)
    currency = str(setting(data, "currency", ""))
    vmin = finite_setting(data, "vmin_pu", 0.95)
    vmax = finite_setting(data, "vmax_pu", 1.05)
    times = step_times(data.market)
    jobs: list[InteractiveFigure] = []
    notes: list[str] = []
    its = [int(i) for i in data.iterations["iteration"]]
    if data.buses is not None and data.lines is not None and has_coordinates(data.buses):
        labels = {base: "before", after: "after"}
        if best not in (base, after):
            labels[best] = "best"
        else:
            labels[best] += ", best"
        jobs.append(InteractiveFigure(
            "map", "Network map", "Switch iterations with the buttons (before = base iteration, after = with "
            "batteries). Red lines: lines or transformers out of limits in that iteration (hover the × for the "
            "name); red rings: buses with a violation (a line's counts for its downstream bus); yellow "
            "squares: battery banks sized by units; hover a bus for its name, voltage range and agents.",
            lambda: map_figure(data.buses, data.lines, agents=data.agents, batteries=data.batteries,
                               violations=data.violations, voltages=data.voltages, iterations=its,
                               labels=labels, shown=after)))
    if len(data.violations):
        jobs.append(InteractiveFigure(
            "heatmap", "Violations before and after batteries",
            ("Violation pairs per day and hour of day." if view.long_run else
             "Violation pairs per bus and step (the most violated buses; a line's or transformer's pairs "
             "count for its downstream bus)."),
            lambda: heatmap_figure(data.violations, data.lines, before=base, after=after, times=times,
                                   long_run=view.long_run, step_hours=view.step_hours)))
    if not view.long_run and len(data.voltages):
        shown = list(dict.fromkeys([base, after]))
        vlabels = {base: "before", after: "after"} if after != base else {base: "before = after"}
        jobs.append(InteractiveFigure(
            "voltages", "Bus-phase voltages over the run",
            "The lowest and highest voltage of each step (bold) and the bus-phases that come closest to a limit "
            "(thin; hover for the bus and phase), before and after batteries (buttons).",
            lambda: voltage_time_figure(data.voltages, iterations=shown, vmin_pu=vmin, vmax_pu=vmax, times=times,
                                        labels=vlabels)))
    worst = worst_step(data.voltages, data.violations, iteration=base, vmin_pu=vmin, vmax_pu=vmax)
    if has_distances(data.buses) and worst is not None:
        label = ""
        if times is not None and worst in times.index:
            label = f" ({times[worst]})"
        jobs.append(InteractiveFigure(
            "profile", "Voltage along the feeder at the worst step",
            f"Every monitored bus-phase voltage at step {worst}{label}, the base iteration's worst (most "
            "violation pairs), against the distance from the source along the feeder, before and after.",
            lambda: profile_figure(data.voltages, data.buses, before=base, after=after, step=worst,
                                   vmin_pu=vmin, vmax_pu=vmax, label=label)))
    if view.breakdown is not None and len(view.breakdown):
        jobs.append(InteractiveFigure(
            "breakdown", "Welfare breakdown per iteration",
            "Who gains what (welfare_breakdown.csv): consumers, producers, batteries (trading, degradation), "
            "grid (import cost, export revenue), fees; the diamond is the realised welfare, their sum.",
            lambda: breakdown_figure(view.breakdown, data.iterations, currency=currency)))
    else:
        notes.append("Welfare breakdown skipped: welfare_breakdown.csv not in the results folder.")
    if (data.market["kind"].astype(str).str.lower() == "battery").any() and after != base:
        jobs.append(InteractiveFigure(
            "batteries", "Battery banks: state of charge, charging and the community price",
            f"Iteration {after}. Each bank is named by its agent and bus; charging is positive. A bank "
            f"that is full before the evening peak cannot serve it. At most {TOP_BANKS} banks are drawn: "
            "the ones with the highest throughput (table below the figure).",
            lambda: battery_figure(data.market, data.batteries, iteration=after, times=times,
                                   step_hours=view.step_hours, top=TOP_BANKS, currency=currency)[0]))
    if view.long_run:
        jobs.append(InteractiveFigure(
            "duration", "Voltage duration curves", "Lowest and highest bus voltage of each step, sorted.",
            lambda: duration_figure(view.extremes(data.voltages), before=base, after=after, vmin_pu=vmin,
                                    vmax_pu=vmax)))
        jobs.append(InteractiveFigure(
            "monthly", "Energy per month", f"Iteration {after}.",
            lambda: monthly_figure(data.market, iteration=after, step_hours=view.step_hours)))
    if view.comparison is not None and len(view.comparison):
        jobs.append(InteractiveFigure(
            "comparison", "Blind and network-aware market, with and without batteries",
            "From comparison.csv (one row per scenario).",
            lambda: comparison_figure(view.comparison, currency=currency)))
    return jobs, notes


def _figure_html(spec: FigureSpec) -> str:
    uri = "data:image/png;base64," + base64.b64encode(spec.png).decode("ascii")
    return (f'<figure id="fig-{html.escape(spec.stem)}"><img src="{uri}" '
            f'alt="{html.escape(spec.title)}"><figcaption><b>{html.escape(spec.title)}.</b> '
            f"{html.escape(spec.caption)} <span class=\"small\">({html.escape(spec.stem)}.png)"
            f"</span></figcaption></figure>")


def _interactive_html(job: InteractiveFigure, div: str) -> str:
    return (f'<figure id="ifig-{job.key}"><figcaption><b>{html.escape(job.title)}.</b> '
            f"{html.escape(job.caption)}</figcaption>{div}</figure>")


def _communities_html(data: Any, shown: list[int], currency: str) -> str:
    comm = community_table(data.communities, iterations=shown)
    if not len(comm):
        return '<p class="note">No community results.</p>'
    n = comm["community"].nunique()
    if n <= MAX_LISTED:
        return to_html(format_community_table(comm, currency=currency))
    top = (comm.assign(_abs=comm["welfare"].abs()).sort_values(["_abs", "community"], ascending=[False, True])
           ["community"].drop_duplicates().head(MAX_LISTED))
    part = comm[comm["community"].isin(set(top))]
    src = _communities_file(data)
    return (f'<p class="small">{n} communities; the {MAX_LISTED} with the largest welfare (absolute) are shown. '
            f'All of them: <a href="{src}">{src}</a>.</p>' + to_html(format_community_table(part, currency=currency)))


def _communities_file(data: Any) -> str:
    for name in ("communities.parquet", "communities.csv"):
        if (Path(data.path) / name).is_file():
            return name
    return "communities.parquet"


def _files_html(data: Any) -> str:
    """Links to the results files beside the page (the full lists the page summarises)."""
    names = sorted(p.name for p in Path(data.path).iterdir()
                   if p.is_file() and p.suffix in (".csv", ".parquet", ".json"))
    links = ", ".join(f'<a href="{html.escape(n)}">{html.escape(n)}</a>' for n in names)
    return f'<p class="small" id="files">Results files (every row the page summarises): {links}.</p>'


def _comparison_html(view: ResultsView, currency: str) -> str:
    comp = view.comparison
    if comp is None or not len(comp):
        return ""
    cur = currency or "currency"
    out = pd.DataFrame({
        "Scenario": comp["scenario"].astype(str),
        "Violations [pairs]": [number(v, 0) for v in comp["violations"]],
        f"Realised welfare [{cur}]": [number(v, 2) for v in comp["welfare_realised"]],
        f"Net benefit [{cur}]": [number(v, 2, sign=True) for v in comp["net_benefit"]],
        "Curtailed [kWh]": [number(v, 2) for v in comp["curtailed_kwh"]],
        f"Price spread [{cur}/kWh]": [number(v, 4) for v in comp["price_spread"]],
    })
    for col in comp.columns:
        if col not in COMPARISON_COLUMNS:
            out[str(col)] = comp[col].astype(str).to_numpy()
    return ("<h2>Blind and network-aware market, with and without batteries</h2>"
            + to_html(out, css_class="comparison"))


def _batteries_html(data: Any, view: ResultsView, after: int) -> str:
    from gridmarket.report.views import battery_operation, top_batteries

    op = battery_operation(data.market, data.batteries, iteration=after, step_hours=view.step_hours)
    if op.empty:
        return ""
    top = top_batteries(op, MAX_LISTED, step_hours=view.step_hours)
    n = op["agent"].nunique()
    out = pd.DataFrame({
        "Bank": top["agent"].astype(str), "Bus": top["bus"].astype(str), "Community": top["community"].astype(str),
        "Units [SBU]": [number(u, None) for u in top["units"]],
        "Charged [kWh]": [number(v, 2) for v in top["charged_kwh"]],
        "Discharged [kWh]": [number(v, 2) for v in top["discharged_kwh"]],
        "SoC min – max": [f"{a:.3f} – {b:.3f}" for a, b in zip(top["soc_min"], top["soc_max"], strict=True)],
    })
    head = (f'<p class="small">{n} banks in iteration {after}'
            + (f"; the {MAX_LISTED} with the highest throughput are listed, all in batteries.csv and "
               "market.parquet" if n > MAX_LISTED else "") + ".</p>")
    return head + to_html(out, css_class="banks")


def render_html(data: Any, specs: list[FigureSpec], notes: list[str], *,
                interactive: list[tuple[InteractiveFigure, str]] | None = None,
                view: ResultsView | None = None) -> str:
    """The report page for ``data`` with the rendered PNG figures ``specs`` and the drawn
    interactive figures (``(job, div)`` pairs) embedded."""
    view = view or ResultsView.of(data)
    interactive = interactive or []
    currency = str(setting(data, "currency", ""))
    base, best, after = base_iteration(data), best_iteration(data), after_iteration(data)
    it_table = iteration_table(data.iterations, data.batteries, base_iteration=base, best_iteration=best,
                               voltages=data.voltages)
    it_html = to_html(format_iteration_table(it_table, currency=currency),
                      highlight=it_table["best"].reset_index(drop=True))
    shown = sorted({base, best, after})
    viol = violation_table(data.violations)
    viol_html = (to_html(format_violation_table(viol)) if len(viol)
                 else '<p class="note">No violations in any iteration.</p>')
    case = str(setting(data, "case", Path(data.path).name))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>gridmarket report — {html.escape(case)}</title>",
        f"<style>{_CSS}</style>",
        plotly_script() if interactive else "",
        "</head><body>",
        f"<h1>gridmarket report — {html.escape(case)}</h1>",
        f'<p class="small" id="definition">{html.escape(_DEFINITION)}</p>',
        "<h2>The answer</h2>",
        headline_html(headline(data)),
        _comparison_html(view, currency),
        "<h2>Iterations</h2>",
        f'<p class="small">Welfare change relative to the base iteration {base}; the best iteration ({best}) '
        "is marked with * and highlighted. Banks: count × size of the battery banks in the iteration.</p>",
        it_html,
        _files_html(data),
        *(_interactive_html(job, div) for job, div in interactive),
        "<h2>Battery banks</h2>" if after != base else "",
        _batteries_html(data, view, after) if after != base else "",
        "<h2>Violations</h2>",
        '<p class="small">Per iteration and kind: violations as (element, step) pairs, the per-phase rows they '
        "stand for, and the worst row (farthest from its limit).</p>",
        viol_html,
        "<h2>Communities</h2>",
        f'<p class="small">Clearing prices over the steps, and imports, exports and welfare summed over the '
        f"steps, for iteration(s) {', '.join(str(i) for i in shown)}.</p>",
        _communities_html(data, shown, currency),
        "<h2>Run</h2>",
        _kv_table(_run_rows(data), table_id="run"),
        "<h2>Run parameters</h2>",
        _kv_table(run_parameters(data.summary, data.agents), table_id="parameters"),
        "<h2>Figures for papers (PNG)</h2>",
        '<p class="small">The same results as static figures; each is also written beside this page.</p>',
        *(_figure_html(spec) for spec in specs),
        *(f'<p class="note">{html.escape(n)}</p>' for n in notes),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def build_report(results_dir: str | Path, *, out_dir: str | Path | None = None,
                 progress: Progress | None = None, interactive: bool = True) -> Path:
    """Write ``report.html`` (self-contained, offline) and the figures' PNGs for a results folder.

    Parameters
    ----------
    results_dir : path
        A results folder (shared CASE_FORMAT.md, *Results*).
    out_dir : path, optional
        Where to write; default ``results_dir``.
    progress : callable, optional
        ``progress(label, done, total)`` after each figure is drawn (PNG and interactive), e.g. to
        drive a progress bar; figures are most of a report's time.
    interactive : bool
        Embed the interactive figures (plotly.js inlined, ~4.6 MB); False gives a light page
        with the PNGs only.

    Returns
    -------
    Path
        The ``report.html`` written. Every file is written to a temporary name first and
        moved into place, so a reader never sees a half-written report.

    Raises
    ------
    ResultsError
        A required results file is missing or malformed; the message names the file.
    """
    data = load_results(results_dir, text="category")
    target = Path(out_dir) if out_dir is not None else Path(data.path)
    view = ResultsView.of(data)
    jobs, notes = png_jobs(data, view)
    ijobs, inotes = interactive_jobs(data, view) if interactive else ([], [])
    total = len(jobs) + len(ijobs)
    done = 0
    specs = []
    for job in jobs:
        specs.append(run_job(job))
        done += 1
        if progress is not None:
            progress(f"{job.stem}.png", done, total)
    drawn = []
    for ij in ijobs:
        drawn.append((ij, figure_div(ij.draw(), f"plot-{ij.key}")))
        done += 1
        if progress is not None:
            progress(f"interactive {ij.key}", done, total)
    page = render_html(data, specs, notes + inotes, interactive=drawn, view=view)
    write_figures(specs, target)
    path = target / REPORT_NAME
    write_bytes_atomic(path, page.encode("utf-8"))
    return path
