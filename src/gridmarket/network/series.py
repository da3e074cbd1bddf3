"""Solving series of power flows: the snapshot method (powers written per step with batch
calls) and the "shapes" method (Loadshapes reading the powers in place, OpenDSS's yearly mode),
with :class:`ShapeSession` spanning the chunks of a long horizon. Layer 4 of
:class:`~gridmarket.network.OpenDSSNetwork` (see :mod:`.core`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from gridmarket.errors import NetworkError, PowerFlowError
from gridmarket.network._dss import _MODE_SNAPSHOT, _MODE_YEARLY, _Batch, _dss_errors, _DSSException
from gridmarket.network.dispatch import ElementDispatch
from gridmarket.network.elements import ElementSet, _plan_group, _series_inputs
from gridmarket.network.results import PowerFlowResult, _Layout, _SeriesArrays

__all__ = ["SeriesRunner", "ShapeSession"]

_SHAPE_PREFIX = "gm_shape_"  # Loadshapes that let dispatched elements follow the kw array
_UNITY_SHAPE = "gm_shape_unity"  # constant 1: elements not dispatched keep their power in yearly mode
_SHAPE_CLASSES = ("Load", "PVSystem")  # classes the "shapes" method can dispatch
_SHAPE_BLOCK = 64  # steps whose voltages are held before magnitudes and currents are computed


class SeriesRunner(ElementDispatch):
    """Series of power flows over the elements of an :class:`ElementSet`."""

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
                for item in _plan_group(g, elements.names, kw2, kvar2, pf2)]
        layout = self._layout()
        out = _SeriesArrays.empty(layout, steps)
        # node voltages of a block of steps, [ground, V...] per row; magnitudes, line currents
        # and transformer loadings are computed per block (sparse products over the block)
        block = np.zeros((min(steps, _SHAPE_BLOCK), layout.n_y + 1), dtype=np.complex128)
        failed: list[int] = []
        sol = self._dss.Solution

        def once() -> bool:
            if controls:
                sol.Solve()
            else:
                sol.SolveNoControl()
            return bool(sol.Converged())

        with _dss_errors("power flow failed"):
            sol.LoadMult(1.0)
            for t in range(steps):
                for batch, prop, values in plan:
                    batch.set(prop, values[t])
                if self._lib.Error_Get_Number():
                    msg = f"OpenDSS rejected the powers of step {t}: {self._dss.Error.Description()}"
                    raise NetworkError(msg)
                self._keep_step(t, self._solve_step(t, elements, once), steps, block, out, layout, failed, progress)
        for t in failed:
            out.fail(t)
        return out.result(layout)

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
                for item in _plan_group(g, elements.names, kw2, kvar2, pf2)]
        layout = self._layout()
        out = _SeriesArrays.empty(layout, steps)
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
            # node voltages of a block of steps, [ground, V...] per row; magnitudes and line
            # currents are computed per block (one sparse product instead of one per step)
            block = np.zeros((min(steps, _SHAPE_BLOCK), layout.n_y + 1), dtype=np.complex128)
            set_hour, loads_update = lib.Solution_Set_dblHour, lib.YMatrix_Set_LoadsNeedUpdating
            solve, errors, converged = lib.Solution_SolveNoControl, lib.Error_Get_Number, lib.Solution_Get_Converged

            def once() -> bool:
                loads_update(1)
                solve()
                if errors():
                    raise _DSSException(self._dss.Error.Description())
                return bool(converged())

            failed: list[int] = []
            t = -1
            try:
                for t in range(steps):
                    set_hour(float(t + 1))  # hour t + 1 reads point t of an interval-1 h shape
                    self._keep_step(t, self._solve_step(t, elements, once), steps, block, out, layout, failed,
                                    progress)
            finally:
                if t >= 0:  # the powers the elements get back when the session closes
                    session.last = [(b, prop, vals[t]) for b, prop, vals in bases]
        for t in failed:
            out.fail(t)
        return out.result(layout)

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

    def _keep_step(self, t: int, ok: bool, steps: int, block: np.ndarray, out: _SeriesArrays, layout: _Layout,
                   failed: list[int], progress: Callable[[int], None] | None) -> None:
        """Keep step ``t`` of a series of ``steps`` just solved: its node voltages in row
        ``t % _SHAPE_BLOCK`` of ``block`` when it converged (``ok``), else zeros and ``t`` in
        ``failed``; a full block, or the last step's, goes into ``out``; then ``progress(t)``."""
        row = t % _SHAPE_BLOCK
        if ok:
            block[row, 1:] = self._circuit.YNodeVarray.view(np.complex128)
        else:
            block[row, 1:] = 0.0
            failed.append(t)
        if row == block.shape[0] - 1 or t == steps - 1:
            out.fill(block[: row + 1], layout, t - row)
        if progress is not None:
            progress(t)

    def _solve_step(self, t: int, elements: ElementSet, once: Callable[[], bool]) -> bool:
        """Solve step ``t`` with ``once`` (which sets nothing and returns convergence); if it does
        not converge, retry from a linear start with the dispatched elements' own voltage limits
        (:meth:`_retry_own_models`). True when either converged.

        Raises
        ------
        PowerFlowError
            OpenDSS raised an error in the solve and again in the retry.
        """
        try:
            if self._needs_restart:
                self._dss.Solution.SolveDirect()  # restart from a linear solution
            if once():
                self._needs_restart = False
                return True
        except _DSSException:
            pass
        ok = self._retry_own_models(t, elements, once)
        self._needs_restart = not ok  # the next step starts from a linear solution
        return ok

    def _retry_own_models(self, t: int, elements: ElementSet, once: Callable[[], bool]) -> bool:
        """Solve step ``t`` again with every dispatched element at its own ``vminpu``/``vmaxpu``
        (OpenDSS's load models: constant impedance outside them), from a linear start; the
        engine's band is set back afterwards. True if it converged."""
        band = self.pq_band_pu
        try:
            if band is not None:
                for g in elements._groups:
                    g.batch.set(b"vminpu", g.own_vminpu, flags=0)
                    g.batch.set(b"vmaxpu", g.own_vmaxpu, flags=0)
            self._dss.Solution.SolveDirect()
            return once()
        except _DSSException as exc:
            msg = f"power flow of step {t} failed: OpenDSS error {exc}"
            raise PowerFlowError(msg, step=t) from exc
        finally:
            if band is not None:
                for g in elements._groups:
                    n = g.batch.size
                    g.batch.set(b"vminpu", np.full(n, float(band[0])), flags=0)
                    g.batch.set(b"vmaxpu", np.full(n, float(band[1])), flags=0)


class ShapeSession:
    """A time-series run of :meth:`OpenDSSNetwork.run_series`'s ``"shapes"`` method that spans
    several calls (chunks of a long horizon).

    Made by :meth:`OpenDSSNetwork.shape_session`; use as a context manager. The first
    :meth:`run` switches OpenDSS to yearly mode with every element of ``elements`` following
    its own Loadshape; each :meth:`run` points the shapes at its powers and solves its steps in
    order, each starting from the previous step's voltages, exactly as one long run would;
    :meth:`close` returns to snapshot mode with the elements at the powers of the last step.
    """

    def __init__(self, net: SeriesRunner, elements: ElementSet) -> None:
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

