"""Profile readers and resampling helpers for the case builders.

All resampling here is by block means: a step's value is the mean of the finer samples
that fall inside it, i.e. the mean power over the step [kW] (shared CASE_FORMAT.md,
``profiles.csv``). Samples are taken as interval-beginning: sample ``i`` of a series with
resolution ``r`` minutes covers ``[i*r, (i+1)*r)`` minutes after midnight.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gridmarket.errors import GridmarketError

__all__ = [
    "block_mean",
    "to_hourly",
    "read_column_file",
    "read_pq_csv",
    "ausnet_days",
    "clearest_day",
    "pvlib_hourly_day",
    "spread",
]

GOLDEN = (5**0.5 - 1) / 2  #: 0.618..., step of the deterministic low-discrepancy sequence


def block_mean(values: np.ndarray, factor: int) -> np.ndarray:
    """Mean of consecutive blocks of ``factor`` samples along the last axis.

    Parameters
    ----------
    values : numpy.ndarray
        Samples, shape (..., n), n a multiple of ``factor``; same unit as the result.
    factor : int
        Samples per block (e.g. 60 one-minute samples per hour).

    Returns
    -------
    numpy.ndarray
        Shape (..., n // factor): the block means.
    """
    values = np.asarray(values, dtype=float)
    n = values.shape[-1]
    if factor < 1 or n % factor:
        msg = f"cannot average {n} samples in blocks of {factor}: {n} is not a multiple of {factor}"
        raise GridmarketError(msg)
    return values.reshape(*values.shape[:-1], n // factor, factor).mean(axis=-1)


def to_hourly(values: np.ndarray, *, minutes: float) -> np.ndarray:
    """Average a one-day series at ``minutes`` resolution to 24 hourly means.

    Parameters
    ----------
    values : numpy.ndarray
        Shape (..., 1440 / minutes), e.g. power [kW] or per-unit output [kW/kWp].
    minutes : float
        Resolution of ``values`` [min]; must divide 60.

    Returns
    -------
    numpy.ndarray
        Shape (..., 24), hourly means, same unit as ``values``.
    """
    per_hour = 60.0 / minutes
    if per_hour != int(per_hour):
        msg = f"resolution must divide one hour, got {minutes} min"
        raise GridmarketError(msg)
    values = np.asarray(values, dtype=float)
    expected = 24 * int(per_hour)
    if values.shape[-1] != expected:
        msg = f"a one-day series at {minutes} min needs {expected} samples, got {values.shape[-1]}"
        raise GridmarketError(msg)
    return block_mean(values, int(per_hour))


def read_column_file(path: Path) -> np.ndarray:
    """Read a one-column text file of floats (e.g. ``load_profile_1.txt``, kW per minute)."""
    try:
        return np.loadtxt(path, dtype=float, ndmin=1)
    except (OSError, ValueError) as exc:
        msg = f"cannot read profile {path}: {exc}"
        raise GridmarketError(msg) from exc


def read_pq_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a headerless two-column CSV of P [kW] and Q [kvar] (Costa Rica AMI loadshapes).

    Returns
    -------
    p_kw, q_kvar : numpy.ndarray
        The two columns.
    """
    try:
        a = np.loadtxt(path, dtype=float, delimiter=",", ndmin=2)
    except (OSError, ValueError) as exc:
        msg = f"cannot read loadshape {path}: {exc}"
        raise GridmarketError(msg) from exc
    if a.shape[1] < 2:
        msg = f"loadshape {path} needs two columns (P kW, Q kvar), got {a.shape[1]}"
        raise GridmarketError(msg)
    return a[:, 0], a[:, 1]


def ausnet_days(path: Path) -> np.ndarray:
    """Load the AusNet residential PV year: shape (365, 48), 30-min, normalised to max 1 [pu]."""
    try:
        a = np.load(path)
    except (OSError, ValueError) as exc:
        msg = f"cannot read AusNet PV data {path}: {exc}"
        raise GridmarketError(msg) from exc
    if a.ndim != 2 or a.shape[1] != 48:
        msg = f"AusNet PV data {path} should have shape (365, 48), got {a.shape}"
        raise GridmarketError(msg)
    return np.asarray(a, dtype=float)


def clearest_day(days: np.ndarray) -> int:
    """Index of the clearest day: least roughness per unit of energy.

    Roughness is the sum of absolute second differences of the day's series; a clear day
    has a smooth bell curve. The score is roughness / daily sum; ties go to the lower index.

    Parameters
    ----------
    days : numpy.ndarray
        Shape (n_days, n_samples), per-unit output.

    Returns
    -------
    int
        0-based day index.
    """
    total = days.sum(axis=1)
    rough = np.abs(np.diff(days, n=2, axis=1)).sum(axis=1)
    score = np.where(total > 0, rough / np.where(total > 0, total, 1.0), np.inf)
    return int(np.argmin(score))


def pvlib_hourly_day(path: Path, date: str) -> np.ndarray:
    """The 24 hourly values of ``p_ac_pu`` [kW/kWp] on ``date`` from the pvlib Costa Rica file."""
    try:
        df = pd.read_csv(path, index_col=0, parse_dates=True)
    except (OSError, ValueError) as exc:
        msg = f"cannot read pvlib PV data {path}: {exc}"
        raise GridmarketError(msg) from exc
    day = df.loc[date, "p_ac_pu"].to_numpy(dtype=float)
    if day.shape != (24,):
        msg = f"{path} has {day.shape[0]} hourly rows on {date}, expected 24"
        raise GridmarketError(msg)
    return day


def spread(k: int, lo: float, hi: float, *, offset: float = 0.0) -> float:
    """Deterministic, evenly spread value in [lo, hi] for the k-th agent.

    Uses the golden-ratio sequence ``frac(offset + k * 0.618...)``, so neighbouring agents
    get well separated values without a random generator. Rounded to 4 decimals.
    """
    u = (offset + k * GOLDEN) % 1.0
    return round(lo + (hi - lo) * u, 4)
