"""Columns of ``sweep.csv`` after ``scenario`` and the parameter columns.

Their own module so that the sweep's runner (:mod:`gridmarket.sweep.run`) and its figures
(:mod:`gridmarket.sweep.plots`) both read them without importing each other.
"""

from __future__ import annotations

__all__ = ["INT_COLUMNS", "MONEY_COLUMNS", "RESULT_COLUMNS"]

RESULT_COLUMNS: tuple[str, ...] = (
    "status",  # "ok" | "failed"
    "error",  # the exception, one line ("" when ok)
    "welfare_base",  # [currency] iteration 0 (no batteries placed)
    "welfare_best",  # [currency] the best iteration (fewest violations, then higher welfare)
    "violations_base",  # (bus, line or transformer, step) pairs out of limits, iteration 0
    "violations_best",
    "battery_units",  # SBUs placed in the best iteration
    "iterations",
    "best_iteration",
    "stop_reason",
    "runtime_s",  # [s] writing the case, the study, writing the results
    "cached",  # True: reused from an earlier run of the sweep
    "warnings",  # case warnings, "; "-joined
    "results",  # the results folder, relative to the sweep's folder
)

#: integer columns (nullable: a failed scenario has none)
INT_COLUMNS: tuple[str, ...] = ("violations_base", "violations_best", "battery_units", "iterations",
                                "best_iteration")

#: columns in the case's currency
MONEY_COLUMNS: tuple[str, ...] = ("welfare_base", "welfare_best")
