"""Fit a case's source voltage (and chosen transformer taps) to measured meter voltages.

``gridmarket calibrate CASE MEASURED.csv [--tap TRANSFORMER ... | --tap auto] [--write]``.

**Measurements** (:func:`read_measurements`): a CSV with one row per meter and time:

- ``meter``: an agent name of the case (the meter is that agent's element: the mean voltage of
  the nodes its ``bus1`` connects, e.g. both legs of a 240 V split-phase load on ``bus.1.2``) or a
  bus name (the mean of the bus's phase nodes); case-insensitive;
- ``time`` (an ISO timestamp, for a case with ``[time] start``) or ``step`` (0-based step index);
  a row belongs to the step whose interval ``[start + sΔt, start + (s+1)Δt)`` holds its time, and
  the rows of one meter and step are averaged (15-minute readings of an hourly case);
- ``v_pu`` [pu of the meter's nominal voltage], or ``volts`` [V] and ``v_base`` [V, the nominal
  voltage the meter reads against, e.g. 240 for a 120/240 V service].

Rows outside the case's horizon, and readings that are empty, zero or negative (meter gaps), are
dropped and counted.

**Simulation.** The case's base case is solved in OpenDSS for every measured step: consumers and
passive agents at their profiles, producers at zero (``producers=True``: at their available
power; measurements from a feeder without the case's added PV should not see it), batteries idle.

**Fit.** ``x = [source_pu, tap_1, ...]`` minimises ``Σ (v_sim(x) − v_meas)²`` over all
meter-steps (:func:`scipy.optimize.least_squares`, trust-region reflective, finite-difference
Jacobian on real OpenDSS solves; source bounded to [0.85, 1.15] pu, taps to [0.9, 1.1]). A tap is
the per-unit tap of the transformer's winding 1, its primary (``Edit Transformer.<name> wdg=1 tap=...``;
a tap above 1 lowers the secondary voltage). Source and
taps would trade off when every meter hangs below a fitted transformer, so each tap carries a weak
pull toward its feeder value (residual ``TAP_PRIOR · √n · (tap − tap₀)``, n fitted points): the
source takes the shift all meters share, a tap what its own meters add.

**Errors** are simulated − measured: ``bias`` (mean) and ``rmse`` [pu], per meter and overall,
before (the case as it is) and after the fit. ``--write`` (:func:`write_source_pu`) changes only
``[network] source_pu`` in ``case.toml``; fitted taps are reported, never written.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from gridmarket.case import Case
from gridmarket.cases.sanity import BaseCaseGrid
from gridmarket.errors import GridmarketError

__all__ = ["CalibrationResult", "Measurements", "calibrate", "metered_transformers", "read_measurements",
           "write_source_pu"]

SOURCE_BOUNDS = (0.85, 1.15)  #: [pu] search range of the source voltage
TAP_BOUNDS = (0.9, 1.1)  #: [pu] search range of a tap
TAP_PRIOR = 0.1  #: weight of a tap's pull toward its feeder value, per square root of the fitted points


@dataclass(frozen=True)
class Measurements:
    """Measured voltages per meter and case step (rows of one meter and step averaged)."""

    meter: tuple[str, ...]  #: (n,) meter label as written (agent or bus)
    step: np.ndarray  #: (n,) int, step of the case
    v_pu: np.ndarray  #: (n,) measured voltage [pu]
    dropped: int = 0  #: rows dropped (outside the horizon, empty or non-positive readings)
    rows: int = 0  #: rows read


def _table(source: str | Path | pd.DataFrame) -> tuple[pd.DataFrame, str]:
    if isinstance(source, pd.DataFrame):
        return source.copy(), "measurements"
    path = Path(source).expanduser()
    try:
        df = pd.read_csv(path, dtype={"meter": str})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        msg = f"cannot read measurements {path}: {exc}"
        raise GridmarketError(msg) from exc
    return df, str(path)


def read_measurements(source: str | Path | pd.DataFrame, case: Case) -> Measurements:
    """Measured voltages of ``source`` (CSV path or frame; columns in the module docstring) per
    meter and step of ``case``.

    Raises
    ------
    GridmarketError
        Naming the file and the missing column, the row of a bad time, or no usable row.
    """
    df, where = _table(source)
    df.columns = [str(c).strip().lower() for c in df.columns]
    if "meter" not in df.columns:
        msg = f"{where}: needs a 'meter' column (agent name or bus), got {list(df.columns)}"
        raise GridmarketError(msg)
    n_rows = len(df)
    if "v_pu" in df.columns:
        v = pd.to_numeric(df["v_pu"], errors="coerce").to_numpy(dtype=float)
    elif {"volts", "v_base"} <= set(df.columns):
        base = pd.to_numeric(df["v_base"], errors="coerce").to_numpy(dtype=float)
        v = pd.to_numeric(df["volts"], errors="coerce").to_numpy(dtype=float) / base
    else:
        msg = f"{where}: needs a 'v_pu' column, or 'volts' and 'v_base' columns, got {list(df.columns)}"
        raise GridmarketError(msg)
    dt = case.time.step_hours
    if "step" in df.columns:
        steps = pd.to_numeric(df["step"], errors="coerce").to_numpy(dtype=float)
    elif "time" in df.columns:
        if case.time.start is None:
            msg = f"{where}: the case numbers its steps (no [time] start), so give a 'step' column, not 'time'"
            raise GridmarketError(msg)
        t = pd.to_datetime(df["time"], errors="coerce")
        bad = np.flatnonzero(t.isna().to_numpy())
        if bad.size:
            msg = f"{where}, row {int(bad[0]) + 2}: time {df['time'].iloc[bad[0]]!r} is not a timestamp"
            raise GridmarketError(msg)
        hours = (t - pd.Timestamp(case.time.start)) / pd.Timedelta(hours=1)
        steps = np.floor(hours.to_numpy(dtype=float) / dt + 1e-9)
    else:
        msg = f"{where}: needs a 'time' (timestamp) or 'step' column, got {list(df.columns)}"
        raise GridmarketError(msg)
    ok = np.isfinite(v) & (v > 0) & np.isfinite(steps) & (steps >= 0) & (steps < case.time.steps)
    meters = df["meter"].astype(str).str.strip().to_numpy()
    ok &= meters != ""
    if not ok.any():
        msg = (f"{where}: no usable row (a positive voltage at a time inside the case's {case.time.steps} steps)"
               f" among {n_rows}")
        raise GridmarketError(msg)
    g = (pd.DataFrame({"meter": meters[ok], "step": steps[ok].astype(int), "v": v[ok]})
         .groupby(["meter", "step"], sort=False, as_index=False)["v"].mean())
    return Measurements(meter=tuple(g["meter"].astype(str)), step=g["step"].to_numpy(dtype=int),
                        v_pu=g["v"].to_numpy(dtype=float), dropped=int((~ok).sum()), rows=n_rows)


@dataclass(frozen=True)
class CalibrationResult:
    """Fitted source voltage (and taps) with the error before and after [pu; error = sim − meas]."""

    source_pu_before: float
    source_pu: float
    taps_before: dict[str, float]
    taps: dict[str, float]
    bias_before: float
    rmse_before: float
    bias_after: float
    rmse_after: float
    per_meter: pd.DataFrame  #: meter, n, bias_before, rmse_before, bias_after, rmse_after [pu]
    points: int  #: meter-steps fitted
    dropped: int  #: measurement rows dropped
    evaluations: int  #: series of power flows solved by the fit
    notes: list[str] = field(default_factory=list)

    def text(self, *, top: int = 10) -> str:
        """A few lines for the console: the fit, the overall errors and the worst meters."""
        lines = [f"source voltage: {self.source_pu_before:.4f} -> {self.source_pu:.4f} pu"
                 f" ({self.points} meter-steps of {self.per_meter.shape[0]} meters; {self.dropped} rows dropped;"
                 f" {self.evaluations} power-flow series)"]
        for name, before in self.taps_before.items():
            lines.append(f"tap of {name} (winding 1): {before:.4f} -> {self.taps[name]:.4f} pu")
        lines.append(f"overall bias {self.bias_before:+.4f} -> {self.bias_after:+.4f} pu,"
                     f" RMSE {self.rmse_before:.4f} -> {self.rmse_after:.4f} pu (simulated minus measured)")
        worst = self.per_meter.reindex(self.per_meter["rmse_after"].abs().sort_values(ascending=False).index)
        lines.append(f"largest RMSE after the fit (of {len(worst)} meters):")
        for _, r in worst.head(top).iterrows():
            lines.append(f"  {r['meter']}: bias {r['bias_before']:+.4f} -> {r['bias_after']:+.4f},"
                         f" RMSE {r['rmse_before']:.4f} -> {r['rmse_after']:.4f} pu ({int(r['n'])} steps)")
        lines += self.notes
        return "\n".join(lines)


def _nodes_of(grid: BaseCaseGrid, element: str) -> list[str]:
    """Phase nodes ``bus.k`` an element's first terminal connects (all phase nodes of its bus
    when bus1 names no nodes)."""
    bus1 = grid.net.command(f"? {element}.bus1").strip().lower()
    bus, *nodes = bus1.split(".")
    return _bus_nodes(grid, bus, [int(n) for n in nodes if n.isdigit() and 1 <= int(n) <= 3])


def _bus_nodes(grid: BaseCaseGrid, bus: str, nodes: Sequence[int] = ()) -> list[str]:
    have = [n for n in grid.node_names if n.rsplit(".", 1)[0] == bus]
    if nodes:
        picked = [f"{bus}.{k}" for k in nodes if f"{bus}.{k}" in have]
        if picked:
            return picked
    return have


def _meter_columns(grid: BaseCaseGrid, meters: Sequence[str]) -> dict[str, np.ndarray]:
    """Meter label -> columns of ``v_pu`` to average."""
    agents = {a.name.lower(): i for i, a in enumerate(grid.case.agents)}
    buses = {str(b).lower() for b in grid.net.buses.index}
    col = {n: i for i, n in enumerate(grid.node_names)}
    out: dict[str, np.ndarray] = {}
    unknown: list[str] = []
    for m in dict.fromkeys(meters):
        key = m.lower()
        if key in agents:
            nodes = _nodes_of(grid, grid.element_names[agents[key]])
        elif key.split(".")[0] in buses:
            bus, *rest = key.split(".")
            nodes = _bus_nodes(grid, bus, [int(n) for n in rest if n.isdigit()])
        else:
            unknown.append(m)
            continue
        if not nodes:
            msg = f"meter {m!r}: its bus has no phase node with a voltage base"
            raise GridmarketError(msg)
        out[m] = np.array([col[n] for n in nodes])
    if unknown:
        hint = difflib.get_close_matches(unknown[0].lower(), [*agents, *buses], n=1)
        msg = (f"{len(unknown)} meter(s) are neither an agent nor a bus of case {grid.case.name!r}: {unknown[:8]}"
               + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        raise GridmarketError(msg)
    return out


def _tap_of(grid: BaseCaseGrid, name: str) -> float:
    text = grid.net.command(f"? Transformer.{name}.taps").strip()
    values = [float(x) for x in re.findall(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?", text)]
    if len(values) < 2:
        msg = f"transformer {name!r}: cannot read its taps (OpenDSS says {text!r})"
        raise GridmarketError(msg)
    return values[0]


def _set_tap(grid: BaseCaseGrid, name: str, tap: float) -> None:
    grid.net.command(f"Edit Transformer.{name} wdg=1 tap={tap:.9g}")


def _errors(sim: np.ndarray, meas: Measurements, meters: Sequence[str]) -> tuple[float, float, pd.DataFrame]:
    e = sim - meas.v_pu
    df = pd.DataFrame({"meter": list(meas.meter), "e": e})
    g = df.groupby("meter", sort=False)["e"]
    per = pd.DataFrame({"n": g.size(), "bias": g.mean(), "rmse": g.apply(lambda x: math.sqrt(float(np.mean(x ** 2))))})
    per = per.reindex(list(meters))
    return float(e.mean()), float(math.sqrt(float(np.mean(e ** 2)))), per


def metered_transformers(grid: BaseCaseGrid, meter_columns: dict[str, np.ndarray]) -> list[str]:
    """Transformers whose LV area (:meth:`gridmarket.topology.Topology.lv_areas`) holds a meter
    (names without ``Transformer.``, sorted): the taps ``taps="auto"`` fits."""
    metered = {grid.node_names[int(c)].rsplit(".", 1)[0] for cols in meter_columns.values() for c in cols}
    areas = grid.net.topology.lv_areas()
    return sorted(name.split(".", 1)[-1] for name, buses in areas.items() if metered.intersection(buses))


def calibrate(case: Case, measured: str | Path | pd.DataFrame | Measurements, *, taps: Sequence[str] | str = (),
              producers: bool = False, grid: BaseCaseGrid | None = None) -> CalibrationResult:
    """Fit the source voltage (and the taps of ``taps``) of ``case`` to measured voltages.

    Parameters
    ----------
    case : Case
    measured : path, DataFrame or Measurements
        The measurements (columns and rules in the module docstring).
    taps : sequence of str, or "auto"
        Transformers whose primary tap is fitted too (names, ``Transformer.`` optional); ``"auto"``:
        every transformer with a meter in its LV area (:func:`metered_transformers`).
    producers : bool
        Simulate producers at their available power (default: at zero).
    grid : BaseCaseGrid, optional
        The compiled base case (compiled here when not given); left at the fitted values.

    Returns
    -------
    CalibrationResult

    Raises
    ------
    GridmarketError
        Bad measurements, unknown meters or transformers, a fit whose power flows fail.
    """
    g = grid or BaseCaseGrid(case)
    meas = measured if isinstance(measured, Measurements) else read_measurements(measured, case)
    meters = list(dict.fromkeys(meas.meter))
    cols = _meter_columns(g, meters)
    steps = np.unique(meas.step)
    row_of = {int(s): i for i, s in enumerate(steps)}
    rows = np.array([row_of[int(s)] for s in meas.step])
    kw = g.base_kw(producers=producers)[steps]
    # one sparse averaging matrix: measurement i = mean of its meter's node columns in row rows[i]
    owners = [cols[m] for m in meas.meter]
    if isinstance(taps, str):
        taps = metered_transformers(g, cols) if taps.lower() == "auto" else [taps]
    tap_names = [str(t).split(".", 1)[-1] if str(t).lower().startswith("transformer.") else str(t) for t in taps]
    tap0 = [_tap_of(g, t) for t in tap_names]
    s0 = g.source_pu
    evaluations = 0

    def simulate(x: np.ndarray) -> np.ndarray:
        nonlocal evaluations
        g.set_source(float(x[0]))
        for name, tap in zip(tap_names, x[1:], strict=True):
            _set_tap(g, name, float(tap))
        v = g.solve(kw).v_pu
        evaluations += 1
        return np.array([np.nanmean(v[r, c]) for r, c in zip(rows, owners, strict=True)])

    x0 = np.array([s0, *tap0], dtype=float)
    if not math.isfinite(s0):
        msg = "cannot read the feeder's source voltage (Vsource.source.pu)"
        raise GridmarketError(msg)
    before = simulate(x0)
    if np.isnan(before).any():
        msg = "some meters read no voltage in the simulation (a de-energised bus?)"
        raise GridmarketError(msg)
    lo = [SOURCE_BOUNDS[0], *([TAP_BOUNDS[0]] * len(tap_names))]
    hi = [SOURCE_BOUNDS[1], *([TAP_BOUNDS[1]] * len(tap_names))]
    start = np.clip(x0, lo, hi)
    # taps are pulled weakly toward the feeder's own values, so the source takes the shift that all
    # meters share and a tap only what its own meters add (without it, source and taps trade off)
    prior = TAP_PRIOR * math.sqrt(len(meas.v_pu))

    def residuals(x: np.ndarray) -> np.ndarray:
        return np.concatenate([simulate(x) - meas.v_pu, prior * (x[1:] - np.asarray(tap0))])

    fit = least_squares(residuals, start, bounds=(lo, hi), method="trf",
                        diff_step=1e-4, x_scale=0.01, xtol=1e-10, ftol=1e-12, gtol=1e-12, max_nfev=60)
    after = simulate(fit.x)
    b0, r0, per0 = _errors(before, meas, meters)
    b1, r1, per1 = _errors(after, meas, meters)
    per = pd.DataFrame({"meter": meters, "n": per0["n"].to_numpy(dtype=int),
                        "bias_before": per0["bias"].to_numpy(), "rmse_before": per0["rmse"].to_numpy(),
                        "bias_after": per1["bias"].to_numpy(), "rmse_after": per1["rmse"].to_numpy()})
    notes = []
    for i, (lo_i, hi_i) in enumerate(zip(lo, hi, strict=True)):
        if fit.x[i] <= lo_i + 1e-9 or fit.x[i] >= hi_i - 1e-9:
            what = "source voltage" if i == 0 else f"tap of {tap_names[i - 1]}"
            notes.append(f"note: the fitted {what} sits at its bound [{lo_i}, {hi_i}]; check the measurements")
    return CalibrationResult(
        source_pu_before=s0, source_pu=float(fit.x[0]), taps_before=dict(zip(tap_names, tap0, strict=True)),
        taps={n: float(t) for n, t in zip(tap_names, fit.x[1:], strict=True)}, bias_before=b0, rmse_before=r0,
        bias_after=b1, rmse_after=r1, per_meter=per, points=len(meas.v_pu), dropped=meas.dropped,
        evaluations=evaluations, notes=notes)


_NETWORK = re.compile(r"^\s*\[network\]\s*(#.*)?$")
_SECTION = re.compile(r"^\s*\[[^\]]+\]\s*(#.*)?$")
_SOURCE = re.compile(r"^(\s*)source_pu\s*=.*$")


def write_source_pu(case_dir: str | Path, source_pu: float) -> Path:
    """Set ``[network] source_pu`` in ``case_dir/case.toml``, changing nothing else (comments and
    every other line stay as they are); the file is re-read and validated.

    Returns
    -------
    pathlib.Path
        The case.toml written.

    Raises
    ------
    GridmarketError
        No case.toml, no ``[network]`` section, or a value the schema refuses.
    """
    import tomllib

    from gridmarket.case.schema import CaseToml

    path = Path(case_dir).expanduser() / "case.toml"
    if not path.is_file():
        msg = f"{path} not found: not a case folder"
        raise GridmarketError(msg)
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if _NETWORK.match(ln)), None)
    if start is None:
        msg = f"{path} has no [network] section"
        raise GridmarketError(msg)
    end = next((i for i in range(start + 1, len(lines)) if _SECTION.match(lines[i])), len(lines))
    value = f"{float(source_pu):.6f}".rstrip("0").rstrip(".")
    new = f"source_pu = {value}\n"
    hit = next((i for i in range(start + 1, end) if _SOURCE.match(lines[i])), None)
    if hit is not None:
        lines[hit] = _SOURCE.sub(lambda m: f"{m.group(1)}source_pu = {value}", lines[hit].rstrip("\n")) + "\n"
    else:
        last = max((i for i in range(start + 1, end) if lines[i].strip() and not lines[i].lstrip().startswith("#")),
                   default=start)
        if not lines[last].endswith("\n"):
            lines[last] += "\n"
        lines.insert(last + 1, new)
    out = "".join(lines)
    try:
        CaseToml.model_validate(tomllib.loads(out))
    except Exception as exc:  # noqa: BLE001 - pydantic or TOML: either way the value is refused
        msg = f"{path}: source_pu = {value} is refused: {exc}"
        raise GridmarketError(msg) from exc
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(out, encoding="utf-8")
    tmp.replace(path)
    return path
