"""Time-series figures of a study run (the study's Figs. 5-6) and the iteration figure.

Every ``plot_*`` function takes DataFrames (as read by :func:`load_results`) and returns a
:class:`matplotlib.figure.Figure`; nothing touches pyplot's global state or a display, so
the figures render the same everywhere (Agg). The network map lives in
:mod:`gridmarket.report.network_map`, the figures of the economics and of long runs in
:mod:`gridmarket.report.grid_plots`; :mod:`gridmarket.report.figures` renders them all.

Sign convention (load reference, shared MODEL.md): consumption positive, production
negative, battery ``S_kw > 0`` charging. In the energy balance the consumption side
(loads, battery charging, exports) is drawn above zero and the supply side (PV, battery
discharging, imports) below it; for the market's agents both sides have equal height.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from gridmarket.report.style import RC, STYLE, community_colors, new_figure, step_axis, step_times

__all__ = [
    "energy_balance",
    "plot_energy_balance",
    "plot_iterations",
    "plot_voltages",
    "welfare_column",
]


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
    with mpl.rc_context(RC):
        return _plot_energy_balance(market, communities, iteration=iteration,
                                    step_hours=step_hours, currency=currency, label=label)


def _plot_energy_balance(market: pd.DataFrame, communities: pd.DataFrame | None, *,
                         iteration: int, step_hours: float, currency: str,
                         label: str) -> Figure:
    bal = energy_balance(market, iteration=iteration)
    m = market[market["iteration"] == iteration]
    batt = m[m["kind"].astype(str).str.lower() == "battery"]
    has_batt = not batt.empty
    fig = new_figure(9.0, 7.6 if has_batt else 6.0)
    ratios = [2.2, 1.0, 1.0] if has_batt else [2.2, 1.0]
    axes = fig.subplots(len(ratios), 1, sharex=True, gridspec_kw={"height_ratios": ratios})
    ax = axes[0]
    x = bal.index.to_numpy()
    up = np.zeros(len(x))
    for col, name in (("load_kw", "Consumer loads"), ("charge_kw", "Battery charging"),
                      ("export_kw", "Export")):
        if (bal[col] != 0).any():
            ax.bar(x, bal[col], 0.8, bottom=up, color=STYLE[col[:-3]], label=name)
            up += bal[col].to_numpy()
    down = np.zeros(len(x))
    for col, name in (("pv_kw", "PV generation"), ("discharge_kw", "Battery discharging"),
                      ("import_kw", "Import")):
        if (bal[col] != 0).any():
            ax.bar(x, -bal[col], 0.8, bottom=down, color=STYLE[col[:-3]], label=name)
            down -= bal[col].to_numpy()
    ax.plot(x, bal["net_kw"], color=STYLE["net"], marker="o", ms=3, lw=1.4,
            label="Net community demand (import − export)")
    if (bal["passive_kw"] != 0).any():
        ax.plot(x, bal["passive_kw"], color=STYLE["passive"], ls="--", lw=1.4,
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
    if 0 < len(prices.columns) <= 24:  # hundreds of communities: no legend listing each
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
    step_axis(axes[-1], x, step_times(m), step_hours)
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
    with mpl.rc_context(RC):
        return _plot_voltages(voltages, iterations=list(dict.fromkeys(iterations)),
                              vmin_pu=vmin_pu, vmax_pu=vmax_pu, labels=labels, times=times,
                              step_hours=step_hours, max_lines=max_lines)


def _plot_voltages(voltages: pd.DataFrame, *, iterations: list[int], vmin_pu: float,
                   vmax_pu: float, labels: Sequence[str] | None, times: pd.Series | None,
                   step_hours: float, max_lines: int) -> Figure:
    n = max(1, len(iterations))
    fig = new_figure(4.6 * n + 1.8, 4.4)
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
        ax.scatter(bad["step"], bad["v_pu"], s=12, color=STYLE["violation"], zorder=3)
        ax.axhline(vmin_pu, color=STYLE["limit"], ls="--", lw=1.2)
        ax.axhline(vmax_pu, color=STYLE["limit"], ls="--", lw=1.2)
        tag = f" ({labels[k]})" if labels is not None and k < len(labels) and labels[k] else ""
        n_bad = bad.groupby(["bus", "step"]).ngroups if len(bad) else 0
        ax.set_title(f"Iteration {it}{tag}\n{n_bad} bus-step pairs out of limits")
        ax.grid(alpha=0.3)
        step_axis(ax, x, times, step_hours)
    axes[0].set_ylabel("Voltage [pu]")
    span = max(hi_all) - min(lo_all)
    pad = max(0.005, 0.08 * span)
    axes[0].set_ylim(min(lo_all) - pad, max(hi_all) + pad)
    handles = [
        Line2D([], [], color="#7f9fbf", lw=0.8, label="Bus-phase voltage"),
        Line2D([], [], color="#1f3b73", lw=1.4, label="Min / max over buses"),
        Line2D([], [], color=STYLE["limit"], ls="--", lw=1.2,
               label=f"Limits {vmin_pu:g} / {vmax_pu:g} pu"),
        Line2D([], [], color=STYLE["violation"], marker="o", ls="", ms=4,
               label="Out of limits"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
    fig.suptitle("Bus voltages against the limits, before and after batteries")
    return fig



# --------------------------------------------------------------------------- iterations
def plot_iterations(iterations: pd.DataFrame, *, best_iteration: int | None = None,
                    currency: str = "") -> Figure:
    """Welfare and violations per iteration of the placement loop.

    Top: total welfare per iteration (realised welfare when the folder has it; bars, best one
    highlighted, value and change vs the base iteration printed). Bottom: violations per
    iteration stacked by kind (voltage, current, transformer, steps not converged) and the
    total battery units on a second axis.
    """
    with mpl.rc_context(RC):
        return _plot_iterations(iterations, best_iteration=best_iteration, currency=currency)


def welfare_column(iterations: pd.DataFrame) -> str:
    """``welfare_realised`` when ``iterations.csv`` has it (shared MODEL.md, *Reported
    welfare*: the iterations are compared on it), else the study's ``welfare``."""
    if "welfare_realised" in iterations.columns and iterations["welfare_realised"].notna().any():
        return "welfare_realised"
    return "welfare"


def _plot_iterations(iterations: pd.DataFrame, *, best_iteration: int | None,
                     currency: str) -> Figure:
    it = iterations.sort_values("iteration", kind="stable")
    x = it["iteration"].astype(int).to_numpy()
    col = welfare_column(it)
    w = it[col].astype(float).to_numpy()
    fig = new_figure(7.5, 6.0)
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
    ax.set_ylabel(("Realised welfare" if col == "welfare_realised" else "Welfare") + cur)
    top = float(np.nanmax(np.abs(w))) if len(w) else 1.0
    ax.set_ylim(min(0.0, float(np.nanmin(w)) * 1.25) if len(w) else 0.0, top * 1.3 or 1.0)
    ax.set_title("Social welfare per iteration" + (
        f" (best: iteration {best_iteration})" if best_iteration is not None else ""))
    ax.grid(axis="y", alpha=0.3)
    bottom = np.zeros(len(x))
    for kcol, klabel, kcolor in (("voltage_violations", "Voltage", "#4c72b0"),
                                 ("current_violations", "Current", "#c44e52"),
                                 ("transformer_violations", "Transformer", "#8172b3"),
                                 ("nonconverged_steps", "Not converged", "#333333")):
        if kcol not in it.columns:
            continue
        kv = it[kcol].astype(float).fillna(0.0).to_numpy()
        if kcol in ("voltage_violations", "current_violations") or kv.any():
            axv.bar(x, kv, 0.6, bottom=bottom, color=kcolor, label=klabel)
            bottom = bottom + kv
    for xi, t in zip(x, it["violations"].astype(float).to_numpy(), strict=True):
        axv.annotate(f"{t:g}", (xi, t), xytext=(0, 2), textcoords="offset points",
                     ha="center", va="bottom", fontsize=8)
    axv.set_ylabel("Violations [bus/line-step pairs]")
    vmax = float(np.nanmax(bottom)) if len(x) else 1.0
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
