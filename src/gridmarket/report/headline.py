"""The report's answer on one screen: base → best iteration, from the results files only.

Every number comes from ``iterations.csv`` and ``summary.json`` (shared CASE_FORMAT.md) as
written; nothing is recomputed, so the page and the files cannot disagree. The HTML marks each
value with ``data-key`` so that tests (and scripts) can read the headline back.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from gridmarket.report.format import money, number

__all__ = ["Headline", "headline", "headline_html", "run_parameters"]

#: How a reader costs the batteries (shared CASE_FORMAT.md, ``[battery]``).
HOW_TO_COST = ("The batteries are not costed, so the net benefit is the welfare gain alone. "
               "To cost them, set in case.toml under [battery]: capex_per_kwh (currency per kWh "
               "of capacity), capex_per_kw (currency per kW), om_per_year (fraction of capex per "
               "year), lifetime_years and discount_rate; the annuity is prorated to the run.")


@dataclass(frozen=True)
class Headline:
    """Base and best iteration side by side (values as in the results files).

    Money in the case's currency, violations as (bus, line or transformer, step) pairs.
    """

    base: int
    best: int
    values: dict[str, float] = field(default_factory=dict)  #: key -> number (see KEYS)
    welfare_column: str = "welfare"  #: "welfare_realised" when iterations.csv has it
    stop_reason: str = ""
    battery_costed: bool | None = None  #: None: summary.json does not say
    break_even_capex_per_kwh: float = math.nan  #: [currency/kWh]
    currency: str = ""


def _get(row: pd.Series | None, col: str) -> float:
    if row is None or col not in row.index:
        return math.nan
    try:
        return float(row[col])
    except (TypeError, ValueError):
        return math.nan


def headline(data: Any) -> Headline:
    """The headline of a loaded results folder (:class:`~gridmarket.report.ResultsData`).

    Keys of ``values``: ``violations_base``, ``violations_best``, ``welfare_base``,
    ``welfare_best`` (realised welfare when present, else the study's welfare),
    ``net_benefit_best``, ``battery_annuity_best``, ``battery_units_base``,
    ``battery_units_best``, ``stored_energy_value_best``.
    """
    it = data.iterations.set_index(data.iterations["iteration"].astype(int))
    base, best = data.base_iteration, data.best_iteration
    rb = it.loc[base] if base in it.index else None
    rx = it.loc[best] if best in it.index else None
    wcol = "welfare_realised" if ("welfare_realised" in it.columns
                                  and it["welfare_realised"].notna().any()) else "welfare"
    values = {
        "violations_base": _get(rb, "violations"), "violations_best": _get(rx, "violations"),
        "welfare_base": _get(rb, wcol), "welfare_best": _get(rx, wcol),
        "net_benefit_best": _get(rx, "net_benefit"),
        "battery_annuity_best": _get(rx, "battery_annuity"),
        "battery_units_base": _get(rb, "battery_units"), "battery_units_best": _get(rx, "battery_units"),
        "stored_energy_value_best": _get(rx, "stored_energy_value"),
    }
    s = data.summary
    costed = s.get("battery_costed")
    if costed is None and "battery_annuity" in it.columns and it["battery_annuity"].notna().any():
        costed = bool((it["battery_annuity"].fillna(0.0) > 0).any())  # contract: annuity 0 = not costed
    try:
        be = float(s.get("break_even_capex_per_kwh"))
    except (TypeError, ValueError):
        be = math.nan
    return Headline(base=base, best=best, values=values, welfare_column=wcol,
                    stop_reason=str(s.get("stop_reason") or ""),
                    battery_costed=None if costed is None else bool(costed),
                    break_even_capex_per_kwh=be, currency=str(s.get("currency") or ""))


def _cell(key: str, text: str) -> str:
    return f'<td class="num" data-key="{html.escape(key)}">{html.escape(text)}</td>'


def headline_html(h: Headline) -> str:
    """The headline block: a sentence, a base → best table and the economics note."""
    v, cur = h.values, h.currency
    wname = "Realised welfare" if h.welfare_column == "welfare_realised" else "Welfare"
    dv = v["violations_best"] - v["violations_base"]
    dw = v["welfare_best"] - v["welfare_base"]
    rows = [
        ("Violations [bus/line/transformer-step pairs]", "violations",
         number(v["violations_base"], 0), number(v["violations_best"], 0), number(dv, 0, sign=True)),
        (f"{wname} [{cur or 'currency'}]", "welfare",
         money(v["welfare_base"], cur), money(v["welfare_best"], cur), money(dw, cur, sign=True)),
        ("Battery units [SBU]", "battery_units", number(v["battery_units_base"], 0),
         number(v["battery_units_best"], 0), number(v["battery_units_best"] - v["battery_units_base"], 0,
                                                     sign=True)),
    ]
    body = "".join(
        f"<tr><th>{html.escape(label)}</th>{_cell(key + '_base', b)}{_cell(key + '_best', x)}"
        f"{_cell(key + '_change', d)}</tr>" for label, key, b, x, d in rows)
    table = (f'<table id="headline" class="headline"><thead><tr><th></th>'
             f"<th>Base (iteration {h.base})</th><th>Best (iteration {h.best})</th><th>Change</th>"
             f"</tr></thead><tbody>{body}</tbody></table>")
    facts = [
        ("Net benefit of the best iteration", "net_benefit_best", money(v["net_benefit_best"], cur, sign=True)),
        ("Battery annuity of the best iteration (prorated to the run)", "battery_annuity_best",
         money(v["battery_annuity_best"], cur)),
        ("Value of the energy left stored at the end (best iteration)", "stored_energy_value_best",
         money(v["stored_energy_value_best"], cur, sign=True)),
        ("Break-even capex", "break_even_capex_per_kwh",
         (money(h.break_even_capex_per_kwh, cur) + "/kWh") if math.isfinite(h.break_even_capex_per_kwh)
         else "—"),
        ("Why the loop stopped", "stop_reason", h.stop_reason or "—"),
    ]
    fact_rows = "".join(f'<tr><th>{html.escape(k)}</th><td data-key="{key}">{html.escape(t)}</td></tr>'
                        for k, key, t in facts)
    sentence = _sentence(h)
    note = ""
    if h.battery_costed is False:
        note = f'<p class="note" id="not-costed">{html.escape(HOW_TO_COST)}</p>'
    elif h.battery_costed is None:
        note = ('<p class="note">summary.json does not say whether the batteries are costed '
                "(folder written by an older gridmarket).</p>")
    be = ""
    if math.isfinite(h.break_even_capex_per_kwh):
        be = (f'<p class="small">Break-even capex: at {money(h.break_even_capex_per_kwh, cur)} per kWh of '
              f"capacity the best iteration's net benefit is zero; batteries cheaper than that pay off "
              f"over the run.</p>")
    return (f'<section id="answer"><p class="lead">{html.escape(sentence)}</p>{table}'
            f'<table class="summary">{fact_rows}</table>{be}{note}</section>')


def _sentence(h: Headline) -> str:
    v = h.values
    if h.best == h.base:
        return (f"No iteration with batteries beat the base case: iteration {h.base} stays best "
                f"with {number(v['violations_base'], 0)} violations.")
    return (f"Batteries ({number(v['battery_units_best'], 0)} units) take the violations from "
            f"{number(v['violations_base'], 0)} to {number(v['violations_best'], 0)} and the "
            f"{'realised ' if h.welfare_column == 'welfare_realised' else ''}welfare from "
            f"{money(v['welfare_base'], h.currency)} to {money(v['welfare_best'], h.currency)} "
            f"(iteration {h.base} → {h.best}).")


#: summary.json keys already shown elsewhere (headline, run table) or per iteration
_SHOWN = {"case", "version", "welfare", "violations", "best_iteration", "stop_reason",
          "break_even_capex_per_kwh", "battery_costed", "solver_used", "solver", "currency", "battery_model",
          "horizon", "step_hours", "vmin_pu", "vmax_pu", "iterations", "runtime_s", "command_runtime_s"}


#: readable names (with units) of summary.json's run parameters; others show as their key
_LABELS = {"network_mode": "Market network mode", "terminal_soc": "Battery terminal SoC", "steps": "Steps",
           "mean_import_price": "Mean import price [{cur}/kWh]", "mean_export_price": "Mean export price [{cur}/kWh]",
           "pv_kwp": "PV installed [kWp]", "communities": "Communities", "streamed": "Per-step tables streamed",
           "chunk_steps": "Steps per chunk"}


def run_parameters(summary: dict[str, Any], agents: pd.DataFrame | None) -> list[tuple[str, str]]:
    """The run's parameters as (name, value) rows: every scalar (or flat dict, e.g. agents by
    kind) of ``summary.json`` not shown elsewhere (per-iteration lists are in the iteration
    table), then the agents per kind and the communities counted from ``agents.csv``."""
    rows: list[tuple[str, str]] = []
    cur = str(summary.get("currency") or "currency")

    def show(value: Any) -> str:
        return number(value, None) if isinstance(value, float) else str(value)

    for key, value in summary.items():
        if key in _SHOWN or value is None or isinstance(value, list):
            continue
        label = _LABELS.get(key, key).format(cur=cur)
        if isinstance(value, dict):
            flat = {k: v for k, v in value.items() if not isinstance(v, (dict, list))}
            if flat:
                rows.append((f"{label} (summary.json)", ", ".join(f"{show(v)} {k}" for k, v in flat.items())))
        else:
            rows.append((label, show(value)))
    if agents is not None and len(agents):
        counts = agents["kind"].astype(str).value_counts().sort_index()
        rows.append(("agents (agents.csv)", ", ".join(f"{n} {k}" for k, n in counts.items())))
        comms = sorted({c for c in agents["community"].astype(str) if c and c != "nan"})
        text = f"{len(comms)}: " + ", ".join(comms[:10]) + (", …" if len(comms) > 10 else "")
        rows.append(("communities (agents.csv)", text))
    return rows
