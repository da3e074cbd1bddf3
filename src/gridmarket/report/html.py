"""One self-contained ``report.html`` per results folder (figures embedded as data URIs)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from gridmarket.report._load import ResultsData, finite_or, load_results
from gridmarket.report.plots import FigureSpec, render_figures, write_figures
from gridmarket.report.tables import (
    community_table,
    format_community_table,
    format_iteration_table,
    format_violation_table,
    iteration_table,
    to_html,
    violation_table,
)
from gridmarket.results import write_bytes_atomic

__all__ = ["build_report", "render_html"]

REPORT_NAME = "report.html"

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.8em;
border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{background:#fff3e0;font-weight:600}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#555;max-width:900px}
.note{background:#f7f7f7;border-left:4px solid #bbb;padding:.5em 1em;color:#555}
.small{font-size:.85em;color:#666}
"""


def _kv_table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in rows)
    return f'<table class="summary"><tbody>{body}</tbody></table>'


def _summary_rows(data: ResultsData) -> list[tuple[str, Any]]:
    s = data.setting
    runtime = finite_or(s("runtime_s", float("nan")), float("nan"))
    vmin = finite_or(s("vmin_pu", 0.95), 0.95)
    vmax = finite_or(s("vmax_pu", 1.05), 1.05)
    horizon = s("horizon", "—")
    if horizon == 1:
        horizon = "1 (sequential: one market per step)"
    return [
        ("Case", s("case", "—")),
        ("gridmarket version", s("version", "—")),
        ("Battery model", s("battery_model", "—")),
        ("Market horizon [steps]", horizon),
        ("Solver", s("solver", "—")),
        ("Iterations", s("iterations", len(data.iterations))),
        ("Base iteration", data.base_iteration),
        ("Best iteration", data.best_iteration),
        ("Step length [h]", f"{finite_or(s('step_hours', 1.0), 1.0):g}"),
        ("Voltage limits [pu]", f"{vmin:g} – {vmax:g}"),
        ("Currency", s("currency", "—") or "—"),
        ("Runtime [s]", f"{runtime:.1f}" if runtime == runtime else "—"),
    ]


def _figure_html(spec: FigureSpec) -> str:
    uri = "data:image/png;base64," + base64.b64encode(spec.png).decode("ascii")
    return (f'<figure id="fig-{html.escape(spec.stem)}"><img src="{uri}" '
            f'alt="{html.escape(spec.title)}"><figcaption><b>{html.escape(spec.title)}.</b> '
            f"{html.escape(spec.caption)} <span class=\"small\">({html.escape(spec.stem)}.png)"
            f"</span></figcaption></figure>")


def render_html(data: ResultsData, specs: list[FigureSpec], notes: list[str]) -> str:
    """The report page for ``data`` with the rendered figures ``specs`` embedded."""
    currency = str(data.setting("currency", ""))
    base, best = data.base_iteration, data.best_iteration
    it_table = iteration_table(data.iterations, data.batteries, base_iteration=base,
                               best_iteration=best, voltages=data.voltages)
    it_html = to_html(format_iteration_table(it_table, currency=currency),
                      highlight=it_table["best"].reset_index(drop=True))
    shown = sorted({base, best})
    comm = community_table(data.communities, iterations=shown)
    comm_html = (to_html(format_community_table(comm, currency=currency)) if len(comm)
                 else '<p class="note">No community results.</p>')
    viol = violation_table(data.violations)
    viol_html = (to_html(format_violation_table(viol)) if len(viol)
                 else '<p class="note">No violations in any iteration.</p>')
    case = str(data.setting("case", data.path.name))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>gridmarket report — {html.escape(case)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>gridmarket report — {html.escape(case)}</h1>",
        '<p class="small">Units: power kW, energy kWh, prices currency/kWh, voltages pu. '
        "Load reference: consumption positive, production negative, battery power positive "
        "when charging. A violation is one (bus or line, step) pair out of limits.</p>",
        "<h2>Run</h2>",
        _kv_table(_summary_rows(data)),
        "<h2>Iterations</h2>",
        f'<p class="small">Welfare change relative to the base iteration {base}; '
        f"the best iteration ({best}: fewest violations, ties by higher welfare) is marked "
        "with * and highlighted. Banks: count × size of the battery banks in the iteration.</p>",
        it_html,
        "<h2>Communities</h2>",
        f'<p class="small">Clearing prices over the steps, and imports, exports and welfare '
        f"summed over the steps, for iteration(s) {', '.join(str(i) for i in shown)}.</p>",
        comm_html,
        "<h2>Violations</h2>",
        '<p class="small">Per iteration and kind; the worst is the farthest from its limit '
        "(voltage in pu, current in A).</p>",
        viol_html,
        "<h2>Figures</h2>",
        *(_figure_html(spec) for spec in specs),
        *(f'<p class="note">{html.escape(n)}</p>' for n in notes),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def build_report(results_dir: str | Path, *, out_dir: str | Path | None = None) -> Path:
    """Write ``report.html`` (self-contained) and the figures' PNGs for a results folder.

    Parameters
    ----------
    results_dir : path
        A results folder (shared CASE_FORMAT.md, *Results*).
    out_dir : path, optional
        Where to write; default ``results_dir``.

    Returns
    -------
    Path
        The ``report.html`` written. Every file is written to a temporary name first and
        moved into place, so a reader never sees a half-written report.

    Raises
    ------
    ResultsError
        A required results file is missing or malformed; the message names the file.
    """
    data = load_results(results_dir)
    target = Path(out_dir) if out_dir is not None else data.path
    specs, notes = render_figures(data)
    page = render_html(data, specs, notes)
    write_figures(specs, target)
    path = target / REPORT_NAME
    write_bytes_atomic(path, page.encode("utf-8"))
    return path
