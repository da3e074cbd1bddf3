"""Read-only inspection of an OpenDSS feeder: its loads, loadshapes, PV systems, transformers,
buses and series elements, as plain frozen dataclasses.

Like the engine (:mod:`gridmarket.network.opendss`) it reaches OpenDSS through
:mod:`gridmarket.network._dss`, the one module that imports :mod:`opendssdirect`. It never
changes a feeder: it compiles the master in a private DSS context, runs one snapshot power
flow so that buses, voltage bases and node angles exist, reads everything once and lets the
context go. Case builders
(:mod:`gridmarket.cases.generic`) and the sweep (:mod:`gridmarket.sweep`) work on the
:class:`FeederInfo` it returns.

Everything is read through OpenDSS itself, so the feeder's own rules apply: loadshapes given
inline, with ``file=``, ``sngfile=``/``dblfile=``, as ``mult`` or ``Pmult``, with a fixed
``interval`` or an ``hour`` array, ``useactual``, a ``batchedit`` after the definition; a load's
``daily`` shape standing in for a missing ``yearly`` one (OpenDSS's own rule), and so on.

Names are lower case (OpenDSS's spelling). Powers in kW / kvar, voltages in kV.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gridmarket.errors import NetworkError
from gridmarket.network._dss import (
    KM_PER_LINE_UNIT,
    _DSSException,
    compile_master,
    new_context,
    private_folder,
    remove_folder,
)
from gridmarket.topology import Edge, Topology

__all__ = [
    "BusInfo",
    "FeederInfo",
    "LoadInfo",
    "LoadShapeInfo",
    "PVInfo",
    "SeriesElement",
    "inspect_feeder",
]

_PHASE_NODES = (1, 2, 3)
_STATUS = {0: "variable", 1: "fixed", 2: "exempt"}


@dataclass(frozen=True)
class LoadShapeInfo:
    """One ``Loadshape`` as OpenDSS holds it after compiling.

    Attributes
    ----------
    name : str
    interval_h : float
        Fixed sample interval [h]; 0 when the shape gives an ``hour`` array instead.
    p_mult : numpy.ndarray
        Active-power multipliers (``mult`` / ``Pmult``), shape (npts,) [-], or actual kW
        when ``use_actual``.
    q_mult : numpy.ndarray or None
        Reactive-power multipliers (``Qmult``), shape (npts,), or None when the shape has none.
    hours : numpy.ndarray or None
        Time of each sample [h] when ``interval_h == 0``, else None.
    use_actual : bool
        True: the multipliers are the actual kW (kvar); false: they multiply the load's kW.
    """

    name: str
    interval_h: float
    p_mult: np.ndarray
    q_mult: np.ndarray | None
    hours: np.ndarray | None
    use_actual: bool

    @property
    def npts(self) -> int:
        return int(self.p_mult.size)


@dataclass(frozen=True)
class LoadInfo:
    """One enabled ``Load`` of the feeder.

    Attributes
    ----------
    name : str
        Element name (lower case), without the ``Load.`` class.
    bus : str
        Bus name without nodes.
    bus1 : str
        Bus spec with nodes as OpenDSS holds it, e.g. ``"34.1"``, ``"buslvmar158.1.2"``.
    phases : int
    kv : float
        Rated voltage as written (``kV=``) [kV]: line-to-neutral for a 1-phase wye load
        between a phase and neutral, across its nodes otherwise.
    kw, kvar : float
        Base power [kW], [kvar] (what loadshape multipliers multiply).
    delta : bool
        ``conn=delta``.
    status : str
        ``"variable"``, ``"fixed"`` (loadshapes ignored) or ``"exempt"``.
    daily, yearly, duty : str
        Loadshape names, ``""`` when none (OpenDSS fills ``yearly`` from ``daily``).
    """

    name: str
    bus: str
    bus1: str
    phases: int
    kv: float
    kw: float
    kvar: float
    delta: bool
    status: str
    daily: str
    yearly: str
    duty: str

    @property
    def nodes(self) -> tuple[int, ...]:
        """Node numbers of ``bus1`` (empty when the bus is given without nodes)."""
        return tuple(int(n) for n in self.bus1.split(".")[1:] if n.isdigit())


@dataclass(frozen=True)
class PVInfo:
    """One enabled ``PVSystem`` of the feeder (ratings in kW / kVA)."""

    name: str
    bus: str
    bus1: str
    phases: int
    kv: float
    pmpp_kw: float
    kva: float
    irradiance: float  #: base irradiance [kW/m²·1000, i.e. pu of 1 kW/m²]
    daily: str
    yearly: str
    duty: str


@dataclass(frozen=True)
class SeriesElement:
    """An enabled power-delivery element joining two or more buses (line, transformer...)."""

    name: str  #: ``"Class.name"``, class as OpenDSS spells it, e.g. ``"Transformer.tr1"``
    buses: tuple[str, ...]  #: distinct buses of its terminals, without nodes
    length_km: float = 0.0  #: a line's length [km]; 0 for other elements
    kind: str = "line"  #: ``"line"``, ``"transformer"`` or ``"switch"`` (a ``switch=yes`` line)

    @property
    def is_transformer(self) -> bool:
        return self.name.lower().startswith("transformer.")


@dataclass(frozen=True)
class BusInfo:
    """Per-bus data from the snapshot power flow."""

    name: str
    kv_base: float  #: line-to-neutral base [kV], 0 when none
    x: float  #: coordinate, NaN when absent
    y: float
    nodes: tuple[int, ...]
    split_phase: bool  #: exactly two phase nodes whose voltages are ~180° apart (120/240 V)


@dataclass(frozen=True)
class FeederInfo:
    """Everything :func:`inspect_feeder` reads from a feeder (read-only snapshot)."""

    master: Path
    source_bus: str
    loads: tuple[LoadInfo, ...]  #: in OpenDSS's order (the order of definition)
    loadshapes: dict[str, LoadShapeInfo]  #: by lower-case name
    pvsystems: tuple[PVInfo, ...]
    series: tuple[SeriesElement, ...]
    buses: dict[str, BusInfo]
    element_bus: dict[str, str] = field(default_factory=dict)
    """``"Class.name"`` (lower case name) -> bus, for every Load, PVSystem, Generator, Storage."""

    def bus_frame(self) -> pd.DataFrame:
        """Buses as a frame indexed by name: ``kv_base``, ``x``, ``y``, ``split_phase``."""
        rows = [(b.name, b.kv_base, b.x, b.y, b.split_phase) for b in self.buses.values()]
        return pd.DataFrame(rows, columns=["bus", "kv_base", "x", "y", "split_phase"]).set_index("bus")

    def adjacency(self) -> dict[str, set[str]]:
        """Bus graph through the series elements: bus -> neighbouring buses."""
        adj: dict[str, set[str]] = {b: set() for b in self.buses}
        for el in self.series:
            for a in el.buses:
                adj.setdefault(a, set()).update(b for b in el.buses if b != a)
        return adj

    @cached_property
    def topology(self) -> Topology:
        """The bus graph as a :class:`~gridmarket.topology.Topology` seen from :attr:`source_bus`
        (hops, km along the feeder, downstream buses, LV areas, nearest customers). Element
        names are lower case, ``"transformer.tr1"``."""
        edges: list[Edge] = []
        for el in self.series:
            km = el.length_km if len(el.buses) == 2 else 0.0  # a multi-winding transformer: 0 km
            edges.extend(Edge(el.name.lower(), a, b, km, el.kind)
                         for i, a in enumerate(el.buses) for b in el.buses[i + 1:])
        return Topology(edges, self.source_bus, buses=self.buses)


def _bus_of(spec: str) -> str:
    return spec.split(".", 1)[0].lower()


def _arr(values: object) -> np.ndarray:
    return np.asarray(values, dtype=float).reshape(-1)


def inspect_feeder(master: str | Path) -> FeederInfo:
    """Compile ``master`` in a private OpenDSS context and read the feeder (read-only).

    Parameters
    ----------
    master : path
        OpenDSS master script. The process's working directory is restored afterwards.

    Returns
    -------
    FeederInfo

    Raises
    ------
    NetworkError
        The file is missing, OpenDSS cannot compile it, or it defines no circuit.
    """
    path = Path(master).expanduser().resolve()
    if not path.is_file():
        msg = f"OpenDSS master {str(path)!r} does not exist"
        raise NetworkError(msg)
    dss = new_context()
    cwd = os.getcwd()
    out_dir = private_folder()
    try:
        compile_master(dss, path, out_dir)
        dss.Text.Command("Set mode=snapshot")
        dss.Solution.SolveNoControl()  # builds the bus list; convergence does not matter here
        return FeederInfo(
            master=path,
            source_bus=_source_bus(dss),
            loads=_loads(dss),
            loadshapes=_loadshapes(dss),
            pvsystems=_pvsystems(dss),
            series=_series(dss),
            buses=_buses(dss),
            element_bus=_element_buses(dss),
        )
    except _DSSException as exc:
        msg = f"cannot inspect OpenDSS master {str(path)!r}: OpenDSS error {exc}"
        raise NetworkError(msg) from exc
    finally:
        os.chdir(cwd)
        try:
            dss.Text.Command("Clear")  # closes the files OpenDSS holds open in out_dir
        except _DSSException:
            pass
        remove_folder(out_dir)


def _source_bus(d: Any) -> str:
    d.Vsources.First()
    return _bus_of(str(d.CktElement.BusNames()[0]))


def _loads(d: Any) -> tuple[LoadInfo, ...]:
    api, el = d.Loads, d.CktElement
    out = []
    i = api.First()
    while i:
        if el.Enabled():
            bus1 = str(el.BusNames()[0]).lower()
            out.append(LoadInfo(
                name=api.Name().lower(), bus=_bus_of(bus1), bus1=bus1, phases=int(el.NumPhases()),
                kv=float(api.kV()), kw=float(api.kW()), kvar=float(api.kvar()), delta=bool(api.IsDelta()),
                status=_STATUS.get(int(api.Status()), "variable"), daily=api.Daily().lower(),
                yearly=api.Yearly().lower(), duty=api.Duty().lower()))
        i = api.Next()
    return tuple(out)


def _loadshapes(d: Any) -> dict[str, LoadShapeInfo]:
    api = d.LoadShape
    out: dict[str, LoadShapeInfo] = {}
    for name in api.AllNames():
        api.Name(name)
        n = int(api.Npts())
        p = _arr(api.PMult())
        if n == 0 or p.size != n:
            continue  # "default" and empty shapes
        q = _arr(api.QMult())
        interval = float(api.HrInterval())
        hours = _arr(api.TimeArray()) if interval <= 0 else None
        if hours is not None and hours.size != n:
            continue
        out[name.lower()] = LoadShapeInfo(
            name=name.lower(), interval_h=max(interval, 0.0), p_mult=p, q_mult=q if q.size == n else None,
            hours=hours, use_actual=bool(api.UseActual()))
    return out


def _pvsystems(d: Any) -> tuple[PVInfo, ...]:
    api, el = d.PVsystems, d.CktElement
    out = []
    i = api.First()
    while i:
        if el.Enabled():
            name = api.Name().lower()
            bus1 = str(el.BusNames()[0]).lower()

            def prop(p: str, name: str = name) -> str:
                d.Text.Command(f"? PVSystem.{name}.{p}")
                return str(d.Text.Result()).strip().lower()

            kv = float(prop("kV"))
            out.append(PVInfo(
                name=name, bus=_bus_of(bus1), bus1=bus1, phases=int(el.NumPhases()), kv=kv,
                pmpp_kw=float(api.Pmpp()), kva=float(api.kVARated()), irradiance=float(api.Irradiance()),
                daily=prop("daily"), yearly=prop("yearly"), duty=prop("duty")))
        i = api.Next()
    return tuple(out)


def _series(d: Any) -> tuple[SeriesElement, ...]:
    pde, el = d.PDElements, d.CktElement
    lengths = _line_lengths(d)
    out = []
    i = pde.First()
    while i:
        if el.Enabled() and el.NumTerminals() >= 2:
            buses = tuple(dict.fromkeys(_bus_of(b) for b in el.BusNames()))
            if len(buses) >= 2:
                cls, _, nm = str(el.Name()).partition(".")
                km, kind = lengths.get(nm.lower(), (0.0, "line")) if cls.lower() == "line" else (
                    0.0, "transformer" if cls.lower() == "transformer" else "line")
                out.append(SeriesElement(name=f"{cls}.{nm.lower()}", buses=buses, length_km=km, kind=kind))
        i = pde.Next()
    return tuple(out)


def _line_lengths(d: Any) -> dict[str, tuple[float, str]]:
    """Line name -> (length [km], ``"switch"`` or ``"line"``)."""
    lines = d.Lines
    out = {}
    i = lines.First()
    while i:
        km = float(lines.Length()) * KM_PER_LINE_UNIT.get(int(lines.Units()), 1.0)
        out[lines.Name().lower()] = (max(km, 0.0), "switch" if lines.IsSwitch() else "line")
        i = lines.Next()
    return out


def _buses(d: Any) -> dict[str, BusInfo]:
    circ, bus = d.Circuit, d.Bus
    out: dict[str, BusInfo] = {}
    for k in range(circ.NumBuses()):
        circ.SetActiveBusi(k)
        name = bus.Name().lower()
        nodes = tuple(int(n) for n in bus.Nodes())
        has_xy = bool(bus.Coorddefined())
        phase = [n for n in nodes if n in _PHASE_NODES]
        split = False
        if sorted(phase) == [1, 2] and len(nodes) >= 2:
            ma = _arr(bus.VMagAngle()).reshape(-1, 2)
            if ma.shape[0] == len(nodes) and np.all(ma[:, 0] > 0):
                ang = dict(zip(nodes, ma[:, 1], strict=True))
                diff = abs(ang[1] - ang[2]) % 360.0
                split = min(diff, 360.0 - diff) > 150.0
        out[name] = BusInfo(name=name, kv_base=float(bus.kVBase()),
                            x=float(bus.X()) if has_xy else math.nan,
                            y=float(bus.Y()) if has_xy else math.nan, nodes=nodes, split_phase=split)
    return out


def _element_buses(d: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    circ, el = d.Circuit, d.CktElement
    for cls in ("Load", "PVSystem", "Generator", "Storage"):
        circ.SetActiveClass(cls)
        if d.ActiveClass.Count() == 0:
            continue
        for name in d.ActiveClass.AllNames():
            circ.SetActiveElement(f"{cls}.{name}")
            out[f"{cls}.{name.lower()}"] = _bus_of(str(el.BusNames()[0]))
    return out
