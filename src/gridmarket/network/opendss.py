"""OpenDSS power-flow engine; with the read-only :mod:`gridmarket.network.inspect`, the only
code of gridmarket that imports :mod:`opendssdirect`.

The engine compiles an OpenDSS master into a private DSS context, sets the powers the market
cleared on Loads, PVSystems, Generators and Storage elements, runs one snapshot power flow
per step and returns node voltages [pu] and line currents [A] as numpy arrays
(shared MODEL.md, *From market to network*).

Sign convention (load reference, as in the whole project): the ``kw`` passed to
:meth:`OpenDSSNetwork.run_series` is the power a Load or Storage element **consumes**
(negative for a discharging battery), and the power a PVSystem or Generator **produces**
(positive; the caller passes ``-P_n`` for a producer agent).

How a step runs
---------------
* The circuit stays in ``snapshot`` mode with ``LoadMult = 1``: loadshapes (``daily=``,
  ``yearly=``) and the global multiplier never scale the powers the engine sets.
* Powers are written per element class with one DSS C-API *batch* call per property and step
  (no Python loop over elements); the element pointers are looked up once in
  :meth:`OpenDSSNetwork.resolve`.
* ``SolveNoControl`` solves the step (control devices do not act unless ``controls=True``);
  a step that does not converge raises :class:`~gridmarket.errors.PowerFlowError`.
* With ``method="shapes"`` (:meth:`OpenDSSNetwork.run_series`) the powers are not written per
  step: each element follows a Loadshape that reads the ``kw`` array in place (DSS C-API
  external memory) and OpenDSS steps through the hours in ``yearly`` mode, as its own time
  loop does. Changing a PVSystem's irradiance property makes OpenDSS rebuild and refactorise
  the whole system admittance matrix; a loadshape multiplier does not, so with PV this path
  is several times faster per step (same solution to the power-flow tolerance).
* All node voltages are read in one array call (``YNodeVarray``). Line currents of terminal 1
  are computed from those voltages with a sparse matrix built once from each line's primitive
  admittance matrix, ``I = Y_prim[terminal 1] @ V`` — exactly what OpenDSS itself reports for
  a line, without a second array call or a loop over lines.

Any OpenDSS error raised while compiling, editing or solving becomes a
:class:`~gridmarket.errors.NetworkError` carrying OpenDSS's message.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import opendssdirect as _odd
import pandas as pd
import scipy.sparse as sp

from gridmarket.errors import NetworkError, PowerFlowError
from gridmarket.network.inspect import KM_PER_LINE_UNIT
from gridmarket.topology import Edge, Topology

__all__ = ["SUPPORTED_CLASSES", "ElementSet", "OpenDSSNetwork", "PowerFlowResult", "ShapeSession"]

#: Element classes the engine can dispatch, keyed by lower-case class name.
SUPPORTED_CLASSES: dict[str, str] = {
    "load": "Load",
    "pvsystem": "PVSystem",
    "generator": "Generator",
    "storage": "Storage",
}

_DSSException: type[Exception] = _odd.DSSException
_SETTER_AVOID_FULL_RECALC = 0x2  # DSS C-API SetterFlags_AvoidFullRecalc
_BATCH_SET = 0  # DSS C-API BatchOperation_Set
_MODE_SNAPSHOT, _MODE_YEARLY = 0, 2  # DSS C-API SolveModes
_SHAPE_PREFIX = "gm_shape_"  # Loadshapes that let dispatched elements follow the kw array
_UNITY_SHAPE = "gm_shape_unity"  # constant 1: elements not dispatched keep their power in yearly mode
_SHAPE_CLASSES = ("Load", "PVSystem")  # classes the "shapes" method can dispatch
_SHAPE_BLOCK = 64  # steps whose voltages are held before magnitudes and currents are computed
_UNITY_CURVE = "gridmarket_unity"  # XYCurve y = 1 used to neutralise PV efficiency/temperature curves
_DEENERGISED_PU = 1e-3  # |V| below this [pu] marks a node as not energised (NaN in v_pu)
_PHASE_NODES = (1, 2, 3)  # node numbers treated as phase conductors; higher ones are neutrals
_RATING_RTOL = 1e-6  # tolerance when checking set powers against element ratings
_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class PowerFlowResult:
    """Node voltages and line currents of a series of power flows.

    Attributes
    ----------
    v_pu : numpy.ndarray
        Shape (steps, n_nodes): voltage magnitude of each phase node in pu of the node's
        line-to-neutral base [pu]. NaN for a node that is not energised.
    node_names : list of str
        ``"bus.phase"``, lower case, one per column of ``v_pu``. Only phase nodes (1, 2, 3)
        of buses with a voltage base appear; neutral nodes (4 and up) do not.
    i_amps : numpy.ndarray
        Shape (steps, n_line_conductors): current magnitude per line phase conductor at
        terminal 1 [A].
    line_phase_names : list of str
        ``"line.name.phase"`` (phase = node number at the line's bus 1), one per column of
        ``i_amps``.
    norm_amps : numpy.ndarray
        Shape (n_line_conductors,): normal ampacity of the conductor's line [A]; ``inf`` when
        the line has no rating (``normamps=0``).
    """

    v_pu: np.ndarray
    node_names: list[str]
    i_amps: np.ndarray
    line_phase_names: list[str]
    norm_amps: np.ndarray

    @property
    def steps(self) -> int:
        """Number of steps solved."""
        return int(self.v_pu.shape[0])


@dataclass(frozen=True, eq=False)
class _ClassGroup:
    """Elements of one OpenDSS class inside an :class:`ElementSet`."""

    cls: str  #: OpenDSS class name, e.g. "Load"
    cols: np.ndarray  #: columns of the ``kw`` array that belong to this class
    batch: _Batch  #: DSS C-API batch over these elements, in ``cols`` order
    q_ratio: np.ndarray  #: own kvar/kW ratio (Load, Generator) [-]
    p_max_kw: np.ndarray  #: largest power the element can take or give [kW]; inf = no limit
    p_ref_kw: np.ndarray  #: PV: Pmpp [kW] (irradiance = kW / Pmpp); else 1


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


@dataclass(frozen=True, eq=False)
class _Layout:
    """Node and line-conductor layout of the solved system, rebuilt when elements are added."""

    version: int
    node_names: list[str]
    node_y: np.ndarray  #: position of each reported node in [ground] + YNodeVarray
    inv_base_v: np.ndarray  #: 1 / (LN base [V]) per reported node
    n_y: int  #: number of Y-matrix nodes (ground excluded)
    i_matrix: sp.csr_matrix  #: (n_line_conductors, n_y + 1) complex: I = M @ [0, V]
    line_phase_names: list[str]
    norm_amps: np.ndarray


# --------------------------------------------------------------------------- batches


class _Batch:
    """A DSS C-API batch: pointers to a fixed list of elements of one class.

    ``set(prop, values)`` writes one float property of all elements in a single C call.
    """

    def __init__(self, ctx: Any, cls: str, indices: np.ndarray) -> None:
        self._ctx = ctx  # keeps the DSS context alive as long as the batch
        lib, ffi = ctx.dss_lib, ctx.dss_ffi
        self._lib = lib
        self._ffi = ffi
        self.size = len(indices)
        idx = np.ascontiguousarray(indices, dtype=np.int32)
        result = ffi.new("void***")
        dims = ffi.new("int32_t[4]")
        lib.Batch_CreateByIndexS(result, dims, cls.encode(), ffi.cast("int32_t*", idx.ctypes.data),
                                 self.size)
        if int(dims[0]) != self.size:
            lib.Batch_Dispose(result[0])
            msg = f"OpenDSS returned {int(dims[0])} of {self.size} {cls} elements for a batch"
            raise NetworkError(msg)
        self._ptr = ffi.gc(result[0], lib.Batch_Dispose) if self.size else result[0]

    def set(self, prop: bytes, values: np.ndarray, *, flags: int = _SETTER_AVOID_FULL_RECALC
            ) -> None:
        """Set float property ``prop`` of every element; ``values`` float64, C-contiguous.

        ``flags=0`` makes OpenDSS fully recalculate the elements (needed for limits such as
        ``vminpu``); the default skips that, as the classic ``Loads.kW`` setter does.
        """
        if self.size:
            self._lib.Batch_Float64ArrayS(self._ptr, self.size, prop, _BATCH_SET,
                                          self._ffi.cast("double*", values.ctypes.data), flags)


# --------------------------------------------------------------------------- errors


@contextmanager
def _dss_errors(what: str) -> Iterator[None]:
    """Turn an OpenDSS exception into a :class:`NetworkError` that starts with ``what``."""
    try:
        yield
    except NetworkError:
        raise
    except _DSSException as exc:
        msg = f"{what}: OpenDSS error {exc}"
        raise NetworkError(msg) from exc


# --------------------------------------------------------------------------- the engine


class OpenDSSNetwork:
    """An OpenDSS circuit, compiled once, that solves a power flow per market step.

    Each instance owns a private DSS engine context, so several networks can live in one
    process without disturbing each other.

    Parameters
    ----------
    master : str or pathlib.Path
        OpenDSS master script. Compiled by absolute path; the process's working directory is
        restored afterwards (OpenDSS changes it while compiling).
    pq_band_pu : tuple of float or None, default (0.5, 1.5)
        Voltage band [pu] inside which every *dispatched* element (those passed to
        :meth:`resolve`) holds its set power: written to the elements' ``vminpu``/``vmaxpu``.
        OpenDSS's own defaults (0.95-1.05 for Loads, 0.9-1.1 for PV) turn an element into a
        constant impedance outside their band, so the power flow would not deliver what the
        market cleared (ieee_eu_lv's loads sit at 1.09 pu of their 0.23 kV rating). ``None``
        keeps each element's own limits.
    tolerance : float or None, default 1e-6
        Power-flow convergence tolerance [pu of voltage change between iterations]. OpenDSS's
        default 1e-4 lets a constant-power element draw up to ~1e-4 relative off its set
        power; 1e-6 makes the dispatched kW arrive to ~1e-6 relative for about one extra
        iteration per step. ``None`` keeps what the master script set.
    max_iterations : int, default 50
        Iteration limit per power flow; a step that needs more is a :class:`PowerFlowError`.

    Raises
    ------
    NetworkError
        If the file does not exist or OpenDSS cannot compile it (missing ``Redirect`` file,
        syntax error); the message carries OpenDSS's own text with file and line.
    """

    def __init__(self, master: str | Path, *,
                 pq_band_pu: tuple[float, float] | None = (0.5, 1.5),
                 tolerance: float | None = 1e-6, max_iterations: int = 50) -> None:
        path = Path(master).expanduser().resolve()
        if pq_band_pu is not None and not 0 <= pq_band_pu[0] < 1 < pq_band_pu[1]:
            msg = f"pq_band_pu must be (low < 1 < high), got {pq_band_pu}"
            raise ValueError(msg)
        self.pq_band_pu = pq_band_pu
        if not path.is_file():
            msg = f"OpenDSS master {str(path)!r} does not exist"
            raise NetworkError(msg)
        self.master: Path = path
        self._dss = _odd.NewContext()
        self._lib = self._dss.dss_lib
        self._circuit = self._dss.to_dss_python().ActiveCircuit  # numpy-array reads
        self._token = object()  # identifies the ElementSets resolved here
        self._version = 0  # bumped whenever an element is added
        self._topology_version = 0  # bumped by commands that may change lines or buses
        self._layout_cache: _Layout | None = None
        self._imatrix_cache: (tuple[tuple[int, tuple[str, ...]], tuple[sp.csr_matrix, list[str], np.ndarray]]
                              | None) = None
        self._cache: dict[str, tuple[int, Any]] = {}  # name -> (version, value)
        self._synced_version = 0  # circuit version the bus list and Y matrix were built for
        self._ratings: dict[str, float] = {}  # created batteries: canonical name -> kW rating
        self._needs_restart = False
        self._shapes: dict[str, str] = {}  # element canonical name -> its own Loadshape ("shapes" method)
        self._unity: set[str] = set()  # elements given the unity yearly shape ("shapes" method)
        self._shape_buffers: tuple[np.ndarray, ...] = ()  # arrays the Loadshapes read (kept alive)
        self._one = np.ones(1)  # the value of a re-pointed Loadshape that is not in use
        self._session: ShapeSession | None = None
        self._compile(path)
        with _dss_errors(f"cannot prepare the circuit of {path.name}"):
            self._dss.Text.Command("Set mode=snapshot")
            # OpenDSS's default tolerance (1e-4) lets a constant-PQ element's power differ
            # from the value set by up to 1e-4 relative; the market's dispatch should arrive.
            if tolerance is not None:
                self._dss.Text.Command(f"Set tolerance={tolerance:.3g}")
            self._dss.Solution.MaxIterations(max_iterations)
            self._dss.Solution.LoadMult(1.0)
            self._q_ratio = self._own_q_ratios()
            self._dss.Solution.SolveNoControl()  # builds the system Y; base case voltages

    # ----------------------------------------------------------------- compile and commands

    def _compile(self, path: Path) -> None:
        cwd = os.getcwd()
        try:
            with _dss_errors(f"cannot compile OpenDSS master {str(path)!r}"):
                self._dss.Text.Command(f'Compile "{path}"')
                if self._dss.Basic.NumCircuits() == 0:
                    msg = f"OpenDSS master {str(path)!r} defines no circuit (no 'New Circuit')"
                    raise NetworkError(msg)
        finally:
            os.chdir(cwd)

    def command(self, text: str) -> str:
        """Run one OpenDSS command and return its result text.

        For case builders and tests that need an element the engine has no helper for.
        Adding elements this way is allowed; the node layout is refreshed automatically.

        Raises
        ------
        NetworkError
            If OpenDSS rejects the command, or it would replace the circuit (``Clear``,
            ``Compile``, ``New Circuit``): element sets would then point at freed memory, so
            build a new :class:`OpenDSSNetwork` instead.
        """
        return self._command(text, topology=True)

    def _command(self, text: str, *, topology: bool) -> str:
        """:meth:`command`; ``topology=False`` when it only adds a power-conversion element at an
        existing bus (a Load or PVSystem), which leaves lines, buses and the bus graph as they are."""
        self._no_session("command")
        words = text.strip().lower().split()
        if words and (words[0] in ("clear", "clearall", "compile")
                      or (words[0] == "new" and len(words) > 1 and words[1].startswith("circuit"))):
            msg = f"OpenDSS command {text!r} would replace the circuit; build a new OpenDSSNetwork"
            raise NetworkError(msg)
        cwd = os.getcwd()
        try:
            with _dss_errors(f"OpenDSS command {text!r} failed"):
                self._dss.Text.Command(text)
                result = str(self._dss.Text.Result())
        finally:
            os.chdir(cwd)
        self._version += 1
        if topology:
            self._topology_version += 1
        return result

    def _no_session(self, what: str) -> None:
        if self._session is not None:
            msg = f"{what} is not allowed while a shape session is open; close it first"
            raise NetworkError(msg)

    @property
    def dss(self) -> Any:
        """The private :mod:`opendssdirect` context (for tests and diagnostics only)."""
        return self._dss

    # ----------------------------------------------------------------- element look-up

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

    def _class_names(self, cls: str) -> list[str]:
        """Element names of OpenDSS class ``cls`` in the class's own (batch) index order."""
        with _dss_errors(f"cannot list {cls} elements"):
            self._dss.Circuit.SetActiveClass(cls)
            if self._dss.ActiveClass.Count() == 0:
                return []
            return [n.lower() for n in self._dss.ActiveClass.AllNames()]

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
        indices = np.array([i for _, _, i in items], dtype=np.int32)
        batch = _Batch(self._dss, cls, indices)
        if self.pq_band_pu is not None:
            for prop, value in zip((b"vminpu", b"vmaxpu"), self.pq_band_pu, strict=True):
                batch.set(prop, np.full(n, float(value)), flags=0)
            if self._lib.Error_Get_Number():
                msg = f"cannot set the voltage band of {cls} elements: {self._dss.Error.Description()}"
                raise NetworkError(msg)
        return _ClassGroup(cls=cls, cols=cols, batch=batch, q_ratio=q_ratio, p_max_kw=p_max,
                           p_ref_kw=p_ref)

    def _ensure_unity_curve(self) -> None:
        """Create the XYCurve y = 1 that replaces PV efficiency and P-T curves (once)."""
        if _UNITY_CURVE in self._class_names("XYCurve"):
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

    # ----------------------------------------------------------------- adding elements

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
        if name.lower() in self._class_names(cls):
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

    # ----------------------------------------------------------------- the series

    def run_series(self, elements: ElementSet, kw: np.ndarray, *, kvar: np.ndarray | None = None,
                   pf: np.ndarray | None = None, progress: Callable[[int], None] | None = None,
                   controls: bool = False, method: str = "snapshot") -> PowerFlowResult:
        """Set the elements' powers and solve one power flow per step.

        Parameters
        ----------
        elements : ElementSet
            From :meth:`resolve` of this network.
        kw : numpy.ndarray
            Shape (steps, n_elements) or (n_elements,) for one step [kW]. Load reference:
            Loads and Storage consume ``kw`` (negative = a battery discharging); PVSystems and
            Generators produce ``kw`` (>= 0 for PV).
        kvar : numpy.ndarray, optional
            Same shape: reactive power of Loads (consumed) and Generators (produced) [kvar].
            Must be 0 or NaN for PV and Storage (unity pf). NaN keeps the default rule.
        pf : numpy.ndarray, optional
            Shape (n_elements,) or (steps, n_elements): lagging power factor in (0, 1] of Loads
            and Generators; NaN keeps the element's own kvar/kW ratio (the default for all
            elements without ``pf``). Cannot be combined with ``kvar``.
        progress : callable, optional
            Called with the step index after each solved step.
        controls : bool, default False
            Let OpenDSS control devices (regulators, capacitor controls) act in each step
            (``Solve`` instead of ``SolveNoControl``).
        method : {"snapshot", "shapes"}, default "snapshot"
            ``"snapshot"``: write each element's power per step (batch calls) and solve a
            snapshot. ``"shapes"``: every element follows a Loadshape that reads the powers
            from the arrays in place, and OpenDSS steps through them in yearly mode (hour
            ``t + 1`` is step ``t``); no per-step writes, and PV changes do not rebuild the
            system matrix. Both give the same solution to the power-flow tolerance (they
            start each step's iteration from different admittance estimates). ``"shapes"``
            dispatches Loads and PVSystems only, refuses ``controls=True`` and circuits with
            Storage elements, and gives every Load and PVSystem that it does not dispatch a
            constant unity yearly shape (so they keep their power, as in a snapshot); a
            dispatched Load with ``status=fixed`` (a battery of :meth:`add_battery`) becomes
            ``status=variable`` so that it follows its shape (``LoadMult`` stays 1, so nothing
            else changes). After either method, the elements hold the powers of the last step.
            For a horizon cut into chunks, :meth:`shape_session` keeps one yearly run across
            the calls.

        Returns
        -------
        PowerFlowResult

        Notes
        -----
        Only the elements in ``elements`` are set. Every other element keeps the power it
        has: its compiled value (cr_mar's loads: kW=1 kvar=1) or the last value set in an
        earlier run, so pass every load that should follow a profile.

        Raises
        ------
        PowerFlowError
            A step did not converge; ``step`` names it.
        NetworkError
            A set power exceeds an element's rating (PV: ``min(Pmpp, kVA)``; Storage: kWrated;
            batteries from :meth:`add_battery`: ``kw_rated``), or OpenDSS failed.
        ValueError
            Wrong shapes, non-finite powers, or an element set of another network.
        """
        if elements._owner is not self._token:
            msg = "this ElementSet was resolved on another OpenDSSNetwork"
            raise ValueError(msg)
        self._no_session("run_series")
        kw2, kvar2, pf2 = _series_inputs(len(elements), kw, kvar, pf)
        steps = kw2.shape[0]
        if method not in ("snapshot", "shapes"):
            msg = f"method must be 'snapshot' or 'shapes', got {method!r}"
            raise ValueError(msg)
        if method == "shapes":
            if controls:
                msg = "method='shapes' solves without control actions; use method='snapshot' for controls=True"
                raise ValueError(msg)
            with self.shape_session(elements) as session:
                return session.run(kw2, kvar=kvar2, pf=pf2, progress=progress)
        plan = [item for g in elements._groups
                for item in self._plan_group(g, elements.names, kw2, kvar2, pf2)]
        layout = self._layout()
        v_pu = np.empty((steps, len(layout.node_names)))
        i_amps = np.empty((steps, len(layout.line_phase_names)))
        vfull = np.zeros(layout.n_y + 1, dtype=np.complex128)  # index 0 = ground
        with _dss_errors("power flow failed"):
            self._dss.Solution.LoadMult(1.0)
            if self._needs_restart:
                self._dss.Solution.SolveDirect()  # restart from a linear solution
            for t in range(steps):
                for batch, prop, values in plan:
                    batch.set(prop, values[t])
                self._solve_step(t, controls)
                vfull[1:] = self._circuit.YNodeVarray.view(np.complex128)
                v_pu[t] = np.abs(vfull[layout.node_y])
                i_amps[t] = np.abs(layout.i_matrix @ vfull)
                if progress is not None:
                    progress(t)
        return _series_result(layout, v_pu, i_amps)

    # ----------------------------------------------------------------- the "shapes" method

    def shape_session(self, elements: ElementSet) -> ShapeSession:
        """Open a time-series session of the ``"shapes"`` method on ``elements``.

        :meth:`ShapeSession.run` solves one series after another in the same OpenDSS
        yearly-mode run, so a long horizon cut into chunks gives exactly the results of one
        :meth:`run_series` call on the whole horizon (a session is opened and closed once).
        Use it as a context manager; while it is open, :meth:`run_series` and
        :meth:`command` are refused.

        Raises
        ------
        ValueError
            ``elements`` holds other classes than Load and PVSystem, the circuit has Storage
            elements, or another session is open.
        """
        if elements._owner is not self._token:
            msg = "this ElementSet was resolved on another OpenDSSNetwork"
            raise ValueError(msg)
        if self._session is not None:
            msg = "a shape session is already open on this network; close it first"
            raise ValueError(msg)
        unsupported = sorted({g.cls for g in elements._groups} - set(_SHAPE_CLASSES))
        if unsupported:
            msg = (f"method='shapes' dispatches {' and '.join(_SHAPE_CLASSES)} elements only, not "
                   f"{', '.join(unsupported)}; use method='snapshot'")
            raise ValueError(msg)
        with _dss_errors("cannot prepare the loadshapes"):
            if self._dss.Storages.Count():
                msg = (f"method='shapes' cannot run {self.master.name}: its Storage elements would follow their "
                       "own dispatch in yearly mode; use method='snapshot'")
                raise ValueError(msg)
        session = ShapeSession(self, elements)
        self._session = session
        return session

    def _activate_shapes(self, session: ShapeSession, bases: list[tuple[_Batch, bytes]]) -> None:
        """First run of a session: unit bases, the admittance matrix built once, yearly mode."""
        with _dss_errors("cannot prepare the loadshapes"):
            self._prepare_shapes(session.elements)
            for b, prop in bases:  # unit bases: the shapes carry the values
                b.set(prop, np.ones(b.size))
            self._check_error("cannot set the elements' unit bases")
            self._dss.Solution.LoadMult(1.0)
            if self._dss.Solution.SystemYChanged():
                # built here, in snapshot mode, from the unit bases: the same matrix however the
                # horizon is cut, and kept for the whole session (shape multipliers do not touch it)
                self._lib.YMatrix_BuildYMatrixD(2, 0)  # YMatrixModes.WholeMatrix, keep V and I
            self._lib.Solution_Set_Mode(_MODE_YEARLY)
            self._check_error("cannot switch to yearly mode")

    def _run_session(self, session: ShapeSession, kw: np.ndarray, kvar: np.ndarray | None,
                     pf: np.ndarray | None, progress: Callable[[int], None] | None) -> PowerFlowResult:
        """One series of a :class:`ShapeSession` (see :meth:`ShapeSession.run`)."""
        elements = session.elements
        kw2, kvar2, pf2 = _series_inputs(len(elements), kw, kvar, pf)
        steps = kw2.shape[0]
        plan = [item for g in elements._groups
                for item in self._plan_group(g, elements.names, kw2, kvar2, pf2)]
        layout = self._layout()
        v_pu = np.empty((steps, len(layout.node_names)))
        i_amps = np.empty((steps, len(layout.line_phase_names)))
        # per element: multipliers of P (Load: kW; PV: irradiance) and Q (Load: kvar), rows = steps
        n = len(elements)
        p_mult = np.zeros((steps, n))
        q_mult = np.zeros((steps, n))
        bases: list[tuple[_Batch, bytes, np.ndarray]] = []
        for g in elements._groups:
            for b, prop, vals in plan:
                if b is g.batch:
                    (q_mult if prop == b"kvar" else p_mult)[:, g.cols] = vals
                    bases.append((b, prop, vals))
        if not session.active:
            self._activate_shapes(session, [(b, prop) for b, prop, _ in bases])
            session.active = True
        lib, ffi = self._lib, self._dss.dss_ffi
        with _dss_errors("power flow failed"):
            p_ptr = ffi.cast("double*", p_mult.ctypes.data)
            q_ptr = ffi.cast("double*", q_mult.ctypes.data)
            for k, name in enumerate(elements.names):
                lib.LoadShapes_Set_Name(self._shapes[name].encode())
                lib.LoadShapes_Set_Points(steps, ffi.NULL, p_ptr + k,
                                          q_ptr + k if k in session.load_cols else ffi.NULL, 1, 0, n)
                lib.LoadShapes_Set_HrInterval(1.0)
            self._shape_buffers = (p_mult, q_mult)  # the loadshapes read these: keep them alive
            self._check_error("cannot point the loadshapes at the powers")
            if self._needs_restart:
                self._dss.Solution.SolveDirect()  # restart from a linear solution
            # node voltages of a block of steps, [ground, V...] per row; magnitudes and line
            # currents are computed per block (one sparse product instead of one per step)
            block = np.zeros((min(steps, _SHAPE_BLOCK), layout.n_y + 1), dtype=np.complex128)
            set_hour, loads_update = lib.Solution_Set_dblHour, lib.YMatrix_Set_LoadsNeedUpdating
            solve, errors, converged = lib.Solution_SolveNoControl, lib.Error_Get_Number, lib.Solution_Get_Converged
            t = t0 = -1
            try:
                for t in range(steps):
                    set_hour(float(t + 1))  # hour t + 1 reads point t of an interval-1 h shape
                    loads_update(1)
                    solve()
                    code = errors()
                    if code or not converged():
                        raise self._step_failed(t, code)
                    row = t % _SHAPE_BLOCK
                    if row == 0:
                        t0 = t
                    block[row, 1:] = self._circuit.YNodeVarray.view(np.complex128)
                    if row == block.shape[0] - 1 or t == steps - 1:
                        _block_results(block[: row + 1], layout, v_pu[t0: t + 1], i_amps[t0: t + 1])
                    if progress is not None:
                        progress(t)
                self._needs_restart = False
            finally:
                if t >= 0:  # the powers the elements get back when the session closes
                    session.last = [(b, prop, vals[t]) for b, prop, vals in bases]
        return _series_result(layout, v_pu, i_amps)

    def _close_session(self, session: ShapeSession) -> None:
        """Back to snapshot mode; the elements keep the powers of the last step solved."""
        try:
            if session.active:
                with _dss_errors("cannot close the shape session"):
                    self._lib.Solution_Set_Mode(_MODE_SNAPSHOT)
                    for b, prop, vals in session.last:
                        b.set(prop, np.ascontiguousarray(vals, dtype=float))
                    self._check_error("cannot restore the elements' powers")
        finally:
            session.active = False
            self._session = None

    def _load_status(self, name: str) -> int:
        """OpenDSS status of a Load: 0 variable, 1 fixed, 2 exempt."""
        self._dss.Loads.Name(name.split(".", 1)[1])
        return int(self._dss.Loads.Status())

    def _check_error(self, what: str) -> None:
        if self._lib.Error_Get_Number():
            msg = f"{what}: OpenDSS error {self._dss.Error.Description()}"
            raise NetworkError(msg)

    def _prepare_shapes(self, elements: ElementSet) -> None:
        """Give each element of ``elements`` its own Loadshape, and every other Load and
        PVSystem a unity yearly shape; re-point shapes of elements not in this set to 1."""
        cwd = os.getcwd()
        try:
            if _UNITY_SHAPE not in self._class_names("LoadShape"):
                self._dss.Text.Command(f"New Loadshape.{_UNITY_SHAPE} npts=1 interval=1 mult=[1] useactual=no")
            wanted = set(elements.names)
            lib, ffi = self._lib, self._dss.dss_ffi
            one = ffi.cast("double*", self._one.ctypes.data)
            for name, shape in self._shapes.items():
                if name not in wanted:  # dispatched earlier: hold its last power (mult 1, own memory)
                    lib.LoadShapes_Set_Name(shape.encode())
                    lib.LoadShapes_Set_Points(1, ffi.NULL, one, ffi.NULL, 0, 0, 1)
            for name in elements.names:
                if name not in self._shapes:
                    shape = f"{_SHAPE_PREFIX}{len(self._shapes)}"
                    self._dss.Text.Command(f"New Loadshape.{shape} npts=1 interval=1 mult=[1] useactual=no")
                    # a fixed Load (a battery from add_battery) would ignore its shape; LoadMult stays 1,
                    # so "variable" changes nothing else
                    fixed = name.startswith("Load.") and self._load_status(name) == 1
                    self._dss.Text.Command(f"Edit {name} yearly={shape}" + (" status=variable" if fixed else ""))
                    self._shapes[name] = shape
                    self._unity.discard(name)
            for cls in _SHAPE_CLASSES:
                for el in self._class_names(cls):
                    full = f"{cls}.{el}"
                    if full not in self._shapes and full not in self._unity:
                        self._dss.Text.Command(f"Edit {full} yearly={_UNITY_SHAPE}")
                        self._unity.add(full)
        finally:
            os.chdir(cwd)
        self._check_error("cannot create the loadshapes")

    def _step_failed(self, t: int, code: int) -> PowerFlowError:
        """The error of a step whose solve raised OpenDSS error ``code`` (0: none) or did not converge."""
        self._needs_restart = True
        if code:
            msg = f"power flow of step {t} failed: OpenDSS error {self._dss.Error.Description()}"
        else:
            iters = self._dss.Solution.Iterations()
            msg = (f"power flow did not converge at step {t} after {iters} iterations "
                   f"(circuit {self.master.name})")
        return PowerFlowError(msg, step=t)

    def _solve_step(self, t: int, controls: bool) -> None:
        if self._lib.Error_Get_Number():
            msg = f"OpenDSS rejected the powers of step {t}: {self._dss.Error.Description()}"
            raise NetworkError(msg)
        try:
            if controls:
                self._dss.Solution.Solve()
            else:
                self._dss.Solution.SolveNoControl()
            converged = bool(self._dss.Solution.Converged())
        except _DSSException as exc:
            self._needs_restart = True
            msg = f"power flow of step {t} failed: OpenDSS error {exc}"
            raise PowerFlowError(msg, step=t) from exc
        if not converged:
            self._needs_restart = True
            iters = self._dss.Solution.Iterations()
            msg = (f"power flow did not converge at step {t} after {iters} iterations "
                   f"(circuit {self.master.name})")
            raise PowerFlowError(msg, step=t)
        self._needs_restart = False

    def _plan_group(self, g: _ClassGroup, names: tuple[str, ...], kw: np.ndarray,
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

    # ----------------------------------------------------------------- read-back

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

    # ----------------------------------------------------------------- layout

    def _layout(self) -> _Layout:
        if self._layout_cache is None or self._layout_cache.version != self._version:
            self._layout_cache = self._build_layout()
        return self._layout_cache

    def _build_layout(self) -> _Layout:
        """Node order, pu bases and the sparse line-current matrix of the present circuit."""
        self._sync()
        with _dss_errors("cannot read the circuit layout"):
            y_order = [n.lower() for n in self._dss.Circuit.YNodeOrder()]
            kv_base = self.buses["kv_base"]
            node_y, inv_base, names = [], [], []
            for k, node in enumerate(y_order):
                bus, _, ph = node.rpartition(".")
                base = float(kv_base.get(bus, 0.0))
                if base > 0 and ph.isdigit() and int(ph) in _PHASE_NODES:
                    names.append(node)
                    node_y.append(k + 1)
                    inv_base.append(1.0 / (base * 1000.0))
            key = (self._topology_version, tuple(y_order))
            if self._imatrix_cache is not None and self._imatrix_cache[0] == key:
                matrix, cond_names, amps = self._imatrix_cache[1]  # only loads/PV were added
            else:
                matrix, cond_names, amps = self._line_current_matrix(len(y_order))
                self._imatrix_cache = (key, (matrix, cond_names, amps))
        return _Layout(version=self._version, node_names=names, node_y=np.array(node_y, dtype=np.intp),
                       inv_base_v=np.array(inv_base), n_y=len(y_order), i_matrix=matrix,
                       line_phase_names=cond_names, norm_amps=amps)

    def _line_current_matrix(self, n_y: int) -> tuple[sp.csr_matrix, list[str], np.ndarray]:
        """Rows of each enabled line's Y_prim for its terminal-1 phase conductors."""
        rows, cols, vals = [], [], []
        names: list[str] = []
        amps: list[float] = []
        lines = self._dss.Lines
        i = lines.First()
        while i:
            el = self._dss.CktElement
            if el.Enabled():
                ncond = el.NumConductors()
                nphase = lines.Phases()
                yprim = np.asarray(el.YPrim(), dtype=float)
                yprim = (yprim[0::2] + 1j * yprim[1::2]).reshape(2 * ncond, 2 * ncond)
                noderef = np.asarray(el.NodeRef(), dtype=np.intp)
                order = el.NodeOrder()
                norm = float(lines.NormAmps())
                for c in range(nphase):
                    r = len(names)
                    rows.extend([r] * noderef.size)
                    cols.extend(noderef.tolist())
                    vals.extend(yprim[c].tolist())
                    names.append(f"line.{lines.Name().lower()}.{order[c]}")
                    amps.append(norm if norm > 0 else np.inf)
            i = lines.Next()
        matrix = sp.csr_matrix((np.array(vals, dtype=np.complex128), (rows, cols)),
                               shape=(len(names), n_y + 1))
        return matrix, names, np.array(amps)

    # ----------------------------------------------------------------- tables

    @property
    def node_names(self) -> list[str]:
        """``"bus.phase"`` names, lower case, in the column order of ``v_pu``."""
        return list(self._layout().node_names)

    def _sync(self) -> None:
        """Let OpenDSS rebuild its bus list and Y matrix after elements were added.

        One solve; its convergence does not matter here.
        """
        if self._synced_version != self._version:
            with _dss_errors("cannot rebuild the circuit after adding elements"):
                self._dss.Solution.SolveNoControl()
            self._synced_version = self._version

    def _cached(self, key: str, build: Callable[[], Any], *, topology: bool = False) -> Any:
        """``build()``, computed once per circuit version (elements added bump the version).

        ``topology=True``: for what depends on lines and buses only (lines, bus graph,
        downstream buses), which loads and PV added at existing buses do not change.
        """
        version = self._topology_version if topology else self._version
        hit = self._cache.get(key)
        if hit is None or hit[0] != version:
            hit = (version, build())
            self._cache[key] = hit
        return hit[1]

    @property
    def buses(self) -> pd.DataFrame:
        """Buses of the circuit.

        Index: lower-case bus name. Columns: ``kv_base`` (line-to-neutral base [kV], 0 when
        none), ``x``, ``y`` (coordinates, NaN when absent), ``n_nodes``.
        """
        return self._cached("buses", self._read_buses).copy()

    def _read_buses(self) -> pd.DataFrame:
        self._sync()
        rows = []
        with _dss_errors("cannot read buses"):
            circ, bus = self._dss.Circuit, self._dss.Bus
            for k in range(circ.NumBuses()):
                circ.SetActiveBusi(k)
                has_xy = bool(bus.Coorddefined())
                rows.append((bus.Name().lower(), float(bus.kVBase()),
                             float(bus.X()) if has_xy else np.nan,
                             float(bus.Y()) if has_xy else np.nan, int(bus.NumNodes())))
        df = pd.DataFrame(rows, columns=["bus", "kv_base", "x", "y", "n_nodes"]).set_index("bus")
        return df

    @property
    def lines(self) -> pd.DataFrame:
        """Enabled lines of the circuit.

        Index: ``"line.name"``, lower case. Columns: ``bus1``, ``bus2`` (bus names without
        nodes), ``phases``, ``norm_amps`` [A], ``emerg_amps`` [A].
        """
        return self._cached("lines", self._read_lines, topology=True).copy()

    def _read_lines(self) -> pd.DataFrame:
        rows = []
        with _dss_errors("cannot read lines"):
            lines = self._dss.Lines
            i = lines.First()
            while i:
                if self._dss.CktElement.Enabled():
                    km = float(lines.Length()) * KM_PER_LINE_UNIT.get(int(lines.Units()), 1.0)
                    rows.append((f"line.{lines.Name().lower()}", _bus_of(lines.Bus1()),
                                 _bus_of(lines.Bus2()), int(lines.Phases()),
                                 float(lines.NormAmps()), float(lines.EmergAmps()), max(km, 0.0),
                                 bool(lines.IsSwitch())))
                i = lines.Next()
        cols = ["line", "bus1", "bus2", "phases", "norm_amps", "emerg_amps", "length_km", "switch"]
        return pd.DataFrame(rows, columns=cols).set_index("line")

    @property
    def source_bus(self) -> str:
        """Bus of the circuit's first voltage source (the feeder head), lower case."""
        with _dss_errors("cannot read the source bus"):
            self._dss.Vsources.First()
            return _bus_of(str(self._dss.CktElement.BusNames()[0]))

    # ----------------------------------------------------------------- topology

    @property
    def topology(self) -> Topology:
        """The bus graph of the enabled series elements (:class:`~gridmarket.topology.Topology`):
        lines (with their length [km]; ``switch=yes`` lines as switches), transformers and other
        power-delivery elements (0 km), seen from :attr:`source_bus`."""
        topo: Topology = self._cached("topology", self._read_topology, topology=True)
        return topo

    def _read_topology(self) -> Topology:
        lines = self._cached("lines", self._read_lines, topology=True)
        edges = [Edge(str(name), b1, b2, float(km), "switch" if sw else "line")
                 for name, b1, b2, km, sw in zip(lines.index, lines["bus1"], lines["bus2"],
                                                 lines["length_km"], lines["switch"], strict=True)]
        with _dss_errors("cannot read the circuit topology"):
            pde = self._dss.PDElements
            i = pde.First()
            while i:
                el = self._dss.CktElement
                cls, _, nm = str(el.Name()).partition(".")
                if cls.lower() != "line" and el.Enabled() and el.NumTerminals() >= 2:
                    ends = list(dict.fromkeys(_bus_of(b) for b in el.BusNames()))
                    kind = "transformer" if cls.lower() == "transformer" else "line"
                    name = f"{cls.lower()}.{nm.lower()}"
                    edges.extend(Edge(name, a, b, 0.0, kind)
                                 for k, a in enumerate(ends) for b in ends[k + 1:])
                i = pde.Next()
        return Topology(edges, self.source_bus, buses=self.buses.index)

    def bus_distance(self, src: str) -> dict[str, int]:
        """Hops (lines, transformers, other series elements) from ``src`` to every reachable bus.

        Parameters
        ----------
        src : str
            Bus name, nodes allowed (``"busx.1.2"``); case-insensitive.

        Returns
        -------
        dict
            Lower-case bus name -> number of series elements on the shortest path
            (``src`` itself is 0). Buses not connected to ``src`` are absent.
        """
        topo = self.topology
        if src not in topo:
            msg = f"bus {src!r} not found in {self.master.name}"
            raise NetworkError(msg)
        return topo.hops(src)

    def downstream_bus(self, line: str) -> str:
        """The bus of ``line`` farther from the source (:meth:`Topology.downstream_bus
        <gridmarket.topology.Topology.downstream_bus>`: more hops, whatever order it is written in).

        ``line`` may be ``"line.x"``, ``"x"``, a conductor name from a violation table,
        ``"line.x.2"``, or another series element such as ``"transformer.tx1"`` (its
        secondary side).

        Raises
        ------
        NetworkError
            If the element does not exist.
        """
        try:
            return self.topology.downstream_bus(line)
        except KeyError:
            msg = f"line {line!r} not found in {self.master.name}"
            raise NetworkError(msg) from None

    def downstream_buses(self) -> dict[str, str]:
        """Downstream bus of every enabled line: ``{"line.x": bus}`` (see :meth:`downstream_bus`)."""
        return {k: v for k, v in self.topology.downstream_buses().items() if k.startswith("line.")}


def _series_result(layout: _Layout, v_volts: np.ndarray, i_amps: np.ndarray) -> PowerFlowResult:
    """A series' result from node voltage magnitudes [V] (scaled to pu in place; nodes below
    :data:`_DEENERGISED_PU` become NaN) and line currents [A]."""
    v_pu = v_volts
    v_pu *= layout.inv_base_v
    v_pu[v_pu < _DEENERGISED_PU] = np.nan
    return PowerFlowResult(v_pu=v_pu, node_names=list(layout.node_names), i_amps=i_amps,
                           line_phase_names=list(layout.line_phase_names), norm_amps=layout.norm_amps.copy())


def _block_results(block: np.ndarray, layout: _Layout, v_out: np.ndarray, i_out: np.ndarray) -> None:
    """Node voltage magnitudes [V] and line currents [A] of a block of steps (rows of [0, V])."""
    v_out[:] = np.abs(block[:, layout.node_y])
    i_out[:] = np.abs(layout.i_matrix @ block.T).T


class ShapeSession:
    """A time-series run of :meth:`OpenDSSNetwork.run_series`'s ``"shapes"`` method that spans
    several calls (chunks of a long horizon).

    Made by :meth:`OpenDSSNetwork.shape_session`; use as a context manager. The first
    :meth:`run` switches OpenDSS to yearly mode with every element of ``elements`` following
    its own Loadshape; each :meth:`run` points the shapes at its powers and solves its steps in
    order, each starting from the previous step's voltages, exactly as one long run would;
    :meth:`close` returns to snapshot mode with the elements at the powers of the last step.
    """

    def __init__(self, net: OpenDSSNetwork, elements: ElementSet) -> None:
        self.net = net
        self.elements = elements
        self.active = False
        self.last: list[tuple[_Batch, bytes, np.ndarray]] = []
        self.load_cols = frozenset(int(c) for g in elements._groups if g.cls == "Load" for c in g.cols)

    def run(self, kw: np.ndarray, *, kvar: np.ndarray | None = None, pf: np.ndarray | None = None,
            progress: Callable[[int], None] | None = None) -> PowerFlowResult:
        """Solve the steps of ``kw`` (arguments and result as :meth:`OpenDSSNetwork.run_series`)."""
        if self.net._session is not self:
            msg = "this shape session is closed"
            raise NetworkError(msg)
        return self.net._run_session(self, kw, kvar, pf, progress)

    def close(self) -> None:
        """Return the network to snapshot mode (idempotent)."""
        if self.net._session is self:
            self.net._close_session(self)

    def __enter__(self) -> ShapeSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- helpers


def _canonical(element: str) -> str:
    """``"Class.name"`` with the class spelled as OpenDSS does and the name lower case."""
    cls, _, name = element.strip().partition(".")
    return f"{SUPPORTED_CLASSES.get(cls.lower(), cls)}.{name.lower()}"


def _bus_of(spec: str) -> str:
    """Bus name of a ``bus.node.node`` spec, lower case."""
    return spec.split(".", 1)[0].lower()


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
