"""Figures of a study run (the study's Figs. 4-7), drawn with matplotlib's object API.

Every ``plot_*`` function takes DataFrames (as read by :func:`load_results`) and returns a
:class:`matplotlib.figure.Figure`; nothing touches pyplot's global state or a display, so
the figures render the same everywhere (Agg). :func:`save_figures` writes them as PNGs.

Sign convention (load reference, shared MODEL.md): consumption positive, production
negative, battery ``S_kw > 0`` charging. In the energy balance the consumption side
(loads, battery charging, exports) is drawn above zero and the supply side (PV, battery
discharging, imports) below it; for the market's agents both sides have equal height.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from gridmarket.report._load import ResultsData, finite_or, load_results, violated_buses

__all__ = [
    "FigureSpec",
    "energy_balance",
    "has_coordinates",
    "plot_energy_balance",
    "plot_voltages",
    "plot_network_map",
    "plot_iterations",
    "render_figures",
    "save_figures",
]

DPI = 110
_STYLE = {
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
}
_RC = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8}


def _figure(width: float, height: float, *, layout: str = "constrained") -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout=layout)


def community_colors(names: Sequence[str]) -> dict[str, str]:
    """A fixed colour per community name (tab10 in sorted-name order, then tab20)."""
    uniq = sorted({str(n) for n in names if str(n)})
    cmap = mpl.colormaps["tab10" if len(uniq) <= 10 else "tab20"]
    return {name: mpl.colors.to_hex(cmap(i % cmap.N)) for i, name in enumerate(uniq)}


def _step_axis(ax, steps: np.ndarray, times: pd.Series | None, step_hours: float) -> None:
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


def _times(frame: pd.DataFrame) -> pd.Series | None:
    if "time" not in frame.columns or frame.empty:
        return None
    t = frame.groupby("step")["time"].first()
    return t if (t.astype(str) != "").all() else None


# --------------------------------------------------------------------------- energy balance
def energy_balance(market: pd.DataFrame, *, iteration: int) -> pd.DataFrame:
    """Per-step power balance of the market's agents for one iteration [kW].

    Returns
    -------
    DataFrame indexed by step with ``load_kw, charge_kw, export_kw`` (consumption side, ≥ 0),
    ``pv_kw, discharge_kw, import_kw`` (supply side, ≥ 0), ``net_kw`` = Σ(P + S) of the market
    agents (= import − export) and ``passive_kw`` = Σ P of the passive agents.
    """
    m = market[market["iteration"] == iteration]
    steps = np.sort(m["step"].unique())
    kind = m["kind"].astype(str).str.lower()
    p = m["P_kw"].astype(float).fillna(0.0)
    s = m["S_kw"].astype(float).fillna(0.0)
    inmarket = kind != "passive"

    def per_step(values: pd.Series, mask: pd.Series) -> pd.Series:
        return values[mask].groupby(m.loc[mask, "step"]).sum().reindex(steps, fill_value=0.0)

    out = pd.DataFrame(index=pd.Index(steps, name="step"))
    out["load_kw"] = per_step(p.clip(lower=0.0), kind == "consumer")
    out["pv_kw"] = per_step((-p).clip(lower=0.0), kind == "producer")
    out["charge_kw"] = per_step(s.clip(lower=0.0), kind == "battery")
    out["discharge_kw"] = per_step((-s).clip(lower=0.0), kind == "battery")
    out["import_kw"] = per_step(m["alpha_kw"].astype(float).fillna(0.0), inmarket)
    out["export_kw"] = per_step(m["beta_kw"].astype(float).fillna(0.0), inmarket)
    out["net_kw"] = per_step(p + s, inmarket)
    out["passive_kw"] = per_step(p, kind == "passive")
    return out


def plot_energy_balance(market: pd.DataFrame, communities: pd.DataFrame | None = None, *,
                        iteration: int, step_hours: float = 1.0, currency: str = "",
                        label: str = "") -> Figure:
    """Hourly energy balance of one iteration (study Fig. 5).

    Top: stacked bars per step, consumption side above zero (consumer loads, battery
    charging, exports), supply side below (PV, battery discharging, imports), the net
    community demand Σ(P + S) = imports − exports as a line, passive (non-market) loads dashed.
    Middle: each community's clearing price. Bottom (when the iteration has batteries): the
    batteries' state of charge.

    Parameters
    ----------
    market : DataFrame
        ``market.csv``.
    communities : DataFrame, optional
        ``communities.csv`` (prices); without it the agents' ``price`` column is used.
    iteration : int
    step_hours : float
        Δt [h], for the axis label.
    currency : str
        For the price axis.
    label : str
        Added to the title, e.g. ``"base"`` or ``"best"``.
    """
    with mpl.rc_context(_RC):
        return _plot_energy_balance(market, communities, iteration=iteration,
                                    step_hours=step_hours, currency=currency, label=label)


def _plot_energy_balance(market: pd.DataFrame, communities: pd.DataFrame | None, *,
                         iteration: int, step_hours: float, currency: str,
                         label: str) -> Figure:
    bal = energy_balance(market, iteration=iteration)
    m = market[market["iteration"] == iteration]
    batt = m[m["kind"].astype(str).str.lower() == "battery"]
    has_batt = not batt.empty
    fig = _figure(9.0, 7.6 if has_batt else 6.0)
    ratios = [2.2, 1.0, 1.0] if has_batt else [2.2, 1.0]
    axes = fig.subplots(len(ratios), 1, sharex=True, gridspec_kw={"height_ratios": ratios})
    ax = axes[0]
    x = bal.index.to_numpy()
    up = np.zeros(len(x))
    for col, name in (("load_kw", "Consumer loads"), ("charge_kw", "Battery charging"),
                      ("export_kw", "Export")):
        if (bal[col] != 0).any():
            ax.bar(x, bal[col], 0.8, bottom=up, color=_STYLE[col[:-3]], label=name)
            up += bal[col].to_numpy()
    down = np.zeros(len(x))
    for col, name in (("pv_kw", "PV generation"), ("discharge_kw", "Battery discharging"),
                      ("import_kw", "Import")):
        if (bal[col] != 0).any():
            ax.bar(x, -bal[col], 0.8, bottom=down, color=_STYLE[col[:-3]], label=name)
            down -= bal[col].to_numpy()
    ax.plot(x, bal["net_kw"], color=_STYLE["net"], marker="o", ms=3, lw=1.4,
            label="Net community demand (import − export)")
    if (bal["passive_kw"] != 0).any():
        ax.plot(x, bal["passive_kw"], color=_STYLE["passive"], ls="--", lw=1.4,
                label="Passive loads (not in market)")
    ax.axhline(0.0, color="black", lw=0.6)
    extent = [1e-3, *np.abs(up), *np.abs(down), *np.abs(bal["net_kw"]),
              *np.abs(bal["passive_kw"])]
    ax.set_ylim(-1.12 * max(extent), 1.12 * max(extent))
    ax.set_ylabel("Power [kW]\n(+ consumption / − supply)")
    title = f"Energy balance per step, all communities — iteration {iteration}"
    ax.set_title(f"{title} ({label})" if label else title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)

    # prices
    axp = axes[1]
    if communities is not None and not communities.empty:
        c = communities[communities["iteration"] == iteration]
        prices = c.pivot_table(index="step", columns="community", values="price", aggfunc="mean")
    else:
        mm = m[m["kind"].astype(str).str.lower() != "passive"]
        prices = mm.pivot_table(index="step", columns="community", values="price",
                                aggfunc="mean")
    colors = community_colors(list(prices.columns))
    for name in sorted(prices.columns, key=str):
        axp.step(prices.index, prices[name], where="mid", color=colors.get(str(name)),
                 lw=1.5, label=f"{name}")
    cur = currency or "currency"
    axp.set_ylabel(f"Community price\n[{cur}/kWh]")
    axp.grid(alpha=0.3)
    if len(prices.columns):
        axp.legend(title="Community", loc="upper left", bbox_to_anchor=(1.01, 1.0),
                   frameon=False)

    if has_batt:
        axs = axes[2]
        soc = batt.pivot_table(index="step", columns="agent", values="soc", aggfunc="mean")
        soc = soc.reindex(columns=sorted(soc.columns, key=str))
        if soc.shape[1] <= 8:
            for agent in soc.columns:
                axs.plot(soc.index, soc[agent], marker=".", lw=1.2, label=str(agent))
            axs.legend(title="Battery", loc="upper left", bbox_to_anchor=(1.01, 1.0),
                       frameon=False)
        else:
            segs = [np.column_stack([soc.index, soc[a]]) for a in soc.columns]
            axs.add_collection(LineCollection(segs, colors="#999999", linewidths=0.6))
            axs.plot(soc.index, soc.mean(axis=1), color="black", lw=1.5,
                     label=f"Mean of {soc.shape[1]} batteries")
            axs.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        axs.set_ylabel("State of charge [–]")
        axs.set_ylim(0.0, 1.0)
        axs.grid(alpha=0.3)
    _step_axis(axes[-1], x, _times(m), step_hours)
    return fig


# --------------------------------------------------------------------------- voltages
def plot_voltages(voltages: pd.DataFrame, *, iterations: Sequence[int], vmin_pu: float = 0.95,
                  vmax_pu: float = 1.05, labels: Sequence[str] | None = None,
                  times: pd.Series | None = None, step_hours: float = 1.0,
                  max_lines: int = 3000) -> Figure:
    """Bus voltages against the limits, one panel per iteration (study Fig. 6).

    Each panel shows every bus-phase voltage as a thin line (up to ``max_lines`` of them),
    the per-step minimum/maximum envelope, the limits ``vmin_pu``/``vmax_pu`` and the
    out-of-limit points.

    Parameters
    ----------
    voltages : DataFrame
        ``voltages.parquet``: ``iteration, step, bus, phase, v_pu``.
    iterations : sequence of int
        E.g. ``(0, best)``: before and after the batteries.
    vmin_pu, vmax_pu : float
        Limits of eq. (19) [pu].
    labels : sequence of str, optional
        Per iteration, e.g. ``("base", "best")``.
    times : Series, optional
        Timestamp per step (index = step) for HH:MM tick labels.
    """
    with mpl.rc_context(_RC):
        return _plot_voltages(voltages, iterations=list(dict.fromkeys(iterations)),
                              vmin_pu=vmin_pu, vmax_pu=vmax_pu, labels=labels, times=times,
                              step_hours=step_hours, max_lines=max_lines)


def _plot_voltages(voltages: pd.DataFrame, *, iterations: list[int], vmin_pu: float,
                   vmax_pu: float, labels: Sequence[str] | None, times: pd.Series | None,
                   step_hours: float, max_lines: int) -> Figure:
    n = max(1, len(iterations))
    fig = _figure(4.6 * n + 1.8, 4.4)
    axes = np.atleast_1d(fig.subplots(1, n, sharey=True, squeeze=False)[0])
    lo_all = [vmin_pu]
    hi_all = [vmax_pu]
    for k, (ax, it) in enumerate(zip(axes, iterations, strict=False)):
        v = voltages[voltages["iteration"] == it]
        wide = v.pivot_table(index="step", columns=["bus", "phase"], values="v_pu",
                             aggfunc="mean").sort_index()
        x = wide.index.to_numpy()
        if wide.shape[1] and wide.shape[1] <= max_lines:
            arr = wide.to_numpy()
            segs = [np.column_stack([x, arr[:, j]]) for j in range(arr.shape[1])]
            ax.add_collection(LineCollection(segs, colors="#7f9fbf", linewidths=0.5,
                                             alpha=0.5))
        if wide.shape[1]:
            vmin_t = wide.min(axis=1).to_numpy()
            vmax_t = wide.max(axis=1).to_numpy()
            ax.fill_between(x, vmin_t, vmax_t, color="#4c72b0", alpha=0.15, lw=0)
            ax.plot(x, vmin_t, color="#1f3b73", lw=1.4)
            ax.plot(x, vmax_t, color="#1f3b73", lw=1.4)
            lo_all.append(float(np.nanmin(vmin_t)))
            hi_all.append(float(np.nanmax(vmax_t)))
        bad = v[(v["v_pu"] < vmin_pu) | (v["v_pu"] > vmax_pu)]
        ax.scatter(bad["step"], bad["v_pu"], s=12, color=_STYLE["violation"], zorder=3)
        ax.axhline(vmin_pu, color=_STYLE["limit"], ls="--", lw=1.2)
        ax.axhline(vmax_pu, color=_STYLE["limit"], ls="--", lw=1.2)
        tag = f" ({labels[k]})" if labels is not None and k < len(labels) and labels[k] else ""
        n_bad = bad.groupby(["bus", "step"]).ngroups if len(bad) else 0
        ax.set_title(f"Iteration {it}{tag}\n{n_bad} bus-step pairs out of limits")
        ax.grid(alpha=0.3)
        _step_axis(ax, x, times, step_hours)
    axes[0].set_ylabel("Voltage [pu]")
    span = max(hi_all) - min(lo_all)
    pad = max(0.005, 0.08 * span)
    axes[0].set_ylim(min(lo_all) - pad, max(hi_all) + pad)
    handles = [
        Line2D([], [], color="#7f9fbf", lw=0.8, label="Bus-phase voltage"),
        Line2D([], [], color="#1f3b73", lw=1.4, label="Min / max over buses"),
        Line2D([], [], color=_STYLE["limit"], ls="--", lw=1.2,
               label=f"Limits {vmin_pu:g} / {vmax_pu:g} pu"),
        Line2D([], [], color=_STYLE["violation"], marker="o", ls="", ms=4,
               label="Out of limits"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
    fig.suptitle("Bus voltages against the limits, before and after batteries")
    return fig


# --------------------------------------------------------------------------- network map
def has_coordinates(buses: pd.DataFrame | None) -> bool:
    """Whether at least two buses have finite x/y coordinates."""
    if buses is None or buses.empty:
        return False
    xy = buses[["x", "y"]].apply(pd.to_numeric, errors="coerce")
    return int(np.isfinite(xy.to_numpy(dtype=float)).all(axis=1).sum()) >= 2


def plot_network_map(buses: pd.DataFrame, lines: pd.DataFrame, agents: pd.DataFrame | None = None,
                     batteries: pd.DataFrame | None = None,
                     violations: pd.DataFrame | None = None, *, iteration: int,
                     violated_iteration: int = 0) -> Figure:
    """Network map from bus coordinates (study Figs. 4/7).

    Lines are segments (those with a violation in ``violated_iteration`` in red), the agents'
    buses are coloured by community (passive agents grey), the batteries of ``iteration`` are
    squares whose size grows with their bank (label: SBUs), and the buses with a violation in
    ``violated_iteration`` (default the base iteration) are ringed in red.

    Buses without coordinates (NaN) and lines touching them are left out.

    Raises
    ------
    ValueError
        Fewer than two buses have coordinates (check with :func:`has_coordinates`).
    """
    if not has_coordinates(buses):
        msg = "network_buses.csv: fewer than two buses have x/y coordinates; no map to draw"
        raise ValueError(msg)
    with mpl.rc_context(_RC):
        return _plot_network_map(buses, lines, agents, batteries, violations,
                                 iteration=iteration, violated_iteration=violated_iteration)


def _plot_network_map(buses: pd.DataFrame, lines: pd.DataFrame, agents: pd.DataFrame | None,
                      batteries: pd.DataFrame | None, violations: pd.DataFrame | None, *,
                      iteration: int, violated_iteration: int) -> Figure:
    b = buses.copy()
    b["bus"] = b["bus"].astype(str).str.lower().str.split(".").str[0]
    b["x"] = pd.to_numeric(b["x"], errors="coerce")
    b["y"] = pd.to_numeric(b["y"], errors="coerce")
    b = b[np.isfinite(b["x"]) & np.isfinite(b["y"])].drop_duplicates("bus")
    xy = b.set_index("bus")[["x", "y"]].astype(float)
    bad_buses: list[str] = []
    bad_lines: list[str] = []
    if violations is not None:
        bad_buses, bad_lines = violated_buses(violations, lines, iteration=violated_iteration)
    bus1 = lines["bus1"].astype(str).str.lower().str.split(".").str[0]
    bus2 = lines["bus2"].astype(str).str.lower().str.split(".").str[0]

    # figure height follows the network's aspect ratio, so the equal-aspect map fills it
    w = float(np.ptp(xy["x"].to_numpy())) or 1.0
    h = float(np.ptp(xy["y"].to_numpy())) or 1.0
    ratio = min(max(h / w, 0.3), 1.6)
    # "compressed": constrained layout for fixed-aspect axes (keeps the y label in view)
    fig = _figure(9.5, float(np.clip(6.0 * ratio + 1.4, 3.6, 9.5)), layout="compressed")
    ax = fig.subplots()
    handles: list[Line2D] = []

    # lines, violated ones in red
    ok, viol = [], []
    for name, n1, n2 in zip(lines["line"].astype(str).str.lower(), bus1, bus2, strict=True):
        if n1 in xy.index and n2 in xy.index:
            seg = [xy.loc[n1].to_numpy(), xy.loc[n2].to_numpy()]
            (viol if name in bad_lines else ok).append(seg)
    ax.add_collection(LineCollection(ok, colors="#9a9a9a", linewidths=1.0, zorder=1))
    handles.append(Line2D([], [], color="#9a9a9a", lw=1.0, label="Line"))
    if viol:
        ax.add_collection(LineCollection(viol, colors=_STYLE["violation"], linewidths=2.4,
                                         zorder=2))
        handles.append(Line2D([], [], color=_STYLE["violation"], lw=2.4,
                              label=f"Line with current violation (it. {violated_iteration})"))
    ax.scatter(xy["x"], xy["y"], s=6, color="#555555", zorder=2)
    handles.append(Line2D([], [], color="#555555", marker="o", ls="", ms=2.5, label="Bus"))
    heads = [n for n in dict.fromkeys(bus1) if n not in set(bus2) and n in xy.index]
    if heads:
        pts = xy.loc[heads]
        ax.scatter(pts["x"], pts["y"], s=90, marker="^", color="black", zorder=3)
        handles.append(Line2D([], [], color="black", marker="^", ls="", ms=8,
                              label="Feeder head"))

    # batteries of the iteration: squares sized by SBUs, below the agents' dots
    marker_area = pd.Series(36.0, index=xy.index)
    if batteries is not None and not batteries.empty:
        bt = batteries[batteries["iteration"] == iteration].copy()
        bt["bus"] = bt["bus"].astype(str).str.lower().str.split(".").str[0]
        bt = bt[bt["bus"].isin(xy.index)]
        per_bus = bt.groupby("bus", sort=True)["units"].sum().astype(float)
        if len(per_bus):
            pts = xy.loc[per_bus.index]
            area = _battery_size(per_bus.to_numpy())
            marker_area.loc[per_bus.index] = area
            ax.scatter(pts["x"], pts["y"], s=area, marker="s", color=_STYLE["battery"],
                       edgecolors="black", linewidths=0.8, zorder=4)
            if len(per_bus) <= 20:  # beyond that the labels only clutter; sizes tell
                for bus, units in per_bus.items():
                    ax.annotate(f"{units:g} SBU",
                                (float(xy.loc[bus, "x"]), float(xy.loc[bus, "y"])),
                                xytext=(9, -12), textcoords="offset points", fontsize=7,
                                fontweight="bold", zorder=8, annotation_clip=False,
                                in_layout=False)
            for u in sorted(set(per_bus.to_numpy())):
                handles.append(Line2D([], [], color=_STYLE["battery"], marker="s", ls="",
                                      markeredgecolor="black",
                                      ms=float(np.sqrt(_battery_size(np.array([u]))[0])),
                                      label=f"Battery bank {u:g} SBU (it. {iteration})"))

    # agents' buses by community (passive agents grey), drawn on top of the batteries
    if agents is not None and not agents.empty:
        a = agents.copy()
        a["bus"] = a["bus"].astype(str).str.lower().str.split(".").str[0]
        a = a[a["bus"].isin(xy.index) & (a["kind"].astype(str).str.lower() != "battery")]
        comm = a[a["community"].astype(str) != ""]
        colors = community_colors(list(comm["community"]))
        passive = sorted(set(a["bus"]) - set(comm["bus"]))
        if passive:
            pts = xy.loc[passive]
            ax.scatter(pts["x"], pts["y"], s=36, color="#bbbbbb", edgecolors="#666666",
                       linewidths=0.5, zorder=5)
            handles.append(Line2D([], [], color="#bbbbbb", marker="o", ls="", ms=6,
                                  markeredgecolor="#666666", label="Passive agent (no market)"))
        first = comm.sort_values(["bus", "community"]).drop_duplicates("bus")
        for name, color in colors.items():
            pts = xy.loc[first.loc[first["community"] == name, "bus"]]
            ax.scatter(pts["x"], pts["y"], s=36, color=color, edgecolors="black",
                       linewidths=0.4, zorder=5)
            handles.append(Line2D([], [], color=color, marker="o", ls="", ms=6,
                                  markeredgecolor="black", label=f"Community {name}"))

    # violated buses: red rings around whatever is drawn there
    known = [bb for bb in bad_buses if bb in xy.index]
    if known:
        pts = xy.loc[known]
        ring = np.maximum(14.0, np.sqrt(marker_area.loc[known].to_numpy()) + 5.0) ** 2
        ax.scatter(pts["x"], pts["y"], s=ring, facecolors="none",
                   edgecolors=_STYLE["violation"], linewidths=1.6, zorder=6, clip_on=False,
                   in_layout=False)
        handles.append(Line2D([], [], color=_STYLE["violation"], marker="o", ls="", ms=12,
                              markerfacecolor="none", markeredgewidth=1.6,
                              label=f"Violated bus (it. {violated_iteration}): {len(bad_buses)}"))
    ax.set_aspect("equal", adjustable="box")
    ax.autoscale_view()
    ax.margins(0.1)
    ax.set_xlabel("x [bus coordinate units]")
    ax.set_ylabel("y [bus coordinate units]")
    ax.set_title(f"Network map — batteries of iteration {iteration}, "
                 f"violations of iteration {violated_iteration}")
    ax.grid(alpha=0.2)
    fig.legend(handles=handles, loc="outside right upper", frameon=False)
    return fig


def _battery_size(units: np.ndarray) -> np.ndarray:
    """Marker area [pt²] of a bank of ``units`` SBUs."""
    return 90.0 + 50.0 * np.asarray(units, dtype=float)


# --------------------------------------------------------------------------- iterations
def plot_iterations(iterations: pd.DataFrame, *, best_iteration: int | None = None,
                    currency: str = "") -> Figure:
    """Welfare and violations per iteration of the placement loop.

    Top: total welfare per iteration (bars, best one highlighted, value and change vs the
    base iteration printed). Bottom: violations per iteration stacked by kind (voltage,
    current) and the total battery units on a second axis.
    """
    with mpl.rc_context(_RC):
        return _plot_iterations(iterations, best_iteration=best_iteration, currency=currency)


def _plot_iterations(iterations: pd.DataFrame, *, best_iteration: int | None,
                     currency: str) -> Figure:
    it = iterations.sort_values("iteration", kind="stable")
    x = it["iteration"].astype(int).to_numpy()
    w = it["welfare"].astype(float).to_numpy()
    fig = _figure(7.5, 6.0)
    ax, axv = fig.subplots(2, 1, sharex=True)
    colors = ["#dd8452" if i == best_iteration else "#4c72b0" for i in x]
    ax.bar(x, w, 0.6, color=colors)
    w0 = w[0] if len(w) else np.nan
    for xi, wi in zip(x, w, strict=True):
        txt = f"{wi:.1f}"
        if np.isfinite(w0) and w0 != 0 and xi != x[0]:
            txt += f"\n({100 * (wi - w0) / abs(w0):+.1f} %)"
        ax.annotate(txt, (xi, wi), xytext=(0, 2), textcoords="offset points", ha="center",
                    va="bottom" if wi >= 0 else "top", fontsize=8)
    cur = f" [{currency}]" if currency else " [currency]"
    ax.set_ylabel(f"Welfare{cur}")
    top = float(np.nanmax(np.abs(w))) if len(w) else 1.0
    ax.set_ylim(min(0.0, float(np.nanmin(w)) * 1.25) if len(w) else 0.0, top * 1.3 or 1.0)
    ax.set_title("Social welfare per iteration" + (
        f" (best: iteration {best_iteration})" if best_iteration is not None else ""))
    ax.grid(axis="y", alpha=0.3)
    vv = it["voltage_violations"].astype(float).to_numpy()
    cv = it["current_violations"].astype(float).to_numpy()
    axv.bar(x, vv, 0.6, color="#4c72b0", label="Voltage")
    axv.bar(x, cv, 0.6, bottom=vv, color="#c44e52", label="Current")
    for xi, t in zip(x, it["violations"].astype(float).to_numpy(), strict=True):
        axv.annotate(f"{t:g}", (xi, t), xytext=(0, 2), textcoords="offset points",
                     ha="center", va="bottom", fontsize=8)
    axv.set_ylabel("Violations [bus/line-step pairs]")
    vmax = float(np.nanmax(vv + cv)) if len(x) else 1.0
    axv.set_ylim(0.0, max(vmax * 1.25, 1.0))
    axv.grid(axis="y", alpha=0.3)
    axu = axv.twinx()
    axu.plot(x, it["battery_units"].astype(float), color="black", marker="s", ms=4, lw=1.2,
             label="Battery units")
    axu.set_ylabel("Battery units [SBU]")
    axu.set_ylim(0.0, max(float(it["battery_units"].max()) * 1.25 if len(x) else 1.0, 1.0))
    h1, l1 = axv.get_legend_handles_labels()
    h2, l2 = axu.get_legend_handles_labels()
    axv.legend(h1 + h2, l1 + l2, loc="upper right", frameon=True, fontsize=8)
    axv.set_title("Violations and battery units per iteration")
    axv.set_xlabel("Iteration")
    axv.set_xticks(x)
    axv.set_xticklabels([f"{i}{' (best)' if i == best_iteration else ''}" for i in x])
    return fig


# --------------------------------------------------------------------------- all figures
@dataclass(frozen=True)
class FigureSpec:
    """One rendered figure of the report."""

    stem: str  #: file name without ``.png``
    title: str
    caption: str
    png: bytes


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def render_figures(data: ResultsData) -> tuple[list[FigureSpec], list[str]]:
    """All figures of a results folder as PNG bytes, and notes on figures that were skipped."""
    base, best, after = data.base_iteration, data.best_iteration, data.after_iteration
    after_label = "best" if after == best else "after batteries"
    step_hours = finite_or(data.setting("step_hours", 1.0), 1.0)
    currency = str(data.setting("currency", ""))
    vmin = finite_or(data.setting("vmin_pu", 0.95), 0.95)
    vmax = finite_or(data.setting("vmax_pu", 1.05), 1.05)
    specs: list[FigureSpec] = []
    notes: list[str] = []

    fig = plot_iterations(data.iterations, best_iteration=best, currency=currency)
    specs.append(FigureSpec("iterations", "Welfare and violations per iteration",
                            "Social welfare (top; change vs the base iteration in brackets) and "
                            "limit violations by kind with the installed battery units "
                            "(bottom) for every iteration of the placement loop.", _png(fig)))
    for it, label in ((base, "base"), (after, after_label)) if after != base else ((base, "base, best"),):
        fig = plot_energy_balance(data.market, data.communities, iteration=it,
                                  step_hours=step_hours, currency=currency, label=label)
        specs.append(FigureSpec(
            f"energy_balance_it{it}", f"Energy balance, iteration {it} ({label})",
            "Per step: consumption side above zero (consumer loads, battery charging, "
            "exports), supply side below (PV, battery discharging, imports) [kW]; line: net "
            "community demand = imports − exports; community clearing prices and battery "
            "state of charge below.", _png(fig)))
    fig = plot_voltages(data.voltages, iterations=[base, after], vmin_pu=vmin, vmax_pu=vmax,
                        labels=["base" + (", best" if best == base else ""), after_label]
                        if after != base else ["base, best"],
                        times=_times(data.market), step_hours=step_hours)
    specs.append(FigureSpec("voltages", "Bus voltages against the limits",
                            f"Every bus-phase voltage per step (thin), the min/max envelope and "
                            f"the limits {vmin:g}/{vmax:g} pu, before (iteration {base}) and "
                            f"after batteries (iteration {after}); red dots are out of limits.",
                            _png(fig)))
    if data.buses is None or data.lines is None:
        missing = [n for n, f in (("network_buses.csv", data.buses),
                                  ("network_lines.csv", data.lines)) if f is None]
        notes.append(f"Network map skipped: {', '.join(missing)} not in the results folder.")
    elif not has_coordinates(data.buses):
        notes.append("Network map skipped: the network's buses have no coordinates.")
    else:
        fig = plot_network_map(data.buses, data.lines, data.agents, data.batteries,
                               data.violations, iteration=after, violated_iteration=base)
        specs.append(FigureSpec(
            "network_map", "Network map",
            f"Lines and buses from the bus coordinates; agents' buses coloured by community; "
            f"battery banks of iteration {after} as squares sized by SBUs; buses and lines "
            f"violated in iteration {base} marked in red.", _png(fig)))
    return specs, notes


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    """Write ``payload`` to a temporary file beside ``path``, then move it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_figures(results_dir: str | Path, *, out_dir: str | Path | None = None) -> list[Path]:
    """Render the figures of a results folder and write them as PNGs.

    Parameters
    ----------
    results_dir : path
        A results folder (shared CASE_FORMAT.md).
    out_dir : path, optional
        Where to write; default ``results_dir``.

    Returns
    -------
    list of Path
        The PNGs written (the network map is absent when there are no coordinates).
    """
    data = load_results(results_dir)
    specs, _ = render_figures(data)
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
