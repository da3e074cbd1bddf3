"""The report's PNG figures (matplotlib, for papers): which are drawn, rendering, writing.

:func:`png_jobs` lists the figures a results folder gets (each drawn only when run, so a
caller can report progress); :func:`render_figures` draws them all; :func:`save_figures`
writes them as ``<stem>.png``. Long runs (more than :data:`~gridmarket.report.views.LONG_RUN_STEPS`
steps) get monthly energy and duration curves instead of the per-step energy balance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from gridmarket.report import style
from gridmarket.report._load import load_results
from gridmarket.report.grid_plots import (
    plot_breakdown,
    plot_duration_curves,
    plot_monthly_energy,
    plot_violation_heatmap,
    plot_voltage_profile,
)
from gridmarket.report.network_map import has_coordinates, plot_network_map
from gridmarket.report.plots import plot_energy_balance, plot_iterations, plot_voltages
from gridmarket.report.style import step_times
from gridmarket.report.views import (
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

__all__ = ["FigureJob", "FigureSpec", "Progress", "png_jobs", "render_figures", "save_figures", "write_figures"]

#: ``progress(label, done, total)``: called after each figure is drawn
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class FigureSpec:
    """One rendered figure of the report."""

    stem: str  #: file name without ``.png``
    title: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class FigureJob:
    """A figure still to draw: ``draw()`` returns the figure and its caption."""

    stem: str
    title: str
    draw: Callable[[], tuple[Figure, str]]


def _map_caption(fig: Figure, after: int, base: int) -> str:
    caption = (f"Lines and buses from the bus coordinates; agents' buses coloured by "
               f"community; battery banks of iteration {after} as squares sized by SBUs; "
               f"buses and lines violated in iteration {base} marked in red.")
    n_areas = sum(str(ax.get_label()).startswith("lv_area_") for ax in fig.axes)
    if n_areas:
        caption += (f" Top: the whole feeder (MV lines bold) with its {n_areas} LV "
                    f"area(s) holding agents boxed; below: one zoomed panel per LV area "
                    f"(title: transformer bus and agents per community; scale bar in "
                    f"bus coordinate units).")
    return caption


def png_jobs(data: Any, view: ResultsView | None = None) -> tuple[list[FigureJob], list[str]]:
    """The PNG figures of a loaded results folder, not yet drawn, and notes on skipped ones."""
    view = view or ResultsView.of(data)
    base, best, after = base_iteration(data), best_iteration(data), after_iteration(data)
    after_label = "best" if after == best else "after batteries"
    step_hours = view.step_hours
    currency = str(setting(data, "currency", ""))
    vmin = finite_setting(data, "vmin_pu", 0.95)
    vmax = finite_setting(data, "vmax_pu", 1.05)
    times = step_times(data.market)
    jobs: list[FigureJob] = []
    notes: list[str] = []

    jobs.append(FigureJob("iterations", "Welfare and violations per iteration", lambda: (
        plot_iterations(data.iterations, best_iteration=best, currency=currency),
        "Welfare (top; realised welfare when the results have it; change vs the base iteration in "
        "brackets) and violations by kind, as (bus, line or transformer, step) pairs, with the "
        "installed battery units (bottom) for every iteration of the placement loop.")))
    if view.breakdown is not None and len(view.breakdown):
        jobs.append(FigureJob("welfare_breakdown", "Welfare breakdown per iteration", lambda: (
            plot_breakdown(view.breakdown, currency=currency),
            "Parts of the realised welfare per iteration (welfare_breakdown.csv): positive parts "
            "above zero, costs below; the diamond is their sum.")))
    shown = ((base, "base"), (after, after_label)) if after != base else ((base, "base, best"),)

    def monthly(it: int) -> tuple[Figure, str]:
        return (plot_monthly_energy(data.market, iteration=it, step_hours=step_hours),
                "Energy per calendar month [kWh]: consumer loads, PV, imports, exports and battery flows.")

    def balance(it: int, label: str) -> tuple[Figure, str]:
        return (plot_energy_balance(data.market, data.communities, iteration=it, step_hours=step_hours,
                                    currency=currency, label=label),
                "Per step: consumption side above zero (consumer loads, battery charging, exports), supply "
                "side below (PV, battery discharging, imports) [kW]; line: net community demand = imports − "
                "exports; community clearing prices and battery state of charge below.")

    for it, label in shown:
        if view.long_run:
            jobs.append(FigureJob(f"monthly_energy_it{it}", f"Energy per month, iteration {it} ({label})",
                                  partial(monthly, it)))
        else:
            jobs.append(FigureJob(f"energy_balance_it{it}", f"Energy balance, iteration {it} ({label})",
                                  partial(balance, it, label)))
    if view.long_run:
        jobs.append(FigureJob("voltage_duration", "Voltage duration curves", lambda: (
            plot_duration_curves(view.extremes(data.voltages), before=base, after=after, vmin_pu=vmin, vmax_pu=vmax),
            f"Lowest and highest bus voltage of each step, sorted, before (iteration {base}, dotted) "
            f"and after batteries (iteration {after}, solid); limits {vmin:g}/{vmax:g} pu.")))
    else:
        labels = (["base" + (", best" if best == base else ""), after_label] if after != base else ["base, best"])
        jobs.append(FigureJob("voltages", "Bus voltages against the limits", lambda: (
            plot_voltages(data.voltages, iterations=[base, after], vmin_pu=vmin, vmax_pu=vmax, labels=labels,
                          times=times, step_hours=step_hours),
            f"Every bus-phase voltage per step (thin), the min/max envelope and the limits "
            f"{vmin:g}/{vmax:g} pu, before (iteration {base}) and after batteries (iteration "
            f"{after}); red dots are out of limits.")))
    if len(data.violations):
        jobs.append(FigureJob("violations_heatmap", "Violations before and after batteries", lambda: (
            plot_violation_heatmap(data.violations, data.lines, before=base, after=after, long_run=view.long_run,
                                   times=times, step_hours=step_hours),
            "Violation pairs per " + ("day and hour of day" if view.long_run else
                                      "bus and step (a line's or transformer's count for its downstream bus)")
            + f", iteration {base} (left) and {after} (right).")))
    worst = worst_step(data.voltages, data.violations, iteration=base, vmin_pu=vmin, vmax_pu=vmax)
    if has_distances(data.buses) and worst is not None:
        jobs.append(FigureJob("voltage_profile", "Voltage profile along the feeder", lambda: (
            plot_voltage_profile(data.voltages, data.buses, before=base, after=after, step=worst,
                                 vmin_pu=vmin, vmax_pu=vmax),
            f"Every monitored bus-phase voltage at step {worst} (the base iteration's worst) "
            f"against its distance from the source along the feeder, before and after batteries.")))
    elif data.buses is not None:
        notes.append("Voltage profile skipped: network_buses.csv gives no bus a distance_km.")
    if data.buses is None or data.lines is None:
        missing = [n for n, f in (("network_buses.csv", data.buses), ("network_lines.csv", data.lines))
                   if f is None]
        notes.append(f"Network map skipped: {', '.join(missing)} not in the results folder.")
    elif not has_coordinates(data.buses):
        notes.append("Network map skipped: the network's buses have no coordinates.")
    else:
        def draw_map() -> tuple[Figure, str]:
            fig = plot_network_map(data.buses, data.lines, data.agents, data.batteries, data.violations,
                                   iteration=after, violated_iteration=base)
            return fig, _map_caption(fig, after, base)

        jobs.append(FigureJob("network_map", "Network map", draw_map))
    return jobs, notes


def run_job(job: FigureJob) -> FigureSpec:
    """Draw one figure and rasterise it."""
    fig, caption = job.draw()
    return FigureSpec(job.stem, job.title, caption, style.figure_png(fig))


def render_figures(data: Any, *, progress: Progress | None = None) -> tuple[list[FigureSpec], list[str]]:
    """All PNG figures of a loaded results folder, and notes on figures that were skipped."""
    jobs, notes = png_jobs(data)
    specs = []
    for k, job in enumerate(jobs, start=1):
        specs.append(run_job(job))
        if progress is not None:
            progress(f"{job.stem}.png", k, len(jobs))
    return specs, notes


def save_figures(results_dir: str | Path, *, out_dir: str | Path | None = None,
                 progress: Progress | None = None) -> list[Path]:
    """Render the PNG figures of a results folder and write them.

    Parameters
    ----------
    results_dir : path
        A results folder (shared CASE_FORMAT.md).
    out_dir : path, optional
        Where to write; default ``results_dir``.
    progress : callable, optional
        ``progress(label, done, total)`` after each figure.

    Returns
    -------
    list of Path
        The PNGs written (the network map is absent when there are no coordinates).
    """
    data = load_results(results_dir, text="category")
    specs, _ = render_figures(data, progress=progress)
    return write_figures(specs, Path(out_dir) if out_dir is not None else data.path)


def write_figures(specs: Sequence[FigureSpec], out_dir: Path) -> list[Path]:
    """Write rendered figures as ``<stem>.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec in specs:
        path = out_dir / f"{spec.stem}.png"
        write_bytes_atomic(path, spec.png)
        paths.append(path)
    return paths
