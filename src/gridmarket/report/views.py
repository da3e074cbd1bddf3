"""Derived frames that both the PNG figures and the interactive figures draw.

Pure pandas on the frames of a results folder: the violation heat map (bus × step, and day ×
hour for long runs), the voltage profile along the feeder, the welfare breakdown, each
battery bank's hourly operation, duration curves and monthly energy. Violations are counted
as everywhere in the report: one (bus, line or transformer, step) pair
(:func:`gridmarket.report.elements.violation_pairs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gridmarket.errors import ResultsError
from gridmarket.report._load import finite_or
from gridmarket.report.elements import bus_names, line_table, violation_pairs

__all__ = [
    "COMPARISON_COLUMNS",
    "after_iteration",
    "base_iteration",
    "best_iteration",
    "finite_setting",
    "has_distances",
    "setting",
    "LONG_RUN_STEPS",
    "ResultsView",
    "battery_operation",
    "MAX_HEATMAP_BUSES",
    "bus_step_violations",
    "day_hour_violations",
    "violation_grids",
    "duration_curves",
    "monthly_energy",
    "optional_table",
    "top_batteries",
    "voltage_profile",
    "welfare_breakdown",
    "worst_step",
]

#: a run longer than this many steps gets the long-run figures (duration curves, monthly
#: energy, day × hour heat map) instead of per-step ones; one week of hourly steps
LONG_RUN_STEPS = 168

#: ``comparison.csv`` (optional, written by whoever runs the four market variants of one case,
#: e.g. the lead's study script): one row per scenario, in the order to show.
#:
#: - ``scenario`` (str): e.g. ``"blind, no batteries"``, ``"blind + batteries"``,
#:   ``"aware, no batteries"``, ``"aware + batteries"``;
#: - ``violations`` (int): (bus, line or transformer, step) pairs out of limits in the AC
#:   power flow of the scenario's reported iteration;
#: - ``welfare_realised`` (float, currency): realised welfare (shared MODEL.md);
#: - ``net_benefit`` (float, currency): realised welfare gain over the blind, no-battery
#:   scenario minus the battery annuity (0 for the no-battery scenarios' own gain);
#: - ``curtailed_kwh`` (float, kWh): energy the market did not clear because of the network
#:   (0 for blind scenarios);
#: - ``price_spread`` (float, currency/kWh): highest minus lowest agent price over the run,
#:   without the components of rows the market left unmet (priced at the slack penalty).
#:
#: Further columns are shown as they are.
COMPARISON_COLUMNS: tuple[str, ...] = ("scenario", "violations", "welfare_realised", "net_benefit",
                                       "curtailed_kwh", "price_spread")


# ----------------------------------------------------------------------------- optional files
def optional_table(data: Any, name: str, *, columns: tuple[str, ...] = ()) -> pd.DataFrame | None:
    """An optional table of a results folder, or ``None`` when the folder lacks it.

    Takes the frame from the loaded results when the loader provides it (attribute named
    after the file, e.g. ``welfare_breakdown`` or ``steps``), else reads ``data.path / name``.
    Name columns (``scenario``, ``part``, ``bus``, ``agent``, ``community``, ``element``) are
    read as strings.

    Raises
    ------
    ResultsError
        The file exists but cannot be read or lacks one of ``columns``; names the file.
    """
    attr = name.split(".")[0]
    frame = getattr(data, attr, None)
    if not isinstance(frame, pd.DataFrame):
        path = Path(data.path) / name
        if not path.is_file():
            return None
        text_cols = {c: str for c in ("scenario", "part", "bus", "agent", "community", "element", "time")}
        try:
            frame = (pd.read_parquet(path) if name.endswith(".parquet")
                     else pd.read_csv(path, dtype=text_cols, keep_default_na=False, na_values=[""]))
        except (OSError, ValueError) as exc:
            msg = f"{name}: cannot be read: {exc}"
            raise ResultsError(msg) from exc
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        msg = f"{name}: missing column(s) {', '.join(repr(c) for c in missing)}"
        raise ResultsError(msg)
    return frame


@dataclass(frozen=True)
class ResultsView:
    """What the report needs beyond the loaded frames: optional files and settings."""

    breakdown: pd.DataFrame | None  #: welfare_breakdown.csv (iteration, part, value)
    steps_table: pd.DataFrame | None  #: steps.parquet
    comparison: pd.DataFrame | None  #: comparison.csv
    n_steps: int  #: steps of the run
    step_hours: float  #: Δt [h]
    long_run: bool  #: more than LONG_RUN_STEPS steps

    def extremes(self, voltages: pd.DataFrame) -> pd.DataFrame:
        """``steps.parquet`` when it gives every step's voltage extremes, else ``voltages``
        (for :func:`duration_curves`)."""
        st = self.steps_table
        if st is not None and {"v_min_pu", "v_max_pu"} <= set(st.columns) and st["v_min_pu"].notna().any():
            return st
        return voltages

    @classmethod
    def of(cls, data: Any) -> ResultsView:
        breakdown = optional_table(data, "welfare_breakdown.csv", columns=("iteration", "part", "value"))
        steps_table = optional_table(data, "steps.parquet")
        comparison = optional_table(data, "comparison.csv", columns=COMPARISON_COLUMNS)
        n_steps = int(data.voltages["step"].nunique()) if len(data.voltages) else 0
        try:
            n_steps = max(n_steps, int(data.summary.get("steps") or 0))
        except (TypeError, ValueError):
            pass
        try:
            step_hours = float(data.summary.get("step_hours") or 1.0)
        except (TypeError, ValueError):
            step_hours = 1.0
        return cls(breakdown, steps_table, comparison, n_steps, step_hours, n_steps > LONG_RUN_STEPS)


# ----------------------------------------------------------------------------- violations
def bus_step_violations(violations: pd.DataFrame, lines: pd.DataFrame | None, *,
                        iteration: int) -> pd.DataFrame:
    """Violations of one iteration per bus and step (the heat map's cells).

    A voltage pair counts for its bus; a line's or transformer's for its downstream bus (as in
    placement). Returns a frame indexed by bus (rows sorted by total, then name) with one
    column per step that has a violation, values = violation pairs (0, 1, or more when a bus
    and the line feeding it are both out of limits).
    """
    pairs = violation_pairs(violations[violations["iteration"] == iteration])
    if pairs.empty:
        return pd.DataFrame()
    down: dict[str, str] = {}
    if lines is not None and len(lines):
        table = line_table(lines)
        down = dict(zip(table["key"], table["downstream"], strict=True))
    bus = [k if kind == "voltage" else down.get(k, k) for kind, k in zip(pairs["kind"], pairs["key"], strict=True)]
    pairs = pairs.assign(bus=bus)
    wide = pairs.pivot_table(index="bus", columns="step", values="phases", aggfunc="size", fill_value=0)
    order = wide.sum(axis=1).sort_values(ascending=False, kind="stable")
    return wide.loc[sorted(order.index, key=lambda b: (-order[b], b))]


def day_hour_violations(violations: pd.DataFrame, times: pd.Series | None, *, iteration: int,
                        step_hours: float = 1.0) -> pd.DataFrame:
    """Violation pairs of one iteration per day (rows) and hour of day (columns 0-23).

    ``times`` maps step -> timestamp; without it, day = step·Δt // 24 and hour = step·Δt % 24.
    """
    pairs = violation_pairs(violations[violations["iteration"] == iteration])
    if pairs.empty:
        return pd.DataFrame(0, index=pd.Index([], name="day"), columns=range(24))
    steps = pairs["step"].astype(int)
    parsed = pd.to_datetime(times.reindex(steps).to_numpy(), errors="coerce") if times is not None else None
    if parsed is not None and not pd.isna(parsed).any():
        day = pd.Series(parsed.normalize().strftime("%Y-%m-%d"))
        hour = pd.Series(parsed.hour)
    else:
        h = steps.to_numpy() * step_hours
        day = pd.Series([f"day {int(x // 24) + 1}" for x in h])
        hour = pd.Series((h % 24).astype(int))
    frame = pd.DataFrame({"day": day.to_numpy(), "hour": hour.to_numpy()})
    out = frame.groupby(["day", "hour"]).size().unstack(fill_value=0)
    return out.reindex(columns=range(24), fill_value=0)


#: rows (buses) of the short runs' violation heat maps: the most violated
MAX_HEATMAP_BUSES = 40


def violation_grids(violations: pd.DataFrame, lines: pd.DataFrame | None, *, before: int, after: int,
                    long_run: bool = False, times: pd.Series | None = None,
                    step_hours: float = 1.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The before and after panels of the violation heat maps (PNG and interactive), on one grid
    of violation pairs: long runs, day (every day with a violation in either) × hour of day 0-23
    (:func:`day_hour_violations`); short runs, bus (the :data:`MAX_HEATMAP_BUSES` most violated in
    both together, most first, ties by name) × step (every step with a violation, and every step
    of ``times`` when given; :func:`bus_step_violations`). No rows when neither has a violation."""
    if long_run:
        a = day_hour_violations(violations, times, iteration=before, step_hours=step_hours)
        b = day_hour_violations(violations, times, iteration=after, step_hours=step_hours)
        rows = sorted(set(a.index) | set(b.index))
        cols = list(range(24))
    else:
        a = bus_step_violations(violations, lines, iteration=before)
        b = bus_step_violations(violations, lines, iteration=after)
        tot = a.sum(axis=1).add(b.sum(axis=1), fill_value=0) if len(a) or len(b) else pd.Series(dtype=float)
        rows = sorted(tot.index, key=lambda x: (-tot[x], x))[:MAX_HEATMAP_BUSES]
        cols = sorted(set(a.columns) | set(b.columns))
        if times is not None and len(times):  # every step of the run, not only the violated ones
            cols = sorted(set(cols) | {int(t) for t in times.index})
    return a.reindex(index=rows, columns=cols, fill_value=0), b.reindex(index=rows, columns=cols, fill_value=0)


def worst_step(voltages: pd.DataFrame, violations: pd.DataFrame, *, iteration: int,
               vmin_pu: float, vmax_pu: float) -> int | None:
    """The step shown as "the worst hour": most violation pairs in ``iteration``, ties by the
    largest voltage excursion beyond a limit; without violations, the step of the voltage
    farthest from 1 pu. ``None`` when the iteration has no voltages."""
    v = voltages[voltages["iteration"] == iteration]
    if v.empty:
        return None
    vv = v["v_pu"].astype(float)
    excess = np.maximum(vv - vmax_pu, vmin_pu - vv).clip(lower=0.0)
    by_step = pd.DataFrame({"step": v["step"].astype(int), "excess": excess,
                            "dev": (vv - 1.0).abs()}).groupby("step").max()
    pairs = violation_pairs(violations[violations["iteration"] == iteration])
    counts = pairs.groupby("step").size() if len(pairs) else pd.Series(dtype=float)
    by_step["count"] = counts.reindex(by_step.index, fill_value=0)
    by_step = by_step.sort_values(["count", "excess", "dev"], ascending=False, kind="stable")
    return int(by_step.index[0])


def has_distances(buses: pd.DataFrame | None) -> bool:
    """Whether ``network_buses.csv`` gives at least two buses a finite ``distance_km``."""
    if buses is None or "distance_km" not in buses.columns:
        return False
    return int(np.isfinite(pd.to_numeric(buses["distance_km"], errors="coerce").to_numpy(dtype=float)).sum()) >= 2


def voltage_profile(voltages: pd.DataFrame, buses: pd.DataFrame, *, iteration: int,
                    step: int) -> pd.DataFrame:
    """Bus-phase voltages of one step against the distance from the source along the feeder.

    Parameters
    ----------
    buses : DataFrame
        ``network_buses.csv`` with ``distance_km`` [km, along the feeder from the source].

    Returns
    -------
    DataFrame
        ``bus, phase, distance_km, v_pu`` sorted by distance; buses without a distance left
        out. Empty when ``buses`` has no ``distance_km`` column.
    """
    if "distance_km" not in buses.columns:
        return pd.DataFrame(columns=["bus", "phase", "distance_km", "v_pu"])
    dist = pd.Series(pd.to_numeric(buses["distance_km"], errors="coerce").to_numpy(dtype=float),
                     index=bus_names(buses["bus"]).to_numpy())
    dist = dist[~dist.index.duplicated()]
    v = voltages[(voltages["iteration"] == iteration) & (voltages["step"] == step)]
    out = pd.DataFrame({"bus": bus_names(v["bus"]).to_numpy(), "phase": v["phase"].astype(str).to_numpy(),
                        "v_pu": v["v_pu"].astype(float).to_numpy()})
    out["distance_km"] = out["bus"].map(dist)
    out = out[np.isfinite(out["distance_km"].astype(float))]
    return out.sort_values(["distance_km", "bus", "phase"]).reset_index(drop=True)[
        ["bus", "phase", "distance_km", "v_pu"]]


# ----------------------------------------------------------------------------- economics
def welfare_breakdown(breakdown: pd.DataFrame) -> pd.DataFrame:
    """``welfare_breakdown.csv`` as iteration (rows) × part (columns) [currency]; parts in
    the order they first appear, missing ones 0."""
    parts = list(dict.fromkeys(breakdown["part"].astype(str)))
    wide = breakdown.pivot_table(index="iteration", columns="part", values="value", aggfunc="sum",
                                 fill_value=0.0)
    return wide.reindex(columns=parts, fill_value=0.0).sort_index()


# ----------------------------------------------------------------------------- batteries
def battery_operation(market: pd.DataFrame, batteries: pd.DataFrame, *, iteration: int,
                      step_hours: float = 1.0) -> pd.DataFrame:
    """Each battery bank's operation in one iteration, per step.

    Returns
    -------
    DataFrame
        ``agent, bus, community, units, step, time, soc`` [fraction], ``S_kw`` [kW, > 0
        charging], ``price`` [currency/kWh, the bank's community price]; empty without banks.
    """
    m = market[(market["iteration"] == iteration) & (market["kind"].astype(str).str.lower() == "battery")]
    cols = ["agent", "bus", "community", "units", "step", "time", "soc", "S_kw", "price"]
    if m.empty:
        return pd.DataFrame(columns=cols)
    b = batteries[batteries["iteration"] == iteration]
    info = b.drop_duplicates("agent").set_index("agent")
    out = m[["agent", "community", "step", "time", "soc", "S_kw", "price"]].copy()
    agent = out["agent"].astype(object)  # names may come as categories (a year's results)
    from_csv = agent.map(info["bus"]).astype(object).fillna("").astype(str)
    if "bus" in m.columns:  # market.parquet's bus when written, else batteries.csv's
        bus = m["bus"].astype(object).fillna("").astype(str)
        out["bus"] = bus.where(bus != "", from_csv)
    else:
        out["bus"] = from_csv
    out["units"] = agent.map(info["units"]).astype(float)
    return out.sort_values(["agent", "step"]).reset_index(drop=True)[cols]


def top_batteries(operation: pd.DataFrame, n: int = 10, *, step_hours: float = 1.0) -> pd.DataFrame:
    """The ``n`` banks with the highest throughput Σ|S|·Δt [kWh], largest first.

    Returns ``agent, bus, community, units, throughput_kwh, charged_kwh, discharged_kwh,
    soc_min, soc_max`` (one row per bank).
    """
    if operation.empty:
        return pd.DataFrame(columns=["agent", "bus", "community", "units", "throughput_kwh",
                                     "charged_kwh", "discharged_kwh", "soc_min", "soc_max"])
    s = operation["S_kw"].astype(float)
    frame = operation.assign(charged=s.clip(lower=0.0) * step_hours, discharged=(-s).clip(lower=0.0) * step_hours)
    g = frame.groupby("agent", sort=True)
    out = g.agg(bus=("bus", "first"), community=("community", "first"), units=("units", "first"),
                charged_kwh=("charged", "sum"), discharged_kwh=("discharged", "sum"),
                soc_min=("soc", "min"), soc_max=("soc", "max"))
    out["throughput_kwh"] = out["charged_kwh"] + out["discharged_kwh"]
    out = out.reset_index().sort_values(["throughput_kwh", "agent"], ascending=[False, True], kind="stable")
    return out.head(n)[["agent", "bus", "community", "units", "throughput_kwh", "charged_kwh",
                        "discharged_kwh", "soc_min", "soc_max"]].reset_index(drop=True)


# ----------------------------------------------------------------------------- long runs
def duration_curves(voltages: pd.DataFrame, *, iteration: int) -> pd.DataFrame:
    """Per step the lowest and highest bus voltage, each sorted (a duration curve).

    ``voltages`` is ``voltages.parquet`` or ``steps.parquet`` (whose ``v_min_pu``/``v_max_pu``
    are the same extremes, a row per step: far less to read in a year-long run).

    Returns ``rank`` (0 … steps−1), ``v_min_pu`` sorted ascending, ``v_max_pu`` sorted
    descending, ``share`` = rank / steps (fraction of the run).
    """
    v = voltages[voltages["iteration"] == iteration]
    if "v_min_pu" in v.columns:
        ext = pd.DataFrame({"min": v["v_min_pu"].to_numpy(dtype=float), "max": v["v_max_pu"].to_numpy(dtype=float)})
    else:
        ext = v.groupby("step")["v_pu"].agg(["min", "max"])
    n = len(ext)
    return pd.DataFrame({"rank": np.arange(n), "share": np.arange(n) / max(n, 1),
                         "v_min_pu": np.sort(ext["min"].to_numpy()),
                         "v_max_pu": np.sort(ext["max"].to_numpy())[::-1]})


def monthly_energy(market: pd.DataFrame, *, iteration: int, step_hours: float = 1.0) -> pd.DataFrame:
    """Energy per calendar month of one iteration [kWh]: ``load_kwh`` (consumers' P > 0),
    ``pv_kwh`` (producers' −P), ``import_kwh`` (Σα·Δt), ``export_kwh`` (Σβ·Δt),
    ``charged_kwh`` / ``discharged_kwh`` (batteries). Index ``month`` ("2024-03"); a run
    without timestamps has one row per 30 days ("days 1-30")."""
    m = market[market["iteration"] == iteration]
    t = pd.to_datetime(m["time"], errors="coerce") if "time" in m.columns else pd.Series(pd.NaT, index=m.index)
    if t.notna().all() and len(t):
        month = t.dt.strftime("%Y-%m")
    else:
        day = (m["step"].astype(int) * step_hours // 24).astype(int)
        month = (day // 30).map(lambda k: f"days {30 * k + 1}-{30 * k + 30}")
    kind = m["kind"].astype(str).str.lower()
    p = m["P_kw"].astype(float).fillna(0.0)
    s = m["S_kw"].astype(float).fillna(0.0)
    frame = pd.DataFrame({
        "month": month.to_numpy(),
        "load_kwh": np.where(kind == "consumer", p.clip(lower=0.0), 0.0) * step_hours,
        "pv_kwh": np.where(kind == "producer", (-p).clip(lower=0.0), 0.0) * step_hours,
        "import_kwh": m["alpha_kw"].astype(float).fillna(0.0).to_numpy() * step_hours,
        "export_kwh": m["beta_kw"].astype(float).fillna(0.0).to_numpy() * step_hours,
        "charged_kwh": np.where(kind == "battery", s.clip(lower=0.0), 0.0) * step_hours,
        "discharged_kwh": np.where(kind == "battery", (-s).clip(lower=0.0), 0.0) * step_hours,
    })
    return frame.groupby("month", sort=True).sum()


# ----------------------------------------------------------------------------- settings
# thin readers over ResultsData (gridmarket.report._load), the one home of these rules
def setting(data: Any, key: str, default: Any) -> Any:
    """A key of ``summary.json``, or ``default`` when it is absent or null."""
    return data.setting(key, default)


def finite_setting(data: Any, key: str, default: float) -> float:
    """A numeric key of ``summary.json`` when finite, else ``default``."""
    return finite_or(data.summary.get(key), default)


def best_iteration(data: Any) -> int:
    """``summary.json``'s best iteration, else fewest violations, ties by higher welfare."""
    return int(data.best_iteration)


def base_iteration(data: Any) -> int:
    """The first iteration (no placed batteries): 0 in every study run."""
    return int(data.base_iteration)


def after_iteration(data: Any) -> int:
    """The iteration shown "after batteries" (:attr:`ResultsData.after_iteration`)."""
    return int(data.after_iteration)
