"""PNG figures (matplotlib, for papers) of the answer: violations before/after as a heat map,
the voltage profile along the feeder, the welfare breakdown, and the figures of long runs
(voltage duration curves, monthly energy). The frames come from :mod:`gridmarket.report.views`.
"""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from gridmarket.report.style import RC, STYLE, new_figure
from gridmarket.report.views import (
    duration_curves,
    monthly_energy,
    violation_grids,
    voltage_profile,
    welfare_breakdown,
)

__all__ = [
    "plot_breakdown",
    "plot_duration_curves",
    "plot_monthly_energy",
    "plot_violation_heatmap",
    "plot_voltage_profile",
]

def plot_violation_heatmap(violations: pd.DataFrame, lines: pd.DataFrame | None, *, before: int, after: int,
                           long_run: bool = False, times: pd.Series | None = None,
                           step_hours: float = 1.0) -> Figure:
    """Violation pairs before and after batteries: bus × step (short runs, the 40 most violated
    buses) or day × hour of day (long runs), one panel each, a shared colour scale."""
    with mpl.rc_context(RC):
        a, b = violation_grids(violations, lines, before=before, after=after, long_run=long_run, times=times,
                               step_hours=step_hours)
        rows, cols = list(a.index), list(a.columns)
        mats = [w.to_numpy(dtype=float) if rows else np.zeros((1, 1)) for w in (a, b)]
        vmax = max(1.0, *(float(m.max()) for m in mats))
        fig = new_figure(10.0, float(np.clip(0.18 * max(len(rows), 1) + 1.8, 2.6, 9.0)))
        axes = fig.subplots(1, 2, sharey=True)
        for ax, mat, it, tag in ((axes[0], mats[0], before, "before"), (axes[1], mats[1], after, "after")):
            im = ax.imshow(mat, aspect="auto", cmap="Reds", vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_title(f"{tag.capitalize()}: iteration {it} ({int(mat.sum())} pairs)")
            if cols:
                every = max(1, -(-len(cols) // 8))
                ax.set_xticks(range(0, len(cols), every), [_tick(c, times, long_run) for c in cols[::every]])
            ax.set_xlabel("Hour of day" if long_run else "Step (start time)" if times is not None else "Step")
        if rows:
            every = max(1, len(rows) // 30)
            axes[0].set_yticks(range(0, len(rows), every), [str(r) for r in rows[::every]])
        axes[0].set_ylabel("Day" if long_run else "Bus")
        fig.colorbar(im, ax=axes, label="Violation pairs", shrink=0.8)
        fig.suptitle("Violations (bus/line/transformer-step pairs) before and after batteries")
    return fig


def _tick(col: int, times: pd.Series | None, long_run: bool) -> str:
    if long_run or times is None:
        return str(col)
    t = pd.to_datetime(times.get(col), errors="coerce")
    return f"{t:%H:%M}" if not pd.isna(t) else str(col)


def plot_voltage_profile(voltages: pd.DataFrame, buses: pd.DataFrame, *, before: int, after: int, step: int,
                         vmin_pu: float, vmax_pu: float) -> Figure:
    """Bus-phase voltages against the distance from the source in ``step``, before and after."""
    with mpl.rc_context(RC):
        fig = new_figure(8.0, 4.4)
        ax = fig.subplots()
        for it, color, name in ((before, STYLE["limit"], "before"), (after, "#4c72b0", "after")):
            prof = voltage_profile(voltages, buses, iteration=it, step=step)
            hollow = name == "before"  # rings, so the points that did not move stay visible
            ax.scatter(prof["distance_km"], prof["v_pu"], s=30 if hollow else 10,
                       facecolors="none" if hollow else color, edgecolors=color, linewidths=1.0,
                       label=f"{name} (iteration {it})", zorder=3 if hollow else 2)
        for lim in (vmin_pu, vmax_pu):
            ax.axhline(lim, color=STYLE["limit"], ls="--", lw=1.0)
        ax.set_xlabel("Distance from the source along the feeder [km]")
        ax.set_ylabel("Voltage [pu]")
        ax.set_title(f"Voltage profile at the worst step ({step})")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
    return fig


def plot_breakdown(breakdown: pd.DataFrame, *, currency: str = "") -> Figure:
    """Welfare breakdown per iteration: positive parts stacked above zero, negative below, the
    sum (realised welfare) as a black diamond."""
    wide = welfare_breakdown(breakdown)
    cmap = mpl.colormaps["tab10"]
    with mpl.rc_context(RC):
        fig = new_figure(8.5, 4.6)
        ax = fig.subplots()
        x = np.arange(len(wide))
        up = np.zeros(len(x))
        down = np.zeros(len(x))
        for k, part in enumerate(wide.columns):
            val = wide[part].to_numpy(dtype=float)
            pos, neg = np.clip(val, 0, None), np.clip(val, None, 0)
            ax.bar(x, pos, 0.6, bottom=up, color=cmap(k % 10), label=str(part))
            ax.bar(x, neg, 0.6, bottom=down, color=cmap(k % 10))
            up += pos
            down += neg
        total = wide.sum(axis=1).to_numpy(dtype=float)
        ax.plot(x, total, "D", color="black", label="realised welfare (sum)")
        ax.axhline(0.0, color="black", lw=0.6)
        ax.set_xticks(x, [f"it. {int(i)}" for i in wide.index])
        ax.set_ylabel(f"Welfare [{currency or 'currency'}]")
        ax.set_title("Welfare breakdown per iteration")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def plot_duration_curves(voltages: pd.DataFrame, *, before: int, after: int, vmin_pu: float,
                         vmax_pu: float) -> Figure:
    """Duration curves of the per-step lowest and highest bus voltage, before and after."""
    with mpl.rc_context(RC):
        fig = new_figure(8.0, 4.2)
        ax = fig.subplots()
        for it, ls in ((before, ":"), (after, "-")):
            d = duration_curves(voltages, iteration=it)
            ax.plot(100 * d["share"], d["v_max_pu"], ls=ls, color=STYLE["limit"], label=f"highest V, it. {it}")
            ax.plot(100 * d["share"], d["v_min_pu"], ls=ls, color="#4c72b0", label=f"lowest V, it. {it}")
        for lim in (vmin_pu, vmax_pu):
            ax.axhline(lim, color=STYLE["limit"], ls="--", lw=0.8)
        ax.set_xlabel("Share of the run's steps [%]")
        ax.set_ylabel("Voltage [pu]")
        ax.set_title("Voltage duration curves")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, ncols=2)
    return fig


def plot_monthly_energy(market: pd.DataFrame, *, iteration: int, step_hours: float = 1.0) -> Figure:
    """Energy per month of one iteration [kWh] as grouped bars."""
    m = monthly_energy(market, iteration=iteration, step_hours=step_hours)
    cols = [c for c in m.columns if m[c].abs().sum() > 0]
    with mpl.rc_context(RC):
        fig = new_figure(9.0, 4.2)
        ax = fig.subplots()
        x = np.arange(len(m))
        width = 0.8 / max(len(cols), 1)
        for k, col in enumerate(cols):
            ax.bar(x + (k - (len(cols) - 1) / 2) * width, m[col], width, label=col.replace("_kwh", ""))
        ax.set_xticks(x, list(m.index), rotation=30, ha="right")
        ax.set_ylabel("Energy [kWh]")
        ax.set_title(f"Energy per month, iteration {iteration}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig
