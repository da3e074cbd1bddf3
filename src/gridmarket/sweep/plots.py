"""Figures and page of a sweep: welfare and violations against the swept parameters.

Drawn with matplotlib's object API (:class:`matplotlib.figure.Figure`, no pyplot state).
:func:`plot_sweep` returns the figure; :func:`write_sweep_page` writes ``sweep.png`` and a
self-contained ``sweep.html`` (figure embedded, the table, links to each scenario's results)
beside ``sweep.csv``.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from gridmarket.report.style import DPI, figure_png
from gridmarket.results import write_bytes_atomic
from gridmarket.sweep.columns import MONEY_COLUMNS, RESULT_COLUMNS

__all__ = ["plot_sweep", "render_sweep_html", "write_sweep_page"]

_RC: Any = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 7}
_MAX_PARAMS = 4  #: panels drawn (the first swept parameters)
_MAX_GROUPS = 8  #: lines per panel before falling back to points and a mean line


def _numeric(values: pd.Series) -> bool:
    def is_num(v: object) -> bool:
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
    return bool(len(values)) and all(is_num(v) for v in values)


def _label(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "(case)"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def plot_sweep(table: pd.DataFrame, swept: Sequence[str] | None = None, *, currency: str = "",
               title: str = "") -> Figure:
    """Welfare (top) and violations (bottom) of every scenario against each swept parameter.

    One column of panels per swept parameter (at most four). Scenarios that share the values
    of the other swept parameters are joined by a line (solid: best iteration, dashed: base
    iteration without batteries); failed scenarios are left out.

    Parameters
    ----------
    table : pandas.DataFrame
        ``sweep.csv`` (:func:`gridmarket.sweep.run.sweep_table`).
    swept : sequence of str, optional
        Parameter columns to plot against (default: every parameter column whose value varies).
    currency : str
        Unit of welfare in the axis label.
    title : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    ok = table[table["status"] == "ok"].copy()
    params = [c for c in table.columns if c not in ("scenario", *RESULT_COLUMNS)]
    if swept is None:
        swept = params
    # plotted against: parameters whose value differs between the finished scenarios
    swept = [p for p in swept if p in ok.columns and len({_label(v) for v in ok[p]}) > 1][:_MAX_PARAMS]
    n = max(1, len(swept))
    with mpl.rc_context(_RC):
        fig = Figure(figsize=(3.6 * n + 1.0, 5.4), dpi=DPI, layout="constrained")
        axes = fig.subplots(2, n, squeeze=False)
        unit = f" [{currency}]" if currency else ""
        if ok.empty:
            for ax in axes.ravel():
                ax.text(0.5, 0.5, "no scenario finished", ha="center", va="center", transform=ax.transAxes)
                ax.set_axis_off()
        elif not swept:
            x = np.arange(len(ok))
            for ax, what, ylabel in ((axes[0, 0], "welfare", f"Welfare{unit}"),
                                     (axes[1, 0], "violations", "Violations")):
                ax.plot(x, ok[f"{what}_best"].astype(float), "o-", label="best iteration")
                ax.plot(x, ok[f"{what}_base"].astype(float), "x--", label="base (no batteries)")
                ax.set_xticks(x, ok["scenario"].astype(str), rotation=30, ha="right")
                ax.set_ylabel(ylabel)
                ax.grid(alpha=0.3)
            axes[0, 0].legend()
        else:
            for j, p in enumerate(swept):
                _panel(axes[0, j], axes[1, j], ok, p, [q for q in swept if q != p])
                axes[0, j].set_ylabel(f"Welfare{unit}" if j == 0 else "")
                axes[1, j].set_ylabel("Violations" if j == 0 else "")
        failed = int((table["status"] != "ok").sum())
        head = title or "Sweep"
        head += f": {len(ok)} scenario(s)" + (f", {failed} failed (not shown)" if failed else "")
        fig.suptitle(head)
    return fig


def _panel(ax_w: Axes, ax_v: Axes, ok: pd.DataFrame, p: str, others: Sequence[str]) -> None:
    values = ok[p]
    numeric = _numeric(values) and not values.isna().any()
    if numeric:
        xs = values.astype(float).to_numpy()
        ticks = None
    else:
        cats = list(dict.fromkeys(_label(v) for v in values))
        pos = {c: i for i, c in enumerate(cats)}
        xs = np.array([pos[_label(v)] for v in values], dtype=float)
        ticks = cats
    keys = pd.Series([", ".join(_label(r[o]) for o in others) for _, r in ok.iterrows()], index=ok.index,
                     dtype=object)
    groups = list(dict.fromkeys(keys))
    cmap = mpl.colormaps["tab10"]
    for ax, what in ((ax_w, "welfare"), (ax_v, "violations")):
        best = ok[f"{what}_best"].astype(float).to_numpy()
        base = ok[f"{what}_base"].astype(float).to_numpy()
        if len(groups) <= _MAX_GROUPS:
            for g_i, g in enumerate(groups):
                m = (keys == g).to_numpy()
                order = np.argsort(xs[m], kind="stable")
                color = cmap(g_i % 10)
                label = ", ".join(f"{o}={v}" for o, v in zip(others, g.split(", "), strict=False)) if others else None
                ax.plot(xs[m][order], best[m][order], "o-", color=color, label=label)
                ax.plot(xs[m][order], base[m][order], "x--", color=color, alpha=0.7)
        else:
            ax.plot(xs, best, "o", color="0.6", alpha=0.6)
            ux = np.unique(xs)
            ax.plot(ux, [best[xs == u].mean() for u in ux], "-", color="black",
                    label="mean of best")
        if ticks is not None:
            ax.set_xticks(range(len(ticks)), ticks, rotation=20, ha="right")
        ax.grid(alpha=0.3)
    ax_v.set_xlabel(p)
    ax_w.set_title(f"against {p}\n(solid: best iteration, dashed: base)", fontsize=8)
    if ax_w.get_legend_handles_labels()[1]:
        ax_w.legend(fontsize=6)


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1300px;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:.85em}th,td{border:1px solid #ccc;padding:.2em .5em}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.failed td{background:#fdecea}img{max-width:100%;border:1px solid #eee}"""


def render_sweep_html(table: pd.DataFrame, png: bytes, *, title: str = "Sweep",
                      out_dir: Path | None = None, currency: str = "") -> str:
    """A self-contained page: the figure (embedded) and the table with links to the results;
    the welfare columns' headers name ``currency``."""
    cols = list(table.columns)
    unit = currency or "currency"
    head = "".join(f"<th>{html.escape(str(c) + (f' [{unit}]' if c in MONEY_COLUMNS else ''))}</th>"
                   for c in cols)
    body = []
    for _, r in table.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            missing = v is None or (np.ndim(v) == 0 and bool(pd.isna(v)))
            text = "" if missing else (f"{v:.6g}" if isinstance(v, float) else str(v))
            number = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
            cls = ' class="num"' if number else ""
            if c == "results" and text:
                target = f"{text}/report.html"
                if out_dir is None or (out_dir / target).is_file():
                    text = f'<a href="{html.escape(target)}">{html.escape(text)}</a>'
                else:
                    text = f'<a href="{html.escape(text)}/">{html.escape(text)}</a>'
            else:
                text = html.escape(text)
            cells.append(f"<td{cls}>{text}</td>")
        cls = ' class="failed"' if r.get("status") != "ok" else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    ok = int((table["status"] == "ok").sum())
    cached = int(table["cached"].fillna(False).astype(bool).sum()) if "cached" in table else 0
    img = base64.b64encode(png).decode("ascii")
    summary = (f"{len(table)} scenarios: {ok} ok, {len(table) - ok} failed, {cached} reused from an "
               "earlier run. Data: <a href=\"sweep.csv\">sweep.csv</a>; inputs: <a href=\"sweep.toml\">sweep.toml</a>.")
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><p>{summary}</p>"
            f"<figure><img alt=\"welfare and violations against the swept parameters\" "
            f"src=\"data:image/png;base64,{img}\"></figure>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></body></html>\n")


def write_sweep_page(table: pd.DataFrame, out_dir: str | Path, *, swept: Sequence[str] | None = None,
                     title: str = "Sweep", currency: str = "") -> tuple[Path, Path]:
    """Write ``sweep.png`` and ``sweep.html`` into ``out_dir`` (each atomically).

    Returns
    -------
    (pathlib.Path, pathlib.Path)
        The PNG and the page.
    """
    out = Path(out_dir)
    fig = plot_sweep(table, swept, currency=currency, title=title)
    png = figure_png(fig)
    write_bytes_atomic(out / "sweep.png", png)
    page = render_sweep_html(table, png, title=title, out_dir=out, currency=currency)
    write_bytes_atomic(out / "sweep.html", page.encode("utf-8"))
    return out / "sweep.png", out / "sweep.html"
