"""The bottom layer of :class:`~gridmarket.network.OpenDSSNetwork`: a private DSS context with
one compiled circuit, OpenDSS commands, and the per-circuit-version cache the other layers use.

Layers, each a class in its own module, each built on the one before:
:class:`CircuitCore` (here: compile, commands, cache) ->
:class:`~gridmarket.network.tables.CircuitTables` (buses, lines, transformers, topology, node
layout) -> :class:`~gridmarket.network.dispatch.ElementDispatch` (resolving and creating the
dispatched elements) -> :class:`~gridmarket.network.series.SeriesRunner` (solving series of
steps) -> :class:`~gridmarket.network.opendss.OpenDSSNetwork`.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from gridmarket.errors import NetworkError
from gridmarket.network._dss import (
    _dss_errors,
    _DSSException,
    compile_master,
    new_context,
    private_folder,
    remove_folder,
)

if TYPE_CHECKING:
    from gridmarket.network.results import _Layout, _TxMatrix
    from gridmarket.network.series import ShapeSession

__all__ = ["CircuitCore"]


class CircuitCore:
    """A compiled OpenDSS circuit in a private DSS context (see :class:`OpenDSSNetwork
    <gridmarket.network.opendss.OpenDSSNetwork>` for the parameters)."""

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
        self._dss: Any = new_context()
        self._lib: Any = self._dss.dss_lib
        self._circuit: Any = self._dss.to_dss_python().ActiveCircuit  # numpy-array reads
        self._token = object()  # identifies the ElementSets resolved here
        self._version = 0  # bumped whenever an element is added
        self._topology_version = 0  # bumped by commands that may change lines or buses
        self._layout_cache: _Layout | None = None
        self._imatrix_cache: (tuple[tuple[int, tuple[str, ...]],
                                    tuple[sp.csr_matrix, list[str], np.ndarray, _TxMatrix]] | None) = None
        self._cache: dict[str, tuple[int, Any]] = {}  # name -> (version, value)
        self._synced_version = 0  # circuit version the bus list and Y matrix were built for
        self._ratings: dict[str, float] = {}  # created batteries: canonical name -> kW rating
        self._q_ratio: dict[str, float] = {}  # Loads/Generators: own kvar/kW as first seen
        self._own_band: dict[str, tuple[float, float]] = {}  # dispatched: own (vminpu, vmaxpu) as first seen
        self._needs_restart = False
        self._shapes: dict[str, str] = {}  # element canonical name -> its own Loadshape ("shapes" method)
        self._unity: set[str] = set()  # elements given the unity yearly shape ("shapes" method)
        self._shape_buffers: tuple[np.ndarray, ...] = ()  # arrays the Loadshapes read (kept alive)
        self._one = np.ones(1)  # the value of a re-pointed Loadshape that is not in use
        self._session: ShapeSession | None = None
        self._closed = False
        self._out_dir = private_folder()
        self._finalizer = weakref.finalize(self, remove_folder, self._out_dir)
        self._compile(path)
        with _dss_errors(f"cannot prepare the circuit of {path.name}"):
            self._dss.Text.Command("Set mode=snapshot")
            # OpenDSS's default tolerance (1e-4) lets a constant-PQ element's power differ
            # from the value set by up to 1e-4 relative; the market's dispatch should arrive.
            if tolerance is not None:
                self._dss.Text.Command(f"Set tolerance={tolerance:.3g}")
            self._dss.Solution.MaxIterations(max_iterations)
            self._dss.Solution.LoadMult(1.0)
            self._after_compile()
            self._dss.Solution.SolveNoControl()  # builds the system Y; base case voltages

    def _after_compile(self) -> None:
        """Hook for the layers above: read what they need right after compiling."""

    def set_source_pu(self, pu: float) -> None:
        """Set the feeder head's voltage: the ``pu`` of the circuit's first Vsource [pu of its
        ``basekV``], applied from the next solve on (the case's ``[network] source_pu``).

        Raises
        ------
        ValueError
            ``pu`` is not a finite number in [0.5, 1.5].
        NetworkError
            The circuit has no Vsource, or OpenDSS refuses the value.
        """
        value = float(pu)
        if not (math.isfinite(value) and 0.5 <= value <= 1.5):
            msg = f"source_pu must be a number in [0.5, 1.5], got {pu!r}"
            raise ValueError(msg)
        self._no_session("set_source_pu")
        with _dss_errors(f"cannot set the source voltage of {self.master.name}"):
            if not self._dss.Vsources.First():
                msg = f"{self.master.name} has no Vsource whose voltage could be set"
                raise NetworkError(msg)
            self._dss.Vsources.PU(value)
        self._check_error(f"cannot set the source voltage of {self.master.name}")
        self._needs_restart = True  # the next solve starts from a fresh linear solution

    @property
    def source_pu(self) -> float:
        """The first Vsource's voltage [pu of its ``basekV``]."""
        with _dss_errors("cannot read the source voltage"):
            self._dss.Vsources.First()
            return float(self._dss.Vsources.PU())

    def close(self) -> None:
        """Release what the engine holds outside the process: clear the circuit (which closes
        OpenDSS's open output files) and remove the private output folder. Idempotent; the
        network cannot be used afterwards."""
        if not self._closed:
            self._closed = True
            self._session = None
            try:
                self._dss.Text.Command("Clear")
            except _DSSException:
                pass
        self._finalizer()

    def __enter__(self) -> CircuitCore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _compile(self, path: Path) -> None:
        """Compile ``path`` with OpenDSS's output in this engine's private folder
        (:func:`~gridmarket.network._dss.compile_master`)."""
        try:
            compile_master(self._dss, path, self.output_dir)
        except BaseException:
            self.close()
            raise

    @property
    def output_dir(self) -> Path:
        """The engine's private folder for what OpenDSS writes (trace files, exports, monitors,
        ``Show`` output); removed by :meth:`close` or when the engine is garbage-collected."""
        return self._out_dir

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

    def _exists(self, element: str) -> bool:
        """Whether the circuit element ``"Class.name"`` exists (case-insensitive; a hash look-up).
        Circuit elements only: general objects (XYCurve, Loadshape...) are never found."""
        with _dss_errors(f"cannot look {element} up"):
            return int(self._dss.Circuit.SetActiveElement(element)) >= 0

    def _class_names(self, cls: str) -> list[str]:
        """Element names of OpenDSS class ``cls`` in the class's own (batch) index order."""
        with _dss_errors(f"cannot list {cls} elements"):
            self._dss.Circuit.SetActiveClass(cls)
            if self._dss.ActiveClass.Count() == 0:
                return []
            return [n.lower() for n in self._dss.ActiveClass.AllNames()]

    def _check_error(self, what: str) -> None:
        if self._lib.Error_Get_Number():
            msg = f"{what}: OpenDSS error {self._dss.Error.Description()}"
            raise NetworkError(msg)

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
