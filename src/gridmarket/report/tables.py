"""Result tables: the study's iteration table (Tables IV/V) and per-community prices.

Numeric tables come first (``iteration_table``, ``community_table``); ``format_*`` turns
them into display strings with unit-bearing headers, and ``to_markdown`` / ``to_html``
render any display table.
"""

from __future__ import annotations

import html as _html
import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from gridmarket.report.elements import violation_pairs

__all__ = [
    "iteration_table",
    "community_table",
    "violation_table",
    "bank_summary",
    "format_iteration_table",
    "format_community_table",
    "format_violation_table",
    "to_markdown",
    "to_html",
]

_DASH = "—"


def _units_label(units: float) -> str:
    return f"{float(units):g}"


def bank_summary(units: Iterable[float]) -> str:
    """Bank sizes as the study writes them, e.g. ``"3 × 1 SBU"`` or ``"2 × 1 SBU + 1 × 5 SBU"``.

    Parameters
    ----------
    units : iterable of float
        Bank size of each battery [SBU].

    Returns
    -------
    str
        ``"none"`` when there is no battery.
    """
    counts: dict[float, int] = {}
    for u in units:
        counts[float(u)] = counts.get(float(u), 0) + 1
    if not counts:
        return "none"
    return " + ".join(f"{n} × {_units_label(u)} SBU" for u, n in sorted(counts.items()))


#: banks listed by name in a table cell; more are summarised (count, the largest, the CSV)
MAX_LISTED = 10


def _bank_buses(frame: pd.DataFrame) -> str:
    """``"bus:units, ..."`` by bus name; beyond :data:`MAX_LISTED` buses the largest banks
    (by units, then name) and how many more there are."""
    if frame.empty:
        return ""
    per_bus = frame.groupby(frame["bus"].astype(str), sort=True)["units"].sum()
    if len(per_bus) <= MAX_LISTED:
        return ", ".join(f"{bus}:{_units_label(u)}" for bus, u in per_bus.items())
    top = sorted(per_bus.items(), key=lambda kv: (-float(kv[1]), kv[0]))[:MAX_LISTED]
    return (f"{len(per_bus)} buses; largest: " + ", ".join(f"{bus}:{_units_label(u)}" for bus, u in top)
            + f", … {len(per_bus) - MAX_LISTED} more (batteries.csv)")


def iteration_table(iterations: pd.DataFrame, batteries: pd.DataFrame | None = None, *,
                    base_iteration: int | None = None, best_iteration: int | None = None,
                    voltages: pd.DataFrame | None = None) -> pd.DataFrame:
    """The iteration table of the study (Tables IV/V): welfare, violations and banks.

    Parameters
    ----------
    iterations : DataFrame
        ``iterations.csv``: ``iteration, welfare, violations, voltage_violations,
        current_violations, buses_violated, lines_violated, battery_units``.
    batteries : DataFrame, optional
        ``batteries.csv``: ``iteration, agent, bus, units, kw, kwh``; gives the bank columns.
    base_iteration : int, optional
        Iteration the welfare change refers to; default the first (0).
    best_iteration : int, optional
        Marks that row in column ``best``.
    voltages : DataFrame, optional
        ``voltages.parquet``; adds the lowest and highest bus voltage of each iteration.

    Returns
    -------
    DataFrame
        One row per iteration, sorted, with the input columns and
        ``welfare_change_pct`` = 100·(W_i − W_base)/|W_base| [%] (NaN when W_base = 0; W is
        the realised welfare when ``iterations`` has it, else the study's welfare),
        ``banks`` (e.g. ``"3 × 1 SBU"``), ``bank_buses`` (``"bus:units, ..."``),
        ``best`` (bool) and, with ``voltages``, ``v_min_pu``, ``v_max_pu`` [pu].
    """
    cols = ["iteration", "welfare", "welfare_realised", "stored_energy_value", "battery_annuity",
            "net_benefit", "violations", "voltage_violations", "current_violations",
            "transformer_violations", "nonconverged_steps", "buses_violated", "lines_violated",
            "battery_units"]
    table = iterations[[c for c in cols if c in iterations.columns]].copy()
    table = table.sort_values("iteration", kind="stable").reset_index(drop=True)
    table["iteration"] = table["iteration"].astype(int)
    if base_iteration is None:
        base_iteration = int(table["iteration"].min()) if len(table) else 0
    wcol = ("welfare_realised" if "welfare_realised" in table.columns
            and table["welfare_realised"].notna().any() else "welfare")
    base = table.loc[table["iteration"] == base_iteration, wcol]
    w0 = float(base.iloc[0]) if len(base) else math.nan
    welfare = table[wcol].astype(float)
    if math.isfinite(w0) and w0 != 0.0:
        table["welfare_change_pct"] = 100.0 * (welfare - w0) / abs(w0)
    else:
        table["welfare_change_pct"] = np.nan
    banks, bank_buses = [], []
    for it in table["iteration"]:
        rows = (batteries[batteries["iteration"] == it] if batteries is not None
                else pd.DataFrame(columns=["bus", "units"]))
        banks.append(bank_summary(rows["units"]))
        bank_buses.append(_bank_buses(rows))
    table["banks"] = banks
    table["bank_buses"] = bank_buses
    table["best"] = table["iteration"] == best_iteration
    if voltages is not None:
        ext = voltages.groupby("iteration")["v_pu"].agg(["min", "max"])
        table["v_min_pu"] = table["iteration"].map(ext["min"]).astype(float)
        table["v_max_pu"] = table["iteration"].map(ext["max"]).astype(float)
    return table


def community_table(communities: pd.DataFrame, *,
                    iterations: Iterable[int] | None = None) -> pd.DataFrame:
    """Per iteration and community: clearing prices, imports, exports and welfare.

    Parameters
    ----------
    communities : DataFrame
        ``communities.csv``: ``iteration, step, community, price, import_kwh, export_kwh,
        welfare``.
    iterations : iterable of int, optional
        Keep only these iterations (e.g. base and best).

    Returns
    -------
    DataFrame
        ``iteration, community, price_mean, price_min, price_max`` [currency/kWh],
        ``import_kwh, export_kwh`` [kWh, summed over steps], ``welfare`` [currency, summed].
    """
    frame = communities
    if iterations is not None:
        frame = frame[frame["iteration"].isin(list(iterations))]
    grouped = frame.groupby(["iteration", "community"], sort=True)
    out = grouped.agg(price_mean=("price", "mean"), price_min=("price", "min"),
                      price_max=("price", "max"), import_kwh=("import_kwh", "sum"),
                      export_kwh=("export_kwh", "sum"), welfare=("welfare", "sum"))
    return out.reset_index()


def violation_table(violations: pd.DataFrame) -> pd.DataFrame:
    """Per iteration and kind: violations (element-step pairs), phase rows, elements, the worst.

    Parameters
    ----------
    violations : DataFrame
        ``violations.parquet``: ``iteration, step, time, kind, element, value, limit`` (a row
        per phase).

    Returns
    -------
    DataFrame
        ``iteration, kind, count`` (violations as everywhere in the report: (bus, line or
        transformer, step) pairs), ``phase_rows`` (the per-phase rows they stand for),
        ``elements`` (distinct buses/lines/transformers), ``worst_element, worst_step,
        worst_value, worst_limit`` (the row farthest from its limit, same unit as ``value``:
        pu for voltage, A for current, loading fraction for transformers).
    """
    cols = ["iteration", "kind", "count", "phase_rows", "elements", "worst_element", "worst_step",
            "worst_value", "worst_limit"]
    if violations.empty:
        return pd.DataFrame(columns=cols)
    pairs = violation_pairs(violations)
    v = violations.copy()
    v["kind"] = v["kind"].astype(str).str.strip().str.lower()
    v["_excess"] = (v["value"].astype(float) - v["limit"].astype(float)).abs()
    rows = []
    for (it, kind), g in v.groupby(["iteration", "kind"], sort=True):
        worst = g.sort_values(["_excess", "step", "element"],
                              ascending=[False, True, True]).iloc[0]
        p = pairs[(pairs["iteration"] == it) & (pairs["kind"] == kind)]
        rows.append({"iteration": int(it), "kind": kind, "count": len(p), "phase_rows": len(g),
                     "elements": p["key"].nunique(), "worst_element": worst["element"],
                     "worst_step": int(worst["step"]), "worst_value": float(worst["value"]),
                     "worst_limit": float(worst["limit"])})
    return pd.DataFrame(rows, columns=cols)


def _num(value: object, fmt: str) -> str:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(x):
        return _DASH
    return format(x, fmt.replace(".", ",.", 1) if fmt.endswith("f") else fmt)


def _int(value: object) -> str:
    return _num(value, ".0f")


def format_iteration_table(table: pd.DataFrame, *, currency: str = "") -> pd.DataFrame:
    """Display strings of :func:`iteration_table` with unit-bearing headers.

    The best iteration is marked with ``*`` after its number.
    """
    cur = f" [{currency}]" if currency else ""
    out = pd.DataFrame(index=table.index)
    best = table["best"] if "best" in table else pd.Series(False, index=table.index)
    out["Iteration"] = [f"{int(i)}{' *' if b else ''}"
                        for i, b in zip(table["iteration"], best, strict=True)]
    out[f"Welfare{cur}"] = [_num(v, ".2f") for v in table["welfare"]]
    for col, head, fmt in (("welfare_realised", f"Realised welfare{cur}", ".2f"),
                           ("stored_energy_value", f"Stored energy value{cur}", "+.2f"),
                           ("battery_annuity", f"Battery annuity{cur}", ".2f"),
                           ("net_benefit", f"Net benefit{cur}", "+.2f")):
        if col in table.columns and table[col].notna().any():  # absent in older folders
            out[head] = [_num(v, fmt) for v in table[col]]
    out["Δ welfare vs base [%]"] = [_num(v, "+.1f") for v in table["welfare_change_pct"]]
    out["Violations [pairs]"] = [_int(v) for v in table["violations"]]
    out["Voltage"] = [_int(v) for v in table["voltage_violations"]]
    out["Current"] = [_int(v) for v in table["current_violations"]]
    for col, head in (("transformer_violations", "Transformer"), ("nonconverged_steps", "Steps not converged")):
        if col in table.columns and table[col].notna().any():
            out[head] = [_int(v) for v in table[col]]
    out["Buses violated"] = [_int(v) for v in table["buses_violated"]]
    out["Lines violated"] = [_int(v) for v in table["lines_violated"]]
    if "v_min_pu" in table:
        out["V min [pu]"] = [_num(v, ".4f") for v in table["v_min_pu"]]
        out["V max [pu]"] = [_num(v, ".4f") for v in table["v_max_pu"]]
    out["Battery units [SBU]"] = [_num(v, "g") for v in table["battery_units"]]
    out["Banks"] = list(table["banks"])
    out["Banks (bus:SBU)"] = [s or _DASH for s in table["bank_buses"]]
    return out.reset_index(drop=True)


def format_community_table(table: pd.DataFrame, *, currency: str = "") -> pd.DataFrame:
    """Display strings of :func:`community_table` with unit-bearing headers."""
    cur = currency or "currency"
    out = pd.DataFrame(index=table.index)
    out["Iteration"] = [str(int(i)) for i in table["iteration"]]
    out["Community"] = list(table["community"].astype(str))
    out[f"Mean price [{cur}/kWh]"] = [_num(v, ".4f") for v in table["price_mean"]]
    out[f"Min price [{cur}/kWh]"] = [_num(v, ".4f") for v in table["price_min"]]
    out[f"Max price [{cur}/kWh]"] = [_num(v, ".4f") for v in table["price_max"]]
    out["Import [kWh]"] = [_num(v, ".2f") for v in table["import_kwh"]]
    out["Export [kWh]"] = [_num(v, ".2f") for v in table["export_kwh"]]
    out[f"Welfare [{cur}]"] = [_num(v, ".2f") for v in table["welfare"]]
    return out.reset_index(drop=True)


def format_violation_table(table: pd.DataFrame) -> pd.DataFrame:
    """Display strings of :func:`violation_table` (voltage in pu, current in A)."""
    out = pd.DataFrame(index=table.index)
    out["Iteration"] = [str(int(i)) for i in table["iteration"]]
    out["Kind"] = list(table["kind"].astype(str))
    out["Violations [pairs]"] = [_int(v) for v in table["count"]]
    out["Per-phase rows"] = [_int(v) for v in table["phase_rows"]]
    out["Elements"] = [_int(v) for v in table["elements"]]
    out["Worst element (phase)"] = list(table["worst_element"].astype(str))
    out["At step"] = [_int(v) for v in table["worst_step"]]
    unit = [{"voltage": "pu", "current": "A", "transformer": "× rating"}.get(str(k), "")
            for k in table["kind"]]
    fmt = [".4f" if k == "voltage" else ".3f" if k == "transformer" else ".1f" for k in table["kind"]]
    out["Worst value"] = [f"{_num(v, f)} {u}" for v, f, u in
                          zip(table["worst_value"], fmt, unit, strict=True)]
    out["Limit"] = [f"{_num(v, f)} {u}" for v, f, u in
                    zip(table["worst_limit"], fmt, unit, strict=True)]
    return out.reset_index(drop=True)


def to_markdown(table: pd.DataFrame) -> str:
    """A pipe table (GitHub markdown) of a display table; numbers right-aligned."""
    headers = [str(c) for c in table.columns]
    rows = [[str(v).replace("|", "\\|") for v in row] for row in table.itertuples(index=False)]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    numeric = [all(_looks_numeric(r[i]) for r in rows) and bool(rows) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if num else c.ljust(w)
                                 for c, w, num in zip(cells, widths, numeric, strict=True)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                          for w, num in zip(widths, numeric, strict=True)) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)]) + "\n"


def _looks_numeric(text: str) -> bool:
    t = text.rstrip(" *").replace("+", "", 1).replace(",", "")
    if t == _DASH:
        return True
    try:
        float(t)
    except ValueError:
        return False
    return True


def to_html(table: pd.DataFrame, *, css_class: str = "table",
            highlight: pd.Series | None = None) -> str:
    """An escaped HTML ``<table>`` of a display table.

    Parameters
    ----------
    highlight : Series of bool, optional
        Rows to give ``class="best"``.
    """
    head = "".join(f"<th>{_html.escape(str(c))}</th>" for c in table.columns)
    body = []
    flags = list(highlight) if highlight is not None else [False] * len(table)
    for row, flag in zip(table.itertuples(index=False), flags, strict=True):
        cells = "".join(
            f'<td class="num">{_html.escape(str(v))}</td>' if _looks_numeric(str(v))
            else f"<td>{_html.escape(str(v))}</td>" for v in row)
        cls = ' class="best"' if flag else ""
        body.append(f"<tr{cls}>{cells}</tr>")
    return (f'<table class="{_html.escape(css_class)}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")
