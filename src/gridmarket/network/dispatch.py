"""Resolving and creating the elements the market dispatches (Loads, PVSystems, Generators,
Storage; batteries and PV added at a bus). Layer 3 of :class:`~gridmarket.network.OpenDSSNetwork`
(see :mod:`.core`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from gridmarket.errors import NetworkError
from gridmarket.network._dss import _PHASE_NODES, _Batch, _bus_of, _dss_errors
from gridmarket.network.elements import SUPPORTED_CLASSES, ElementSet, _canonical, _ClassGroup, _q_ratio
from gridmarket.network.tables import CircuitTables

__all__ = ["ElementDispatch"]

_UNITY_CURVE = "gridmarket_unity"  # XYCurve y = 1 used to neutralise PV efficiency/temperature curves
_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


class ElementDispatch(CircuitTables):
    """Element look-up, preparation for dispatch, and new batteries / PV systems."""

    def _after_compile(self) -> None:
        super()._after_compile()
        self._q_ratio = self._own_q_ratios()

    def _own_q_ratios(self) -> dict[str, float]:
        """kvar/kW of every Load and Generator as compiled [-], keyed by canonical name."""
        ratios: dict[str, float] = {}
        for cls, api in (("Load", self._dss.Loads), ("Generator", self._dss.Generators)):
            i = api.First()
            while i:
                ratios[f"{cls}.{api.Name().lower()}"] = _q_ratio(api.kW(), api.kvar(), api.PF())
                i = api.Next()
        return ratios

    def _own_q_ratio(self, cls: str, name: str) -> float:
        """kvar/kW of a Load or Generator as first seen (compiled or added by a command)."""
        full = f"{cls}.{name}"
        if full not in self._q_ratio:
            api = self._dss.Loads if cls == "Load" else self._dss.Generators
            api.Name(name)
            self._q_ratio[full] = _q_ratio(api.kW(), api.kvar(), api.PF())
        return self._q_ratio[full]

    def resolve(self, elements: Sequence[str]) -> ElementSet:
        """Look elements up once, for :meth:`run_series`.

        Parameters
        ----------
        elements : sequence of str
            ``"Class.name"``, class and name case-insensitive; classes Load, PVSystem,
            Generator, Storage, e.g. ``"Load.Load053"``, ``"PVSystem.PV053"``.

        Returns
        -------
        ElementSet
            Element pointers grouped by class, columns in the order given.

        Raises
        ------
        NetworkError
            Naming every unknown element (or unsupported class) at once, or a duplicate.

        Notes
        -----
        PVSystems are prepared for external dispatch: ``%cutin=0 %cutout=0 pf=1 %Pmpp=100``
        and unity efficiency and P-T curves, so that ``kW = Pmpp * irradiance`` exactly.
        Storage elements get ``%idlingkW=0 %reserve=0 %stored=50 pf=1`` so that their
        terminal power equals the set value in both directions.
        """
        parsed, problems = self._parse_elements(elements)
        if problems:
            msg = (f"{len(problems)} element(s) not found in {self.master.name}: "
                   + ", ".join(problems))
            raise NetworkError(msg)
        groups = []
        for cls in SUPPORTED_CLASSES.values():
            cols = np.array([k for k, (c, _, _) in enumerate(parsed) if c == cls], dtype=np.intp)
            if cols.size:
                groups.append(self._make_group(cls, cols, [parsed[k] for k in cols]))
        names = tuple(f"{c}.{n}" for c, n, _ in parsed)
        return ElementSet(names=names, _groups=tuple(groups), _owner=self._token)

    def _parse_elements(self, elements: Sequence[str]
                        ) -> tuple[list[tuple[str, str, int]], list[str]]:
        """Split ``Class.name`` strings and find each element's 1-based index in its class."""
        if isinstance(elements, str):
            elements = [elements]
        index: dict[str, dict[str, int]] = {}
        parsed: list[tuple[str, str, int]] = []
        problems: list[str] = []
        seen: set[str] = set()
        for raw in elements:
            cls_raw, _, name = str(raw).strip().partition(".")
            cls = SUPPORTED_CLASSES.get(cls_raw.lower())
            name = name.lower()
            if cls is None or not name:
                problems.append(f"{raw!r} (class must be one of {', '.join(SUPPORTED_CLASSES.values())})")
                continue
            if cls not in index:
                index[cls] = {n: i + 1 for i, n in enumerate(self._class_names(cls))}
            if name not in index[cls]:
                problems.append(repr(raw))
            elif f"{cls}.{name}" in seen:
                problems.append(f"{raw!r} (listed twice)")
            else:
                seen.add(f"{cls}.{name}")
                parsed.append((cls, name, index[cls][name]))
        return parsed, problems

    def _make_group(self, cls: str, cols: np.ndarray, items: list[tuple[str, str, int]]
                    ) -> _ClassGroup:
        """Prepare the elements of one class and build their batch."""
        n = len(items)
        q_ratio = np.zeros(n)
        p_max = np.full(n, np.inf)
        p_ref = np.ones(n)
        if cls == "PVSystem":
            self._ensure_unity_curve()
        with _dss_errors(f"cannot prepare {cls} elements for dispatch"):
            for k, (_, name, _) in enumerate(items):
                full = f"{cls}.{name}"
                if cls in ("Load", "Generator"):
                    q_ratio[k] = self._own_q_ratio(cls, name)
                    p_max[k] = self._ratings.get(full, np.inf)
                elif cls == "PVSystem":
                    p_ref[k], p_max[k] = self._prepare_pv(name)
                else:
                    p_max[k] = self._prepare_storage(name)
        own = np.array([self._own_band_of(cls, name) for _, name, _ in items], dtype=float).reshape(n, 2)
        indices = np.array([i for _, _, i in items], dtype=np.int32)
        batch = _Batch(self._dss, cls, indices)
        if self.pq_band_pu is not None:
            for prop, value in zip((b"vminpu", b"vmaxpu"), self.pq_band_pu, strict=True):
                batch.set(prop, np.full(n, float(value)), flags=0)
            if self._lib.Error_Get_Number():
                msg = f"cannot set the voltage band of {cls} elements: {self._dss.Error.Description()}"
                raise NetworkError(msg)
        return _ClassGroup(cls=cls, cols=cols, batch=batch, q_ratio=q_ratio, p_max_kw=p_max,
                           p_ref_kw=p_ref, own_vminpu=np.ascontiguousarray(own[:, 0]),
                           own_vmaxpu=np.ascontiguousarray(own[:, 1]))

    def _own_band_of(self, cls: str, name: str) -> tuple[float, float]:
        """``(vminpu, vmaxpu)`` of an element as the feeder (or :meth:`add_battery`) defined it,
        read the first time the element is seen, before the engine's band overwrites it."""
        full = f"{cls}.{name}"
        band = self._own_band.get(full)
        if band is None:
            with _dss_errors(f"cannot read the voltage limits of {full}"):
                if cls == "Load":
                    self._dss.Loads.Name(name)
                    band = (float(self._dss.Loads.Vminpu()), float(self._dss.Loads.Vmaxpu()))
                else:
                    vals = []
                    for prop in ("vminpu", "vmaxpu"):
                        self._dss.Text.Command(f"? {full}.{prop}")
                        vals.append(float(self._dss.Text.Result()))
                    band = (vals[0], vals[1])
            self._own_band[full] = band
        return band

    def _ensure_unity_curve(self) -> None:
        """Create the XYCurve y = 1 that replaces PV efficiency and P-T curves (once)."""
        if _UNITY_CURVE in self._class_names("XYCurve"):  # a general object: not found by _exists
            return
        with _dss_errors("cannot create the unity XYCurve"):
            self._dss.Text.Command(
                f"New XYCurve.{_UNITY_CURVE} npts=2 xarray=[-1000 1000] yarray=[1 1]")

    def _prepare_pv(self, name: str) -> tuple[float, float]:
        """Make a PVSystem follow ``irradiance`` exactly; return (Pmpp, max kW) [kW]."""
        self._dss.Text.Command(
            f"Edit PVSystem.{name} %cutin=0 %cutout=0 pf=1 %Pmpp=100 "
            f"effcurve={_UNITY_CURVE} P-TCurve={_UNITY_CURVE}")
        self._dss.PVsystems.Name(name)
        pmpp = float(self._dss.PVsystems.Pmpp())
        kva = float(self._dss.PVsystems.kVARated())
        if pmpp <= 0:
            msg = f"PVSystem.{name} has Pmpp={pmpp}; it must be > 0 to be dispatched"
            raise NetworkError(msg)
        return pmpp, min(pmpp, kva)

    def _prepare_storage(self, name: str) -> float:
        """Make a Storage element hold its set kW in both directions; return kWrated [kW]."""
        self._dss.Text.Command(
            f"Edit Storage.{name} %idlingkW=0 %reserve=0 %stored=50 pf=1")
        self._dss.Text.Command(f"? Storage.{name}.kWrated")
        return float(self._dss.Text.Result())

    def add_battery(self, name: str, bus: str, *, kw_rated: float, kwh: float) -> str:
        """Create a battery at ``bus`` and return its element name for :meth:`resolve`.

        The battery is an OpenDSS **Load** with signed kW (charging > 0), unity power factor,
        constant power (``model=1``) and ``status=fixed``, so that its power in the power flow
        equals the market's ``S`` [kW] (within ``pq_band_pu`` once resolved). Its state of charge lives in
        the market, not in OpenDSS.

        Parameters
        ----------
        name : str
            Element name (letters, digits, ``_``, ``-``); must not exist as a Load.
        bus : str
            As written in a case: ``"BUSLVMAR158"``, ``"BUSLVMAR158.1.2"`` or ``"34.1"``.
            A bare name connects to all phase nodes of the bus (3-phase unit at the
            line-to-line kV on a 3-phase bus; 240 V across both legs of a 120/240 V
            split-phase bus); two nodes give a unit across them; one node a unit from
            that phase to neutral.
        kw_rated : float
            Rated power [kW]; :meth:`run_series` refuses larger set powers.
        kwh : float
            Capacity [kWh]; recorded for reference only.

        Returns
        -------
        str
            ``"Load.<name>"``.

        Raises
        ------
        NetworkError
            Unknown bus or node, or an element of that name exists.
        """
        if not (kw_rated > 0 and kwh > 0):
            msg = f"battery {name!r} needs kw_rated > 0 and kwh > 0, got {kw_rated} and {kwh}"
            raise ValueError(msg)
        self._check_new_name("Load", name)
        bus1, phases, kv = self._connection(bus)
        self._command(f"New Load.{name} bus1={bus1} phases={phases} kV={kv:.9g} conn=wye "
                     f"kW=0 kvar=0 model=1 status=fixed vminpu=0.5 vmaxpu=1.5", topology=False)
        full = f"Load.{name.lower()}"
        self._q_ratio[full] = 0.0
        self._ratings[full] = float(kw_rated)
        return full

    def resize_battery(self, element: str, *, kw_rated: float, kwh: float) -> None:
        """Change the rating of a battery made by :meth:`add_battery` (a bank that grew).

        Element sets resolved earlier pick the new rating up only when resolved again.

        Raises
        ------
        NetworkError
            If ``element`` was not created by :meth:`add_battery`.
        """
        full = _canonical(element)
        if full not in self._ratings:
            msg = f"{element!r} is not a battery created by add_battery"
            raise NetworkError(msg)
        if not (kw_rated > 0 and kwh > 0):
            msg = f"battery {element!r} needs kw_rated > 0 and kwh > 0, got {kw_rated} and {kwh}"
            raise ValueError(msg)
        self._ratings[full] = float(kw_rated)

    def add_pv(self, name: str, bus: str, kw_rated: float, *, kva: float | None = None) -> str:
        """Create a PV system at ``bus`` and return its element name for :meth:`resolve`.

        Parameters
        ----------
        name : str
            Element name; must not exist as a PVSystem.
        bus : str
            As for :meth:`add_battery`.
        kw_rated : float
            Panel rating ``Pmpp`` [kW].
        kva : float, optional
            Inverter rating [kVA]; default ``1.1 * kw_rated``.

        Returns
        -------
        str
            ``"PVSystem.<name>"``, dispatched by irradiance = kW / Pmpp at unity pf.
        """
        if not kw_rated > 0:
            msg = f"PV {name!r} needs kw_rated > 0, got {kw_rated}"
            raise ValueError(msg)
        kva = 1.1 * kw_rated if kva is None else float(kva)
        self._check_new_name("PVSystem", name)
        self._ensure_unity_curve()
        bus1, phases, kv = self._connection(bus)
        self._command(f"New PVSystem.{name} bus1={bus1} phases={phases} kV={kv:.9g} conn=wye "
                     f"Pmpp={kw_rated:.9g} kVA={kva:.9g} irradiance=0 pf=1 %cutin=0 %cutout=0 "
                     f"effcurve={_UNITY_CURVE} P-TCurve={_UNITY_CURVE}", topology=False)
        return f"PVSystem.{name.lower()}"

    def _check_new_name(self, cls: str, name: str) -> None:
        if not _NAME_RE.match(name):
            msg = f"element name {name!r} may hold only letters, digits, '_' and '-'"
            raise ValueError(msg)
        if self._exists(f"{cls}.{name}"):  # one hash look-up, not a list of the class's names
            msg = f"{cls}.{name} already exists in {self.master.name}"
            raise NetworkError(msg)

    def _connection(self, bus: str) -> tuple[str, int, float]:
        """``bus1`` spec, phases and kV [kV] of a unit connected to ``bus`` as written."""
        bus_name, *node_txt = bus.strip().lower().split(".")
        info = self._bus_nodes(bus_name)
        if info is None:
            msg = f"bus {bus!r} not found in {self.master.name}"
            raise NetworkError(msg)
        nodes, kv_ln, angles = info
        phase_nodes = [n for n in nodes if n in _PHASE_NODES]
        if not node_txt:
            wanted = phase_nodes
        else:
            try:
                wanted = [int(t) for t in node_txt]
            except ValueError:
                wanted = []
            if not wanted or any(n not in phase_nodes for n in wanted) or len(set(wanted)) != len(wanted):
                msg = f"bus {bus!r}: nodes must be distinct phase nodes of the bus, which are {phase_nodes}"
                raise NetworkError(msg)
        if kv_ln <= 0 or not wanted:
            msg = f"bus {bus!r} has no voltage base or no phase node; cannot connect a unit"
            raise NetworkError(msg)
        spec = f"{bus_name}." + ".".join(str(n) for n in wanted)
        if len(wanted) == 1:
            return spec, 1, kv_ln
        if len(wanted) == 2:
            diff = abs(angles.get(wanted[0], 0.0) - angles.get(wanted[1], 0.0)) % 360.0
            diff = min(diff, 360.0 - diff)
            split_phase = diff > 150.0 if angles else len(phase_nodes) == 2
            return spec, 1, kv_ln * (2.0 if split_phase else math.sqrt(3.0))
        return spec, 3, kv_ln * math.sqrt(3.0)

    def _bus_nodes(self, bus_name: str) -> tuple[list[int], float, dict[int, float]] | None:
        """Nodes, LN base [kV] and node voltage angles [deg] of a bus, or None if unknown."""
        with _dss_errors(f"cannot read bus {bus_name!r}"):
            if self._dss.Circuit.SetActiveBus(bus_name) < 0:
                return None
            nodes = [int(n) for n in self._dss.Bus.Nodes()]
            kv = float(self._dss.Bus.kVBase())
            magang = np.asarray(self._dss.Bus.VMagAngle(), dtype=float).reshape(-1, 2)
        angles = {}
        if magang.shape[0] == len(nodes) and np.all(magang[:, 0] > 0):
            angles = {n: float(a) for n, a in zip(nodes, magang[:, 1], strict=True)}
        return nodes, kv, angles

    def element_powers_kw(self, elements: ElementSet) -> np.ndarray:
        """Active power of each element as OpenDSS computed it in the last solution [kW].

        Same sign convention as ``kw`` of :meth:`run_series`: consumed for Loads and Storage,
        produced for PVSystems and Generators. Loops over the elements; meant for checks.
        """
        out = np.empty(len(elements))
        with _dss_errors("cannot read element powers"):
            for k, name in enumerate(elements.names):
                self._dss.Circuit.SetActiveElement(name)
                p = float(self._dss.CktElement.TotalPowers()[0])
                out[k] = -p if name.split(".", 1)[0] in ("PVSystem", "Generator") else p
        return out

    def element_buses(self, elements: ElementSet) -> list[str]:
        """Bus of each element's first terminal, lower case, without nodes."""
        out = []
        with _dss_errors("cannot read element buses"):
            for name in elements.names:
                self._dss.Circuit.SetActiveElement(name)
                out.append(_bus_of(self._dss.CktElement.BusNames()[0]))
        return out
