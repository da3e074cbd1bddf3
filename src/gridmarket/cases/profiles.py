"""Profile readers and resampling helpers for the case builders.

All resampling here is by block means: a step's value is the mean of the finer samples
that fall inside it, i.e. the mean power over the step [kW] (shared CASE_FORMAT.md,
``profiles.csv``). Samples are taken as interval-beginning: sample ``i`` of a series with
resolution ``r`` minutes covers ``[i*r, (i+1)*r)`` minutes after midnight.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    "pvlib_hourly_days",
    "rotate_days",
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


def pvlib_hourly_days(path: Path, start: str, days: int) -> np.ndarray:
    """``days`` consecutive days of hourly ``p_ac_pu`` [kW/kWp] from the pvlib Costa Rica year.

    Day ``d`` is the file's day number ``(doy(start) − 1 + d) mod n_days``: the run wraps
    from 31 December to 1 January of the file's year (a clear-sky model year, so it repeats).
    The calendar date of ``start`` picks the first day; its year is ignored.

    Returns
    -------
    numpy.ndarray
        Shape (24 · days,).
    """
    if days < 1:
        msg = f"days must be >= 1, got {days!r}"
        raise GridmarketError(msg)
    try:
        df = pd.read_csv(path, index_col=0, parse_dates=True)
    except (OSError, ValueError) as exc:
        msg = f"cannot read pvlib PV data {path}: {exc}"
        raise GridmarketError(msg) from exc
    values = df["p_ac_pu"].to_numpy(dtype=float)
    if values.size % 24:
        msg = f"{path} has {values.size} hourly rows, not whole days"
        raise GridmarketError(msg)
    year = values.reshape(-1, 24)
    first = pd.Timestamp(start)
    stamp = df.index[0]
    try:
        first_doy = pd.Timestamp(year=stamp.year, month=first.month, day=first.day).day_of_year - 1
    except ValueError:  # 29 February in a file of a common year
        first_doy = pd.Timestamp(year=stamp.year, month=3, day=1).day_of_year - 1
    rows = (first_doy + np.arange(days)) % year.shape[0]
    return year[rows].reshape(-1)


def rotate_days(day_kw: np.ndarray, groups: np.ndarray, days: int) -> np.ndarray:
    """Tile one measured day per customer over ``days`` days, rotating shapes day to day.

    Day 0 is every customer's own measured day. On day ``d`` customer ``i`` takes the
    *shape* (the day divided by its mean) of the customer ``d`` places further along, cyclically,
    among the customers of its group with non-zero energy, scaled to its own mean power and
    capped at its own measured peak (:func:`cap_at_peak`): the energy per day and the peak of
    every customer stay its own, the timing changes from day to day. (Uncapped, a large customer
    taking the shape of one whose day is a single spike reached 20× its peak: 95 kW behind a 25 kVA
    transformer and 0.72 pu on the Costa Rica feeder.) Customers with zero energy stay zero.

    Parameters
    ----------
    day_kw : numpy.ndarray
        Shape (n, 24): each customer's hourly mean power over its measured day [kW].
    groups : numpy.ndarray
        Shape (n,): a label per customer (e.g. sector ``R``/``C``); shapes rotate within a group.
    days : int
        Days to produce.

    Returns
    -------
    numpy.ndarray
        Shape (24 · days, n) [kW].
    """
    day_kw = np.asarray(day_kw, dtype=float)
    groups = np.asarray(groups)
    n = day_kw.shape[0]
    if day_kw.ndim != 2 or groups.shape != (n,):
        msg = f"day_kw must be (n, hours) and groups (n,), got {day_kw.shape} and {groups.shape}"
        raise GridmarketError(msg)
    if days < 1:
        msg = f"days must be >= 1, got {days!r}"
        raise GridmarketError(msg)
    hours = day_kw.shape[1]
    mean = day_kw.mean(axis=1)
    donor = np.tile(np.arange(n), (days, 1))  # donor[d, i]: whose shape customer i uses on day d
    for g in np.unique(groups):
        pool = np.flatnonzero((groups == g) & (mean > 0))
        for pos, i in enumerate(pool):
            donor[:, i] = pool[(pos + np.arange(days)) % pool.size]
    safe = np.where(mean > 0, mean, 1.0)
    shape = day_kw / safe[:, None]  # (n, hours), mean 1 for customers with energy
    out = np.empty((days, hours, n))
    for d in range(days):
        out[d] = (shape[donor[d]] * mean[:, None]).T
    out = cap_at_peak(out, day_kw.max(axis=1))
    out[0] = day_kw.T  # day 0 exactly as measured
    return out.reshape(days * hours, n)


def cap_at_peak(days_kw: np.ndarray, peak_kw: np.ndarray, *, floor: float = 1e-3) -> np.ndarray:
    """Each customer's days (days, hours, n) [kW] with every hour at most its ``peak_kw`` (n,) and
    the energy of each day kept: ``x_h = min(k·(y_h + f), peak)`` with one ``k`` per day and
    customer, found by bisection (the energy is increasing in ``k``). ``f = floor · mean`` lifts
    the hours of a day that the shape leaves empty just enough that the energy always fits under
    the peak (the peak is at least the mean). Days already under the peak are returned as they are.
    """
    y = np.asarray(days_kw, dtype=float)
    peak = np.asarray(peak_kw, dtype=float)[None, None, :]
    energy = y.sum(axis=1, keepdims=True)  # (days, 1, n)
    over = (y > peak).any(axis=1, keepdims=True) & (energy > 0)
    if not over.any():
        return y
    mean = energy / y.shape[1]
    base = y + floor * mean
    lo = np.zeros_like(energy)
    # at k = hi every hour reaches the peak (base >= f·mean), 24 peaks hold the day's energy
    hi = peak / np.maximum(floor * mean, 1e-300) + 1.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        fits = np.minimum(mid * base, peak).sum(axis=1, keepdims=True) <= energy
        lo = np.where(fits, mid, lo)
        hi = np.where(fits, hi, mid)
    # the last step to the exact energy: spread the rounding over the hours under the peak
    x = np.minimum(lo * base, peak)
    free = x < peak
    short = energy - x.sum(axis=1, keepdims=True)
    x = x + np.where(free, short / np.maximum(free.sum(axis=1, keepdims=True), 1), 0.0)
    return np.where(over, x, y)


def spread(k: int, lo: float, hi: float, *, offset: float = 0.0) -> float:
    """Deterministic, evenly spread value in [lo, hi] for the k-th agent.

    Uses the golden-ratio sequence ``frac(offset + k * 0.618...)``, so neighbouring agents
    get well separated values without a random generator. Rounded to 4 decimals.
    """
    u = (offset + k * GOLDEN) % 1.0
    return round(lo + (hi - lo) * u, 4)


def consecutive_runs(nums: Sequence[int]) -> list[tuple[int, int]]:
    """Group sorted integers into runs of consecutive values: ``[1, 2, 3, 7] -> [(1, 3), (7, 7)]``."""
    runs: list[tuple[int, int]] = []
    for n in sorted(nums):
        if runs and n == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs
