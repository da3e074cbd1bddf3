"""What a series of power flows returns: :class:`PowerFlowResult` (numpy arrays of node voltages
[pu], line currents [A] and transformer loadings), and the node/conductor layout it is read with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from gridmarket.network._dss import _DEENERGISED_PU

__all__ = ["PowerFlowResult"]


@dataclass(frozen=True)
class PowerFlowResult:
    """Node voltages, line currents and transformer loadings of a series of power flows.

    Attributes
    ----------
    v_pu : numpy.ndarray
        Shape (steps, n_nodes): voltage magnitude of each phase node in pu of the node's
        line-to-neutral base [pu]. NaN for a node that is not energised, and for every node
        in a step that did not converge.
    node_names : list of str
        ``"bus.phase"``, lower case, one per column of ``v_pu``. Only phase nodes (1, 2, 3)
        of buses with a voltage base appear; neutral nodes (4 and up) do not.
    i_amps : numpy.ndarray
        Shape (steps, n_line_conductors): current magnitude per line phase conductor at
        terminal 1 [A] (NaN in a step that did not converge).
    line_phase_names : list of str
        ``"line.name.phase"`` (phase = node number at the line's bus 1), one per column of
        ``i_amps``.
    norm_amps : numpy.ndarray
        Shape (n_line_conductors,): normal ampacity of the conductor's line [A]; ``inf`` when
        the line has no rating (``normamps=0``).
    converged : numpy.ndarray of bool
        Shape (steps,): False for a step whose power flow did not converge, even when retried
        with the elements' own load models; its voltages, currents and loadings are NaN.
        All True when not given.
    transformer_names : list of str
        ``"transformer.name"``, lower case, one per column of ``transformer_loading``.
    transformer_loading : numpy.ndarray
        Shape (steps, n_transformers): apparent power through winding 1, ``|S| / kVA`` [-]
        (1.0 = the normal rating). Empty (steps, 0) when not given.
    transformer_kva : numpy.ndarray
        Shape (n_transformers,): normal rating of winding 1 [kVA]; ``inf`` when unrated.
    """

    v_pu: np.ndarray
    node_names: list[str]
    i_amps: np.ndarray
    line_phase_names: list[str]
    norm_amps: np.ndarray
    converged: np.ndarray = field(default_factory=lambda: np.ones(0, dtype=bool))
    transformer_names: list[str] = field(default_factory=list)
    transformer_loading: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    transformer_kva: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        steps = int(self.v_pu.shape[0])
        if self.converged.size == 0 and steps:
            object.__setattr__(self, "converged", np.ones(steps, dtype=bool))
        if self.transformer_loading.size == 0 and self.transformer_loading.shape[0] != steps:
            object.__setattr__(self, "transformer_loading", np.zeros((steps, len(self.transformer_names))))
        if self.converged.shape != (steps,):
            msg = f"converged must have shape ({steps},), got {self.converged.shape}"
            raise ValueError(msg)
        if self.transformer_loading.shape != (steps, len(self.transformer_names)):
            msg = (f"transformer_loading must have shape ({steps}, {len(self.transformer_names)}), "
                   f"got {self.transformer_loading.shape}")
            raise ValueError(msg)

    @property
    def steps(self) -> int:
        """Number of steps solved."""
        return int(self.v_pu.shape[0])


@dataclass(frozen=True, eq=False)
class _TxMatrix:
    """Winding-1 power of every enabled transformer from the node voltages: per terminal-1
    conductor c, ``I_c = M[c] @ [0, V]`` and ``S_c = V[node_c] * conj(I_c)``; ``S = A @ S_c``."""

    i_matrix: sp.csr_matrix  #: (n_conductors, n_y + 1) complex
    v_index: np.ndarray  #: (n_conductors,) position of each conductor's node in [0, V]
    agg: sp.csr_matrix  #: (n_transformers, n_conductors) ones
    names: list[str]
    kva: np.ndarray  #: (n_transformers,) [kVA], inf when unrated

    def loading(self, block: np.ndarray) -> np.ndarray:
        """(rows, n_transformers) ``|S| / kVA`` of a block of rows of [0, V] [V]."""
        if not self.names:
            return np.zeros((block.shape[0], 0))
        cur = self.i_matrix @ block.T  # (n_cond, rows) [A]
        s_va = self.agg @ (block[:, self.v_index].T * np.conj(cur))  # (n_tx, rows) [VA]
        return (np.abs(s_va) / (1000.0 * self.kva[:, None])).T


@dataclass(frozen=True, eq=False)
class _Layout:
    """Node, line-conductor and transformer layout of the solved system, rebuilt when elements
    are added."""

    version: int
    node_names: list[str]
    node_y: np.ndarray  #: position of each reported node in [ground] + YNodeVarray
    inv_base_v: np.ndarray  #: 1 / (LN base [V]) per reported node
    n_y: int  #: number of Y-matrix nodes (ground excluded)
    i_matrix: sp.csr_matrix  #: (n_line_conductors, n_y + 1) complex: I = M @ [0, V]
    line_phase_names: list[str]
    norm_amps: np.ndarray
    tx: _TxMatrix


@dataclass(eq=False)
class _SeriesArrays:
    """The arrays a series fills step by step (or block by block)."""

    v: np.ndarray  #: (steps, n_nodes) [V], scaled to pu at the end
    i: np.ndarray  #: (steps, n_line_conductors) [A]
    tx: np.ndarray  #: (steps, n_transformers) [-]
    converged: np.ndarray  #: (steps,) bool

    @classmethod
    def empty(cls, layout: _Layout, steps: int) -> _SeriesArrays:
        return cls(v=np.empty((steps, len(layout.node_names))), i=np.empty((steps, len(layout.line_phase_names))),
                   tx=np.empty((steps, len(layout.tx.names))), converged=np.ones(steps, dtype=bool))

    def fill(self, block: np.ndarray, layout: _Layout, t0: int) -> None:
        """Steps ``t0 .. t0 + len(block) - 1`` from rows of [0, V] [V]."""
        t1 = t0 + block.shape[0]
        self.v[t0:t1] = np.abs(block[:, layout.node_y])
        self.i[t0:t1] = np.abs(layout.i_matrix @ block.T).T
        self.tx[t0:t1] = layout.tx.loading(block)

    def fail(self, t: int) -> None:
        """Step ``t`` did not converge: NaN everywhere."""
        self.converged[t] = False
        self.v[t] = np.nan
        self.i[t] = np.nan
        self.tx[t] = np.nan

    def result(self, layout: _Layout) -> PowerFlowResult:
        """The series' result: voltages scaled to pu in place (nodes below
        :data:`_DEENERGISED_PU` become NaN)."""
        v_pu = self.v
        v_pu *= layout.inv_base_v
        with np.errstate(invalid="ignore"):
            v_pu[v_pu < _DEENERGISED_PU] = np.nan
        return PowerFlowResult(v_pu=v_pu, node_names=list(layout.node_names), i_amps=self.i,
                               line_phase_names=list(layout.line_phase_names), norm_amps=layout.norm_amps.copy(),
                               converged=self.converged, transformer_names=list(layout.tx.names),
                               transformer_loading=self.tx, transformer_kva=layout.tx.kva.copy())
