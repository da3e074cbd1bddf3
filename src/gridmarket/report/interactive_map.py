"""The interactive network map (plotly): one view per iteration, a toggle between them.

Lines from ``network_lines.csv`` drawn between the buses' coordinates; per iteration the lines
and transformers out of limits in red (a hover names them and counts their violation steps),
the buses with a violation ringed in red, the battery banks as squares sized by their units,
and every bus hoverable: name, lowest and highest voltage of the iteration, agents. Buttons
switch between iterations (the base iteration is "before", the one after batteries "after").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from gridmarket.report.elements import bus_names, line_table, violated_elements, violation_pairs
from gridmarket.report.style import community_colors

__all__ = ["map_figure", "MAP_TRACES_PER_ITERATION"]

#: traces each iteration adds (overloaded lines, their hover points, buses, violated buses,
#: batteries); the first trace of the figure (all lines) is shared
MAP_TRACES_PER_ITERATION = 5
_MAX_AGENTS_IN_HOVER = 6


def _segments(xy: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> tuple[list[float | None], list[float | None]]:
    xs: list[float | None] = []
    ys: list[float | None] = []
    for b1, b2 in pairs:
        if b1 in xy.index and b2 in xy.index:
            xs += [float(xy.at[b1, "x"]), float(xy.at[b2, "x"]), None]
            ys += [float(xy.at[b1, "y"]), float(xy.at[b2, "y"]), None]
    return xs, ys


def _agent_text(agents: pd.DataFrame | None, buses: pd.DataFrame) -> pd.Series:
    """bus -> "agents: a (consumer, C1), …" for the hover."""
    if agents is None or agents.empty:
        if "customers" in buses.columns:
            return pd.Series([f"customers: {c}" for c in buses["customers"]],
                             index=bus_names(buses["bus"]).to_numpy())
        return pd.Series(dtype=str)
    a = agents.assign(_bus=bus_names(agents["bus"]))
    out = {}
    for bus, g in a.groupby("_bus", sort=False):
        items = [f"{r.agent} ({r.kind}{', ' + str(r.community) if str(r.community) else ''})"
                 for r in g.itertuples()]
        more = len(items) - _MAX_AGENTS_IN_HOVER
        out[bus] = "agents: " + ", ".join(items[:_MAX_AGENTS_IN_HOVER]) + (f", … {more} more" if more > 0 else "")
    return pd.Series(out, dtype=str)


def map_figure(buses: pd.DataFrame, lines: pd.DataFrame, *, agents: pd.DataFrame | None,
               batteries: pd.DataFrame | None, violations: pd.DataFrame | None, voltages: pd.DataFrame | None,
               iterations: Sequence[int], labels: dict[int, str] | None = None,
               shown: int | None = None) -> go.Figure:
    """The interactive map of the network, one switchable view per iteration.

    Parameters
    ----------
    buses, lines : DataFrame
        ``network_buses.csv`` (``bus, x, y``) and ``network_lines.csv``.
    iterations : sequence of int
        Iterations with a view, in button order.
    labels : dict, optional
        Iteration -> label of its button (e.g. ``"before"``, ``"after, best"``).
    shown : int, optional
        The iteration shown first (default the last of ``iterations``).

    Returns
    -------
    plotly Figure
        Trace 0: every line; then :data:`MAP_TRACES_PER_ITERATION` traces per iteration named
        ``"… (it. k)"``, only the shown iteration's visible.
    """
    labels = labels or {}
    b = pd.DataFrame({"bus": bus_names(buses["bus"]).to_numpy(),
                      "x": pd.to_numeric(buses["x"], errors="coerce").to_numpy(dtype=float),
                      "y": pd.to_numeric(buses["y"], errors="coerce").to_numpy(dtype=float)})
    b = b[np.isfinite(b["x"]) & np.isfinite(b["y"])].drop_duplicates("bus").set_index("bus")
    table = line_table(lines)
    agent_text = _agent_text(agents, buses)
    comm_of_bus: dict[str, str] = {}
    if agents is not None and len(agents):
        a = agents[agents["kind"].astype(str).str.lower() != "battery"]
        a = a.assign(_bus=bus_names(a["bus"]), community=a["community"].fillna("").astype(str))
        a = a[a["community"] != ""].sort_values(["_bus", "community"])
        comm_of_bus = dict(zip(a["_bus"], a["community"], strict=True))
    colors = community_colors(list(comm_of_bus.values()))
    bus_color = ["#555555" if bus not in comm_of_bus else colors[comm_of_bus[bus]] for bus in b.index]
    many = len(b) > 1500
    scatter = go.Scattergl if many else go.Scatter

    fig = go.Figure()
    xs, ys = _segments(b, list(zip(table["bus1"], table["bus2"], strict=True)))
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="lines", hoverinfo="skip",
                             line={"color": "#9a9a9a", "width": 1}))
    shown = iterations[-1] if shown is None else shown
    per_it_visible: list[list[bool]] = []
    n_traces = 1 + MAP_TRACES_PER_ITERATION * len(iterations)
    for k, it in enumerate(iterations):
        vis = it == shown
        bad_buses, bad_elems = violated_elements(violations, lines, iteration=it)
        pairs = violation_pairs(violations[violations["iteration"] == it]) if violations is not None \
            else pd.DataFrame(columns=["key", "step"])
        steps_per = pairs.groupby("key")["step"].nunique() if len(pairs) else pd.Series(dtype=int)
        bad = table[table["key"].isin(bad_elems)]
        xs, ys = _segments(b, list(zip(bad["bus1"], bad["bus2"], strict=True)))
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=f"overloaded lines (it. {it})",
                                 line={"color": "#d62728", "width": 4}, hoverinfo="skip", visible=vis,
                                 showlegend=bool(xs)))
        mid = bad[bad["bus1"].isin(b.index) & bad["bus2"].isin(b.index)]
        mx = [(b.at[p, "x"] + b.at[q, "x"]) / 2 for p, q in zip(mid["bus1"], mid["bus2"], strict=True)]
        my = [(b.at[p, "y"] + b.at[q, "y"]) / 2 for p, q in zip(mid["bus1"], mid["bus2"], strict=True)]
        text = [f"{key}: out of limits in {int(steps_per.get(key, 0))} step(s)" for key in mid["key"]]
        fig.add_trace(go.Scatter(x=mx, y=my, mode="markers", name=f"overloaded line names (it. {it})",
                                 marker={"color": "#d62728", "size": 9, "symbol": "x"}, text=text,
                                 hovertemplate="%{text}<extra></extra>", visible=vis, showlegend=False))
        # buses with their voltage range in this iteration
        vtext = pd.Series("", index=b.index)
        if voltages is not None and len(voltages):
            v = voltages[voltages["iteration"] == it]
            ext = v.groupby(v["bus"].astype(str).str.lower(), sort=False)["v_pu"].agg(["min", "max"])
            ext = ext.reindex(b.index)
            vtext = pd.Series([f"V {lo:.4f} – {hi:.4f} pu" if np.isfinite(lo) else "not monitored"
                               for lo, hi in zip(ext["min"], ext["max"], strict=True)], index=b.index)
        hover = [f"<b>bus {bus}</b><br>{vtext[bus]}<br>{agent_text.get(bus, 'no agent')}" for bus in b.index]
        fig.add_trace(scatter(x=b["x"], y=b["y"], mode="markers", name=f"buses (it. {it})", text=hover,
                              hovertemplate="%{text}<extra></extra>", visible=vis,
                              marker={"size": [9 if bus in comm_of_bus else 5 for bus in b.index],
                                      "color": bus_color, "line": {"width": 0}}))
        rb = [bus for bus in bad_buses if bus in b.index]
        fig.add_trace(go.Scatter(x=b.loc[rb, "x"], y=b.loc[rb, "y"], mode="markers",
                                 name=f"violated buses (it. {it}): {len(bad_buses)}", visible=vis,
                                 showlegend=bool(rb),
                                 text=[f"bus {bus}: violated" for bus in rb], hovertemplate="%{text}<extra></extra>",
                                 marker={"size": 16, "color": "rgba(0,0,0,0)",
                                         "line": {"color": "#d62728", "width": 2}}))
        units = pd.Series(dtype=float)
        if batteries is not None and len(batteries):
            bt = batteries[batteries["iteration"] == it]
            units = bt.groupby(bus_names(bt["bus"]))["units"].sum().astype(float)
            units = units[units.index.isin(b.index)]
        fig.add_trace(go.Scatter(x=b.loc[units.index, "x"], y=b.loc[units.index, "y"], mode="markers",
                                 name=f"battery banks (it. {it}): {units.sum():g} SBU", visible=vis,
                                 showlegend=bool(len(units)),
                                 text=[f"battery at {bus}: {u:g} SBU" for bus, u in units.items()],
                                 hovertemplate="%{text}<extra></extra>",
                                 marker={"symbol": "square", "color": "#ffd92f", "line": {"color": "black", "width": 1},
                                         "size": list(8 + 3 * np.sqrt(units.to_numpy()))}))
        mask = [True] + [False] * (n_traces - 1)
        start = 1 + MAP_TRACES_PER_ITERATION * k
        for j in range(start, start + MAP_TRACES_PER_ITERATION):
            mask[j] = True
        per_it_visible.append(mask)
    buttons = [{"label": f"iteration {it}" + (f" ({labels[it]})" if labels.get(it) else ""),
                "method": "update", "args": [{"visible": mask}]}
               for it, mask in zip(iterations, per_it_visible, strict=True)]
    active = list(iterations).index(shown) if shown in iterations else 0
    w = float(np.ptp(b["x"])) if len(b) else 1.0
    h = float(np.ptp(b["y"])) if len(b) else 1.0
    height = int(np.clip(700 * (h / w if w > 0 else 1.0), 420, 800))
    fig.update_layout(
        template="plotly_white", height=height, hovermode="closest",
        title="Network map (buttons: iteration shown; hover a bus for its voltages and agents)",
        updatemenus=[{"type": "buttons", "direction": "right", "buttons": buttons, "active": active,
                      "x": 0.0, "y": 1.08, "xanchor": "left", "yanchor": "bottom", "showactive": True}],
        legend={"orientation": "h", "y": -0.05}, margin={"t": 90})
    fig.update_yaxes(scaleanchor="x", scaleratio=1, title="y [bus coordinate units]")
    fig.update_xaxes(title="x [bus coordinate units]")
    return fig
