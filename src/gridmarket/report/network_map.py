"""The network map of a study run (study Figs. 4/7), drawn with matplotlib's object API.

Lines and buses from the bus coordinates of ``network_buses.csv`` / ``network_lines.csv``;
agents coloured by community, battery banks as squares sized by their units, violated buses
ringed and overloaded lines in red. A feeder with LV areas far apart gets an overview and one
zoomed panel per LV area (:func:`lv_areas`).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar
from scipy.spatial import cKDTree

from gridmarket.report.elements import bus_names, line_table, violated_elements
from gridmarket.report.style import RC, STYLE, community_colors, new_figure

__all__ = ["LV_KV_MAX", "has_coordinates", "lv_areas", "plot_network_map"]

#: Buses whose ``kv_base`` is at most this are low voltage [kV] (IEC 60038: LV ≤ 1 kV AC).
LV_KV_MAX = 1.0


def has_coordinates(buses: pd.DataFrame | None) -> bool:
    """Whether at least two buses have finite x/y coordinates."""
    if buses is None or buses.empty:
        return False
    xy = buses[["x", "y"]].apply(pd.to_numeric, errors="coerce")
    return int(np.isfinite(xy.to_numpy(dtype=float)).all(axis=1).sum()) >= 2


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
    names = bus_names(buses["bus"])
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

    table = line_table(lines)
    for n1, n2, kind in zip(table["bus1"], table["bus2"], table["kind"], strict=True):
        if n1 in lv and n2 in lv and kind != "transformer":
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
    with mpl.rc_context(RC):
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
    b = pd.DataFrame({"bus": bus_names(buses["bus"]).to_numpy(),
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
        bad_buses, bad_lines = violated_elements(violations, lines, iteration=violated_iteration)
    table = line_table(lines)
    bus1, bus2 = table["bus1"], table["bus2"]
    seg_lv: list[np.ndarray] = []
    seg_mv: list[np.ndarray] = []
    seg_viol: list[np.ndarray] = []
    bad_set = set(bad_lines)
    for name, n1, n2 in zip(table["key"], bus1, bus2, strict=True):
        if n1 in xy.index and n2 in xy.index:
            seg = np.vstack([xy.loc[n1].to_numpy(), xy.loc[n2].to_numpy()])
            if name in bad_set:
                seg_viol.append(seg)
            elif multilevel and not (n1 in lv and n2 in lv):
                seg_mv.append(seg)
            else:
                seg_lv.append(seg)
    # the feeder heads: buses that feed an element but are fed by none
    down = table["downstream"]
    up = table["bus1"].where(down != table["bus1"], table["bus2"])
    fed = set(down)
    heads = [n for n in dict.fromkeys(up) if n not in fed and n in xy.index]
    transformers = [n for n in dict.fromkeys(down[table["kind"] == "transformer"]) if n in xy.index]
    if multilevel:
        # line directions inside LV areas are arbitrary in GIS exports (many false heads),
        # and transformers are not lines: an LV bus drawn where an MV bus is marks one
        heads = [n for n in heads if n not in lv]
        mv_xy = xy.loc[[bus for bus in xy.index if bus not in lv]].to_numpy()
        lv_buses = [bus for bus in xy.index if bus in lv]
        tol = 1e-4 * max(float(np.ptp(xy["x"])), float(np.ptp(xy["y"])))
        dist = np.atleast_1d(cKDTree(mv_xy).query(xy.loc[lv_buses].to_numpy())[0])
        transformers += [bus for bus, d in zip(lv_buses, dist, strict=True)
                         if d <= tol and bus not in transformers]

    units = pd.Series(dtype=float)
    if batteries is not None and not batteries.empty:
        bt = batteries[batteries["iteration"] == iteration]
        bt = bt.assign(bus=bus_names(bt["bus"]))
        bt = bt[bt["bus"].isin(xy.index)]
        units = bt.groupby("bus", sort=True)["units"].sum().astype(float)

    community = pd.Series(dtype=str)
    passive: list[str] = []
    colors: dict[str, str] = {}
    if agents is not None and not agents.empty:
        a = agents.assign(bus=bus_names(agents["bus"]),
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


#: more LV areas than this get no zoom panel each (one panel per area redraws the whole feeder)
MAX_AREA_PANELS = 16
#: more communities than this are not listed one by one in a legend
MAX_LEGEND_COMMUNITIES = 24


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
        marked |= set(bus_names(agents["bus"]))
    areas = []
    for area in lv_areas(buses, lines, lv_kv_max=lv_kv_max):
        drawn = [bus for bus in area if bus in net.xy.index]
        if drawn and (not marked or marked.intersection(area)):
            areas.append(drawn)
    if len(areas) > MAX_AREA_PANELS:  # hundreds of LV areas: panels only where batteries or violations are
        flagged = set(net.units.index) | set(net.bad_buses)
        areas = [area for area in areas if flagged.intersection(area)]
        if len(areas) > MAX_AREA_PANELS:
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
        ax.add_collection(LineCollection(net.seg_lv, colors=STYLE["line"],
                                         linewidths=1.0 * scale, zorder=1))
    if net.seg_mv:
        ax.add_collection(LineCollection(net.seg_mv, colors=STYLE["mv_line"],
                                         linewidths=2.0 * scale, zorder=1))
    if net.seg_viol:
        ax.add_collection(LineCollection(net.seg_viol, colors=STYLE["violation"],
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
                   color=STYLE["battery"], edgecolors="black", linewidths=0.8 * min(scale, 1.0),
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
    ax.scatter(pts["x"], pts["y"], s=ring, facecolors="none", edgecolors=STYLE["violation"],
               linewidths=1.6 * min(scale, 1.0), zorder=6, clip_on=False, in_layout=False)


def _legend_handles(net: _MapData) -> list[Line2D]:
    handles: list[Line2D] = []
    if net.multilevel:
        handles.append(Line2D([], [], color=STYLE["mv_line"], lw=2.0, label="MV line"))
        handles.append(Line2D([], [], color=STYLE["line"], lw=1.0, label="LV line"))
    else:
        handles.append(Line2D([], [], color=STYLE["line"], lw=1.0, label="Line"))
    if net.seg_viol:
        handles.append(Line2D([], [], color=STYLE["violation"], lw=2.4,
                              label=f"Line with current violation (it. {net.violated_iteration})"))
    handles.append(Line2D([], [], color="#555555", marker="o", ls="", ms=2.5, label="Bus"))
    if net.heads:
        handles.append(Line2D([], [], color="black", marker="^", ls="", ms=8,
                              label="Feeder head"))
    if net.transformers:
        handles.append(Line2D([], [], color="white", marker="D", ls="", ms=7,
                              markeredgecolor="black", markeredgewidth=1.4,
                              label="Transformer"))
    for u in sorted(set(net.units.to_numpy())):
        handles.append(Line2D([], [], color=STYLE["battery"], marker="s", ls="",
                              markeredgecolor="black",
                              ms=float(np.sqrt(_battery_size(np.array([u]))[0])),
                              label=f"Battery bank {u:g} SBU (it. {net.iteration})"))
    if net.passive:
        handles.append(Line2D([], [], color="#bbbbbb", marker="o", ls="", ms=6,
                              markeredgecolor="#666666", label="Passive agent (no market)"))
    for name, color in net.colors.items():
        if len(net.colors) > MAX_LEGEND_COMMUNITIES:  # hundreds: one entry, not a legend per community
            handles.append(Line2D([], [], color=color, marker="o", ls="", ms=6, markeredgecolor="black",
                                  label=f"Agent, coloured by community ({len(net.colors)})"))
            break
        handles.append(Line2D([], [], color=color, marker="o", ls="", ms=6,
                              markeredgecolor="black", label=f"Community {name}"))
    if net.bad_buses or net.n_bad:
        handles.append(Line2D([], [], color=STYLE["violation"], marker="o", ls="", ms=12,
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
    fig = new_figure(9.5, float(np.clip(6.0 * ratio + 1.4, 3.6, 9.5)), layout="compressed")
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
        a = agents[bus_names(agents["bus"]).isin(set(area)).to_numpy()
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
    fig = new_figure(total_w, float(height))
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
                               edgecolor=STYLE["area"], linewidth=1.2, zorder=7))
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
                    va="top" if below else "bottom", fontsize=8, color=STYLE["area"],
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
    at = bus_names(agents["bus"]).isin(set(area)).to_numpy()
    return int((at & (agents["kind"].astype(str).str.lower() != "battery").to_numpy()).sum())


def _battery_size(units: np.ndarray) -> np.ndarray:
    """Marker area [pt²] of a bank of ``units`` SBUs."""
    return 90.0 + 50.0 * np.asarray(units, dtype=float)
