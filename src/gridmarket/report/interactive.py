"""Interactive figures of the report (plotly): zoom, pan, hover; embedded offline in one page.

Each ``*_figure`` function returns a :class:`plotly.graph_objects.Figure` from the frames of a
results folder; :func:`figure_div` turns one into an HTML ``<div>`` that needs plotly.js, which
:func:`plotly_script` inlines once per page (no CDN, no network: the page works offline).
The network map is in :mod:`gridmarket.report.interactive_map`.

Units: power kW, energy kWh, prices currency/kWh, voltages pu; battery ``S_kw > 0`` charging.
Violations are (bus, line or transformer, step) pairs (:mod:`gridmarket.report.elements`).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from gridmarket.report.views import (
    MAX_HEATMAP_BUSES,
    battery_operation,
    duration_curves,
    monthly_energy,
    top_batteries,
    violation_grids,
    voltage_profile,
    welfare_breakdown,
)

__all__ = [
    "MAX_HEATMAP_BUSES",
    "battery_figure",
    "breakdown_figure",
    "comparison_figure",
    "duration_figure",
    "figure_div",
    "heatmap_figure",
    "monthly_figure",
    "plotly_script",
    "profile_figure",
    "voltage_time_figure",
]

#: buses shown in the bus × step heat map (the most violated ones)
_TEMPLATE = "plotly_white"
_CONFIG = {"displaylogo": False, "responsive": True}


def plotly_script() -> str:
    """plotly.js inlined in one ``<script>`` element (about 4.6 MB; include it once per page)."""
    return f'<script type="text/javascript">{get_plotlyjs()}</script>'


def figure_div(fig: go.Figure, div_id: str) -> str:
    """The figure as a ``<div>`` with a fixed id (the page is reproducible), plotly.js not
    included (see :func:`plotly_script`)."""
    height = fig.layout.height or 450
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=html.escape(div_id),
                       config=_CONFIG, default_height=f"{int(height)}px", default_width="100%")


def _labels(steps: Sequence[int], times: pd.Series | None) -> list[str]:
    """Category labels ``"10 (10:00)"`` of steps (the step alone without timestamps)."""
    if times is None:
        return [str(int(s)) for s in steps]
    parsed = pd.to_datetime(times.reindex(list(steps)).to_numpy(), errors="coerce")
    return [f"{int(s)} ({t:%H:%M})" if not pd.isna(t) else str(int(s)) for s, t in zip(steps, parsed, strict=True)]


def _x(steps: Sequence[int], times: pd.Series | None) -> list[object]:
    """A time axis of steps: their timestamps when every step has one, else the step numbers."""
    if times is not None:
        parsed = pd.to_datetime(times.reindex(list(steps)).to_numpy(), errors="coerce")
        if not pd.isna(parsed).any():
            return list(parsed)
    return [int(s) for s in steps]


# ----------------------------------------------------------------------------- violations
def heatmap_figure(violations: pd.DataFrame, lines: pd.DataFrame | None, *, before: int, after: int,
                   times: pd.Series | None = None, long_run: bool = False,
                   step_hours: float = 1.0) -> go.Figure:
    """Violations before (``before``) and after (``after``) batteries, side by side.

    Short runs: bus (rows, the :data:`MAX_HEATMAP_BUSES` most violated) × step; a cell counts the
    violation pairs at the bus in the step (a line's or transformer's count for its downstream
    bus). Long runs: day × hour of day, a cell counts the pairs of every element.
    """
    titles = (f"Before: iteration {before}", f"After: iteration {after}")
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, subplot_titles=titles, horizontal_spacing=0.04)
    a, b = violation_grids(violations, lines, before=before, after=after, long_run=long_run, times=times,
                           step_hours=step_hours)
    rows = list(a.index)
    if long_run:
        for col, wide in ((1, a), (2, b)):
            fig.add_trace(go.Heatmap(z=wide.to_numpy(), x=list(range(24)), y=rows, coloraxis="coloraxis",
                                     hovertemplate="%{y} %{x}:00<br>%{z} violation pairs<extra></extra>"),
                          row=1, col=col)
        fig.update_xaxes(title_text="Hour of day")
        height = int(np.clip(18 * len(rows) + 160, 300, 1400))
    else:
        xlab = _labels(list(a.columns), times)
        for col, wide in ((1, a), (2, b)):
            fig.add_trace(go.Heatmap(z=wide.to_numpy() if rows else [[0]], x=xlab, y=rows or [""],
                                     coloraxis="coloraxis",
                                     hovertemplate="bus %{y}, step %{x}<br>%{z} violation pairs<extra></extra>"),
                          row=1, col=col)
        fig.update_xaxes(title_text="Step (time)")
        fig.update_yaxes(title_text="Bus", row=1, col=1, autorange="reversed")
        height = int(np.clip(18 * max(len(rows), 1) + 180, 300, 1000))
    fig.update_layout(template=_TEMPLATE, height=height, margin={"t": 60, "l": 80, "r": 20, "b": 60},
                      coloraxis={"colorscale": "Reds", "cmin": 0, "colorbar": {"title": "pairs"}},
                      title="Violations before and after batteries (bus/line/transformer-step pairs)")
    return fig


def profile_figure(voltages: pd.DataFrame, buses: pd.DataFrame, *, before: int, after: int, step: int,
                   vmin_pu: float, vmax_pu: float, label: str = "") -> go.Figure:
    """Voltage along the feeder (distance from the source) in one step, before and after."""
    fig = go.Figure()
    for it, name, color in ((before, f"before (iteration {before})", "#c44e52"),
                            (after, f"after (iteration {after})", "#4c72b0")):
        prof = voltage_profile(voltages, buses, iteration=it, step=step)
        fig.add_trace(go.Scatter(
            x=prof["distance_km"], y=prof["v_pu"], mode="markers", name=name,
            marker=({"color": "rgba(0,0,0,0)", "size": 9, "line": {"color": color, "width": 1.5}}
                    if it == before and before != after else {"color": color, "size": 6, "opacity": 0.8}),
            customdata=np.column_stack([prof["bus"], prof["phase"]]) if len(prof) else None,
            hovertemplate="bus %{customdata[0]}.%{customdata[1]}<br>%{x:.3f} km<br>%{y:.4f} pu<extra></extra>"))
    for lim in (vmin_pu, vmax_pu):
        fig.add_hline(y=lim, line={"color": "#c44e52", "dash": "dash", "width": 1})
    fig.update_layout(template=_TEMPLATE, height=430,
                      title=(f"Voltage along the feeder at the worst step {step}{label} "
                             f"(limits {vmin_pu:g}/{vmax_pu:g} pu)"),
                      xaxis_title="Distance from the source along the feeder [km]", yaxis_title="Voltage [pu]")
    return fig


# ----------------------------------------------------------------------------- economics
_PART_COLORS = {"consumers": "#4c72b0", "producers": "#f2b701", "batteries_trading": "#8172b3",
                "batteries_degradation": "#c9b8e6", "grid_import_cost": "#8c8c8c",
                "grid_export_revenue": "#55a868", "fees": "#dd8452"}


def breakdown_figure(breakdown: pd.DataFrame, iterations: pd.DataFrame, *, currency: str = "") -> go.Figure:
    """Welfare breakdown per iteration: a stacked bar of the parts (negative ones below zero)
    and the total realised welfare as a marker (the parts add up to it)."""
    wide = welfare_breakdown(breakdown)
    cur = currency or "currency"
    fig = go.Figure()
    x = [f"it. {int(i)}" for i in wide.index]
    for part in wide.columns:
        fig.add_trace(go.Bar(x=x, y=wide[part], name=str(part), marker_color=_PART_COLORS.get(str(part)),
                             hovertemplate=f"{part}: %{{y:,.2f}} {cur}<extra></extra>"))
    total = wide.sum(axis=1)
    fig.add_trace(go.Scatter(x=x, y=total, mode="markers+text", name="realised welfare (sum)",
                             marker={"symbol": "diamond", "size": 11, "color": "black"},
                             text=[f"{v:,.2f}" for v in total], textposition="top center",
                             hovertemplate=f"total: %{{y:,.2f}} {cur}<extra></extra>"))
    fig.update_layout(template=_TEMPLATE, barmode="relative", height=440,
                      title="Welfare breakdown per iteration", yaxis_title=f"Welfare [{cur}]",
                      legend={"orientation": "h", "y": -0.15})
    return fig


def comparison_figure(comparison: pd.DataFrame, *, currency: str = "") -> go.Figure:
    """The four-way comparison: violations and realised welfare / net benefit per scenario."""
    cur = currency or "currency"
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Violations [pairs]", f"Welfare [{cur}]"))
    x = comparison["scenario"].astype(str)
    fig.add_trace(go.Bar(x=x, y=comparison["violations"], name="violations", marker_color="#c44e52"), row=1, col=1)
    fig.add_trace(go.Bar(x=x, y=comparison["welfare_realised"], name="realised welfare", marker_color="#4c72b0"),
                  row=1, col=2)
    fig.add_trace(go.Bar(x=x, y=comparison["net_benefit"], name="net benefit", marker_color="#55a868"),
                  row=1, col=2)
    fig.update_layout(template=_TEMPLATE, height=400, barmode="group", title="Blind and aware market, with and "
                      "without batteries")
    return fig


# ----------------------------------------------------------------------------- batteries
def battery_figure(market: pd.DataFrame, batteries: pd.DataFrame, *, iteration: int, times: pd.Series | None,
                   step_hours: float = 1.0, top: int = 8, currency: str = "") -> tuple[go.Figure, pd.DataFrame]:
    """Each bank's state of charge and charge/discharge per step, named by its bus, with its
    community's price (the ``top`` banks by throughput when there are more).

    Returns the figure and the table of the shown banks (:func:`views.top_batteries`).
    """
    op = battery_operation(market, batteries, iteration=iteration, step_hours=step_hours)
    shown = top_batteries(op, top, step_hours=step_hours)
    cur = currency or "currency"
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.38, 0.38, 0.24],
                        subplot_titles=("State of charge", "Charging (+) / discharging (−) [kW]",
                                        f"Community price [{cur}/kWh]"))
    palette = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c",
               "#ccb974", "#64b5cd"]
    for k, row in shown.iterrows():
        b = op[op["agent"] == row["agent"]]
        steps = b["step"].astype(int).to_list()
        x = _x(steps, times)
        name = f"{row['agent']} @ {row['bus']} ({row['units']:g} SBU)"
        color = palette[int(k) % len(palette)]
        fig.add_trace(go.Scatter(x=x, y=b["soc"], name=name, legendgroup=name, line={"color": color},
                                 hovertemplate=f"{name}<br>SoC %{{y:.3f}}<extra></extra>"), row=1, col=1)
        fig.add_trace(go.Bar(x=x, y=b["S_kw"], name=name, legendgroup=name, showlegend=False,
                             marker_color=color, hovertemplate=f"{name}<br>%{{y:.2f}} kW<extra></extra>"),
                      row=2, col=1)
    seen: set[str] = set()
    for _, row in shown.iterrows():
        comm = str(row["community"])
        if comm in seen:
            continue
        seen.add(comm)
        b = op[op["agent"] == row["agent"]]
        fig.add_trace(go.Scatter(x=_x(b["step"].astype(int).to_list(), times), y=b["price"],
                                 name=f"price of {comm}", line={"shape": "hv", "color": "black", "width": 1},
                                 hovertemplate=f"{comm}: %{{y:.4f}} {cur}/kWh<extra></extra>"), row=3, col=1)
    n_banks = op["agent"].nunique() if len(op) else 0
    title = f"Battery banks of iteration {iteration}"
    if n_banks > len(shown):
        title += f": the {len(shown)} of {n_banks} banks with the highest throughput"
    fig.update_layout(template=_TEMPLATE, height=640, barmode="group", title=title,
                      legend={"orientation": "h", "y": -0.08})
    fig.update_yaxes(range=[0, 1], row=1, col=1)
    return fig, shown


# ----------------------------------------------------------------------------- long runs
def duration_figure(voltages: pd.DataFrame, *, before: int, after: int, vmin_pu: float,
                    vmax_pu: float) -> go.Figure:
    """Duration curves of the lowest and highest bus voltage per step, before and after."""
    fig = go.Figure()
    for it, dash in ((before, "dot"), (after, "solid")):
        d = duration_curves(voltages, iteration=it)
        fig.add_trace(go.Scatter(x=100 * d["share"], y=d["v_max_pu"], name=f"highest V, it. {it}",
                                 line={"color": "#c44e52", "dash": dash}))
        fig.add_trace(go.Scatter(x=100 * d["share"], y=d["v_min_pu"], name=f"lowest V, it. {it}",
                                 line={"color": "#4c72b0", "dash": dash}))
    for lim in (vmin_pu, vmax_pu):
        fig.add_hline(y=lim, line={"color": "#c44e52", "dash": "dash", "width": 1})
    fig.update_layout(template=_TEMPLATE, height=420, title="Voltage duration curves (dotted: before, solid: after)",
                      xaxis_title="Share of the run's steps [%]", yaxis_title="Voltage [pu]")
    return fig


def monthly_figure(market: pd.DataFrame, *, iteration: int, step_hours: float = 1.0) -> go.Figure:
    """Energy per month of one iteration [kWh]: loads, PV, imports, exports, battery flows."""
    m = monthly_energy(market, iteration=iteration, step_hours=step_hours)
    fig = go.Figure()
    for col, name in (("load_kwh", "consumer loads"), ("pv_kwh", "PV"), ("import_kwh", "imports"),
                      ("export_kwh", "exports"), ("charged_kwh", "battery charging"),
                      ("discharged_kwh", "battery discharging")):
        if m[col].abs().sum() > 0:
            fig.add_trace(go.Bar(x=list(m.index), y=m[col], name=name))
    fig.update_layout(template=_TEMPLATE, height=400, barmode="group",
                      title=f"Energy per month, iteration {iteration}", yaxis_title="Energy [kWh]")
    return fig


# ----------------------------------------------------------------------------- time series
#: bus-phase voltage lines drawn per iteration (those that come closest to a limit)
MAX_VOLTAGE_LINES = 300


def voltage_time_figure(voltages: pd.DataFrame, *, iterations: Sequence[int], vmin_pu: float, vmax_pu: float,
                        times: pd.Series | None = None, labels: dict[int, str] | None = None) -> go.Figure:
    """Bus-phase voltages over the steps, one switchable view per iteration: the lowest and
    highest voltage of each step, and the :data:`MAX_VOLTAGE_LINES` bus-phases that come
    closest to (or beyond) a limit as thin lines named ``bus.phase`` in the hover."""
    labels = labels or {}
    fig = go.Figure()
    per_it = []
    for k, it in enumerate(iterations):
        v = voltages[voltages["iteration"] == it]
        wide = v.pivot_table(index="step", columns=["bus", "phase"], values="v_pu", aggfunc="mean").sort_index()
        x = _x(list(wide.index.astype(int)), times)
        margin = np.minimum(wide.min() - vmin_pu, vmax_pu - wide.max())
        keep = margin.sort_values(kind="stable").index[:MAX_VOLTAGE_LINES]
        start = len(fig.data)
        vis = k == len(iterations) - 1
        for bus, phase in keep:
            fig.add_trace(go.Scattergl(x=x, y=wide[(bus, phase)], mode="lines", name=f"{bus}.{phase}",
                                       line={"width": 0.7, "color": "rgba(76,114,176,0.35)"}, showlegend=False,
                                       hovertemplate=f"{bus}.{phase}: %{{y:.4f}} pu<extra></extra>", visible=vis))
        for name, series, color in (("lowest", wide.min(axis=1), "#1f3b73"), ("highest", wide.max(axis=1), "#c44e52")):
            fig.add_trace(go.Scatter(x=x, y=series, mode="lines", name=f"{name} (it. {it})", visible=vis,
                                     line={"width": 2, "color": color}))
        per_it.append((start, len(fig.data)))
    n = len(fig.data)
    buttons = []
    for it, (a, b) in zip(iterations, per_it, strict=True):
        mask = [a <= j < b for j in range(n)]
        buttons.append({"label": f"iteration {it}" + (f" ({labels[it]})" if labels.get(it) else ""),
                        "method": "update", "args": [{"visible": mask}]})
    for lim in (vmin_pu, vmax_pu):
        fig.add_hline(y=lim, line={"color": "#c44e52", "dash": "dash", "width": 1})
    fig.update_layout(template=_TEMPLATE, height=460, hovermode="closest", yaxis_title="Voltage [pu]",
                      title=f"Bus-phase voltages against the limits {vmin_pu:g}/{vmax_pu:g} pu",
                      updatemenus=[{"type": "buttons", "direction": "right", "buttons": buttons,
                                    "active": len(buttons) - 1, "x": 0.0, "y": 1.12, "xanchor": "left",
                                    "yanchor": "bottom"}], margin={"t": 100})
    return fig
