"""Scenario sweeps: many runs of one case over a grid or list of parameters, on Dask.

- :func:`read_sweep` / :func:`parse_sweep`: SWEEP.toml -> :class:`SweepSpec` (``docs/sweep.md``);
- :func:`write_scenario_case`: the base case with one scenario's parameters applied;
- :func:`run_scenario`: one scenario end to end (the Dask task);
- :func:`run_sweep`: all of them on a local cluster or any Dask scheduler -> ``sweep.csv``;
- :func:`plot_sweep`, :func:`write_sweep_page`: ``sweep.png`` and ``sweep.html``.
"""

from typing import Any

from gridmarket.sweep.apply import write_scenario_case
from gridmarket.sweep.run import RESULT_COLUMNS, SERIAL, case_fingerprint, run_scenario, run_sweep, sweep_table
from gridmarket.sweep.spec import ALIASES, PARAMETERS, Scenario, SweepSpec, parse_sweep, read_sweep

__all__ = [
    "ALIASES",
    "PARAMETERS",
    "RESULT_COLUMNS",
    "SERIAL",
    "Scenario",
    "SweepSpec",
    "case_fingerprint",
    "parse_sweep",
    "plot_sweep",
    "read_sweep",
    "run_scenario",
    "run_sweep",
    "sweep_table",
    "write_scenario_case",
    "write_sweep_page",
]


def __getattr__(name: str) -> Any:
    # the plots import matplotlib (~0.4 s): loaded on first use, so that a Dask worker, which
    # imports this package to run scenarios, does not pay for it
    if name in ("plot_sweep", "write_sweep_page"):
        from gridmarket.sweep import plots

        return getattr(plots, name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
