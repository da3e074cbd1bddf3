"""Read a results folder (shared CASE_FORMAT.md, *Results*) into typed DataFrames.

Only reading happens here; tables, figures and HTML take the frames, not paths.
Every problem is a :class:`~gridmarket.errors.ResultsError` that names the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from gridmarket import contract
from gridmarket.errors import ResultsError

__all__ = ["REQUIRED_FILES", "OPTIONAL_FILES", "ResultsData", "load_results", "violated_buses"]

#: file -> columns it must have (the contract's required tables). A missing file or column is a ResultsError.
REQUIRED_FILES: dict[str, tuple[str, ...]] = {"summary.json": (), **{
    t.file: tuple(c.name for c in t.columns if not c.optional) for t in contract.TABLES.values() if t.required}}

#: file -> columns; without the file the figure that needs it is skipped (network map).
OPTIONAL_FILES: dict[str, tuple[str, ...]] = {
    t.file: tuple(c.name for c in t.columns if not c.optional) for t in contract.TABLES.values() if not t.required}

# Columns whose names are lower-cased (OpenDSS names are case-insensitive).
_LOWER = ("bus", "bus1", "bus2", "element", "downstream_bus")


@dataclass(frozen=True)
class ResultsData:
    """The frames of one results folder.

    Units as in the files: power [kW] (``*_kw``), energy [kWh], prices [currency/kWh],
    voltages [pu]. Load reference: consumption positive, production negative, battery
    ``S_kw > 0`` charging. Optional frames are ``None`` when their file is absent.
    """

    path: Path
    summary: dict[str, Any]
    iterations: pd.DataFrame
    market: pd.DataFrame
    communities: pd.DataFrame
    violations: pd.DataFrame
    voltages: pd.DataFrame
    batteries: pd.DataFrame
    agents: pd.DataFrame | None = None
    buses: pd.DataFrame | None = None
    lines: pd.DataFrame | None = None
    steps: pd.DataFrame | None = None  #: steps.parquet
    breakdown: pd.DataFrame | None = None  #: welfare_breakdown.csv

    @property
    def base_iteration(self) -> int:
        """The first iteration (no placed batteries): 0 in every study run."""
        its = self.iterations["iteration"]
        return int(its.min()) if len(its) else 0

    @property
    def best_iteration(self) -> int:
        """``summary.json``'s best iteration, else fewest violations, ties by higher welfare."""
        best = self.summary.get("best_iteration")
        if best is not None:
            return int(best)
        it = self.iterations.sort_values(["violations", "welfare", "iteration"],
                                         ascending=[True, False, True])
        return int(it["iteration"].iloc[0]) if len(it) else 0

    @property
    def after_iteration(self) -> int:
        """The iteration shown "after batteries": the best one if it has batteries, else the
        best of those with batteries (fewest violations, ties by higher welfare); the base
        iteration when no iteration placed any."""
        best = self.best_iteration
        if best != self.base_iteration or len(self.iterations) < 2:
            return best
        later = self.iterations[self.iterations["iteration"] != self.base_iteration]
        later = later.sort_values(["violations", "welfare", "iteration"], ascending=[True, False, True])
        return int(later["iteration"].iloc[0])

    def setting(self, key: str, default: Any) -> Any:
        """A key of ``summary.json``, or ``default`` when it is absent or null."""
        value = self.summary.get(key)
        return default if value is None else value


def _read_table(path: Path, name: str, text: str = "str") -> pd.DataFrame:
    frame = contract.read_table(path, name, text="category" if text == "category" and name.endswith(".parquet")
                                else "str")
    for col in _LOWER:
        if col in frame.columns:
            cats = frame[col].cat.categories if isinstance(frame[col].dtype, pd.CategoricalDtype) else None
            low = None if cats is None else [str(c).strip().lower() for c in cats]
            if low is not None and len(set(low)) == len(low):  # rename the few categories, not the rows
                frame[col] = frame[col].cat.rename_categories(low)
            else:
                frame[col] = frame[col].str.strip().str.lower()
    if name == "network_lines.csv":
        frame["line"] = frame["element"]  # the element name ("line.x"): what violations name without the phase
    return frame


def _read_summary(path: Path) -> dict[str, Any]:
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        msg = f"summary.json: cannot be read: {exc}"
        raise ResultsError(msg) from exc
    if not isinstance(summary, dict):
        msg = f"summary.json: must hold a JSON object, got {type(summary).__name__}"
        raise ResultsError(msg)
    return summary


def load_results(results_dir: str | Path, *, text: str = "str") -> ResultsData:
    """Read a results folder.

    Parameters
    ----------
    results_dir : path
        Folder written by ``gridmarket run`` (shared CASE_FORMAT.md, *Results*).
    text : {"str", "category"}
        Name columns of the per-step (Parquet) tables as strings, or as pandas categories
        (a year of results in a fraction of the memory).

    Returns
    -------
    ResultsData

    Raises
    ------
    ResultsError
        The folder does not exist, or a required file is missing, unreadable or lacks a
        column; the message names the file.
    """
    root = Path(results_dir)
    if not root.is_dir():
        msg = f"results folder {str(root)!r} does not exist or is not a folder"
        raise ResultsError(msg)
    missing = [name for name in REQUIRED_FILES if not (root / name).is_file()]
    if missing:
        msg = (f"results folder {str(root)!r} lacks required file(s): {', '.join(missing)}")
        raise ResultsError(msg)
    summary = _read_summary(root / "summary.json")
    frames = {name: _read_table(root, name, text) for name in REQUIRED_FILES if name != "summary.json"}
    optional = {name: (_read_table(root, name, text) if (root / name).is_file() else None)
                for name in OPTIONAL_FILES}
    return ResultsData(
        path=root,
        summary=summary,
        iterations=frames["iterations.csv"].sort_values("iteration", kind="stable")
        .reset_index(drop=True),
        market=frames["market.parquet"],
        communities=frames["communities.parquet"],
        violations=frames["violations.parquet"],
        voltages=frames["voltages.parquet"],
        batteries=frames["batteries.csv"],
        agents=optional["agents.csv"],
        buses=optional["network_buses.csv"],
        lines=optional["network_lines.csv"],
        steps=optional["steps.parquet"],
        breakdown=optional["welfare_breakdown.csv"],
    )


def violated_buses(violations: pd.DataFrame, lines: pd.DataFrame | None = None, *,
                   iteration: int) -> tuple[list[str], list[str]]:
    """Buses and lines with at least one violation in ``iteration``.

    A voltage violation's element is ``bus.phase``; a current violation's is the conductor
    ``line.name.phase`` (:func:`gridmarket.contract.violation_owner`). A line violation counts,
    as in placement (shared MODEL.md), for the line's ``downstream_bus`` in network_lines.csv
    (``bus2`` in a file without that column) when ``lines`` is given.

    Returns
    -------
    (buses, lines) : sorted lists of lower-case names; lines by element name (``"line.l45"``,
    network_lines.csv's ``element``)
    """
    viol = violations[violations["iteration"] == iteration]
    kind = viol["kind"].astype(str).str.lower().to_numpy()
    owner = contract.violation_owner(kind, viol["element"].astype(str).to_numpy())
    buses = set(owner[kind == "voltage"].tolist())
    line_names = set(owner[kind == "current"].tolist())
    if lines is not None and line_names:
        names = lines["element"] if "element" in lines.columns else lines["line"]
        down_col = "downstream_bus" if "downstream_bus" in lines.columns else "bus2"
        down = lines[down_col].where(lines[down_col].astype(str) != "", lines["bus2"]).astype(str)
        table = dict(zip(names.astype(str).str.lower(), down.str.split(".").str[0].str.lower(), strict=True))
        buses.update(table[name] for name in line_names if name in table)
    return sorted(buses), sorted(line_names)


def finite_or(value: Any, default: float) -> float:
    """``float(value)`` when finite, else ``default``."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default
