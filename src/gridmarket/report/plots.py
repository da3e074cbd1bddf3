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
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar  # type: ignore[import-untyped]
from scipy.spatial import cKDTree

from gridmarket.report._load import ResultsData, finite_or, load_results, violated_buses
from gridmarket.results import write_bytes_atomic

__all__ = [
    "LV_KV_MAX",
    "FigureSpec",
    "energy_balance",
    "figure_png",
    "has_coordinates",
    "lv_areas",
    "plot_energy_balance",
    "plot_iterations",
    "plot_network_map",
    "plot_voltages",
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
    "line": "#9a9a9a",
    "mv_line": "#3a3a3a",
    "area": "#1f3b73",
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
    if 0 < len(prices.columns) <= _MAX_LEGEND_COMMUNITIES:
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
#: Buses whose ``kv_base`` is at most this are low voltage [kV] (IEC 60038: LV ≤ 1 kV AC).
LV_KV_MAX = 1.0


def has_coordinates(buses: pd.DataFrame | None) -> bool:
    """Whether at least two buses have finite x/y coordinates."""
    if buses is None or buses.empty:
        return False
    xy = buses[["x", "y"]].apply(pd.to_numeric, errors="coerce")
    return int(np.isfinite(xy.to_numpy(dtype=float)).all(axis=1).sum()) >= 2


def _bus_names(values: pd.Series) -> pd.Series:
    """Bus names as written in the results: lower case, without the ``.phase`` suffix."""
    return values.astype(str).str.strip().str.lower().str.split(".").str[0]


def lv_areas(buses: pd.DataFrame, lines: pd.DataFrame, *,
             lv_kv_max: float = LV_KV_MAX) -> list[list[str]]:
    """The low-voltage areas of a network: connected components of its LV buses.

    A bus is LV when its ``kv_base`` is positive and at most ``lv_kv_max`` (a base of 0 or
    NaN is unknown, e.g. OpenDSS without voltage bases); a line is LV when both of its
    buses are. Two LV buses share an area when LV lines connect them (transformers are not
    lines, so each distribution transformer's secondary network is one area).

    Parameters
    ----------
    buses : DataFrame
        ``network_buses.csv``: ``bus, x, y, kv_base`` (``kv_base`` [kV]).
    lines : DataFrame
        ``network_lines.csv``: ``line, bus1, bus2``.
    lv_kv_max : float
        Highest LV base voltage [kV]; default 1 kV (IEC 60038 low voltage), which holds for
        line-to-neutral and line-to-line bases alike.

    Returns
    -------
    list of list of str
        Each area's bus names (sorted), the areas ordered west to east by the mean ``x`` of
        their buses with coordinates (then by mean ``y``; areas without coordinates last).
        Empty when ``buses`` has no ``kv_base`` column or no LV bus.
    """
    if "kv_base" not in buses.columns or buses.empty:
        return []
    names = _bus_names(buses["bus"])
    kv = pd.to_numeric(buses["kv_base"], errors="coerce").to_numpy(dtype=float)
    lv = set(names[np.isfinite(kv) & (kv > 0.0) & (kv <= lv_kv_max)])
    if not lv:
        return []
    parent = {bus: bus for bus in sorted(lv)}

    def root(bus: str) -> str:
        while parent[bus] != bus:
            parent[bus] = parent[parent[bus]]
            bus = parent[bus]
        return bus

    for n1, n2 in zip(_bus_names(lines["bus1"]), _bus_names(lines["bus2"]), strict=True):
        if n1 in lv and n2 in lv:
            r1, r2 = root(n1), root(n2)
            if r1 != r2:
                parent[max(r1, r2)] = min(r1, r2)
    groups: dict[str, list[str]] = {}
    for bus in parent:
        groups.setdefault(root(bus), []).append(bus)
    xy = pd.DataFrame({"x": pd.to_numeric(buses["x"], errors="coerce").to_numpy(dtype=float),
                       "y": pd.to_numeric(buses["y"], errors="coerce").to_numpy(dtype=float)},
                      index=names.to_numpy())
    xy = xy[np.isfinite(xy["x"]) & np.isfinite(xy["y"])]
    xy = xy[~xy.index.duplicated()]

    def key(area: list[str]) -> tuple[int, float, float, str]:
        pts = xy.loc[xy.index.intersection(area)]
        if pts.empty:
            return (1, 0.0, 0.0, area[0])
        return (0, float(pts["x"].mean()), float(pts["y"].mean()), area[0])

    return sorted((sorted(group) for group in groups.values()), key=key)


def plot_network_map(buses: pd.DataFrame, lines: pd.DataFrame, agents: pd.DataFrame | None = None,
                     batteries: pd.DataFrame | None = None,
                     violations: pd.DataFrame | None = None, *, iteration: int,
                     violated_iteration: int = 0, lv_kv_max: float = LV_KV_MAX) -> Figure:
    """Network map from bus coordinates (study Figs. 4/7).

    Lines are segments (those with a violation in ``violated_iteration`` in red), the agents'
    buses are coloured by community (passive agents grey), the batteries of ``iteration`` are
    squares whose size grows with their bank (label: SBUs), and the buses with a violation in
    ``violated_iteration`` (default the base iteration) are ringed in red.

    One map of the whole network, unless the buses with coordinates lie at more than one
    voltage level (``kv_base`` on both sides of ``lv_kv_max``) and the agents sit in several
    LV areas (:func:`lv_areas`), or in one that is small against the whole feeder. Then a
    long MV line would shrink the LV networks to blobs, so the figure has a small overview of
    the whole feeder (MV lines bold, the shown LV areas boxed and numbered) and one zoomed
    panel per LV area holding an agent or a battery of ``iteration``, with a shared legend
    and community colours. Panels are ordered west to east, at most four per row.

    Buses without coordinates (NaN) and lines touching them are left out.

    Parameters
    ----------
    buses : DataFrame
        ``network_buses.csv``: ``bus, x, y`` and optionally ``kv_base`` [kV].
    lines : DataFrame
        ``network_lines.csv``: ``line, bus1, bus2``.
    agents : DataFrame, optional
        ``agents.csv``: ``agent, kind, community, bus``.
    batteries : DataFrame, optional
        ``batteries.csv``: ``iteration, bus, units`` [SBU].
    violations : DataFrame, optional
        ``violations.csv``.
    iteration : int
        Iteration whose batteries are drawn.
    violated_iteration : int
        Iteration whose violations are marked.
    lv_kv_max : float
        Highest LV base voltage [kV] (see :func:`lv_areas`).

    Raises
    ------
    ValueError
        Fewer than two buses have coordinates (check with :func:`has_coordinates`).
    """
    if not has_coordinates(buses):
        msg = "network_buses.csv: fewer than two buses have x/y coordinates; no map to draw"
        raise ValueError(msg)
    with mpl.rc_context(_RC):
        net = _map_data(buses, lines, agents, batteries, violations, iteration=iteration,
                        violated_iteration=violated_iteration, lv_kv_max=lv_kv_max)
        title = (f"Network map — batteries of iteration {iteration}, "
                 f"violations of iteration {violated_iteration}")
        areas = _shown_areas(net, buses, lines, agents, lv_kv_max=lv_kv_max)
        if areas:
            return _plot_area_panels(net, areas, agents, title=title)
        return _plot_single_map(net, title=title)


@dataclass(frozen=True)
class _MapData:
    """What the map draws, with bus names normalised and coordinates looked up."""

    xy: pd.DataFrame  #: bus -> x, y [coordinate units], finite only
    multilevel: bool  #: buses with coordinates on both sides of the LV limit
    lv: frozenset[str]  #: LV buses
    seg_lv: list[np.ndarray]  #: LV lines (all lines when not multilevel), no violation
    seg_mv: list[np.ndarray]  #: MV lines (either bus above the LV limit), no violation
    seg_viol: list[np.ndarray]  #: lines with a current violation
    heads: list[str]  #: buses that feed lines but are fed by none (MV ones when multilevel)
    transformers: list[str]  #: LV buses at the same place as an MV bus (multilevel only)
    units: pd.Series  #: bus -> SBUs of ``iteration``
    community: pd.Series  #: bus -> community drawn there (market agents)
    passive: list[str]  #: buses with passive agents only
    colors: dict[str, str]  #: community -> colour
    bad_buses: list[str]  #: violated buses with coordinates
    n_bad: int  #: violated buses, with or without coordinates
    iteration: int
    violated_iteration: int


def _map_data(buses: pd.DataFrame, lines: pd.DataFrame, agents: pd.DataFrame | None,
              batteries: pd.DataFrame | None, violations: pd.DataFrame | None, *,
              iteration: int, violated_iteration: int, lv_kv_max: float) -> _MapData:
    b = pd.DataFrame({"bus": _bus_names(buses["bus"]).to_numpy(),
                      "x": pd.to_numeric(buses["x"], errors="coerce").to_numpy(dtype=float),
                      "y": pd.to_numeric(buses["y"], errors="coerce").to_numpy(dtype=float)})
    if "kv_base" in buses.columns:
        b["kv"] = pd.to_numeric(buses["kv_base"], errors="coerce").to_numpy(dtype=float)
    else:
        b["kv"] = np.nan
    b = b[np.isfinite(b["x"]) & np.isfinite(b["y"])].drop_duplicates("bus")
    xy = b.set_index("bus")[["x", "y"]].astype(float)
    kv = b.set_index("bus")["kv"]
    lv = frozenset(kv.index[(kv > 0.0) & (kv <= lv_kv_max)])
    multilevel = bool(lv) and bool((kv > lv_kv_max).any())
    bad_buses: list[str] = []
    bad_lines: list[str] = []
    if violations is not None:
        bad_buses, bad_lines = violated_buses(violations, lines, iteration=violated_iteration)
    bus1 = _bus_names(lines["bus1"])
    bus2 = _bus_names(lines["bus2"])
    seg_lv: list[np.ndarray] = []
    seg_mv: list[np.ndarray] = []
    seg_viol: list[np.ndarray] = []
    bad_set = set(bad_lines)
    for name, n1, n2 in zip(lines["line"].astype(str).str.lower(), bus1, bus2, strict=True):
        if n1 in xy.index and n2 in xy.index:
            seg = np.vstack([xy.loc[n1].to_numpy(), xy.loc[n2].to_numpy()])
            if name in bad_set:
                seg_viol.append(seg)
            elif multilevel and not (n1 in lv and n2 in lv):
                seg_mv.append(seg)
            else:
                seg_lv.append(seg)
    fed = set(bus2)
    heads = [n for n in dict.fromkeys(bus1) if n not in fed and n in xy.index]
    transformers: list[str] = []
    if multilevel:
        # line directions inside LV areas are arbitrary in GIS exports (many false heads),
        # and transformers are not lines: an LV bus drawn where an MV bus is marks one
        heads = [n for n in heads if n not in lv]
        mv_xy = xy.loc[[bus for bus in xy.index if bus not in lv]].to_numpy()
        lv_buses = [bus for bus in xy.index if bus in lv]
        tol = 1e-4 * max(float(np.ptp(xy["x"])), float(np.ptp(xy["y"])))
        dist = np.atleast_1d(cKDTree(mv_xy).query(xy.loc[lv_buses].to_numpy())[0])
        transformers = [bus for bus, d in zip(lv_buses, dist, strict=True) if d <= tol]

    units = pd.Series(dtype=float)
    if batteries is not None and not batteries.empty:
        bt = batteries[batteries["iteration"] == iteration]
        bt = bt.assign(bus=_bus_names(bt["bus"]))
        bt = bt[bt["bus"].isin(xy.index)]
        units = bt.groupby("bus", sort=True)["units"].sum().astype(float)

    community = pd.Series(dtype=str)
    passive: list[str] = []
    colors: dict[str, str] = {}
    if agents is not None and not agents.empty:
        a = agents.assign(bus=_bus_names(agents["bus"]),
                          community=agents["community"].fillna("").astype(str))
        a = a[a["bus"].isin(xy.index) & (a["kind"].astype(str).str.lower() != "battery")]
        comm = a[a["community"] != ""]
        colors = community_colors(list(comm["community"]))
        first = comm.sort_values(["bus", "community"]).drop_duplicates("bus")
        community = first.set_index("bus")["community"]
        passive = sorted(set(a["bus"]) - set(comm["bus"]))
    return _MapData(xy=xy, multilevel=multilevel, lv=lv, seg_lv=seg_lv, seg_mv=seg_mv,
                    seg_viol=seg_viol, heads=heads, transformers=transformers, units=units,
                    community=community, passive=passive, colors=colors,
                    bad_buses=[bb for bb in bad_buses if bb in xy.index], n_bad=len(bad_buses),
                    iteration=iteration, violated_iteration=violated_iteration)


_MAX_LEGEND_COMMUNITIES = 24  #: more communities than this are not listed one by one in a legend
_MAX_AREA_PANELS = 16  #: more LV areas than this get no panel each (one per area is quadratic)


def _shown_areas(net: _MapData, buses: pd.DataFrame, lines: pd.DataFrame,
                 agents: pd.DataFrame | None, *, lv_kv_max: float) -> list[list[str]]:
    """The LV areas that get a panel (buses with coordinates only); empty for a single map.

    An area is shown when it holds an agent's bus or a battery of the drawn iteration (every
    area with coordinates when there are no agents). Panels are drawn when the network is
    multilevel and there are several such areas, or one whose extent is under half the
    network's.
    """
    if not net.multilevel:
        return []
    marked = set(net.units.index)
    if agents is not None and not agents.empty:
        marked |= set(_bus_names(agents["bus"]))
    areas = []
    for area in lv_areas(buses, lines, lv_kv_max=lv_kv_max):
        drawn = [bus for bus in area if bus in net.xy.index]
        if drawn and (not marked or marked.intersection(area)):
            areas.append(drawn)
    if len(areas) > _MAX_AREA_PANELS:  # hundreds of LV areas: panels only where batteries or violations are
        flagged = set(net.units.index) | set(net.bad_buses)
        areas = [area for area in areas if flagged.intersection(area)]
        if len(areas) > _MAX_AREA_PANELS:
            return []
    if len(areas) == 1:
        pts = net.xy.loc[areas[0]]
        extent = max(float(np.ptp(pts["x"])), float(np.ptp(pts["y"])))
        whole = max(float(np.ptp(net.xy["x"])), float(np.ptp(net.xy["y"])))
        if extent >= 0.5 * whole:
            return []
    return areas


def _draw_lines(ax: Axes, net: _MapData, *, scale: float = 1.0) -> None:
    """Lines as segments: LV grey, MV dark and bold, violated ones red (clipped to the axes)."""
    if net.seg_lv:
        ax.add_collection(LineCollection(net.seg_lv, colors=_STYLE["line"],
                                         linewidths=1.0 * scale, zorder=1))
    if net.seg_mv:
        ax.add_collection(LineCollection(net.seg_mv, colors=_STYLE["mv_line"],
                                         linewidths=2.0 * scale, zorder=1))
    if net.seg_viol:
        ax.add_collection(LineCollection(net.seg_viol, colors=_STYLE["violation"],
                                         linewidths=2.4 * scale, zorder=2))


def _draw_points(ax: Axes, net: _MapData, shown: Sequence[str], *, scale: float = 1.0,
                 bus_dots: bool = True, max_labels: int = 20) -> None:
    """Buses, heads, batteries (squares sized by SBUs) and agents (by community) at ``shown``.

    Battery banks are labelled with their SBUs when at most ``max_labels`` are drawn.
    """
    keep = set(shown)
    xy = net.xy
    if bus_dots:
        pts = xy.loc[[bus for bus in xy.index if bus in keep]]
        ax.scatter(pts["x"], pts["y"], s=6 * scale, color="#555555", zorder=2, linewidths=0)
    heads = [bus for bus in net.heads if bus in keep]
    if heads:
        pts = xy.loc[heads]
        ax.scatter(pts["x"], pts["y"], s=90 * scale, marker="^", color="black", zorder=3)
    transformers = [bus for bus in net.transformers if bus in keep]
    if transformers:
        pts = xy.loc[transformers]
        ax.scatter(pts["x"], pts["y"], s=110 * scale, marker="D", color="white",
                   edgecolors="black", linewidths=1.4 * min(scale, 1.0), zorder=3)
    units = net.units[[bus in keep for bus in net.units.index]]
    if len(units):
        pts = xy.loc[units.index]
        ax.scatter(pts["x"], pts["y"], s=_battery_size(units.to_numpy()) * scale, marker="s",
                   color=_STYLE["battery"], edgecolors="black", linewidths=0.8 * min(scale, 1.0),
                   zorder=4)
        if len(units) <= max_labels:
            for n_units, x, y in zip(units.to_numpy(), pts["x"], pts["y"], strict=True):
                ax.annotate(f"{n_units:g} SBU", (float(x), float(y)),
                            xytext=(9, -12), textcoords="offset points", fontsize=7,
                            fontweight="bold", zorder=8, annotation_clip=False, in_layout=False)
    passive = [bus for bus in net.passive if bus in keep]
    if passive:
        pts = xy.loc[passive]
        ax.scatter(pts["x"], pts["y"], s=36 * scale, color="#bbbbbb", edgecolors="#666666",
                   linewidths=0.5 * min(scale, 1.0), zorder=5)
    community = net.community[[bus in keep and bus in xy.index for bus in net.community.index]]
    if len(community):  # one scatter for every community (one each is slow with hundreds)
        pts = xy.loc[community.index]
        ax.scatter(pts["x"], pts["y"], s=36 * scale, color=[net.colors[name] for name in community],
                   edgecolors="black", linewidths=0.4 * min(scale, 1.0), zorder=5)


def _draw_rings(ax: Axes, net: _MapData, shown: Sequence[str], *, scale: float = 1.0) -> None:
    """Red rings around the violated buses among ``shown``, around whatever is drawn there."""
    keep = set(shown)
    ringed = [bus for bus in net.bad_buses if bus in keep]
    if not ringed:
        return
    area = pd.Series(36.0, index=ringed)
    with_batt = [bus for bus in ringed if bus in net.units.index]
    area.loc[with_batt] = _battery_size(net.units.loc[with_batt].to_numpy())
    ring = (np.maximum(14.0, np.sqrt(area.to_numpy() * scale) + 5.0 * np.sqrt(scale))) ** 2
    pts = net.xy.loc[ringed]
    ax.scatter(pts["x"], pts["y"], s=ring, facecolors="none", edgecolors=_STYLE["violation"],
               linewidths=1.6 * min(scale, 1.0), zorder=6, clip_on=False, in_layout=False)


def _legend_handles(net: _MapData) -> list[Line2D]:
    handles: list[Line2D] = []
    if net.multilevel:
        handles.append(Line2D([], [], color=_STYLE["mv_line"], lw=2.0, label="MV line"))
        handles.append(Line2D([], [], color=_STYLE["line"], lw=1.0, label="LV line"))
    else:
        handles.append(Line2D([], [], color=_STYLE["line"], lw=1.0, label="Line"))
    if net.seg_viol:
        handles.append(Line2D([], [], color=_STYLE["violation"], lw=2.4,
                              label=f"Line with current violation (it. {net.violated_iteration})"))
    handles.append(Line2D([], [], color="#555555", marker="o", ls="", ms=2.5, label="Bus"))
    if net.heads:
        handles.append(Line2D([], [], color="black", marker="^", ls="", ms=8,
                              label="Feeder head"))
    if net.transformers:
        handles.append(Line2D([], [], color="white", marker="D", ls="", ms=7,
                              markeredgecolor="black", markeredgewidth=1.4,
                              label="Transformer (LV bus at an MV bus)"))
    for u in sorted(set(net.units.to_numpy())):
        handles.append(Line2D([], [], color=_STYLE["battery"], marker="s", ls="",
                              markeredgecolor="black",
                              ms=float(np.sqrt(_battery_size(np.array([u]))[0])),
                              label=f"Battery bank {u:g} SBU (it. {net.iteration})"))
    if net.passive:
        handles.append(Line2D([], [], color="#bbbbbb", marker="o", ls="", ms=6,
                              markeredgecolor="#666666", label="Passive agent (no market)"))
    for name, color in net.colors.items():
        if len(net.colors) > _MAX_LEGEND_COMMUNITIES:  # hundreds: one entry, not a legend per community
            handles.append(Line2D([], [], color=color, marker="o", ls="", ms=6, markeredgecolor="black",
                                  label=f"Agent, coloured by community ({len(net.colors)})"))
            break
        handles.append(Line2D([], [], color=color, marker="o", ls="", ms=6,
                              markeredgecolor="black", label=f"Community {name}"))
    if net.bad_buses or net.n_bad:
        handles.append(Line2D([], [], color=_STYLE["violation"], marker="o", ls="", ms=12,
                              markerfacecolor="none", markeredgewidth=1.6,
                              label=f"Violated bus (it. {net.violated_iteration}): {net.n_bad}"))
    return handles


def _plot_single_map(net: _MapData, *, title: str) -> Figure:
    """The whole network in one equal-aspect panel."""
    xy = net.xy
    # figure height follows the network's aspect ratio, so the equal-aspect map fills it
    w = float(np.ptp(xy["x"].to_numpy())) or 1.0
    h = float(np.ptp(xy["y"].to_numpy())) or 1.0
    ratio = min(max(h / w, 0.3), 1.6)
    # "compressed" and an axes legend: with a figure legend the y label leaves the canvas
    fig = _figure(9.5, float(np.clip(6.0 * ratio + 1.4, 3.6, 9.5)), layout="compressed")
    ax = fig.subplots()
    _draw_lines(ax, net)
    _draw_points(ax, net, list(xy.index))
    _draw_rings(ax, net, list(xy.index))
    ax.set_aspect("equal", adjustable="box")
    ax.update_datalim(xy.to_numpy())
    ax.autoscale_view()
    ax.margins(0.1)
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.set_xlabel("x [bus coordinate units]")
    ax.set_ylabel("y [bus coordinate units]")
    ax.set_title(title)
    ax.grid(alpha=0.2)
    ax.legend(handles=_legend_handles(net), loc="upper left", bbox_to_anchor=(1.02, 1.0),
              frameon=False)
    return fig


def _area_bounds(pts: pd.DataFrame, *, min_span: float) -> tuple[float, float, float, float]:
    """``(x0, x1, y0, y1)`` of an LV panel: the buses' box, each side at least a third of
    the longer one (and ``min_span``), padded by 12 % of the longer side (room for the
    markers of the buses on the edge)."""
    x0, x1 = float(pts["x"].min()), float(pts["x"].max())
    y0, y1 = float(pts["y"].min()), float(pts["y"].max())
    span = max(x1 - x0, y1 - y0, min_span)
    sx = max(x1 - x0, span / 3.0)
    sy = max(y1 - y0, span / 3.0)
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    pad = 0.12 * span
    return (cx - sx / 2 - pad, cx + sx / 2 + pad, cy - sy / 2 - pad, cy + sy / 2 + pad)


def _nice_length(span: float) -> float:
    """A 1-2-5 length near a quarter of ``span`` (for a scale bar)."""
    target = max(span / 4.0, 1e-9)
    exp = 10.0 ** np.floor(np.log10(target))
    for mult in (5.0, 2.0, 1.0):
        if mult * exp <= target:
            return float(mult * exp)
    return float(exp)


def _area_title(k: int, area: Sequence[str], net: _MapData, agents: pd.DataFrame | None, *,
                width: int) -> str:
    """``LV area k (transformer bus)`` and its agents (total and per community), wrapped
    at ``width`` characters."""
    trafos = [bus for bus in net.transformers if bus in set(area)]
    text = f"LV area {k}" + (f" (transformer {trafos[0]})" if len(trafos) == 1 else "")
    if agents is not None and not agents.empty:
        a = agents[_bus_names(agents["bus"]).isin(set(area)).to_numpy()
                   & (agents["kind"].astype(str).str.lower() != "battery").to_numpy()]
        counts = a["community"].fillna("").astype(str).replace("", "passive").value_counts()
        names = sorted(counts.index, key=lambda c: (c == "passive", c))
        text += f": {len(a)} agents\n" + " · ".join(f"{c} {counts[c]}" for c in names)
    return "\n".join(textwrap.fill(line, width, break_on_hyphens=False)
                     for line in text.split("\n"))


def _plot_area_panels(net: _MapData, areas: list[list[str]], agents: pd.DataFrame | None, *,
                      title: str) -> Figure:
    """Overview of the whole feeder on top, one zoomed panel per LV area below.

    Up to four panels per row; within a row the panels' widths follow their areas' aspect
    ratios, so equal-aspect maps of wide and tall areas fill the row at a common height.
    """
    n = len(areas)
    ncols = min(4, n)
    rows = [list(range(r, min(r + ncols, n))) for r in range(0, n, ncols)]
    total_w = ncols * {1: 6.5, 2: 5.0, 3: 4.3}.get(ncols, 3.8)
    whole = max(float(np.ptp(net.xy["x"])), float(np.ptp(net.xy["y"])), 1e-9)
    bounds = [_area_bounds(net.xy.loc[area], min_span=1e-3 * whole) for area in areas]
    ratios = [float(np.clip((x1 - x0) / (y1 - y0), 1.0, 3.0)) for x0, x1, y0, y1 in bounds]
    # a short last row counts its missing panels as square ones, so it keeps the size of
    # the others instead of stretching over the width
    row_h = [float(np.clip(total_w / (sum(ratios[k] for k in row) + ncols - len(row)),
                           2.2, 5.0)) for row in rows]
    row_h = [min(h, row_h[0]) for h in row_h]  # no row larger than the first
    ov_margins = (0.04, 0.15)
    ov_aspect = ((float(np.ptp(net.xy["y"])) or 1.0) * (1 + 2 * ov_margins[1])
                 / ((float(np.ptp(net.xy["x"])) or 1.0) * (1 + 2 * ov_margins[0])))
    ov_h = float(np.clip((total_w - 0.9) * ov_aspect, 1.5, 3.0))
    handles = _legend_handles(net)
    legend_cols = min(len(handles), max(2, int(total_w // 2.5)))  # ~2.5 in per entry
    legend_h = 0.22 * np.ceil(len(handles) / legend_cols) + 0.15
    height = 0.4 + (ov_h + 0.75) + sum(h + 0.5 for h in row_h) + legend_h
    fig = _figure(total_w, float(height))
    outer = fig.add_gridspec(len(rows) + 1, 1,
                             height_ratios=[ov_h + 0.75, *(h + 0.5 for h in row_h)])

    # overview: the whole feeder, the shown LV areas boxed and numbered
    ax = fig.add_subplot(outer[0], label="overview")
    _draw_lines(ax, net, scale=0.8)
    _draw_points(ax, net, list(net.xy.index), scale=0.25, bus_dots=False, max_labels=0)
    in_panels = {bus for x0, x1, y0, y1 in bounds for bus in net.xy.index[
        net.xy["x"].between(x0, x1) & net.xy["y"].between(y0, y1)]}
    _draw_rings(ax, net, [bus for bus in net.xy.index if bus not in in_panels], scale=0.5)
    ax.update_datalim(net.xy.to_numpy())
    ax.autoscale_view()
    ax.margins(*ov_margins)
    ax.set_aspect("equal", adjustable="datalim")  # fills its row; the short side widens
    x_lo, x_hi = float(net.xy["x"].min()), float(net.xy["x"].max())
    y_mid = float(net.xy["y"].min() + net.xy["y"].max()) / 2
    box_min = 0.02 * whole
    for k, (x0, x1, y0, y1) in enumerate(bounds, start=1):
        cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
        bw, bh = max(x1 - x0, box_min), max(y1 - y0, box_min)
        ax.add_patch(Rectangle((cx - bw / 2, cy - bh / 2), bw, bh, fill=False,
                               edgecolor=_STYLE["area"], linewidth=1.2, zorder=7))
        text = f"LV area {k}"
        if agents is not None and n <= 4:
            text += f" · {_count_agents(areas[k - 1], agents)} agents"
        elif n > 4:
            text = str(k)
        below = cy > y_mid  # label on the side facing the middle of the feeder
        frac = (cx - x_lo) / (x_hi - x_lo) if x_hi > x_lo else 0.5
        ha = "left" if frac < 0.15 else "right" if frac > 0.85 else "center"
        lx = {"left": cx - bw / 2, "right": cx + bw / 2, "center": cx}[ha]
        ax.annotate(text, (lx, cy - bh / 2 if below else cy + bh / 2),
                    xytext=(0, -3 if below else 3), textcoords="offset points", ha=ha,
                    va="top" if below else "bottom", fontsize=8, color=_STYLE["area"],
                    fontweight="bold", zorder=9, annotation_clip=False,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                          "alpha": 0.85})
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.tick_params(labelsize=7)
    ax.set_xlabel("x [bus coordinate units]")
    ax.set_ylabel("y [bus coordinate units]")
    ax.set_title("Whole feeder, LV areas with agents boxed")
    ax.grid(alpha=0.2)

    # one zoomed panel per LV area
    for r, row in enumerate(rows, start=1):
        widths = [ratios[k] for k in row]
        spare = total_w / row_h[r - 1] - sum(widths)
        if spare > 0.2:  # an empty slot on the right keeps the panels at the row's height
            widths.append(spare)
        inner = outer[r].subgridspec(1, len(widths), width_ratios=widths)
        for j, k in enumerate(row):
            x0, x1, y0, y1 = bounds[k]
            ax = fig.add_subplot(inner[0, j], label=f"lv_area_{k + 1}")
            inside = list(net.xy.index[net.xy["x"].between(x0, x1)
                                       & net.xy["y"].between(y0, y1)])
            _draw_lines(ax, net)
            _draw_points(ax, net, inside, max_labels=12)
            _draw_rings(ax, net, inside)
            ax.set_xlim(x0, x1)
            ax.set_ylim(y0, y1)
            ax.set_aspect("equal", adjustable="box")
            ax.set_xticks([])
            ax.set_yticks([])
            length = _nice_length(x1 - x0)
            ax.add_artist(AnchoredSizeBar(ax.transData, length, f"{length:g} units",
                                          loc="lower right", pad=0.3, borderpad=0.3, sep=2,
                                          frameon=True, size_vertical=0,
                                          fontproperties={"size": 7}))
            width_in = total_w * ratios[k] / sum(widths)
            ax.set_title(_area_title(k + 1, areas[k], net, agents,
                                     width=max(16, int(width_in / 0.075))), fontsize=9)
    fig.suptitle(title)
    fig.legend(handles=handles, loc="outside lower center", ncols=legend_cols, frameon=False)
    return fig


def _count_agents(area: Sequence[str], agents: pd.DataFrame | None) -> int:
    """Agents (batteries excluded) at the buses of ``area``."""
    if agents is None or agents.empty:
        return 0
    at = _bus_names(agents["bus"]).isin(set(area)).to_numpy()
    return int((at & (agents["kind"].astype(str).str.lower() != "battery").to_numpy()).sum())


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


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes, without the Matplotlib version in the metadata (reproducible)."""
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
                            "(bottom) for every iteration of the placement loop.", figure_png(fig)))
    for it, label in ((base, "base"), (after, after_label)) if after != base else ((base, "base, best"),):
        fig = plot_energy_balance(data.market, data.communities, iteration=it,
                                  step_hours=step_hours, currency=currency, label=label)
        specs.append(FigureSpec(
            f"energy_balance_it{it}", f"Energy balance, iteration {it} ({label})",
            "Per step: consumption side above zero (consumer loads, battery charging, "
            "exports), supply side below (PV, battery discharging, imports) [kW]; line: net "
            "community demand = imports − exports; community clearing prices and battery "
            "state of charge below.", figure_png(fig)))
    fig = plot_voltages(data.voltages, iterations=[base, after], vmin_pu=vmin, vmax_pu=vmax,
                        labels=["base" + (", best" if best == base else ""), after_label]
                        if after != base else ["base, best"],
                        times=_times(data.market), step_hours=step_hours)
    specs.append(FigureSpec("voltages", "Bus voltages against the limits",
                            f"Every bus-phase voltage per step (thin), the min/max envelope and "
                            f"the limits {vmin:g}/{vmax:g} pu, before (iteration {base}) and "
                            f"after batteries (iteration {after}); red dots are out of limits.",
                            figure_png(fig)))
    if data.buses is None or data.lines is None:
        missing = [n for n, f in (("network_buses.csv", data.buses),
                                  ("network_lines.csv", data.lines)) if f is None]
        notes.append(f"Network map skipped: {', '.join(missing)} not in the results folder.")
    elif not has_coordinates(data.buses):
        notes.append("Network map skipped: the network's buses have no coordinates.")
    else:
        fig = plot_network_map(data.buses, data.lines, data.agents, data.batteries,
                               data.violations, iteration=after, violated_iteration=base)
        caption = (f"Lines and buses from the bus coordinates; agents' buses coloured by "
                   f"community; battery banks of iteration {after} as squares sized by SBUs; "
                   f"buses and lines violated in iteration {base} marked in red.")
        n_areas = sum(str(ax.get_label()).startswith("lv_area_") for ax in fig.axes)
        if n_areas:
            caption += (f" Top: the whole feeder (MV lines bold) with its {n_areas} LV "
                        f"area(s) holding agents boxed; below: one zoomed panel per LV area "
                        f"(title: transformer bus and agents per community; scale bar in "
                        f"bus coordinate units).")
        specs.append(FigureSpec("network_map", "Network map", caption, figure_png(fig)))
    return specs, notes


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
