"""Report of a study run: the answer, interactive figures, tables and PNGs in one offline page.

Everything reads a results folder (shared CASE_FORMAT.md, *Results*): use
:func:`build_report` for the page (``report.html``, self-contained, plotly.js inlined once)
and the PNGs, :func:`save_figures` for the PNGs only, or :func:`load_results` plus the
``plot_*``, ``*_figure`` and table functions for single pieces.

Modules: ``headline`` (base → best, from the files), ``tables``, ``format`` (one number
format), ``elements`` (element names, the one violation count), ``views`` (derived frames),
``plots`` / ``grid_plots`` / ``network_map`` (matplotlib PNGs; ``style`` their shared look),
``interactive`` / ``interactive_map`` (plotly), ``figures`` (which PNGs, rendering), ``html``
(the page).
"""

from gridmarket.report._load import ResultsData, load_results
from gridmarket.report.figures import render_figures, save_figures
from gridmarket.report.headline import Headline, headline
from gridmarket.report.html import build_report
from gridmarket.report.network_map import has_coordinates, lv_areas, plot_network_map
from gridmarket.report.plots import plot_energy_balance, plot_iterations, plot_voltages
from gridmarket.report.tables import (
    bank_summary,
    community_table,
    format_community_table,
    format_iteration_table,
    iteration_table,
    to_html,
    to_markdown,
    violation_table,
)
from gridmarket.report.views import COMPARISON_COLUMNS

__all__ = [
    "COMPARISON_COLUMNS",
    "Headline",
    "ResultsData",
    "bank_summary",
    "build_report",
    "community_table",
    "format_community_table",
    "format_iteration_table",
    "has_coordinates",
    "headline",
    "iteration_table",
    "load_results",
    "lv_areas",
    "plot_energy_balance",
    "plot_iterations",
    "plot_network_map",
    "plot_voltages",
    "render_figures",
    "save_figures",
    "to_html",
    "to_markdown",
    "violation_table",
]
