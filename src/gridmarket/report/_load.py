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

from gridmarket.errors import ResultsError

__all__ = ["REQUIRED_FILES", "OPTIONAL_FILES", "ResultsData", "load_results", "violated_buses"]

#: file -> columns it must have. A missing file or column is a ResultsError.
REQUIRED_FILES: dict[str, tuple[str, ...]] = {
    "summary.json": (),
    "iterations.csv": ("iteration", "welfare", "violations", "voltage_violations",
                       "current_violations", "buses_violated", "lines_violated",
                       "battery_units"),
    "market.csv": ("iteration", "step", "time", "agent", "kind", "community", "P_kw", "S_kw",
                   "phi_kw", "alpha_kw", "beta_kw", "soc", "price", "payment"),
    "communities.csv": ("iteration", "step", "community", "price", "import_kwh", "export_kwh",
                        "welfare"),
    "violations.csv": ("iteration", "step", "time", "kind", "element", "value", "limit"),
    "voltages.parquet": ("iteration", "step", "bus", "phase", "v_pu"),
    "batteries.csv": ("iteration", "agent", "bus", "units", "kw", "kwh"),
}

#: file -> columns; without the file the figure that needs it is skipped (network map).
OPTIONAL_FILES: dict[str, tuple[str, ...]] = {
    "agents.csv": ("agent", "kind", "community", "element", "bus"),
    "network_buses.csv": ("bus", "x", "y", "kv_base"),
    "network_lines.csv": ("line", "bus1", "bus2"),
}

# Columns read as text (bus "1" must stay "1", an empty community must stay "").
_TEXT = ("time", "agent", "kind", "community", "element", "bus", "bus1", "bus2", "line")
# Columns whose names are lower-cased (OpenDSS names are case-insensitive).
_LOWER = ("bus", "bus1", "bus2", "line", "element")


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


def _check_columns(frame: pd.DataFrame, name: str, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        msg = (f"{name}: missing column(s) {', '.join(repr(c) for c in missing)}; "
               f"found {', '.join(repr(c) for c in frame.columns) or 'none'}")
        raise ResultsError(msg)


def _tidy(frame: pd.DataFrame) -> pd.DataFrame:
    for col in _TEXT:
        if col in frame.columns:
            frame[col] = frame[col].fillna("").astype(str).str.strip()
            if col in _LOWER:
                frame[col] = frame[col].str.lower()
    return frame


def _read_table(path: Path, name: str, columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        if name.endswith(".parquet"):
            frame = pd.read_parquet(path)
        else:
            dtypes = {c: str for c in _TEXT}
            frame = pd.read_csv(path, dtype=dtypes)
    except pd.errors.EmptyDataError:
        msg = f"{name}: the file is empty (it needs at least a header row: {', '.join(columns)})"
        raise ResultsError(msg) from None
    except (OSError, ValueError) as exc:
        msg = f"{name}: cannot be read: {exc}"
        raise ResultsError(msg) from exc
    _check_columns(frame, name, columns)
    return _tidy(frame)


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


def load_results(results_dir: str | Path) -> ResultsData:
    """Read a results folder.

    Parameters
    ----------
    results_dir : path
        Folder written by ``gridmarket run`` (shared CASE_FORMAT.md, *Results*).

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
    frames = {name: _read_table(root / name, name, cols)
              for name, cols in REQUIRED_FILES.items() if name != "summary.json"}
    optional = {name: (_read_table(root / name, name, cols) if (root / name).is_file() else None)
                for name, cols in OPTIONAL_FILES.items()}
    for name in ("network_buses.csv",):
        buses = optional[name]
        if buses is not None:
            for col in ("x", "y"):
                buses[col] = pd.to_numeric(buses[col], errors="coerce")
    return ResultsData(
        path=root,
        summary=summary,
        iterations=frames["iterations.csv"].sort_values("iteration", kind="stable")
        .reset_index(drop=True),
        market=frames["market.csv"],
        communities=frames["communities.csv"],
        violations=frames["violations.csv"],
        voltages=frames["voltages.parquet"],
        batteries=frames["batteries.csv"],
        agents=optional["agents.csv"],
        buses=optional["network_buses.csv"],
        lines=optional["network_lines.csv"],
    )


def _line_name(element: str) -> str:
    """``"line.l1.2"`` / ``"line.l1"`` / ``"l1"`` -> ``"l1"``."""
    parts = element.lower().split(".")
    if len(parts) > 1 and parts[0] == "line":
        parts = parts[1:]
    if len(parts) > 1 and parts[-1].isdigit():
        parts = parts[:-1]
    return ".".join(parts)


def violated_buses(violations: pd.DataFrame, lines: pd.DataFrame | None = None, *,
                   iteration: int) -> tuple[list[str], list[str]]:
    """Buses and lines with at least one violation in ``iteration``.

    A voltage violation's element is ``bus.phase``; a current violation's is
    ``line.name.phase`` (or the line name) and, as in placement (shared MODEL.md), counts for
    the line's downstream bus ``bus2`` when ``lines`` is given.

    Returns
    -------
    (buses, lines) : sorted lists of lower-case names
    """
    viol = violations[violations["iteration"] == iteration]
    buses: set[str] = set()
    line_names: set[str] = set()
    for kind, element in zip(viol["kind"].astype(str).str.lower(), viol["element"], strict=True):
        if kind == "voltage":
            buses.add(str(element).lower().split(".")[0])
        elif kind == "current":
            line_names.add(_line_name(str(element)))
    if lines is not None and line_names:
        down = dict(zip(lines["line"], lines["bus2"].str.split(".").str[0], strict=True))
        buses.update(down[name] for name in line_names if name in down)
    return sorted(buses), sorted(line_names)


def finite_or(value: Any, default: float) -> float:
    """``float(value)`` when finite, else ``default``."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default
