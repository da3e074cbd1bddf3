"""Trade links as pools: a full mesh of C communities in O(C) variables (issue 14).

MODEL.md writes inter-community trade on arcs: ``γ_imp|(c,j) = γ_exp|(j,c)`` for every ordered
pair of linked communities (eq. 8), the importer paying the fee ``τ`` per kWh. A *clique* of
linked communities (every pair of a connected group linked, e.g. ``links = "all"``) needs
``C(C−1)`` arcs that way: 580,000 for the 762 transformer communities of a utility feeder.

The **pool formulation** replaces the arcs of a clique ``K`` by one shared pool: community ``c``
exports ``e_c ≥ 0`` into it and imports ``i_c ≥ 0`` from it, paying ``τ`` per kWh imported, and
the pool balances, ``Σ_{c∈K} i_c = Σ_{c∈K} e_c``. It is equivalent to the arcs:

* arcs → pool: ``i_c = Σ_j γ_imp|(c,j)``, ``e_c = Σ_j γ_exp|(c,j)`` meet the pool balance
  (every arc's import is another member's export) and cost the same fees;
* pool → arcs: any split ``F_{j→c} ≥ 0`` with row sums ``e_j`` and column sums ``i_c`` (e.g.
  pro rata, ``F_{j→c} = e_j i_c / Σ e``) is a feasible arc flow with the same fees, except for
  the diagonal ``F_{c→c}`` (a community trading with itself through the pool); removing it lowers
  both ``i_c`` and ``e_c`` and saves ``τ F_{c→c}``, so with ``τ > 0`` no optimum holds one, and with
  ``τ = 0`` removing it changes no objective term of the market (the ε tie-break sits on the
  agents' α and β, which the community sums fix).

So the optimal welfare, dispatch and community prices are the same. The dual of the pool
balance is the pool price ``q`` [currency/kWh]: an exporter receives ``q``, an importer pays
``q + τ`` (with arcs, every arc of a pooled clique carries the same ``ρ = q`` wherever it is
used). A connected group of links that is not a clique keeps its arcs, and so (by default) does
a clique of at most :data:`ARC_CLIQUE_MAX` communities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

__all__ = ["ARC_CLIQUE_MAX", "LinkArcs", "community_pool", "link_arcs", "pool_names"]

#: by default a clique of up to this many communities keeps its arcs (settlements per pair, as
#: MODEL.md writes them; a constant number of variables), a larger one trades through a pool
ARC_CLIQUE_MAX = 10

#: partner codes of the arc arrays (see gridmarket.market._data: GRID = -1, POOL = -2)
_GRID, _POOL = -1, -2


@dataclass(frozen=True)
class LinkArcs:
    """The arcs of the market: one grid arc per community first (arc ``c`` is community ``c``'s),
    then one pool arc per pooled community, then both directions of every remaining link.

    ``comm`` owns the arc (imports over it), ``partner`` is the partner community, ``-1`` (grid)
    or ``-2`` (pool), ``rev`` the reverse arc of a community link (-1 otherwise), ``pool`` the pool
    of a pool arc (-1 otherwise); ``n_pool`` pools.
    """

    comm: np.ndarray
    partner: np.ndarray
    rev: np.ndarray
    pool: np.ndarray
    n_pool: int


def link_arcs(n_c: int, pairs: np.ndarray, *, pools: bool | None = None) -> LinkArcs:
    """Arcs of ``n_c`` communities linked by the unordered ``pairs`` (L, 2) of community indices.

    With ``pools=True`` every connected group of links that is a clique becomes one pool (the
    other groups keep arcs); with None (default) only the cliques of more than
    :data:`ARC_CLIQUE_MAX` communities; with False every link gives two arcs (the arc
    formulation of MODEL.md, in the order of ``pairs``). Linear in ``n_c + L``.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    grid = np.arange(n_c, dtype=np.int64)
    pool_of = np.full(n_c, -1, dtype=np.int64)
    keep = np.ones(len(pairs), dtype=bool)
    n_pool = 0
    if pools is not False and len(pairs):
        lo, hi = np.minimum(pairs[:, 0], pairs[:, 1]), np.maximum(pairs[:, 0], pairs[:, 1])
        proper = lo != hi
        # CSR sums duplicate pairs: its entries are the distinct links
        graph = sp.csr_matrix((np.ones(int(proper.sum())), (lo[proper], hi[proper])), shape=(n_c, n_c))
        _, label = connected_components(graph, directed=False)
        size = np.bincount(label, minlength=label.max(initial=-1) + 1)
        edges = np.bincount(label, weights=np.diff(graph.indptr), minlength=len(size))
        clique = (size > (1 if pools else ARC_CLIQUE_MAX)) & (edges == size * (size - 1) // 2)
        ids = np.cumsum(clique) - 1  # pool number of each clique component
        n_pool = int(clique.sum())
        inpool = clique[label]
        pool_of[inpool] = ids[label[inpool]]
        keep = ~clique[label[pairs[:, 0]]]
    members = np.flatnonzero(pool_of >= 0)
    rest = pairs[keep]
    n_l = len(rest)
    link_comm = np.empty(2 * n_l, dtype=np.int64)
    link_comm[0::2], link_comm[1::2] = rest[:, 0], rest[:, 1]
    link_partner = np.empty(2 * n_l, dtype=np.int64)
    link_partner[0::2], link_partner[1::2] = rest[:, 1], rest[:, 0]
    first = n_c + len(members)
    link_rev = first + (np.arange(2 * n_l, dtype=np.int64) ^ 1)
    m = len(members)
    return LinkArcs(
        comm=np.concatenate([grid, members, link_comm]),
        partner=np.concatenate([np.full(n_c, _GRID), np.full(m, _POOL), link_partner]).astype(np.int64),
        rev=np.concatenate([np.full(n_c + m, -1), link_rev]).astype(np.int64),
        pool=np.concatenate([np.full(n_c, -1), pool_of[members], np.full(2 * n_l, -1)]).astype(np.int64),
        n_pool=n_pool)


def community_pool(arc_comm: np.ndarray, arc_pool: np.ndarray, n_c: int) -> np.ndarray:
    """(n_c,) pool of every community, -1 for a community in no pool."""
    out = np.full(n_c, -1, dtype=np.int64)
    pa = arc_pool >= 0
    out[arc_comm[pa]] = arc_pool[pa]
    return out


def pool_names(n_pool: int) -> tuple[str, ...]:
    """``"pool"`` for a single pool, ``"pool1"``, ``"pool2"``, ... for several."""
    return ("pool",) if n_pool == 1 else tuple(f"pool{k + 1}" for k in range(n_pool))
