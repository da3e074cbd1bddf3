"""The sequential market (horizon = 1) solved from its KKT conditions, without a QP solver.

Every market step is a strictly convex QP in ``(Φ, α, β, S_ch, S_dis)`` (the ε tie-break)
whose only coupling is a handful of community and network prices. This module solves its
KKT system exactly (to rounding) with a primal–dual active-set iteration, vectorised over
agents and over a batch of steps, and fills the same :class:`~gridmarket.market.prices.Solution`
as the Clarabel path (:mod:`gridmarket.market.solve`).

Accuracy. The ε split of trades moves the objective by only ``ε·δ²`` for a change ``δ`` of
Φ, α or β, far below Clarabel's 1e-9 gap tolerance: with its default settings the Clarabel
path places that split only to ~1e-2 kWh (and ``P`` of agents with small ``a`` to ~1e-5 kWh),
while this path is exact; tightened to 1e-13/1e-14, Clarabel converges onto it (the fast
objective is never above Clarabel's). Welfare, ``P``, ``S``, SoC and community prices agree
with the default Clarabel path to its tolerance.

The KKT conditions, in the signs of :mod:`gridmarket.market.prices`
-------------------------------------------------------------------
For an agent ``n`` of community ``c`` let ``ν_n`` be the dual of its balance (2). With
``h = 1/(2ε)`` and ``x_n = −Φ_n`` (its net purchase inside the community) [kWh]:

* stationarity in Φ: ``ν_n = λ_c + 2ε x_n``;
* in α, β: ``α_n = (x_n − u_c)⁺``, ``β_n = (−x_n − w_c)⁺`` with the thresholds
  ``u_c = h(μ_imp,c − λ_c)`` and ``w_c = h(λ_c − μ_exp,c)`` [kWh];
* the agent's physical response is a sum of clipped linear *units* of its price::

      consumer / producer   P = clip((b − ν)/(2a), P̲, P̄)
      battery               S = clip((θ_ch − ν)/σ, S̲_ch, S̄_ch) − clip((ν − θ_dis)/σ, 0, S̄_dis)

  with ``σ = 2(a + ε)``, ``θ_ch = g_ch v − c_deg``, ``θ_dis = g_dis v + c_deg``
  (``g_ch = η_ch``, ``g_dis = 1/η_dis``; both 1 in the paper model) and the charge and
  discharge limits of the step (rate, SoC bounds given the SoC before the step, paper
  headroom). A battery never charges and discharges at once (the ε term on
  ``S_ch² + S_dis²`` makes that strictly worse), so ``S_ch = S⁺`` and ``S_dis = S⁻``.
  ``a = 0`` gives a vertical unit: ``ν = b`` while ``P`` moves between its bounds;
* agent balance (2): ``P + S = x + α − β``; community balance (3): ``Σ_c x_n = 0``.

Network
-------
The upstream grid is every community's partner. Linked communities must form *cliques*
(every pair of a connected group linked, e.g. ``links = "all"`` or none); with a fee
``τ > 0`` every clique then trades through one *pool* of potential ``q``: exporters get
``μ_exp = q``, importers pay ``μ_imp = q + τ``, with ``π_exp ≤ q ≤ π_imp − τ``. A community
faces the import price ``P_i = min(π_imp, q + τ)`` and the export price
``P_e = max(π_exp, q)``; a clique is in one of four regimes:

========  ==========================  =========================================
regime    prices                      flows
========  ==========================  =========================================
none      ``P_i = π_imp, P_e = π_exp``  grid only (single community, or ``τ ≥ π_imp − π_exp``)
floating  ``q`` from the pool balance   Σ exports = Σ imports inside the clique
low       ``q = π_exp``                 exporters' excess goes to the grid
high      ``q = π_imp − τ``             importers' deficit comes from the grid
========  ==========================  =========================================

Inter-community flows are not unique when a clique has several exporters and importers (or
importers also buy from the grid); the fast path splits *pro rata*,
``F_{j→c} = E_j I_c / max(ΣE, ΣI)``. Duals that the QP leaves free are reported as
``μ_imp,c = P_i``, ``μ_exp,c = P_e`` (the prices a community would meet at the margin) and
``ρ = q`` on every link of a pooled clique (the midpoint of ``[π_imp − τ, π_exp]`` when the
fee closes the pool). A community that does not trade and whose units all sit on bounds (e.g.
idle PV, a battery inside its dead band) has no unique price either: it is reported mid-way
in the range of prices at which none of its units would move. Dispatch (``P, S, Φ, α, β,
SoC``), the other community prices and welfare are unique.

The active-set iteration
------------------------
Given which piece every unit is on, which agents import (α > 0) or export (β > 0) and each
clique's regime, all equations are linear: ``x_n`` is affine in ``(λ_c, μ_imp,c, μ_exp,c)``,
``λ_c`` follows from (3) in closed form, and a floating pool's ``q`` from its balance. The
pieces are then re-read from the new prices (Newton's method on the piecewise-linear KKT
map); when nothing changes the solution is exact. A Newton step that sends a community price
far outside its ports is cut back to them (this keeps the active sets from cycling), and a
step started from borrowed active sets that does not settle starts again from its own ε = 0
market. A step that still does not settle, or whose data break an assumption (an infeasible
battery bound, a pool where a community would both import and export), is reported as failed
and solved by Clarabel.

The iteration starts from the market without the ε term, solved exactly, with each trading
community's importers or exporters at their water level, so that usually only ε-level
decisions remain. A community's net demand is a nonincreasing piecewise-linear function of
its price with two breakpoints per unit (a vertical unit jumps at one), so its root follows
from one sort of the breakpoints inside ``[π_exp, π_imp]`` (those below are folded into a
linear part) and cumulative sums of their slope changes, for every step and community of a
batch at once. A pool's excess supply is piecewise linear in ``q`` again (each member's
breakpoints, those below the member's own root moved by ``−τ``, with a plateau of zero
exchange in between), and its root is found the same way.

Sequential steps are coupled only through the SoC before each step, which enters the
battery limits alone. Steps are therefore solved in batches with guessed SoC (the batteries
run in order at the ε = 0 prices); the steps of a batch are kept in order while their
batteries' responses are unchanged under the true SoC (their KKT points are then
unchanged), and from the first that is not, the remaining steps whose solution fails a new
guess are solved again, warm-started (merged batteries: from their own ε = 0 market). The
kept steps of a batch are written to the :class:`~gridmarket.market.prices.Solution` at once.

Batteries that behave alike (same community, size, ``a``, SoC start, target and band: the
equal banks a placement loop adds) are solved as one agent of weight m, counted m times in
every community sum, and written back to each (:func:`fast_plan`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import cast

import numpy as np
import scipy.sparse as sp

from gridmarket.errors import MarketError
from gridmarket.market._data import CONSUMER, PRODUCER, MarketData
from gridmarket.market.pool import community_pool
from gridmarket.market.prices import Solution

__all__ = ["FastPlan", "FastStats", "fast_plan", "fast_unsupported", "solve_sequential"]

#: piece of a unit: at its lower bound, on its sloped part, at its upper bound
LO, MID, HI = 0, 1, 2
#: clique regimes
NONE, FLOAT, LOW, HIGH = 0, 1, 2, 3
#: steps solved together (memory ~ 30 arrays of batch × agents)
MAX_BATCH = 192
#: active-set iterations before a step is handed to Clarabel
MAX_ITER = 40
#: iterations from a borrowed start (warm, or an ε = 0 market read with guessed SoC) before
#: a step starts again from its own ε = 0 market
RESTART_ITER = 6
#: tolerances: energies [kWh], prices [currency/kWh]
TOL_KWH = 1e-10
TOL_PRICE = 1e-13
#: how far (relative) a community price may leave its ports within one active-set step
PRICE_MARGIN = 0.02
#: steps re-solved under a new SoC guess start from their old active sets (True) or from their
#: own ε = 0 market (False); with merged batteries always the latter (half the iterations on
#: case 2 with 190 banks in 5 classes)
RESOLVE_WARM = True
#: passes of the battery presimulation that guesses each step's SoC
PRESIM_PASSES = 2
#: up to this many communities the membership matrices are dense, beyond it sparse
DENSE_COMMUNITIES = 32
#: up to this many batteries (or classes of equal ones) their SoC recursion runs on Python floats,
#: beyond it on numpy rows
SCALAR_BATTERIES = 8


@dataclass(frozen=True)
class FastPlan:
    """Arrays of a case that the fast path needs, built once by :func:`fast_plan`.

    Agents are kept in an internal order, consumers and producers first (market order
    ``MarketData.pq``), then batteries (``MarketData.bat``); ``perm`` maps it to market order.
    """

    data: MarketData
    eps: float  #: ε [currency/kWh²]
    h: float  #: 1/(2ε) [kWh²/currency]
    tau: float  #: τ [currency/kWh]
    n_pq: int
    n_b: int
    perm: np.ndarray  #: (n_m,) market position of each internal agent
    comm: np.ndarray  #: (n_m,) community of each internal agent
    member: np.ndarray  #: (n_m, n_c) 1.0 where the internal agent is in the community
    theta_p: np.ndarray  #: (n_pq,) b [currency/kWh]
    sig_p: np.ndarray  #: (n_pq,) 2a [currency/kWh²]
    inv_sig_p: np.ndarray  #: (n_pq,) 1/(2a), 1 where a = 0
    tos_p: np.ndarray  #: (n_pq,) b/(2a) [kWh], b where a = 0
    vert_p: np.ndarray  #: (n_pq,) a == 0: a vertical unit
    any_vert: bool
    lo_fac: np.ndarray  #: (n_pq,) P̲ = lo_fac · energy
    hi_fac: np.ndarray  #: (n_pq,) P̄ = hi_fac · energy
    sig_b: np.ndarray  #: (n_b,) 2(a + ε) [currency/kWh²]
    inv_sig_b: np.ndarray  #: (n_b,) 1/σ
    g_ch: float  #: η_ch (physical) or 1 (paper)
    g_dis: float  #: 1/η_dis (physical) or 1 (paper)
    cdeg: float  #: c_deg [currency/kWh]
    keep: float  #: 1 − λ_sd
    clique: np.ndarray  #: (n_c,) pool clique of the community, -1 if alone
    n_k: int  #: number of pool cliques
    cmember: np.ndarray  #: (n_c, n_k) 1.0 where the community is in the clique
    link_comm: np.ndarray  #: (n_link,) importer of each link arc
    link_partner: np.ndarray  #: (n_link,) exporter of each link arc
    link_in: np.ndarray  #: (n_link, n_c) 1.0 at each link arc's importer
    link_out: np.ndarray  #: (n_link, n_c) 1.0 at each link arc's exporter
    comm_map: np.ndarray  #: (n_c, M) internal agents of each community, padded with n_m
    pt_slope: np.ndarray  #: (P,) slope change of −R at each unit breakpoint (:func:`_unit_points`)
    pt_comm: np.ndarray  #: (P,) community of each unit breakpoint
    port_col: np.ndarray  #: (n_c,) the community's clique, n_k where it is alone
    all_pooled: bool  #: every community is in a pool clique
    member_pq: np.ndarray  #: (n_pq, n_c) rows of ``member`` of the consumers and producers
    member_b: np.ndarray  #: (n_b, n_c) rows of ``member`` of the batteries
    pt_member: np.ndarray  #: (P, n_c) 1.0 where the breakpoint's unit is in the community
    pt_wslope: np.ndarray  #: (P,) ``pt_slope`` times the weight of the breakpoint's unit
    #: identical batteries merged (:func:`_battery_classes`): weight (n_m,) of each internal
    #: agent (how many agents of the case it stands for), None when no two batteries merged
    weight: np.ndarray | None = None
    full: MarketData | None = None  #: the case's data when batteries are merged (``data`` is then reduced)
    bat_class: np.ndarray | None = None  #: (n_b of ``full``,) merged battery of each of the case's batteries
    reps: np.ndarray | None = None  #: (n_b,) one battery of the case (the first) per merged battery


@dataclass
class FastStats:
    """What the fast path did in a run."""

    fast_steps: int = 0
    qp_steps: int = 0
    iterations: int = 0  #: active-set iterations, summed over batch solves
    resolves: int = 0  #: steps solved again alone because their guessed SoC was wrong
    failures: dict[int, str] = field(default_factory=dict)  #: step -> why Clarabel solved it


def _cliques(d: MarketData) -> tuple[np.ndarray, int] | str:
    """Pool clique of every community (-1 alone), or why the link topology is unsupported."""
    n_c = d.n_c
    pooled = community_pool(d.arc_comm, d.arc_pool, n_c)  # cliques that are pools already (market.pool)
    if d.n_pool and not len(d.link_arcs):
        return pooled, d.n_pool
    adj = np.zeros((n_c, n_c), dtype=bool)
    for a in d.link_arcs:
        adj[d.arc_comm[a], d.arc_partner[a]] = True
    comp = -np.ones(n_c, dtype=np.int64)
    n_k = 0
    for c in range(n_c):
        if comp[c] >= 0 or not adj[c].any():
            continue
        stack, members = [c], []
        comp[c] = n_k
        while stack:
            i = stack.pop()
            members.append(i)
            for j in np.flatnonzero(adj[i]):
                if comp[j] < 0:
                    comp[j] = n_k
                    stack.append(int(j))
        sub = adj[np.ix_(members, members)] | np.eye(len(members), dtype=bool)
        if not sub.all():
            names = ", ".join(d.communities[m] for m in sorted(members))
            return f"linked communities {names} are not all linked pairwise (a pool needs a clique)"
        n_k += 1
    inpool = pooled >= 0
    comp[inpool] = n_k + pooled[inpool]
    return comp, n_k + d.n_pool


def fast_unsupported(data: MarketData, *, horizon: int) -> str | None:
    """Why the fast path cannot clear this case (None when it can).

    The fast path needs one-step windows, ``ε > 0``, a trade fee ``τ > 0`` when communities
    are linked, linked communities forming cliques, and at least one agent per community.
    """
    return _check(data, horizon)[0]


def _check(data: MarketData, horizon: int) -> tuple[str | None, np.ndarray, int]:
    """Why the fast path cannot clear this case (None when it can), the pool clique of every
    community (-1 alone) and the number of cliques."""
    none = np.zeros(0, dtype=np.int64)
    if horizon != 1:
        return f"horizon {horizon} > 1 (multi-period windows link steps through SoC)", none, 0
    if not data.tie_break > 0:
        return "tie_break ε = 0 (the split of trades among agents is not unique)", none, 0
    if data.n_c and np.bincount(data.comm, minlength=data.n_c).min() == 0:
        return "a community has no market agent", none, 0
    if (len(data.link_arcs) or data.n_pool) and not data.trade_fee > 0:
        return "trade_fee τ = 0 with linked communities (no pool structure)", none, 0
    cl = _cliques(data)
    return (cl, none, 0) if isinstance(cl, str) else (None, *cl)


def _group_map(groups: np.ndarray, n_g: int, pad: int) -> np.ndarray:
    """(n_g, M) positions of each group's members (``groups`` per position) in order, padded with ``pad``."""
    counts = np.bincount(groups, minlength=n_g)
    out = np.full((n_g, max(int(counts.max(initial=0)), 1)), pad, dtype=np.int64)
    order = np.argsort(groups, kind="stable")
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out[groups[order], np.arange(len(groups)) - first[groups[order]]] = order
    return out


def _membership(comm: np.ndarray, n_c: int, weight: np.ndarray | None = None) -> np.ndarray:
    """(n, n_c) 1.0 (or row i's ``weight``) where row i is in community ``comm[i]``: dense for a
    few communities, sparse (CSR, the products with it stay linear in the agents) for many."""
    w = np.ones(len(comm)) if weight is None else weight
    m = sp.csr_matrix((w, (np.arange(len(comm)), comm)), shape=(len(comm), n_c))
    return m.toarray() if n_c <= DENSE_COMMUNITIES else m


def _battery_classes(d: MarketData) -> tuple[np.ndarray, np.ndarray]:
    """Batteries that behave alike: the class (n_b,) of every battery and the first battery of
    every class (classes in the order of their first battery).

    Batteries of one community with the same capacity, rate limits, ``a``, initial and target
    SoC and SoC band of every step have the same KKT conditions; the QP is strictly convex, so
    they take the same S, SoC, Φ, α, β and ν in every step (the symmetric point is the solution).
    """
    bt = d.battery
    scalars = [d.comm[d.bat].astype(float), bt.cap_kwh, bt.sch_max, bt.sdis_max, bt.a, bt.soc_init, bt.soc_target]
    # the bands (steps, n_b) enter through a hash of each column's bytes (equal columns, equal
    # hashes); the classes found are then checked column by column, and the full comparison runs
    # only if two bands shared a hash
    hashes = [np.array([hash(c.tobytes()) for c in np.ascontiguousarray(x.T)], dtype=float)
              for x in (bt.band_lo, bt.band_hi)]
    cls, first = _row_classes(np.column_stack(scalars + hashes))
    if not (np.array_equal(bt.band_lo, bt.band_lo[:, first[cls]])
            and np.array_equal(bt.band_hi, bt.band_hi[:, first[cls]])):
        cls, first = _row_classes(np.column_stack(scalars + [bt.band_lo.T, bt.band_hi.T]))
    return cls, first


def _row_classes(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class of every row of ``key`` (equal rows, one class) and the first row of each class, classes
    in the order of their first row."""
    _, first, inv = np.unique(key, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[np.asarray(inv).ravel()], first[order]


def _reduced(d: MarketData, reps: np.ndarray) -> MarketData:
    """The market data with only the batteries ``reps`` (one per class), consumers and producers
    first (P-block order), then those batteries."""
    keep = np.concatenate([d.pq, d.bat[reps]]).astype(np.int64)
    bt = d.battery
    red = replace(bt, names=tuple(bt.names[i] for i in reps), cap_kwh=bt.cap_kwh[reps], sch_max=bt.sch_max[reps],
                  sdis_max=bt.sdis_max[reps], a=bt.a[reps], soc_init=bt.soc_init[reps],
                  soc_target=bt.soc_target[reps], band_lo=bt.band_lo[:, reps], band_hi=bt.band_hi[:, reps])
    n_pq = d.n_pq
    return replace(d, names=tuple(d.names[i] for i in keep), pos=d.pos[keep], kind=d.kind[keep], comm=d.comm[keep],
                   const=d.const[keep], pq=np.arange(n_pq, dtype=np.int64),
                   bat=n_pq + np.arange(len(reps), dtype=np.int64), battery=red)


def fast_plan(data: MarketData, *, merge: bool = True) -> FastPlan:
    """Precompute the arrays of :class:`FastPlan` (call :func:`fast_unsupported` first).

    With ``merge``, batteries that behave alike (:func:`_battery_classes`, e.g. the equal banks
    a placement loop adds to one community) are solved as one agent of weight ``m`` (the number
    it stands for) and written back to each: the work grows with the classes, not the batteries.
    """
    why, clique, n_k = _check(data, 1)
    if why is not None:
        msg = f"the fast market path does not apply: {why}"
        raise ValueError(msg)
    if merge and data.n_b > 1:
        cls, reps = _battery_classes(data)
        if len(reps) < data.n_b:
            red = _reduced(data, reps)
            w = np.concatenate([np.ones(data.n_pq), np.bincount(cls, minlength=len(reps)).astype(float)])
            return replace(_plan(red, clique, n_k, w), weight=w, full=data, bat_class=cls, reps=reps)
    return _plan(data, clique, n_k, None)


def _plan(d: MarketData, clique: np.ndarray, n_k: int, weight: np.ndarray | None) -> FastPlan:
    """The plan of ``d`` with agent weights ``weight`` (internal order; None: all 1)."""
    eps = float(d.tie_break)
    perm = np.concatenate([d.pq, d.bat]).astype(np.int64)
    comm = d.comm[perm]
    member = _membership(comm, d.n_c, weight)
    kind_pq = d.kind[d.pq]
    prod = kind_pq == PRODUCER
    if not np.all((kind_pq == CONSUMER) | prod):
        raise ValueError("P block holds an agent that is neither consumer nor producer")
    lo_fac = np.ones(d.n_pq)
    hi_fac = np.ones(d.n_pq)
    lo_fac[d.flex_p] = 1.0 - d.flex
    lo_fac[prod] = -1.0
    hi_fac[prod] = 0.0
    bt = d.battery
    g_ch, g_dis = bt.g_ch, bt.g_dis
    cmember = np.zeros((d.n_c, n_k))
    inc = clique >= 0
    cmember[np.flatnonzero(inc), clique[inc]] = 1.0
    links = d.link_arcs
    vert = d.a_pq == 0.0
    sig_b = 2.0 * (d.a_bat + eps)
    # unit breakpoints: [P first | P second | charge first | charge second | discharge first | second]
    n_pq, n_b = d.n_pq, d.n_b
    inv_p = np.where(vert, 0.0, 1.0 / np.where(vert, 1.0, 2.0 * d.a_pq))
    pt_slope = np.concatenate([inv_p, -inv_p, 1.0 / sig_b, -1.0 / sig_b, 1.0 / sig_b, -1.0 / sig_b])
    own = np.concatenate([np.arange(n_pq), np.arange(n_pq)] + [n_pq + np.arange(n_b)] * 4)
    w_own = np.ones(len(own)) if weight is None else weight[own]
    return FastPlan(
        data=d, eps=eps, h=0.5 / eps, tau=float(d.trade_fee), n_pq=d.n_pq, n_b=d.n_b, perm=perm, comm=comm,
        member=member, theta_p=d.b_pq.astype(float), sig_p=2.0 * d.a_pq,
        inv_sig_p=1.0 / np.where(vert, 1.0, 2.0 * d.a_pq),
        tos_p=d.b_pq / np.where(vert, 1.0, 2.0 * d.a_pq),
        vert_p=vert, any_vert=bool(vert.any()), lo_fac=lo_fac, hi_fac=hi_fac, sig_b=sig_b, inv_sig_b=1.0 / sig_b,
        g_ch=g_ch, g_dis=g_dis, cdeg=bt.cdeg, keep=bt.keep,
        clique=clique, n_k=n_k, cmember=cmember, link_comm=d.arc_comm[links], link_partner=d.arc_partner[links],
        link_in=np.eye(d.n_c)[d.arc_comm[links]].reshape(len(links), d.n_c),
        link_out=np.eye(d.n_c)[d.arc_partner[links]].reshape(len(links), d.n_c),
        comm_map=_group_map(comm, d.n_c, d.n_m),
        pt_slope=pt_slope, pt_comm=comm[own], port_col=np.where(clique >= 0, clique, n_k),
        all_pooled=bool(n_k and (clique >= 0).all()), member_pq=member[:n_pq], member_b=member[n_pq:],
        pt_member=member[own], pt_wslope=pt_slope * w_own)


# ----------------------------------------------------------------------------- step data

@dataclass
class _Bounds:
    """Step data of a batch: unit bounds [kWh] and battery thresholds [currency/kWh]."""

    lo_p: np.ndarray  #: (B, n_pq) P̲
    hi_p: np.ndarray  #: (B, n_pq) P̄
    th_ch: np.ndarray  #: (B, 1) θ_ch = g_ch v − c_deg
    th_dis: np.ndarray  #: (B, 1) θ_dis = g_dis v + c_deg
    lb_ch: np.ndarray  #: (B, n_b) S̲_ch
    ub_ch: np.ndarray  #: (B, n_b) S̄_ch
    ub_dis: np.ndarray  #: (B, n_b) S̄_dis
    lb_dis: np.ndarray  #: (B, n_b) S̲_dis, a discharge forced by the SoC band (cyclic terminal SoC), else 0
    value: np.ndarray  #: (B,) v [currency/kWh]
    ip: np.ndarray  #: (B,) π_imp
    ep: np.ndarray  #: (B,) π_exp
    span_p: np.ndarray  #: (B, n_pq) P̄ − P̲
    span_c: np.ndarray  #: (B, n_b) S̄_ch − S̲_ch
    thc: np.ndarray  #: (B, n_b) θ_ch/σ [kWh]
    thd: np.ndarray  #: (B, n_b) θ_dis/σ [kWh]
    neg_ub_dis: np.ndarray  #: (B, n_b) −S̄_dis: the discharge unit's lower end
    neg_lb_dis: np.ndarray  #: (B, n_b) −S̲_dis: its upper end (0 unless the band forces a discharge)
    closed: np.ndarray  #: (B,) the fee closes every pool: ``π_imp − τ <= π_exp``

    def take(self, rows: np.ndarray) -> _Bounds:
        """The rows ``rows`` of every array."""
        return _Bounds(*(getattr(self, f)[rows] for f in _BOUND_FIELDS))


_BOUND_FIELDS = ("lo_p", "hi_p", "th_ch", "th_dis", "lb_ch", "ub_ch", "ub_dis", "lb_dis", "value", "ip", "ep",
                 "span_p", "span_c", "thc", "thd", "neg_ub_dis", "neg_lb_dis", "closed")


def _battery_limits(p: FastPlan, soc0: np.ndarray, steps: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Charge limits ``[S̲_ch, S̄_ch]`` and discharge limits ``[S̲_dis, S̄_dis]`` [kWh] of ``steps`` given
    the SoC before each (:meth:`gridmarket.market.battery.Batteries.limits`: rate limits, the
    step's SoC band, paper headroom). Where the band forces a discharge (``S̲_dis > 0``, cyclic
    terminal SoC) the battery cannot charge: ``S̄_ch = 0``.
    """
    lim = p.data.battery.limits(soc0, steps)
    ub_ch = np.where(lim.lb_dis > 0.0, 0.0, lim.ub_ch)
    return lim.lb_ch, ub_ch, lim.lb_dis, lim.ub_dis


def _bounds(p: FastPlan, steps: np.ndarray, soc0: np.ndarray, base: _Bounds | None = None) -> _Bounds:
    """Step data of ``steps`` with SoC ``soc0`` (B, n_b) before each; ``base``: the same steps
    with other SoC, whose step data are reused."""
    lb, ub, lbd, ubd = _battery_limits(p, soc0, steps)
    if base is not None:
        b = base
        return _Bounds(lo_p=b.lo_p, hi_p=b.hi_p, th_ch=b.th_ch, th_dis=b.th_dis, lb_ch=lb, ub_ch=ub, ub_dis=ubd,
                       lb_dis=lbd, value=b.value, ip=b.ip, ep=b.ep, span_p=b.span_p, span_c=ub - lb, thc=b.thc,
                       thd=b.thd, neg_ub_dis=-ubd, neg_lb_dis=-lbd, closed=b.closed)
    d = p.data
    e = d.energy_kwh[steps]
    v = d.value_step[steps]
    lo, hi = e * p.lo_fac, e * p.hi_fac
    th_ch, th_dis = (p.g_ch * v - p.cdeg)[:, None], (p.g_dis * v + p.cdeg)[:, None]
    return _Bounds(lo_p=lo, hi_p=hi, th_ch=th_ch, th_dis=th_dis, lb_ch=lb, ub_ch=ub, ub_dis=ubd, lb_dis=lbd,
                   value=v, ip=d.import_price[steps], ep=d.export_price[steps], span_p=hi - lo, span_c=ub - lb,
                   thc=th_ch * p.inv_sig_b, thd=th_dis * p.inv_sig_b, neg_ub_dis=-ubd, neg_lb_dis=-lbd,
                   closed=~_pool_open(p, d.import_price[steps], d.export_price[steps]))


def _pool_open(p: FastPlan, ip: np.ndarray, ep: np.ndarray) -> np.ndarray:
    """(B,) whether linked communities can gain by trading: ``π_imp − τ > π_exp``."""
    return ip - p.tau > ep


def _port_prices(p: FastPlan, reg: np.ndarray, q: np.ndarray, ip: np.ndarray,
                 ep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Import and export price ``(P_i, P_e)`` (B, n_c) of every community from its clique's regime:
    ``(q + τ, q)`` in a pool (``q`` sits at its bound when low or high), the grid's prices where
    the pool is closed or the community alone."""
    ipc, epc = ip[:, None], ep[:, None]
    if not p.n_k:
        n_c = len(p.clique)
        return np.repeat(ipc, n_c, axis=1), np.repeat(epc, n_c, axis=1)
    none = reg == NONE
    pik = np.where(none, ipc, q + p.tau)
    pek = np.where(none, epc, q)
    if p.all_pooled:
        return pik[:, p.clique], pek[:, p.clique]
    # a community alone meets the grid's prices (the last column)
    return (np.concatenate([pik, ipc], axis=1)[:, p.port_col], np.concatenate([pek, epc], axis=1)[:, p.port_col])


# ----------------------------------------------------------------------------- the ε = 0 start

def _unit_points(p: FastPlan, bd: _Bounds) -> tuple[np.ndarray, np.ndarray | None]:
    """Breakpoints ``t`` [currency/kWh] and jumps ``dj`` [kWh] of every unit's response at ε = 0,
    (B, P) each (``dj`` None when no unit is vertical).

    Minus a community's net demand at one price ``x`` is written as
    ``F(x) = F₀ + Σ_i ds_i·(x − t_i)⁺ + dj_i·[x > t_i]`` (nondecreasing): a sloped unit
    ``clip((θ − x)/σ, lo, hi)`` has points ``θ − σ·hi`` (slope change ``ds = +1/σ``) and
    ``θ − σ·lo`` (``−1/σ``), a vertical one (a = 0) a jump of ``hi − lo`` at ``θ``, a battery one
    pair for its charge unit and one for its discharge unit; ``F₀ = −Σ hi``. The slopes are fixed
    (:attr:`FastPlan.pt_slope`). A unit fixed in the step (``hi = lo``) has two equal points whose
    slopes cancel.
    """
    parts = [p.theta_p - p.sig_p * bd.hi_p, p.theta_p - p.sig_p * bd.lo_p]
    if p.n_b:
        sb = p.sig_b
        parts += [bd.th_ch - sb * bd.ub_ch, bd.th_ch - sb * bd.lb_ch, bd.th_dis + sb * bd.lb_dis,
                  bd.th_dis + sb * bd.ub_dis]
    t = np.concatenate(parts, axis=1)
    dj = None
    if p.any_vert:
        dj = np.zeros(t.shape)
        dj[:, :p.n_pq] = p.vert_p * bd.span_p
    return t, dj


def _seg_order(seg: np.ndarray, t: np.ndarray, n_seg: int, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Order that sorts the points by segment, then by ``t`` (in ``[lo, hi]``), and the sorted
    segments: one integer sort of keys holding the segment, ``t`` on a grid of ``2⁵⁰`` steps and
    the index (faster than ``lexsort``; values closer than a step may come out in either order)."""
    n = len(t)
    ib = max(1, (n - 1).bit_length())
    top = (n_seg - 1).bit_length() + ib
    k = min(61 - top, 50)
    if k < 24:
        o = np.lexsort((t, seg))
        return o, seg[o]
    key = ((t - lo) * ((2.0**k - 1.0) / (hi - lo) if hi > lo else 0.0)).astype(np.int64)
    key <<= ib
    key |= np.arange(n, dtype=np.int64)
    key |= seg << (k + ib)
    key.sort()
    return key & ((1 << ib) - 1), key >> (k + ib)


def _seg_root(seg: np.ndarray, t: np.ndarray, ds: np.ndarray, dj: np.ndarray | None, a: np.ndarray,
              b: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Root of ``F_g(x) = a_g + b_g·x + Σ_{i∈g} ds_i·(x − t_i)⁺ + dj_i·[x > t_i]`` for every
    segment ``g`` (``seg`` of each point, ``t`` in ``[lo, hi]``), each F_g nondecreasing -> (G,).

    F is piecewise linear with its breakpoints at ``t``: sorted, the cumulative sums of the
    deltas give F just right of every point, the first point where it is ``>= 0`` closes the
    piece holding the root, and on it F is linear (or jumps over zero at the point). −inf where
    ``F > 0`` everywhere, +inf where ``F < 0`` everywhere (and for a segment without points
    and ``F ≡ 0``).
    """
    G = len(a)
    n = len(t)
    o, seg = _seg_order(seg, t, G, lo, hi)
    t = t[o]
    ds = ds[o]
    # cumulative sums with a leading zero; F = (b − S₀ + S)·x − C + (a + C₀) on a segment's pieces,
    # with S₀, C₀ the sums before the segment
    S = np.zeros(n + 1)
    np.cumsum(ds, out=S[1:])
    C = np.zeros(n + 1)
    w = ds * t
    if dj is not None:
        w -= dj[o]
    np.cumsum(w, out=C[1:])
    cnt = np.bincount(seg, minlength=G)
    end = np.cumsum(cnt)
    start = end - cnt
    bb = b - S[start]
    aa = a + C[start]
    right = (bb[seg] + S[1:]) * t - C[1:] + aa[seg]  # F just right of each point
    # the first point with F >= 0 (F is nondecreasing up to rounding: a steep unit's pieces leave
    # ~1e-11 kWh of noise where F is flat, so the negatives need not come first)
    first = np.minimum.reduceat(np.append(np.where(right >= 0.0, np.arange(n), n), n), start)
    k = np.where(cnt > 0, np.minimum(first, end), end)
    j = k - start
    tx = np.append(t, 0.0)
    tk = tx[k]
    s_prev = bb + S[k]
    left = s_prev * tk - C[k] + aa  # F just left of point k
    pos = s_prev > 0.0
    # on the piece before point k (clipped to it), or at point k where F jumps over zero
    lin = np.maximum(tk - left / np.where(pos, s_prev, 1.0), np.where(j > 0, tx[k - 1], -np.inf))
    root = np.where(left >= 0.0, np.where(pos, lin, np.where((j == 0) & (left > 0.0), -np.inf, tk)), tk)
    # past the last point: F = s·x − v
    s_last = bb + S[end]
    v_last = C[end] - aa
    up = s_last > 0.0
    last = np.where(up, v_last / np.where(up, s_last, 1.0), np.where(v_last < 0.0, -np.inf, np.inf))
    return np.where(k >= end, last, root)


def _initial_guess(p: FastPlan, bd: _Bounds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Regimes, pool potentials and community prices of the market without the ε term, exactly.

    Only prices in ``[π_exp, π_imp]`` matter, so a community's ``F_c`` (minus its net demand,
    :func:`_unit_points`) keeps the breakpoints inside that range and folds those below it into
    its linear part ``a_c + b_c·x``; ``r_c`` is its root. A pool member exports
    ``max(0, F_c(q))`` and imports ``max(0, −F_c(q + τ))``: its part of the pool's excess supply
    is ``F_c(q + τ)`` below ``r_c − τ``, zero up to ``r_c`` and ``F_c(q)`` above, piecewise linear
    again with the points of ``F_c`` (those below ``r_c`` moved by ``−τ``) and two more at
    ``r_c − τ`` and ``r_c``. The root of the clique's sum, clipped to ``[π_exp, π_imp − τ]``,
    gives its regime and ``q``; a community's price is ``r_c`` clipped to its ports ``[P_e, P_i]``.
    """
    ip, ep = bd.ip, bd.ep
    B = len(ip)
    n_c = len(p.clique)
    t, dj = _unit_points(p, bd)
    P = t.shape[1]
    below = t < ep[:, None]
    inside = t <= ip[:, None]
    inside &= ~below
    # F = −Σ hi below every point; the points below π_exp add b·x − Σ (ds·t − dj)
    wb = np.empty((2, B, P))
    np.multiply(below, p.pt_slope, out=wb[1])
    np.multiply(wb[1], t, out=wb[0])
    if dj is not None:
        wb[0] -= below * dj
    ab = (wb.reshape(2 * B, P) @ p.pt_member).reshape(2, B, n_c)
    a = ab[0]
    a += bd.hi_p @ p.member_pq
    if p.n_b:
        a += (bd.ub_ch + bd.neg_lb_dis) @ p.member_b  # the upper ends of charge and discharge units
    np.negative(a, out=a)
    b = ab[1]
    idx = np.flatnonzero(inside)
    row, col = np.divmod(idx, P)
    seg = row * n_c + p.pt_comm[col]
    tt = t.ravel()[idx]
    ds = p.pt_wslope[col]
    dd = None if dj is None else dj.ravel()[idx]
    lo, hi = float(ep.min()), float(ip.max())
    r = _seg_root(seg, tt, ds, dd, a.ravel(), b.ravel(), lo, hi)
    reg = np.zeros((B, p.n_k), dtype=np.int8)
    q = np.zeros((B, p.n_k))
    if p.n_k:
        reg[:], q[:] = _pool_guess(p, bd, r, seg, tt, ds, dd, a.ravel(), b.ravel())
    pi, pe = _port_prices(p, reg, q, ip, ep)
    lam = np.minimum(np.maximum(r.reshape(B, n_c), pe), pi)
    return reg, q, lam


def _pool_guess(p: FastPlan, bd: _Bounds, r: np.ndarray, seg: np.ndarray, t: np.ndarray, ds: np.ndarray,
                dj: np.ndarray | None, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Regime and ``q`` (B, n_k) of every pool at ε = 0 from its members' ``F_c`` (points ``seg, t,
    ds, dj`` and linear parts ``a, b`` per row × community, as in :func:`_initial_guess`) and roots ``r``."""
    ip, ep = bd.ip, bd.ep
    B = len(ip)
    n_c, n_k, tau = len(p.clique), p.n_k, p.tau
    G = B * n_c
    rows = np.repeat(np.arange(B), n_c)
    # a root outside [π_exp, π_imp] leaves no plateau there: the member only exports (only imports)
    r = np.where(r < ep[rows], -np.inf, np.where(r > ip[rows], np.inf, r))
    fin = np.isfinite(r)
    rf = np.where(fin, r, 0.0)
    less = t < r[seg]
    # slope and value of F_c just left of its root
    dl = ds * less
    s_left = b + np.bincount(seg, weights=dl, minlength=G)
    gap = dl * (rf[seg] - t)
    if dj is not None:
        gap += less * dj
    f_left = a + b * rf + np.bincount(seg, weights=gap, minlength=G)
    kc = np.tile(p.clique, B)
    kseg = rows * n_k + kc
    plat = fin
    tk = t - tau * less
    if p.all_pooled:
        pseg, pds, pdj = kseg[seg], ds, dj
    else:
        inc = kc >= 0
        keep = inc[seg]
        plat = plat & inc
        pseg, tk, pds, pdj = kseg[seg[keep]], tk[keep], ds[keep], None if dj is None else dj[keep]
        kseg = np.where(inc, kseg, B * n_k)  # communities alone go to a spare segment
    # the plateau [r_c − τ, r_c]: F_c(q + τ) stops at r_c − τ, F_c(q) starts at r_c
    sl, fl = s_left[plat], f_left[plat]
    ks = kseg[plat]
    pseg = np.concatenate([pseg, ks, ks])
    pt = np.concatenate([tk, rf[plat] - tau, rf[plat]])
    pds = np.concatenate([pds, -sl, sl])
    pdj = np.concatenate([np.zeros(len(tk)) if pdj is None else pdj, -fl, fl])
    # below its root a member contributes F_c(q + τ): linear part a + b·τ + b·q
    lin_a = a + (b * tau) * (r > -np.inf)
    ka = np.bincount(kseg, weights=lin_a, minlength=B * n_k + 1)[:B * n_k]
    kb = np.bincount(kseg, weights=b, minlength=B * n_k + 1)[:B * n_k]
    qk = _seg_root(pseg, pt, pds, pdj, ka, kb, float(ep.min()) - tau, float(ip.max())).reshape(B, n_k)
    lo_q = ep[:, None]
    hi_q = (ip - tau)[:, None]
    low = qk <= lo_q
    high = qk >= hi_q
    reg = np.where(low, LOW, np.where(high, HIGH, FLOAT)).astype(np.int8)
    reg[~_pool_open(p, ip, ep)] = NONE
    q = np.where(low, lo_q, np.where(high, hi_q, qk))
    q[reg == NONE] = 0.0
    return reg, q


# ----------------------------------------------------------------------------- the active-set iteration

@dataclass
class _State:
    """Active sets of a batch: unit pieces, importing/exporting agents, pool regimes."""

    pp: np.ndarray  #: (B, n_pq) piece of each consumer/producer
    pc: np.ndarray  #: (B, n_b) piece of each battery's charge unit
    pd: np.ndarray  #: (B, n_b) discharge unit
    ia: np.ndarray  #: (B, n_m) 1.0 where α > 0 (internal agent order)
    ib: np.ndarray  #: (B, n_m) 1.0 where β > 0
    reg: np.ndarray  #: (B, n_k) pool regime
    q: np.ndarray  #: (B, n_k) pool potential [currency/kWh]

    def rows(self, sl: slice | np.ndarray) -> _State:
        """A copy of rows ``sl`` (fancy indexing copies already; slices are copied)."""
        if isinstance(sl, slice):
            return _State(*(getattr(self, f)[sl].copy() for f in _STATE_FIELDS))
        return _State(*(getattr(self, f)[sl] for f in _STATE_FIELDS))

    def put(self, rows: np.ndarray, other: _State) -> None:
        for f in _STATE_FIELDS:
            getattr(self, f)[rows] = getattr(other, f)


_STATE_FIELDS = ("pp", "pc", "pd", "ia", "ib", "reg", "q")


def _piece(v: np.ndarray, lo: np.ndarray, hi: np.ndarray | float) -> np.ndarray:
    """Piece of a sloped unit whose unclipped value is ``v``; fixed units (hi <= lo) are LO below hi."""
    at_hi = v >= hi
    mid = (v > lo) & ~at_hi
    return mid.view(np.int8) + 2 * at_hi.view(np.int8)


def _start(p: FastPlan, bd: _Bounds, guess: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> _State:
    """Active sets read from the ε = 0 market (:func:`_initial_guess`, or ``guess`` if given)."""
    reg, q, lam = _initial_guess(p, bd) if guess is None else guess
    nu = lam[:, p.comm]  # ν = λ at x = 0
    n_pq = p.n_pq
    nup = nu[:, :n_pq]
    v = p.tos_p - nup * p.inv_sig_p
    pp = _piece(v, bd.lo_p, bd.hi_p)
    # net position at the start price (a sloped unit's clipped response is its piece's value)
    y = np.minimum(np.maximum(v, bd.lo_p), bd.hi_p)
    if p.any_vert:
        vert = p.vert_p & (bd.hi_p > bd.lo_p)
        pp = np.where(vert, np.where(nup < p.theta_p, HI, LO), pp).astype(np.int8)
        y = np.where(vert, np.where(pp == HI, bd.hi_p, bd.lo_p), y)
    pc = pd = np.zeros((len(lam), 0), dtype=np.int8)
    if p.n_b:
        nub = nu[:, n_pq:] * p.inv_sig_b
        vc = bd.thc - nub
        vd = bd.thd - nub
        pc = _piece(vc, bd.lb_ch, bd.ub_ch)
        pd = _piece(vd, bd.neg_ub_dis, bd.neg_lb_dis)
        yb = np.minimum(np.maximum(vc, bd.lb_ch), bd.ub_ch)
        yb += np.minimum(np.maximum(vd, bd.neg_ub_dis), bd.neg_lb_dis)
        y = np.concatenate([y, yb], axis=1)
    pi, pe = _port_prices(p, reg, q, bd.ip, bd.ep)
    # importers and exporters: the water level of each trading community's net positions
    imp = lam >= pi
    exp = (lam <= pe) & ~imp
    trade = imp | exp
    if trade.any():
        wf = _waterfill(p, y, np.where(imp, 1.0, -1.0))
        ia = (wf & imp[:, p.comm]).astype(float)
        ib = (wf & exp[:, p.comm]).astype(float)
    else:
        ia = np.zeros(y.shape)
        ib = np.zeros(y.shape)
    return _State(pp, pc, pd, ia, ib, reg, q)


@dataclass
class _Vals:
    """Solution of one active-set iteration, rows = steps, agents in internal order."""

    x: np.ndarray  #: (R, n_m) −Φ [kWh]
    al: np.ndarray  #: (R, n_m) x − u (α where importing)
    be: np.ndarray  #: (R, n_m) −x − w (β where exporting)
    nu: np.ndarray  #: (R, n_m) ν [currency/kWh]
    lam: np.ndarray  #: (R, n_c) λ
    pi: np.ndarray  #: (R, n_c) μ_imp
    pe: np.ndarray  #: (R, n_c) μ_exp

    def rows(self, sl: slice | np.ndarray) -> _Vals:
        """A copy of rows ``sl`` (fancy indexing copies already; slices are copied)."""
        if isinstance(sl, slice):
            return _Vals(*(getattr(self, f)[sl].copy() for f in _VAL_FIELDS))
        return _Vals(*(getattr(self, f)[sl] for f in _VAL_FIELDS))

    def put(self, rows: np.ndarray | slice, other: _Vals) -> None:
        for f in _VAL_FIELDS:
            getattr(self, f)[rows] = getattr(other, f)


_VAL_FIELDS = ("x", "al", "be", "nu", "lam", "pi", "pe")


def _waterfill(p: FastPlan, y: np.ndarray, side: np.ndarray) -> np.ndarray:
    """Which agents trade when each community's net positions ``y`` [kWh] stay fixed.

    For an importing community (``side = +1``) the importers are the agents with ``y_n > u``,
    the water level ``u`` solving ``Σ_{y>u} (y + u)/2 + Σ_{y<=u} y = 0`` (from ``x = y − α``,
    ``α = (x − u)⁺`` and Σ x = 0); exporters (``side = −1``) mirror it with ``−y``. With each
    community's agents sorted by ``v = side·y`` (descending), the top ``k`` trade at level
    ``(S_k − 2Y)/k``, ``S_k`` their sum and ``Y`` the community's; the consistent ``k`` is read
    off. Rows x agents -> bool.
    """
    v = y * side[:, p.comm]
    R = len(v)
    # (R, n_c, M): each community's values, padded with −inf, sorted descending
    vs = np.concatenate([-v, np.full((R, 1), np.inf)], axis=1)[:, p.comm_map]
    if p.weight is None:
        vs.sort(axis=2)
        np.negative(vs, out=vs)
        level = np.cumsum(vs, axis=2)  # S_k (−inf on the padding)
        count = np.arange(1.0, vs.shape[2] + 1.0)
    else:
        # an agent of weight m is m agents of the same value: S_k and k count it m times
        o = np.argsort(vs, axis=2, kind="stable")
        vs = np.take_along_axis(vs, o, axis=2)
        np.negative(vs, out=vs)
        ws = np.take_along_axis(np.broadcast_to(np.append(p.weight, 1.0)[p.comm_map], vs.shape), o, axis=2)
        level = np.cumsum(vs * ws, axis=2)
        count = np.cumsum(ws, axis=2)
    level -= 2.0 * (v @ p.member)[:, :, None]
    level /= count
    nxt = np.empty_like(vs)
    nxt[:, :, :-1] = vs[:, :, 1:]
    nxt[:, :, -1] = -np.inf
    ok = (vs > level) & (level >= nxt)
    thr = np.where(ok.any(axis=2), np.where(ok, level, 0.0).sum(axis=2), np.inf)  # one consistent k per community
    return v > thr[:, p.comm]


def _still_prices(p: FastPlan, bd: _Bounds, pp: np.ndarray, pc: np.ndarray, pd: np.ndarray, y: np.ndarray,
                  pi: np.ndarray, pe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per community, the range of its price ``λ`` at which every unit stays on its current bound
    (no unit on its sloped piece), within the ports ``[P_e, P_i]`` -> (R, n_c) low and high.

    A unit at its upper bound needs ``ν <= θ − σ·hi``, at its lower bound ``ν >= θ − σ·lo``, with
    ``ν = λ + 2ε y`` for an agent that does not trade (``y`` its net position, the ``r0`` of
    fixed pieces).
    """
    n_pq = p.n_pq
    R = len(pi)
    up = np.full((R, p.data.n_m), np.inf)
    dn = np.full((R, p.data.n_m), -np.inf)
    sig = np.where(p.vert_p, 0.0, p.sig_p)
    moving = bd.span_p > 0.0
    up[:, :n_pq] = np.where(moving & (pp == HI), p.theta_p - sig * bd.hi_p, np.inf)
    dn[:, :n_pq] = np.where(moving & (pp == LO), p.theta_p - sig * bd.lo_p, -np.inf)
    if p.n_b:
        sb = p.sig_b
        cm = bd.span_c > 0.0
        dm = bd.ub_dis > bd.lb_dis
        u_c = np.where(cm & (pc == HI), bd.th_ch - sb * bd.ub_ch, np.inf)
        d_c = np.where(cm & (pc == LO), bd.th_ch - sb * bd.lb_ch, -np.inf)
        u_d = np.where(dm & (pd == HI), bd.th_dis + sb * bd.lb_dis, np.inf)
        d_d = np.where(dm & (pd == LO), bd.th_dis + sb * bd.ub_dis, -np.inf)
        up[:, n_pq:] = np.minimum(u_c, u_d)
        dn[:, n_pq:] = np.maximum(d_c, d_d)
    shift = 2.0 * p.eps * y  # ν − λ of an agent that does not trade
    # per community over its agents (comm_map, padded with the extra column)
    hi_c = np.concatenate([up - shift, np.full((R, 1), np.inf)], axis=1)[:, p.comm_map].min(axis=2)
    lo_c = np.concatenate([dn - shift, np.full((R, 1), -np.inf)], axis=1)[:, p.comm_map].max(axis=2)
    hi_c = np.minimum(hi_c, pi)
    lo_c = np.maximum(lo_c, pe)
    return np.minimum(lo_c, hi_c), np.maximum(lo_c, hi_c)


def _iterate(p: FastPlan, bd: _Bounds, st: _State) -> tuple[_State, np.ndarray, np.ndarray, _Vals]:
    """One active-set step: solve the linear KKT system of the current active sets, then re-read them.

    Returns the new active sets, whether each row changed, whether each row has a rigid
    community that cannot balance, and the solution of the current sets.
    """
    eps2, h, tau, n_pq = 2.0 * p.eps, p.h, p.tau, p.n_pq
    ip, ep = bd.ip, bd.ep
    pp, pc, pd, fa, fb, reg, q = st.pp, st.pc, st.pd, st.ia, st.ib, st.reg, st.q
    lo, hi = bd.lo_p, bd.hi_p
    R, n_m = fa.shape
    # ---- each agent on its pieces: y = r0 − r1·ν (s·y = r0 − r1·ν with vertical units, whose
    # sloped piece has s = σ = 0: ν = θ)
    mid = pp == MID
    bnd = np.where(pp == HI, hi, lo)
    s: np.ndarray | None = None
    if p.any_vert:
        s = np.ones((R, n_m))
        s[:, :n_pq] = np.where(mid, p.sig_p, 1.0)
        r0 = np.where(mid, p.theta_p, bnd)
        r1 = mid.astype(float)
    else:
        r0 = np.where(mid, p.tos_p, bnd)
        r1 = mid * p.inv_sig_p
    if p.n_b:
        mc, md, ld = pc == MID, pd == MID, pd == LO
        bc = np.where(pc == HI, bd.ub_ch, bd.lb_ch)
        bd_ = np.where(ld, bd.neg_ub_dis, bd.neg_lb_dis)  # the discharge unit's bound
        r0 = np.concatenate([r0, np.where(mc, bd.thc, bc) + np.where(md, bd.thd, bd_)], axis=1)
        r1 = np.concatenate([r1, (mc.astype(float) + md) * p.inv_sig_b], axis=1)
    k = fa + fb
    k += 1.0
    if s is not None:
        k *= s
    k += eps2 * r1
    np.reciprocal(k, out=k)
    ks = k * h if s is None else (k * s) * h
    n_sum = 12 if p.n_k else 4
    buf = np.empty((n_sum, R, n_m))
    c, dd, e, g = buf[0], buf[1], buf[2], buf[3]
    np.multiply(k, r0, out=c)
    np.multiply(k, r1, out=dd)
    np.multiply(ks, fa, out=e)
    np.multiply(ks, fb, out=g)
    if p.n_k:
        np.multiply(fa, c, out=buf[4])
        np.multiply(fa, dd, out=buf[5])
        np.multiply(e, fb, out=buf[6])
        buf[7] = fa
        np.multiply(fb, c, out=buf[8])
        np.multiply(fb, dd, out=buf[9])
        buf[10] = fb
        buf[11] = r1
    sums = (buf.reshape(n_sum * R, n_m) @ p.member).reshape(n_sum, R, -1)
    S0, Sr, Si, Se = sums[0], sums[1], sums[2], sums[3]
    # ---- (3) gives λ from the port prices
    den = Sr + Si + Se
    rigid = den <= 0.0
    dsafe = np.where(rigid, 1.0, den)
    if p.n_k:
        # port totals I = Σ_ia (x − u), E = Σ_ib (−x − w) are affine in (μ_imp, μ_exp); with
        # μ_imp = q + τ, μ_exp = q a floating pool's balance Σ_clique (E − I) = 0 is
        # num + dq·q = 0, where (D = ∂(E − I)/∂λ)
        A0, Ar, Am, Na, B0, Br, Nb, Sm = sums[4:]
        Nt = Na + Nb
        D = Br + Ar + 2.0 * Am + Si + Se - Nt * h
        D /= dsafe
        num = (D * (S0 + tau * Si) - (A0 + B0) + tau * (Na * h - Am - Si)) @ p.cmember
        dq = (Br + Ar - D * Sr) @ p.cmember
        fl = reg == FLOAT
        # a pool whose trading communities cannot respond to prices (no sloped unit) cannot
        # be balanced by q: it goes to the grid (regime low or high, decided below)
        stiff = ((Sm * (Nt > 0.0)) @ p.cmember) <= 0.0
        solve_q = fl & ~stiff & (dq != 0.0)
        if solve_q.any():
            q = np.where(solve_q, -num / np.where(solve_q, dq, 1.0), q)
    pi, pe = _port_prices(p, reg, q, ip, ep)
    lam = (S0 + Si * pi + Se * pe) / dsafe
    # a Newton step far outside the community's ports (a solution has λ between them, up to
    # ε-level spreads) is cut back to them before the pieces are read again: otherwise the
    # active sets can cycle; such a row is not settled
    margin = PRICE_MARGIN * (1.0 + np.abs(pi - pe))
    wild = ((lam < pe - margin) | (lam > pi + margin)) & ~rigid
    any_wild = wild.any()
    if any_wild:
        lam = np.minimum(np.maximum(lam, pe - margin), pi + margin)
    bad = rigid & (np.abs(S0) > TOL_KWH)
    if rigid.any():
        # nobody can move: the price sits where its net demand sends it (importers or exporters
        # then activate); when it balances, nobody trades and the price is free within the
        # prices at which every unit stays on its bound: it is set mid-way there
        lo_c, hi_c = _still_prices(p, bd, pp, pc, pd, r0, pi, pe)
        lam = np.where(rigid, np.where(S0 > TOL_KWH, pi, np.where(S0 < -TOL_KWH, pe, 0.5 * (lo_c + hi_c))), lam)
    lam_a = lam[:, p.comm]
    dli = (pi - lam)[:, p.comm]  # μ_imp − λ per agent
    dle = (lam - pe)[:, p.comm]
    x = r1 * lam_a
    np.subtract(r0, x, out=x)
    x *= k
    x += ks * (fa * dli - fb * dle)
    al = x - h * dli
    be = h * dle
    np.add(x, be, out=be)
    np.negative(be, out=be)
    nu = eps2 * x
    nu += lam_a
    vals = _Vals(x, al, be, nu, lam, pi, pe)

    # ---- re-read the active sets from the new prices (a unit moves when its value on its
    # current piece is off its clipped response by more than TOL_KWH; fixed units never do)
    nup = nu[:, :n_pq]
    v = p.tos_p - nup * p.inv_sig_p
    clip = np.minimum(np.maximum(v, lo), hi)
    move = np.abs(np.where(mid, v, bnd) - clip) > TOL_KWH
    if p.any_vert:
        vert = p.vert_p & (bd.span_p > 0.0)
        move &= ~vert
        y = x[:, :n_pq] + fa[:, :n_pq] * al[:, :n_pq] - fb[:, :n_pq] * be[:, :n_pq]
        vmid = np.where(y > hi + TOL_KWH, HI, np.where(y < lo - TOL_KWH, LO, MID))
        tolv = TOL_PRICE * (1.0 + np.abs(p.theta_p))
        vbnd = np.where(((pp == HI) & (nup > p.theta_p + tolv)) | ((pp == LO) & (nup < p.theta_p - tolv)), MID, pp)
        vnew = np.where(mid, vmid, vbnd)
        vmove = vert & (vnew != pp)
        if vmove.any():
            pp = np.where(vmove, vnew, pp).astype(np.int8)
        move_rows = vmove.any(axis=1)
    else:
        move_rows = np.zeros(R, dtype=bool)
    if move.any():
        pp = np.where(move, (v > lo).astype(np.int8) + (v >= hi), pp).astype(np.int8)
        move_rows |= move.any(axis=1)
    changed = move_rows
    if p.n_b:
        nub = nu[:, n_pq:] * p.inv_sig_b
        vc = bd.thc - nub
        mvc = np.abs(np.where(mc, vc, bc) - np.minimum(np.maximum(vc, bd.lb_ch), bd.ub_ch)) > TOL_KWH
        vd = bd.thd - nub
        cur_d = np.where(md, vd, np.where(ld, bd.neg_ub_dis, bd.neg_lb_dis))
        mvd = np.abs(cur_d - np.minimum(np.maximum(vd, bd.neg_ub_dis), bd.neg_lb_dis)) > TOL_KWH
        if mvc.any():
            pc = np.where(mvc, (vc > bd.lb_ch).astype(np.int8) + (vc >= bd.ub_ch), pc).astype(np.int8)
            changed = changed | mvc.any(axis=1)
        if mvd.any():
            pd = np.where(mvd, (vd > bd.neg_ub_dis).astype(np.int8) + (vd >= bd.neg_lb_dis), pd).astype(np.int8)
            changed = changed | mvd.any(axis=1)
    # an agent keeps trading down to −TOL_KWH and starts above +TOL_KWH
    ia_new = (al > TOL_KWH * (1.0 - 2.0 * fa)).astype(float)
    ib_new = (be > TOL_KWH * (1.0 - 2.0 * fb)).astype(float)
    mv = (ia_new != fa) | (ib_new != fb)
    if mv.any():
        changed = changed | mv.any(axis=1)
        # a community whose importers (or exporters) are still moving by more than one agent
        # jumps to the water level of its current net positions (only where it already trades
        # on that side: its net positions are then read at its port price)
        dab = np.empty((4, R, n_m))
        np.subtract(ia_new, fa, out=dab[0])
        np.subtract(ib_new, fb, out=dab[1])
        np.abs(dab[:2], out=dab[:2])
        dab[2] = ia_new
        dab[3] = ib_new
        dab = (dab.reshape(4 * R, n_m) @ p.member).reshape(4, R, -1)
        na_c = sums[7] if p.n_k else fa @ p.member
        nb_c = sums[10] if p.n_k else fb @ p.member
        jump_a = (dab[0] > 1.0) & (dab[3] == 0.0) & (na_c > 0.0)
        jump_b = (dab[1] > 1.0) & (dab[2] == 0.0) & (nb_c > 0.0)
        jump = jump_a | jump_b
        if jump.any():
            rows = np.flatnonzero(jump.any(axis=1))
            y = x[rows] + fa[rows] * al[rows] - fb[rows] * be[rows]
            wf = _waterfill(p, y, np.where(jump_a[rows], 1.0, -1.0)).astype(float)
            ja = jump_a[rows][:, p.comm]
            jb = jump_b[rows][:, p.comm]
            ia_new[rows] = np.where(ja, wf, ia_new[rows])
            ib_new[rows] = np.where(jb, wf, ib_new[rows])
    if p.n_k:
        ie = np.empty((2, R, n_m))
        np.multiply(fa, al, out=ie[0])
        np.multiply(fb, be, out=ie[1])
        ie = (ie.reshape(2 * R, n_m) @ p.member).reshape(2, R, -1)  # (2, R, n_c) imports, exports
        z = (ie[1] - ie[0]) @ p.cmember  # pool excess supply of this solution
        qlo, qhi = ep[:, None], (ip - tau)[:, None]
        zn, zp = z < -TOL_KWH, z > TOL_KWH
        out_q = (q < qlo - TOL_PRICE) | (q > qhi + TOL_PRICE)
        r_new = reg
        if (fl & (out_q | (stiff & (zn | zp)))).any() or ((reg == LOW) & zn).any() or ((reg == HIGH) & zp).any() \
                or (bd.closed[:, None] & (reg != NONE)).any():
            r_new = reg.copy()
            r_new[fl & (q < qlo - TOL_PRICE)] = LOW
            r_new[fl & (q > qhi + TOL_PRICE)] = HIGH
            # (only once the agents' sets have settled: new traders may still balance the pool)
            calm = ~changed[:, None]
            r_new[fl & stiff & calm & zn] = HIGH
            r_new[fl & stiff & calm & zp] = LOW
            r_new[(reg == LOW) & zn] = FLOAT
            r_new[(reg == HIGH) & zp] = FLOAT
            r_new[bd.closed] = NONE
        # a floating pool out of balance has not settled (its q must still move)
        changed = changed | (fl & (r_new == FLOAT) & (np.abs(z) > 1e-8 * (1.0 + (ie[0] @ p.cmember)))).any(axis=1)
        mv = r_new != reg
        if mv.any():
            # a pool entering low/high sits at that bound; one leaving them starts there
            q = np.where(r_new == LOW, qlo, np.where(r_new == HIGH, qhi, np.where(
                (reg == LOW) & (r_new == FLOAT), qlo, np.where((reg == HIGH) & (r_new == FLOAT), qhi, q))))
            reg = r_new
            changed = changed | mv.any(axis=1)
    if any_wild:
        changed = changed | wild.any(axis=1)
    return _State(pp, pc, pd, ia_new, ib_new, reg, q), changed, bad.any(axis=1), vals


# ----------------------------------------------------------------------------- one batch of steps

@dataclass
class _Res:
    """Solution of a batch of steps in internal units and agent order, rows = steps."""

    ok: np.ndarray  #: (B,) solved
    reason: np.ndarray  #: (B,) why a row is not solved (str objects)
    iterations: int
    state: _State
    vals: _Vals
    sch: np.ndarray  #: (B, n_b) S_ch [kWh]
    sdis: np.ndarray  #: (B, n_b) S_dis [kWh]
    soc: np.ndarray  #: (B, n_b) SoC after the step, from the SoC the step was solved with
    value: np.ndarray  #: (B,) v [currency/kWh]
    step: np.ndarray  #: (B,) global step of each row

    def view(self, start: int) -> _Res:
        """Rows ``start, start+1, ...`` as views: writing to them writes to this batch."""
        sl = slice(start, None)
        return _Res(self.ok[sl], self.reason[sl], 0, _State(*(getattr(self.state, f)[sl] for f in _STATE_FIELDS)),
                    _Vals(*(getattr(self.vals, f)[sl] for f in _VAL_FIELDS)),
                    *(getattr(self, f)[sl] for f in _RES_ARRAYS))

    def put(self, rows: np.ndarray, other: _Res) -> None:
        """Overwrite rows ``rows`` with the rows of ``other``."""
        self.ok[rows] = other.ok
        self.reason[rows] = other.reason
        self.state.put(rows, other.state)
        self.vals.put(rows, other.vals)
        for f in _RES_ARRAYS:
            getattr(self, f)[rows] = getattr(other, f)


_RES_ARRAYS = ("sch", "sdis", "soc", "value", "step")


def solve_batch(p: FastPlan, steps: np.ndarray, soc0: np.ndarray, *, max_iter: int | None = None,
                warm: _State | None = None,
                guess: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, base: _Bounds | None = None) -> _Res:
    """Solve the one-step markets of ``steps`` (independently) with SoC ``soc0`` (B, n_b) before each.

    Returns the primal and dual values of every step; ``ok[b]`` is False (with a ``reason``)
    where the active-set iteration did not settle or an assumption failed. ``warm`` starts from
    the active sets of an earlier solve of the same steps instead of the ε = 0 market (it is
    updated in place); ``guess`` gives that market's regimes, pool potentials and prices when
    already known; ``base`` the step data of ``steps`` (with any SoC), reused. Rows that have
    settled are not iterated further.
    """
    d = p.data
    B = len(steps)
    n_b, n_pq = d.n_b, p.n_pq
    max_iter = MAX_ITER if max_iter is None else max_iter
    bd = _bounds(p, steps, soc0, base)
    reason = [""] * B
    fail = ((bd.lb_ch > bd.ub_ch + TOL_KWH) | (bd.lb_dis > bd.ub_dis + TOL_KWH)).any(axis=1) if n_b \
        else np.zeros(B, dtype=bool)
    if fail.any():
        for b in np.flatnonzero(fail):
            reason[b] = "a battery's forced charge or discharge exceeds its limit (infeasible SoC bound)"
    if warm is not None:
        st = warm
        st.pp[bd.hi_p <= bd.lo_p] = LO
        if n_b:
            st.pc[bd.ub_ch <= bd.lb_ch] = LO
            st.pd[bd.ub_dis <= bd.lb_dis] = LO
    else:
        st = _start(p, bd, guess)
    vals: _Vals | None = None
    settled = np.zeros(B, dtype=bool)
    act = np.flatnonzero(~fail)  # rows still iterated: ``sub`` and ``sst`` hold their data
    sub, sst = (bd, st) if len(act) == B else (bd.take(act), st.rows(act))
    it = 0
    for it in range(1, max_iter + 1):
        if not len(act):
            break
        if it == RESTART_ITER + 1 and (warm is not None or guess is not None):
            # a start from other steps' active sets or from an ε = 0 market read with other
            # SoC limits is not settling: start these rows again from their own ε = 0 market
            sst = _start(p, sub)
        sst, changed, bad, v = _iterate(p, sub, sst)
        go = changed | bad
        if len(act) == B and vals is None:
            st, vals = sst, v
        else:
            if vals is None:
                vals = _Vals(*(np.zeros((B,) + getattr(v, f).shape[1:]) for f in _VAL_FIELDS))
            done = ~go
            if done.any() or it == max_iter:
                put = act if it == max_iter else act[done]
                rows = slice(None) if it == max_iter else done
                st.put(put, sst.rows(rows) if it < max_iter else sst)
                vals.put(put, v.rows(rows) if it < max_iter else v)
        settled[act] = ~go
        if go.all():
            continue
        act = act[go]
        if not len(act):
            break
        sub, sst = sub.take(go), sst.rows(go)
    if vals is None:  # no row was solved
        n_m, n_c = d.n_m, d.n_c
        vals = _Vals(*(np.zeros((B, n)) for n in (n_m, n_m, n_m, n_m, n_c, n_c, n_c)))
    ok = settled & ~fail
    if not ok.all():
        for b in np.flatnonzero(~settled & ~fail):
            reason[b] = f"active-set iteration did not settle in {max_iter} iterations"
    if p.n_k:
        # with the fee, a pooled community never both imports and exports
        ie = np.empty((2,) + st.ia.shape)
        np.maximum(vals.al, 0.0, out=ie[0])
        np.maximum(vals.be, 0.0, out=ie[1])
        ie[0] *= st.ia
        ie[1] *= st.ib
        ie = (ie.reshape(2 * B, -1) @ p.member).reshape(2, B, -1)
        inc = p.clique >= 0
        pooled = ((ie[0] > TOL_KWH) & (ie[1] > TOL_KWH))[:, inc] & (st.reg[:, p.clique[inc]] != NONE)
        if pooled.any():
            for b in np.flatnonzero(pooled.any(axis=1) & ok):
                ok[b] = False
                reason[b] = "a pooled community would both import and export (not a pool equilibrium)"
    yb = vals.x[:, n_pq:] + st.ia[:, n_pq:] * np.maximum(vals.al[:, n_pq:], 0.0) \
        - st.ib[:, n_pq:] * np.maximum(vals.be[:, n_pq:], 0.0)
    sch = np.maximum(yb, 0.0)
    sdis = np.maximum(-yb, 0.0)
    if n_b:
        loop = _loop_gains(p, vals.nu[:, n_pq:], sch, sdis, bd.lb_ch, bd.lb_dis) & ok
        for b in np.flatnonzero(loop):
            ok[b] = False
            reason[b] = ("a battery forced by its SoC band would rather charge and discharge at once (burning"
                         " energy in losses); left to Clarabel")
    soc = p.keep * soc0 + (p.g_ch * sch - p.g_dis * sdis) / d.cap_kwh
    return _Res(ok, np.array(reason, dtype=object), it, st, vals, sch, sdis, soc, bd.value,
                np.asarray(steps, dtype=np.int64).copy())


def _loop_gains(p: FastPlan, nu: np.ndarray, sch: np.ndarray, sdis: np.ndarray, lb_ch: np.ndarray,
                lb_dis: np.ndarray) -> np.ndarray:
    """(B,) rows where a battery with a forced charge or discharge would gain by charging and
    discharging at once, which the fast path's units cannot represent.

    A forced discharge fixes ``ΔE = g_ch S_ch − g_dis S_dis``; adding δ of charge then adds
    ``δ g_ch/g_dis`` of discharge and ``δ (1 − g_ch/g_dis)`` to ``S``. At ``S_ch = 0`` the objective
    (minimised) moves by ``c_deg (1 + g_ch/g_dis) + 2ε S_dis g_ch/g_dis + (ν + 2a S)(1 − g_ch/g_dis)``
    per δ: negative when the battery's marginal value of selling, ``ν + 2aS``, is negative (it would
    rather burn energy in losses than sell it). A forced charge mirrors it. Never in the paper
    model (``g_ch = g_dis``: a loop changes nothing but costs).
    """
    r = p.g_ch / p.g_dis
    if r >= 1.0 or not (lb_dis.any() or lb_ch.any()):
        return np.zeros(len(nu), dtype=bool)
    a2 = p.sig_b - 2.0 * p.eps  # 2a
    s = sch - sdis
    tol = 1e-12
    fd = (lb_dis > 0.0) & (sdis > 0.0)
    dis_gain = p.cdeg * (1.0 + r) + 2.0 * p.eps * sdis * r + (nu + a2 * s) * (1.0 - r) < -tol
    fc = (lb_ch > 0.0) & (sch > 0.0)
    ch_gain = p.cdeg * (1.0 + 1.0 / r) + 2.0 * p.eps * sch / r + (nu + a2 * s) * (1.0 / r - 1.0) < -tol
    return ((fd & dis_gain) | (fc & ch_gain)).any(axis=1)


def _write(p: FastPlan, sol: Solution, t0: int, res: _Res, rows: slice, snap: float) -> None:
    """Write rows ``rows`` of ``res`` (steps ``t0, t0+1, ...``) into ``sol`` in market units and
    order, splitting inter-community flows pro rata inside each pool; energies below ``snap``
    [kWh] are written as 0."""
    d = p.data
    ia, ib, reg, q = res.state.ia[rows], res.state.ib[rows], res.state.reg[rows], res.state.q[rows]
    v = _Vals(*(getattr(res.vals, f)[rows] for f in _VAL_FIELDS))
    B = len(q)
    tr = slice(t0, t0 + B)
    steps = np.arange(t0, t0 + B)
    ip, ep = d.import_price[steps], d.export_price[steps]
    n_c, n_pq = d.n_c, p.n_pq
    ab = np.empty((2,) + ia.shape)
    alpha_i, beta_i = ab
    np.maximum(v.al, 0.0, out=alpha_i)
    np.maximum(v.be, 0.0, out=beta_i)
    alpha_i *= ia
    beta_i *= ib
    ie = (ab.reshape(2 * B, -1) @ p.member).reshape(2, B, n_c)
    gimp, gexp = ie[0], ie[1]
    aimp, aexp = sol.aimp[tr], sol.aexp[tr]
    aimp[:] = 0.0
    aexp[:] = 0.0
    sol.rho[tr] = np.nan  # grid arcs, and links without a pool
    gi, ge = gimp, gexp
    if d.n_pool:
        gi, ge = _write_pools(p, sol, tr, reg, q, gimp, gexp, ip, ep)
    if len(p.link_comm):
        links = d.link_arcs
        kl = p.clique[p.link_comm]
        regl = reg[:, kl]
        scale = np.maximum(gexp @ p.cmember, gimp @ p.cmember)[:, kl]
        fl = np.where((regl != NONE) & (scale > 0),
                      gexp[:, p.link_partner] * gimp[:, p.link_comm] / np.where(scale > 0, scale, 1.0), 0.0)
        aimp[:, links] = fl
        aexp[:, d.arc_rev[links]] = fl
        gi = gi - fl @ p.link_in
        ge = ge - fl @ p.link_out
        # the pool's price: q when floating, the bound it sits at when low or high
        qeff = np.where(regl == LOW, ep[:, None], np.where(regl == HIGH, (ip - p.tau)[:, None], q[:, kl]))
        sol.rho[tr, links] = np.where(regl != NONE, qeff, 0.5 * ((ip - p.tau) + ep)[:, None])
    aimp[:, :n_c] = np.maximum(gi, 0.0)  # grid arcs come first, one per community
    aexp[:, :n_c] = np.maximum(ge, 0.0)
    x = v.x
    sol.p[tr] = x[:, :n_pq] + alpha_i[:, :n_pq] - beta_i[:, :n_pq]
    nu = v.nu
    perm = p.perm
    sch, sdis, soc = res.sch[rows], res.sdis[rows], res.soc[rows]
    if p.full is not None and p.bat_class is not None:
        # merged batteries: every battery of the case takes its class's values
        f = p.full
        perm = np.concatenate([f.pq, f.bat]).astype(np.int64)
        ex = np.concatenate([np.arange(n_pq), n_pq + p.bat_class])
        x, alpha_i, beta_i, nu = x[:, ex], alpha_i[:, ex], beta_i[:, ex], nu[:, ex]
        sch, sdis, soc = sch[:, p.bat_class], sdis[:, p.bat_class], soc[:, p.bat_class]
    sol.sch[tr] = sch
    sol.sdis[tr] = sdis
    sol.soc[tr] = soc
    sol.phi[tr, perm] = -x
    sol.alpha[tr, perm] = alpha_i
    sol.beta[tr, perm] = beta_i
    sol.gimp[tr] = gimp
    sol.gexp[tr] = gexp
    sol.lam[tr] = v.lam
    sol.mu_imp[tr] = v.pi
    sol.mu_exp[tr] = v.pe
    sol.nu[tr, perm] = nu
    sol.vfac[tr] = res.value[rows, None]
    if snap:
        for name in ("p", "sch", "sdis", "phi", "alpha", "beta", "gimp", "gexp", "aimp", "aexp"):
            arr = getattr(sol, name)[tr]
            arr[np.abs(arr) < snap] = 0.0


def _write_pools(p: FastPlan, sol: Solution, tr: slice, reg: np.ndarray, q: np.ndarray, gimp: np.ndarray,
                 gexp: np.ndarray, ip: np.ndarray, ep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pool arcs of rows ``tr`` (pool formulation, :mod:`gridmarket.market.pool`): inside each open
    pool the smaller side trades in full and the larger side pro rata (the sums of the arc
    formulation's pro rata split); returns the imports and exports [kWh] (B, n_c) left for the grid."""
    d = p.data
    pa = d.pool_arcs
    c = d.arc_comm[pa]
    k = p.clique[c]  # the pool's clique column (cliques kept as arcs come first)
    tot_i = gimp @ p.cmember  # (B, n_k)
    tot_e = gexp @ p.cmember
    big = np.maximum(tot_i, tot_e)
    safe = np.where(big > 0, big, 1.0)
    open_ = (reg != NONE) & (big > 0)
    fi = np.where(open_, tot_e / safe, 0.0)[:, k] * gimp[:, c]  # imported from the pool
    fe = np.where(open_, tot_i / safe, 0.0)[:, k] * gexp[:, c]  # exported into it
    sol.aimp[tr, pa] = fi
    sol.aexp[tr, pa] = fe
    qeff = np.where(reg == LOW, ep[:, None], np.where(reg == HIGH, (ip - p.tau)[:, None], q))
    sol.rho[tr, pa] = np.where(reg != NONE, qeff, 0.5 * ((ip - p.tau) + ep)[:, None])[:, k]
    gi, ge = gimp.copy(), gexp.copy()
    gi[:, c] -= fi
    ge[:, c] -= fe
    return gi, ge


# ----------------------------------------------------------------------------- the sequence

def _valid_rows(p: FastPlan, out: _Res, soc: np.ndarray) -> np.ndarray:
    """(B,) whether each row of a batch, solved with a guessed SoC, is also the solution for ``soc``
    (B, n_b): every battery's charge and discharge equal its clipped response to its price
    under the limits of that SoC, so every KKT condition still holds."""
    lb, ub, lbd, ubd = _battery_limits(p, soc, out.step)
    nu = out.vals.nu[:, p.n_pq:]
    th = out.value[:, None]
    ch = np.minimum(np.maximum((p.g_ch * th - p.cdeg - nu) * p.inv_sig_b, lb), ub)
    dis = -np.minimum(np.maximum((p.g_dis * th + p.cdeg - nu) * p.inv_sig_b, -ubd), -lbd)
    tol = 1e-9 * (1.0 + out.sch + out.sdis)
    good = ((np.abs(ch - out.sch) <= tol) & (np.abs(dis - out.sdis) <= tol) & (lb <= ub + TOL_KWH)
            & (lbd <= ubd + TOL_KWH))
    return good.all(axis=1) & ~_loop_gains(p, nu, out.sch, out.sdis, lb, lbd)


def _true_soc(p: FastPlan, out: _Res, soc: np.ndarray) -> np.ndarray:
    """(B, n_b) SoC before each row if every row is kept, starting from ``soc`` before row 0."""
    d = p.data
    de = (p.g_ch * out.sch - p.g_dis * out.sdis) / d.cap_kwh  # (B, n_b) stored energy change
    B = len(de)
    pw = p.keep ** np.arange(B + 1, dtype=float)  # keep^j
    # s_j = keep^j s_0 + Σ_{i<j} keep^{j−1−i} ΔE_i
    acc = np.cumsum(de / pw[1:, None], axis=0)  # Σ_{i<=j} ΔE_i keep^{−i−1}
    s = np.empty((B, d.n_b))
    s[0] = soc
    s[1:] = pw[1:B, None] * (soc[None, :] + acc[:-1])
    return np.clip(s, d.battery.soc_min, d.battery.soc_max)


def _guess_soc(p: FastPlan, out: _Res, j: int, soc: np.ndarray) -> np.ndarray:
    """Guessed SoC before rows ``j, j+1, ...`` of a batch, from the true ``soc`` before row j.

    Each row keeps its pieces: a battery at a limit takes the limit of the guessed SoC (one that
    fills or empties ends exactly at its SoC bound), any other keeps its S.
    """
    st = out.state
    sl = slice(j, None)
    return _run_batteries(p, soc, out.step[sl], st.pc[sl] == HI, st.pc[sl] == LO, st.pd[sl] == LO,
                          st.pd[sl] == HI, out.sch[sl], out.sdis[sl])


def _run_batteries(p: FastPlan, soc: np.ndarray, steps: np.ndarray, ch_hi: np.ndarray, ch_lo: np.ndarray,
                   dis_lo: np.ndarray, dis_hi: np.ndarray, sch: np.ndarray, sdis: np.ndarray) -> np.ndarray:
    """SoC before each row (global steps ``steps``) when the batteries run row after row from ``soc``.

    Per row and battery: charge at its upper limit (``ch_hi``) or lower limit (``ch_lo``) of the
    running SoC, else ``sch``; discharge at its limit (``dis_lo``), zero (``dis_hi``), else
    ``sdis`` [kWh]. Each row needs the SoC after the last, so the rows run in order, every
    battery of a row at once (numpy over the battery axis, the same floating-point operations
    in the same order as one battery at a time: the result is the same to the bit).
    """
    d = p.data
    bt = d.battery
    n, nb = sch.shape
    if nb <= SCALAR_BATTERIES:
        return _run_batteries_scalar(p, soc, steps, ch_hi, ch_lo, dis_lo, dis_hi, sch, sdis)
    out = np.empty((n, nb))
    if not n:
        return out
    keep, g_ch, g_dis = p.keep, p.g_ch, p.g_dis
    lo_s, hi_s = bt.soc_min, bt.soc_max
    paper = bt.paper
    eta_c, eta_d = bt.eff_charge, bt.eff_discharge
    band_lo, band_hi = bt.band(steps)
    cap, rate_c, rate_d = d.cap_kwh, d.sch_max, d.sdis_max
    # the limits of the running SoC are computed only in rows where some battery sits at them;
    # the flags' priorities: charge at the upper limit before the lower, discharge at its limit
    # before none
    ch_lo = ch_lo & ~ch_hi
    dis_hi = dis_hi & ~dis_lo
    any_row = cast("list[list[bool]]", np.stack([ch_hi, ch_lo, dis_lo, dis_hi]).any(axis=2).tolist())
    rows_ch_hi, rows_ch_lo, rows_dis_lo, rows_dis_hi = any_row
    sb = np.asarray(soc, dtype=float).copy()
    e, room, lim, c, dd, tmp = (np.empty(nb) for _ in range(6))
    for j in range(n):
        out[j] = sb
        np.multiply(keep, sb, out=e)  # keep·SoC
        c[:] = sch[j]
        dd[:] = sdis[j]
        if rows_ch_hi[j]:
            # charge up to the band's top, the rate, paper headroom
            np.subtract(band_hi[j], e, out=room)
            room *= cap
            np.divide(room, g_ch, out=lim)
            np.minimum(lim, rate_c, out=lim)
            np.maximum(lim, 0.0, out=lim)
            if paper:
                np.subtract(hi_s, sb, out=tmp)
                tmp *= cap
                tmp /= eta_c
                np.minimum(lim, tmp, out=lim)
            np.copyto(c, lim, where=ch_hi[j])
        if rows_ch_lo[j]:
            # the charge the band's bottom forces
            np.subtract(band_lo[j], e, out=room)
            room *= cap
            np.divide(room, g_ch, out=lim)
            np.maximum(lim, 0.0, out=lim)
            np.copyto(c, lim, where=ch_lo[j])
        if rows_dis_lo[j]:
            # discharge down to the band's bottom, the rate, paper headroom
            np.subtract(band_lo[j], e, out=room)
            room *= cap
            np.negative(room, out=lim)
            lim /= g_dis
            np.minimum(lim, rate_d, out=lim)
            if paper:
                np.subtract(sb, lo_s, out=tmp)
                tmp *= cap
                tmp /= eta_d
                np.minimum(lim, tmp, out=lim)
            np.maximum(lim, 0.0, out=lim)
            np.copyto(dd, lim, where=dis_lo[j])
        if rows_dis_hi[j]:
            # no discharge unless the band's top forces one
            np.subtract(e, band_hi[j], out=room)
            room *= cap
            np.divide(room, g_dis, out=lim)
            np.maximum(lim, 0.0, out=lim)
            np.copyto(dd, lim, where=dis_hi[j])
        # SoC after the row: keep·SoC + (g_ch S_ch − g_dis S_dis)/cap, clipped to [soc_min, soc_max]
        c *= g_ch
        dd *= g_dis
        c -= dd
        c /= cap
        np.add(e, c, out=sb)
        np.maximum(sb, lo_s, out=sb)
        np.minimum(sb, hi_s, out=sb)
    return out


def _run_batteries_scalar(p: FastPlan, soc: np.ndarray, steps: np.ndarray, ch_hi: np.ndarray, ch_lo: np.ndarray,
                          dis_lo: np.ndarray, dis_hi: np.ndarray, sch: np.ndarray, sdis: np.ndarray) -> np.ndarray:
    """:func:`_run_batteries` one battery at a time with Python floats (faster for a few batteries,
    where numpy's per-call cost dominates; the same operations, the same result)."""
    d = p.data
    bt = d.battery
    n, nb = sch.shape
    paper = bt.paper
    keep, g_ch, g_dis = p.keep, p.g_ch, p.g_dis
    lo_s, hi_s = bt.soc_min, bt.soc_max
    band_lo, band_hi = (x.T.tolist() for x in bt.band(steps))
    eta_c, eta_d = bt.eff_charge, bt.eff_discharge
    cap = d.cap_kwh.tolist()
    rate_c = d.sch_max.tolist()
    rate_d = d.sdis_max.tolist()
    # flags 1: charge at its upper limit, 2: at its lower limit, 4: discharge at its limit, 8: no discharge
    flags = ch_hi.astype(np.int8)
    flags |= ch_lo.astype(np.int8) << 1
    flags |= dis_lo.astype(np.int8) << 2
    flags |= dis_hi.astype(np.int8) << 3
    out = np.empty((n, nb))
    for b, (fl, row_c, row_d) in enumerate(zip(flags.T.tolist(), sch.T.tolist(), sdis.T.tolist(), strict=True)):
        sb = float(soc[b])
        cb, rc, rd = cap[b], rate_c[b], rate_d[b]
        col = []
        for f, c, dd, lo, hi in zip(fl, row_c, row_d, band_lo[b], band_hi[b], strict=True):
            col.append(sb)
            if f:
                if f & 1:
                    c = max(min((hi - keep * sb) * cb / g_ch, rc), 0.0)
                    if paper:
                        c = min(c, (hi_s - sb) * cb / eta_c)
                elif f & 2:
                    c = max((lo - keep * sb) * cb / g_ch, 0.0)
                if f & 4:
                    dd = min(-((lo - keep * sb) * cb) / g_dis, rd)
                    if paper:
                        dd = min(dd, (sb - lo_s) * cb / eta_d)
                    dd = max(dd, 0.0)
                elif f & 8:
                    dd = max((keep * sb - hi) * cb / g_dis, 0.0)
            sb = keep * sb + (g_ch * c - g_dis * dd) / cb
            if sb < lo_s:
                sb = lo_s
            elif sb > hi_s:
                sb = hi_s
        out[:, b] = col
    return out


def _presimulate(p: FastPlan, steps: np.ndarray, soc: np.ndarray, *, passes: int = PRESIM_PASSES
                 ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray], _Bounds]:
    """SoC guesses before each of ``steps``, the ε = 0 market they come from and its step data.

    The market without the ε term is read with every step's SoC at ``soc``; the batteries are
    then run in order at its community prices, each clipped to the limits of its running SoC.
    Each further pass reads the market again with the SoC so guessed (a marginal battery's
    charge depends sharply on its price, which depends on its limits).
    """
    d = p.data
    g = np.repeat(soc[None, :], len(steps), axis=0)
    guess: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    bd: _Bounds | None = None
    for _ in range(passes if d.n_b else 1):
        bd = _bounds(p, steps, g, bd)
        guess = _initial_guess(p, bd)
        if not d.n_b:
            break
        nu = guess[2][:, d.comm[d.bat]]  # (B, n_b) community price of each battery
        vc = (bd.th_ch - nu) * p.inv_sig_b  # unclipped charge [kWh]
        vd = (nu - bd.th_dis) * p.inv_sig_b  # unclipped discharge
        # a unit beyond its rate limit stays there whatever the SoC; otherwise its value, which
        # a SoC limit may still cut (the limits of the running SoC are applied in the loop)
        sch = np.minimum(np.maximum(vc, 0.0), d.sch_max)
        sdis = np.minimum(np.maximum(vd, 0.0), d.sdis_max)
        new = _run_batteries(p, soc, steps, vc >= d.sch_max, vc <= 0.0, vd >= d.sdis_max, vd <= 0.0, sch, sdis)
        done = np.array_equal(new, g)
        g = new
        if done:
            break
    assert guess is not None and bd is not None
    return g, guess, bd


def _merged_fallback(p: FastPlan, sol: Solution, fallback: Callable[[int, np.ndarray], np.ndarray]
                     ) -> Callable[[int, np.ndarray], np.ndarray]:
    """``fallback`` of a plan with merged batteries: called with the SoC of every battery of the
    case, it returns one per class.

    The solver's step solution is symmetric in the batteries of a class only to its tolerance;
    each class's S_ch, S_dis, SoC, Φ, α, β and ν are replaced by their mean over the class. Every
    constraint of the step is linear, so the mean is as feasible as the solver's point, and it is
    no worse (convex objective): the batteries of a class stay equal for the steps that follow.
    """
    assert p.full is not None and p.bat_class is not None and p.reps is not None
    full, cls, reps = p.full, p.bat_class, p.reps
    n = np.bincount(cls, minlength=len(reps)).astype(float)
    pos = full.bat

    def mean(row: np.ndarray) -> np.ndarray:
        return (np.bincount(cls, weights=row, minlength=len(reps)) / n)[cls]

    def run(t: int, soc: np.ndarray) -> np.ndarray:
        fallback(t, soc[cls])
        for name in ("sch", "sdis", "soc"):
            arr = getattr(sol, name)
            arr[t] = mean(arr[t])
        for name in ("phi", "alpha", "beta", "nu"):
            arr = getattr(sol, name)
            arr[t, pos] = mean(arr[t, pos])
        return np.asarray(sol.soc[t])[reps]

    return run


def solve_sequential(p: FastPlan, sol: Solution, soc_init: np.ndarray,
                     fallback: Callable[[int, np.ndarray], np.ndarray] | None, *,
                     snap: float = 0.0, batch: int = MAX_BATCH, force: np.ndarray | None = None) -> FastStats:
    """Clear every step of the case in order, writing into ``sol``.

    Steps are solved in batches, each step with a guessed SoC before it (at first the SoC
    before the batch). The steps of a batch are kept in order while their batteries'
    responses are unchanged under the true SoC (their KKT points are then unchanged). From
    the first that is not, the SoC before each later step is guessed again from the pieces
    of the steps before it, and the steps whose solution does not hold under their new guess
    are solved again together, warm-started from their active sets (see :data:`RESOLVE_WARM`).

    Parameters
    ----------
    p : FastPlan
        The case's plan.
    sol : Solution
        Filled in place, one row per step.
    soc_init : ndarray, shape (n_b,)
        SoC before step 0 [fraction of capacity].
    fallback : callable or None
        ``fallback(t, soc0) -> soc_end`` solves step ``t`` another way (Clarabel), writing into
        ``sol``; None raises :class:`~gridmarket.errors.MarketError` naming the step instead.
    snap : float
        Energies below this [kWh] are reported as 0 (as the Clarabel path does).
    batch : int
        Steps solved together.
    force : ndarray of bool, shape (steps,), optional
        Steps handed to ``fallback`` whatever the fast path finds (e.g. steps with network rows).
    """
    soc = np.asarray(soc_init, dtype=float).copy()
    if p.full is not None and p.bat_class is not None and p.reps is not None:
        cls, reps = p.bat_class, p.reps
        if not np.array_equal(soc[reps][cls], soc):  # batteries of a class start apart: solve them apart
            p = fast_plan(p.full, merge=False)
        else:
            soc = soc[reps]
            if fallback is not None:
                fallback = _merged_fallback(p, sol, fallback)
    d = p.data
    T = d.steps
    lo, hi = d.battery.soc_min, d.battery.soc_max
    stats = FastStats()
    t0 = 0
    # the current batch: its solutions (rows = steps a0, a0+1, ...), each solved with the SoC
    # guess in ``guesses``; its steps b0 ... t0 − 1 are kept and wait to be written at once
    acc: _Res | None = None
    guesses = np.zeros((0, d.n_b))
    a0 = b0 = 0
    while t0 < T:
        if acc is None or t0 >= a0 + len(acc.ok):
            if acc is not None and t0 > b0:
                _write(p, sol, b0, acc, slice(b0 - a0, t0 - a0), snap)
            steps = np.arange(t0, min(T, t0 + batch))
            guesses, guess, base = _presimulate(p, steps, soc)
            acc = solve_batch(p, steps, guesses, guess=guess, base=base)
            stats.iterations += acc.iterations
            a0 = b0 = t0
        out = acc.view(t0 - a0)  # steps t0, t0+1, ...
        if force is not None:
            forced = force[t0:t0 + len(out.ok)]
            out.ok[forced] = False
            out.reason[forced] = "the step has network constraints (solved by the QP)"
        soc0 = guesses[t0 - a0:]
        B = len(out.ok)
        if d.n_b:
            true = _true_soc(p, out, soc)
            same = np.all(true == soc0, axis=1)
            good = out.ok & (same | _valid_rows(p, out, true))
        else:
            true = soc0
            same = np.ones(B, dtype=bool)
            good = out.ok.copy()
        n_keep = int(np.argmin(good)) if not good.all() else B
        if n_keep:
            if d.n_b:
                out.soc[:n_keep] = p.keep * true[:n_keep] + (p.g_ch * out.sch[:n_keep]
                                                             - p.g_dis * out.sdis[:n_keep]) / d.cap_kwh
                soc = np.clip(out.soc[n_keep - 1], lo, hi)
            stats.fast_steps += n_keep
        t0 += n_keep
        if n_keep == B:
            continue
        j = n_keep
        if not out.ok[j] and (same[j] or np.array_equal(soc0[j], soc)):
            # solved with the true SoC and still failed
            if fallback is None:
                msg = (f"step {t0}: fast market path failed: {out.reason[j]}; use method='auto' to have"
                       " Clarabel solve such steps")
                raise MarketError(msg, step=t0, group="Market-method")
            if t0 > b0:
                _write(p, sol, b0, acc, slice(b0 - a0, t0 - a0), snap)
            stats.failures[t0] = out.reason[j]
            soc = np.clip(fallback(t0, soc), lo, hi)
            stats.qp_steps += 1
            t0 += 1
            b0 = t0
            j += 1
            if j >= B:
                continue
        # guess the SoC before the remaining steps again; solve those whose solution fails it
        stats.resolves += 1
        rest = out.view(j)
        g = _guess_soc(p, rest, 0, soc) if d.n_b else np.zeros((B - j, 0))
        redo = ~rest.ok | ~(np.all(g == soc0[j:], axis=1) | (_valid_rows(p, rest, g) if d.n_b else True))
        redo[0] |= not rest.ok[0]
        rows = np.flatnonzero(redo)
        if len(rows):
            # warm from the rows' old active sets, or (merged batteries) from each row's own ε = 0
            # market under its new SoC guess: the SoC of a class moves m batteries' limits at once
            warm = rest.state.rows(rows) if RESOLVE_WARM and p.weight is None else None
            o2 = solve_batch(p, t0 + rows, g[rows], warm=warm)
            stats.iterations += o2.iterations
            rest.put(rows, o2)
        # rows kept from the earlier solve hold under their new guess: refresh their SoC
        if d.n_b:
            kept = ~redo
            rest.soc[kept] = p.keep * g[kept] + (p.g_ch * rest.sch[kept] - p.g_dis * rest.sdis[kept]) / d.cap_kwh
        guesses[t0 - a0:] = g
    if acc is not None and t0 > b0:
        _write(p, sol, b0, acc, slice(b0 - a0, t0 - a0), snap)
    return stats
