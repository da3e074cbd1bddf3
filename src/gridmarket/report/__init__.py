"""Report of a study run: the iteration table, figures and one self-contained HTML page.

Everything reads a results folder (shared CASE_FORMAT.md, *Results*): use
:func:`build_report` for the page, :func:`save_figures` for the PNGs only, or
:func:`load_results` plus the ``plot_*`` and table functions for single pieces.
"""

from gridmarket.report._load import ResultsData, load_results
from gridmarket.report.html import build_report
from gridmarket.report.plots import (
    has_coordinates,
    plot_energy_balance,
    plot_iterations,
    plot_network_map,
    plot_voltages,
    save_figures,
)
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

__all__ = [
    "ResultsData",
    "bank_summary",
    "build_report",
    "community_table",
    "format_community_table",
    "format_iteration_table",
    "has_coordinates",
    "iteration_table",
    "load_results",
    "plot_energy_balance",
    "plot_iterations",
    "plot_network_map",
    "plot_voltages",
    "save_figures",
    "to_html",
    "to_markdown",
    "violation_table",
]
