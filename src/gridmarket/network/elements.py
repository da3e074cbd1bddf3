"""Dispatched elements: :class:`ElementSet` (element pointers resolved once, grouped by class)
and the pure checks and conversions that turn a ``kw`` array into per-class property values.

Sign convention (load reference): Loads and Storage consume ``kw`` (negative = a battery
discharging), PVSystems and Generators produce it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from gridmarket.errors import NetworkError
from gridmarket.network._dss import _Batch

__all__ = ["SUPPORTED_CLASSES", "ElementSet"]

#: Element classes the engine can dispatch, keyed by lower-case class name.
SUPPORTED_CLASSES: dict[str, str] = {
    "load": "Load",
    "pvsystem": "PVSystem",
    "generator": "Generator",
    "storage": "Storage",
}
_RATING_RTOL = 1e-6  # tolerance when checking set powers against element ratings


@dataclass(frozen=True, eq=False)
class _ClassGroup:
    """Elements of one OpenDSS class inside an :class:`ElementSet`."""

    cls: str  #: OpenDSS class name, e.g. "Load"
    cols: np.ndarray  #: columns of the ``kw`` array that belong to this class
    batch: _Batch  #: DSS C-API batch over these elements, in ``cols`` order
    q_ratio: np.ndarray  #: own kvar/kW ratio (Load, Generator) [-]
    p_max_kw: np.ndarray  #: largest power the element can take or give [kW]; inf = no limit
    p_ref_kw: np.ndarray  #: PV: Pmpp [kW] (irradiance = kW / Pmpp); else 1
    own_vminpu: np.ndarray  #: the element's own vminpu [pu] (before the engine's band)
    own_vmaxpu: np.ndarray  #: the element's own vmaxpu [pu]



@dataclass(frozen=True, eq=False)
class ElementSet:
    """Elements resolved once by :meth:`OpenDSSNetwork.resolve`.

    Holds element pointers grouped by class so that setting the powers of a step needs no
    look-up by name. Valid only for the network that created it.

    Attributes
    ----------
    names : tuple of str
        Canonical element names, ``"Class.name"`` (class as OpenDSS spells it, name lower
        case), in the order of the columns of the ``kw`` array.
    """

    names: tuple[str, ...]
    _groups: tuple[_ClassGroup, ...] = field(repr=False)
    _owner: object = field(repr=False)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def classes(self) -> tuple[str, ...]:
        """OpenDSS class of each element, in column order."""
        return tuple(n.split(".", 1)[0] for n in self.names)



def _canonical(element: str) -> str:
    """``"Class.name"`` with the class spelled as OpenDSS does and the name lower case."""
    cls, _, name = element.strip().partition(".")
    return f"{SUPPORTED_CLASSES.get(cls.lower(), cls)}.{name.lower()}"



def _q_ratio(kw: float, kvar: float, pf: float) -> float:
    """kvar/kW of an element from its definition; from ``pf`` when kW is 0 [-]."""
    if abs(kw) > 1e-12:
        return kvar / kw
    if pf == 0 or abs(pf) >= 1:
        return 0.0
    return math.copysign(math.sqrt(1.0 / pf**2 - 1.0), pf)


def _as_steps(a: np.ndarray, n: int, what: str, steps: int | None = None) -> np.ndarray:
    """``a`` as a float (steps, n) array; a 1-D array is one step (or broadcast to ``steps``)."""
    arr = np.asarray(a, dtype=float)
    if arr.ndim == 1:
        arr = arr[None, :] if steps is None else np.broadcast_to(arr, (steps, arr.shape[0]))
    if arr.ndim != 2 or arr.shape[1] != n or (steps is not None and arr.shape[0] != steps):
        want = f"({'steps' if steps is None else steps}, {n})"
        msg = f"{what} must have shape {want}, got {np.shape(a)}"
        raise ValueError(msg)
    return arr


def _series_inputs(n: int, kw: np.ndarray, kvar: np.ndarray | None, pf: np.ndarray | None
                   ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``kw`` [kW], ``kvar`` [kvar] or ``pf`` of a series as (steps, n) arrays, checked: finite kW,
    the same steps for all, not both kvar and pf (ValueError otherwise)."""
    kw2 = _as_steps(kw, n, "kw")
    if not np.all(np.isfinite(kw2)):
        msg = "kw holds NaN or infinite values"
        raise ValueError(msg)
    steps = kw2.shape[0]
    kvar2 = None if kvar is None else _as_steps(kvar, n, "kvar", steps)
    pf2 = None if pf is None else _as_steps(pf, n, "pf", steps)
    if kvar2 is not None and pf2 is not None:
        msg = "give kvar or pf, not both"
        raise ValueError(msg)
    return kw2, kvar2, pf2


def _check_ratings(p: np.ndarray, g: _ClassGroup, names: tuple[str, ...]) -> None:
    """Raise if a set power exceeds the element's rating (or PV is asked to consume)."""
    limit = g.p_max_kw * (1 + _RATING_RTOL) + 1e-9
    over = np.abs(p) > limit
    if g.cls == "PVSystem":
        over |= p < -1e-9
    if over.any():
        t, k = map(int, np.argwhere(over)[0])
        name = names[int(g.cols[k])]
        what = "0 .. " if g.cls == "PVSystem" else "± "
        msg = (f"{name}: set power {p[t, k]:.6g} kW at step {t} is outside its rating "
               f"{what}{g.p_max_kw[k]:.6g} kW ({int(over.sum())} value(s) out of range)")
        raise NetworkError(msg)


def _check_unity(g: _ClassGroup, names: tuple[str, ...], kvar: np.ndarray | None,
                 pf: np.ndarray | None) -> None:
    """PV and Storage run at unity power factor: refuse a kvar or pf asking otherwise."""
    for arr, neutral in ((kvar, 0.0), (pf, 1.0)):
        if arr is None:
            continue
        sub = arr[:, g.cols]
        bad = np.isfinite(sub) & (sub != neutral)
        if bad.any():
            k = int(np.argwhere(bad)[0][1])
            msg = f"{names[int(g.cols[k])]} runs at unity power factor; kvar/pf cannot be set for it"
            raise ValueError(msg)


def _plan_group(g: _ClassGroup, names: tuple[str, ...], kw: np.ndarray,
                kvar: np.ndarray | None, pf: np.ndarray | None
                ) -> list[tuple[_Batch, bytes, np.ndarray]]:
    """Per-step property values of one class: (batch, property, (steps, n) array)."""
    p = kw[:, g.cols]
    _check_ratings(p, g, names)
    if g.cls == "PVSystem":
        _check_unity(g, names, kvar, pf)
        return [(g.batch, b"irradiance", np.ascontiguousarray(p / g.p_ref_kw))]
    if g.cls == "Storage":
        _check_unity(g, names, kvar, pf)
        return [(g.batch, b"kW", np.ascontiguousarray(-p))]  # Storage: discharge > 0
    ratio = np.broadcast_to(g.q_ratio, p.shape)
    if pf is not None:
        f = pf[:, g.cols]
        given = np.isfinite(f)
        if np.any(given & ((f <= 0) | (f > 1))):
            msg = f"pf must be in (0, 1], got {f[given & ((f <= 0) | (f > 1))][0]}"
            raise ValueError(msg)
        safe = np.where(given, f, 1.0)
        ratio = np.where(given, np.sqrt(1.0 / safe**2 - 1.0), ratio)
    q = p * ratio
    if kvar is not None:
        q = np.where(np.isfinite(kvar[:, g.cols]), kvar[:, g.cols], q)
    return [(g.batch, b"kW", np.ascontiguousarray(p)),
            (g.batch, b"kvar", np.ascontiguousarray(q))]
