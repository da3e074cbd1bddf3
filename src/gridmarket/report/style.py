"""Shared look of the report's matplotlib figures: colours, sizes, step axes, PNG bytes.

Everything here is pure (matplotlib's object API, no pyplot state), so the figures render the
same everywhere (Agg).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, Literal

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["DPI", "STYLE", "RC", "community_colors", "figure_png", "new_figure", "step_axis", "step_times"]

DPI = 110
STYLE = {
    "load": "#4c72b0",
    "charge": "#8172b3",
    "export": "#55a868",
    "pv": "#f2b701",
    "discharge": "#c9b8e6",
    "import": "#8c8c8c",
    "net": "#000000",
    "passive": "#dd8452",
    "limit": "#c44e52",
    "violation": "#d62728",
    "battery": "#ffd92f",
    "line": "#9a9a9a",
    "mv_line": "#3a3a3a",
    "area": "#1f3b73",
}
RC: Any = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8}


def new_figure(width: float, height: float, *, layout: Literal["constrained", "compressed"] = "constrained") -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout=layout)


def community_colors(names: Sequence[str]) -> dict[str, str]:
    """A fixed colour per community name (tab10 in sorted-name order, then tab20)."""
    uniq = sorted({str(n) for n in names if str(n)})
    cmap = mpl.colormaps["tab10" if len(uniq) <= 10 else "tab20"]
    return {name: mpl.colors.to_hex(cmap(i % cmap.N)) for i, name in enumerate(uniq)}


def step_axis(ax: Axes, steps: np.ndarray, times: pd.Series | None, step_hours: float) -> None:
    """Integer step ticks, labelled HH:MM when the steps have timestamps."""
    if len(steps) == 0:
        return
    every = max(1, int(np.ceil(len(steps) / 12)))
    ticks = steps[::every]
    ax.set_xticks(ticks)
    labels = None
    if times is not None:
        parsed = pd.to_datetime(times.reindex(ticks), errors="coerce")
        if parsed.notna().all():
            labels = [t.strftime("%H:%M") for t in parsed]
    if labels is not None:
        ax.set_xticklabels(labels)
        ax.set_xlabel(f"Time of day (steps of {step_hours:g} h)")
    else:
        ax.set_xticklabels([str(int(t)) for t in ticks])
        ax.set_xlabel(f"Step (Δt = {step_hours:g} h)")
    ax.set_xlim(steps.min() - 0.6, steps.max() + 0.6)


def step_times(frame: pd.DataFrame) -> pd.Series | None:
    if "time" not in frame.columns or frame.empty:
        return None
    t = frame.groupby("step")["time"].first()
    return t if (t.astype(str) != "").all() else None



def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes, without the Matplotlib version in the metadata (reproducible)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()

