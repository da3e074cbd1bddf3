"""Demand and PV profiles of a feeder's loads for :func:`gridmarket.cases.generic.new_case`.

Rules (the module docstring of :mod:`gridmarket.cases.generic` repeats them for the user):
a load's profile column [kW, mean over the step] comes from its own loadshape, chosen by
``loadshape`` (``"auto"``: ``daily``, else ``yearly``, else ``duty``); sample ``i`` of a shape
with interval Δ covers hours ``[iΔ, (i+1)Δ)`` and the shape repeats after ``npts·Δ`` h; shapes
given by an ``hour`` array are interpolated linearly. A load without a loadshape follows
:data:`DEFAULT_RESIDENTIAL_SHAPE` × its kW; ``status=fixed`` keeps its kW.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gridmarket.errors import GridmarketError
from gridmarket.network.inspect import FeederInfo, LoadInfo, LoadShapeInfo, PVInfo

__all__ = ["DEFAULT_RESIDENTIAL_SHAPE", "LoadProfile", "default_pv_shape", "load_profiles", "shape_of",
           "shape_step_means", "step_means_of"]

#: Generic residential day used for loads without a loadshape: 24 hourly multipliers of the
#: load's kW (hour h covers h:00-h+1:00), peak 1.0 at 19:00, a morning peak at 07:00-09:00 and an
#: evening peak at 18:00-21:00; daily energy 13.9 × kW kWh. Illustrative, not measured.
DEFAULT_RESIDENTIAL_SHAPE: tuple[float, ...] = (
    0.40, 0.33, 0.30, 0.29, 0.29, 0.33, 0.47, 0.70, 0.75, 0.62, 0.55, 0.52,
    0.52, 0.50, 0.48, 0.50, 0.58, 0.72, 0.90, 1.00, 0.95, 0.83, 0.68, 0.52,
)

_PV_PEAK = 0.8  #: [kW/kWp] peak of the default clear-sky PV shape
_SUBSAMPLES = 60  #: samples per step when averaging a continuous shape


def shape_step_means(values: np.ndarray, *, interval_h: float, steps: int, step_hours: float,
                     start_hour: float = 0.0, hours: np.ndarray | None = None) -> np.ndarray:
    """Mean of a periodic loadshape over each step.

    Parameters
    ----------
    values : numpy.ndarray
        Samples, shape (n,), any unit (the result has the same unit).
    interval_h : float
        Sample interval Δ [h]: sample ``i`` holds over ``[iΔ, (i+1)Δ)``; the shape repeats
        every ``nΔ`` h. Use 0 with ``hours``.
    steps, step_hours : int, float
        The case's steps and their length Δt [h].
    start_hour : float
        Hour of the shape's clock at which step 0 begins [h].
    hours : numpy.ndarray, optional
        Time of each sample [h] for a variable-interval shape (``interval_h == 0``): values
        in between are interpolated linearly and the shape repeats every ``hours[-1]`` h.

    Returns
    -------
    numpy.ndarray
        Shape (steps,): the exact mean over ``[start_hour + sΔt, start_hour + (s+1)Δt)``
        (fixed interval), or the mean of 60 evenly spaced samples in it (``hours``).
    """
    v = np.asarray(values, dtype=float).reshape(-1)
    edges = start_hour + step_hours * np.arange(steps + 1)
    if interval_h > 0:
        period = v.size * interval_h
        cum = np.concatenate([[0.0], np.cumsum(v) * interval_h])  # energy at i·Δ
        grid = interval_h * np.arange(v.size + 1)

        def energy(t: np.ndarray) -> np.ndarray:
            k = np.floor(t / period)
            return k * cum[-1] + np.interp(t - k * period, grid, cum)

        e = energy(edges)
        return np.diff(e) / step_hours
    if hours is None or np.asarray(hours).size != v.size or v.size < 2:
        msg = "a variable-interval loadshape needs an hour array of the same length as its values"
        raise GridmarketError(msg)
    h = np.asarray(hours, dtype=float)
    period = float(h[-1])
    if not period > 0:
        msg = f"a loadshape's hour array must end after hour 0, got {period}"
        raise GridmarketError(msg)
    t = edges[:-1, None] + step_hours * (np.arange(_SUBSAMPLES) + 0.5)[None, :] / _SUBSAMPLES
    return np.interp(np.mod(t, period), h, v).mean(axis=1)


def default_pv_shape(steps: int, *, step_hours: float = 1.0, start_hour: float = 0.0) -> np.ndarray:
    """Clear-sky PV output per kWp, mean over each step [kW/kWp].

    ``0.8 · sin(π (h − 6) / 12)^1.2`` for a clock hour ``h`` between 06:00 and 18:00, zero
    otherwise (peak 0.8 kW/kWp at noon; 4.9 kWh/kWp a day); step ``s`` covers clock hours
    ``[start_hour + sΔt, start_hour + (s+1)Δt)`` modulo 24, averaged over 60 samples.
    """
    edges = start_hour + step_hours * np.arange(steps)
    t = edges[:, None] + step_hours * (np.arange(_SUBSAMPLES) + 0.5)[None, :] / _SUBSAMPLES
    h = np.mod(t, 24.0)
    bell = _PV_PEAK * np.clip(np.sin(np.pi * (h - 6.0) / 12.0), 0.0, None) ** 1.2
    return bell.mean(axis=1)


def shape_of(load_or_pv: LoadInfo | PVInfo, choice: str) -> str:
    """Name of the loadshape ``choice`` picks for a load or PV (``""``: none)."""
    order = {"auto": ("daily", "yearly", "duty"), "daily": ("daily",), "yearly": ("yearly",),
             "duty": ("duty",)}[choice]
    for attr in order:
        name = getattr(load_or_pv, attr)
        if name:
            return str(name)
    return ""


@dataclass(frozen=True)
class LoadProfile:
    """A load's demand per step."""

    p_kw: np.ndarray  #: (steps,) [kW]
    q_kvar: np.ndarray | None  #: (steps,) [kvar] when the shape has Qmult
    source: str  #: "loadshape <name>" | "fixed" | "default shape"


def step_means_of(shape: LoadShapeInfo, mult: np.ndarray, steps: int, step_hours: float, start_hour: float
                  ) -> np.ndarray:
    """:func:`shape_step_means` of the multipliers ``mult`` of ``shape`` (same unit)."""
    return shape_step_means(mult, interval_h=shape.interval_h, steps=steps, step_hours=step_hours,
                            start_hour=start_hour, hours=shape.hours)


def load_profiles(info: FeederInfo, *, steps: int, step_hours: float = 1.0, start_hour: float = 0.0,
                  loadshape: str = "auto") -> dict[str, LoadProfile]:
    """Demand of every load of ``info`` per step [kW] (the rules of the module docstring).

    Returns
    -------
    dict
        Load name -> profile with ``p_kw`` (steps,) [kW], ``q_kvar`` or None, and ``source``.
    """
    if loadshape not in ("auto", "daily", "yearly", "duty"):
        msg = f"loadshape must be 'auto', 'daily', 'yearly' or 'duty', got {loadshape!r}"
        raise GridmarketError(msg)
    default = np.asarray(DEFAULT_RESIDENTIAL_SHAPE)
    out: dict[str, LoadProfile] = {}
    for ld in info.loads:
        if ld.status == "fixed":
            out[ld.name] = LoadProfile(np.full(steps, ld.kw), np.full(steps, ld.kvar), "fixed")
            continue
        name = shape_of(ld, loadshape)
        shape = info.loadshapes.get(name) if name else None
        if shape is None:
            p = ld.kw * shape_step_means(default, interval_h=1.0, steps=steps, step_hours=step_hours,
                                         start_hour=start_hour)
            out[ld.name] = LoadProfile(p, None, "default shape")
            continue
        p = step_means_of(shape, shape.p_mult, steps, step_hours, start_hour)
        q = None if shape.q_mult is None else step_means_of(shape, shape.q_mult, steps, step_hours, start_hour)
        if not shape.use_actual:
            p = p * ld.kw
            q = None if q is None else q * ld.kvar
        out[ld.name] = LoadProfile(p, q, f"loadshape {shape.name}")
    return out


