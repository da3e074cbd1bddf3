"""What a series of power flows returns: :class:`PowerFlowResult` (numpy arrays of node voltages
[pu] and line currents [A]), and the node/conductor layout it is read with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from gridmarket.network._dss import _DEENERGISED_PU

__all__ = ["PowerFlowResult"]


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

