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

from pathlib import Path
from typing import TYPE_CHECKING

from gridmarket.network.elements import SUPPORTED_CLASSES, ElementSet
from gridmarket.network.results import PowerFlowResult
from gridmarket.network.series import SeriesRunner, ShapeSession

__all__ = ["SUPPORTED_CLASSES", "ElementSet", "OpenDSSNetwork", "PowerFlowResult", "ShapeSession"]


class OpenDSSNetwork(SeriesRunner):
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
        super().__init__(master, pq_band_pu=pq_band_pu, tolerance=tolerance, max_iterations=max_iterations)


if TYPE_CHECKING:
    from gridmarket.network.engine import PowerFlowEngine

    def _implements(net: OpenDSSNetwork) -> PowerFlowEngine:  # mypy checks the protocol here
        return net
