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

The iteration starts from the market without the ε term (each pool's excess supply and
each community's net demand are monotone piecewise-linear in one price; their roots are
found by safeguarded Newton steps), with each trading community's importers or exporters
at their water level, so that usually only ε-level decisions remain.

Sequential steps are coupled only through the SoC before each step, which enters the
battery limits alone. Steps are therefore solved in batches with guessed SoC (the batteries
run in order at the ε = 0 prices); the steps of a batch are kept in order while their
batteries' responses are unchanged under the true SoC (their KKT points are then
unchanged), and from the first that is not, the remaining steps whose solution fails a new
guess are solved again, warm-started.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from gridmarket.enums import BatteryModel
from gridmarket.errors import MarketError
from gridmarket.market._data import CONSUMER, PRODUCER, MarketData
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
#: passes of the battery presimulation that guesses each step's SoC
PRESIM_PASSES = 2


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
    group_start: np.ndarray  #: (n_m,) first position of the agent's community when sorted by community
    sorted_member: np.ndarray  #: (n_m, n_c) membership of the positions sorted by community
    sorted_comm: np.ndarray  #: (n_m,) community of each position sorted by community
    group_last: np.ndarray  #: (n_m,) whether the position is its community's last


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
    return comp, n_k


def fast_unsupported(data: MarketData, *, horizon: int) -> str | None:
    """Why the fast path cannot clear this case (None when it can).

    The fast path needs one-step windows, ``ε > 0``, a trade fee ``τ > 0`` when communities
    are linked, linked communities forming cliques, and at least one agent per community.
    """
    if horizon != 1:
        return f"horizon {horizon} > 1 (multi-period windows link steps through SoC)"
    if not data.tie_break > 0:
        return "tie_break ε = 0 (the split of trades among agents is not unique)"
    if data.n_c and np.bincount(data.comm, minlength=data.n_c).min() == 0:
        return "a community has no market agent"
    if len(data.link_arcs) and not data.trade_fee > 0:
        return "trade_fee τ = 0 with linked communities (no pool structure)"
    cl = _cliques(data)
    if isinstance(cl, str):
        return cl
    return None


def fast_plan(data: MarketData) -> FastPlan:
    """Precompute the arrays of :class:`FastPlan` (call :func:`fast_unsupported` first)."""
    d = data
    why = fast_unsupported(d, horizon=1)
    if why is not None:
        msg = f"the fast market path does not apply: {why}"
        raise ValueError(msg)
    cl = _cliques(d)
    assert not isinstance(cl, str)
    clique, n_k = cl
    eps = float(d.tie_break)
    perm = np.concatenate([d.pq, d.bat]).astype(np.int64)
    comm = d.comm[perm]
    member = np.zeros((d.n_m, d.n_c))
    member[np.arange(d.n_m), comm] = 1.0
    kind_pq = d.kind[d.pq]
    prod = kind_pq == PRODUCER
    if not np.all((kind_pq == CONSUMER) | prod):
        raise ValueError("P block holds an agent that is neither consumer nor producer")
    lo_fac = np.ones(d.n_pq)
    hi_fac = np.ones(d.n_pq)
    lo_fac[d.flex_p] = 1.0 - d.flex
    lo_fac[prod] = -1.0
    hi_fac[prod] = 0.0
    spec = d.case.battery
    if d.battery_model is BatteryModel.PHYSICAL:
        g_ch, g_dis = float(spec.eff_charge), 1.0 / float(spec.eff_discharge)
    else:
        g_ch, g_dis = 1.0, 1.0
    cmember = np.zeros((d.n_c, n_k))
    inc = clique >= 0
    cmember[np.flatnonzero(inc), clique[inc]] = 1.0
    links = d.link_arcs
    vert = d.a_pq == 0.0
    sig_b = 2.0 * (d.a_bat + eps)
    starts = np.concatenate([[0], np.cumsum(np.bincount(comm, minlength=d.n_c))[:-1]])
    return FastPlan(
        data=d, eps=eps, h=0.5 / eps, tau=float(d.trade_fee), n_pq=d.n_pq, n_b=d.n_b, perm=perm, comm=comm,
        member=member, theta_p=d.b_pq.astype(float), sig_p=2.0 * d.a_pq, inv_sig_p=1.0 / np.where(vert, 1.0, 2.0 * d.a_pq),
        vert_p=vert, any_vert=bool(vert.any()), lo_fac=lo_fac, hi_fac=hi_fac, sig_b=sig_b, inv_sig_b=1.0 / sig_b,
        g_ch=g_ch, g_dis=g_dis, cdeg=float(spec.degradation_cost), keep=1.0 - float(spec.self_discharge),
        clique=clique, n_k=n_k, cmember=cmember, link_comm=d.arc_comm[links], link_partner=d.arc_partner[links],
        group_start=starts[np.sort(comm)], sorted_member=member[np.argsort(comm, kind="stable")],
        sorted_comm=np.sort(comm), group_last=np.append(np.sort(comm)[1:] != np.sort(comm)[:-1], True))


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
    value: np.ndarray  #: (B,) v [currency/kWh]
    ip: np.ndarray  #: (B,) π_imp
    ep: np.ndarray  #: (B,) π_exp
    span_p: np.ndarray  #: (B, n_pq) P̄ − P̲
    span_c: np.ndarray  #: (B, n_b) S̄_ch − S̲_ch
    thc: np.ndarray  #: (B, n_b) θ_ch/σ [kWh]
    thd: np.ndarray  #: (B, n_b) θ_dis/σ [kWh]

    def take(self, rows: np.ndarray) -> _Bounds:
        """The rows ``rows`` of every array."""
        return _Bounds(*(getattr(self, f)[rows] for f in _BOUND_FIELDS))


_BOUND_FIELDS = ("lo_p", "hi_p", "th_ch", "th_dis", "lb_ch", "ub_ch", "ub_dis", "value", "ip", "ep", "span_p",
                 "span_c", "thc", "thd")


def _battery_limits(p: FastPlan, soc0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Charge limits ``[S̲_ch, S̄_ch]`` and discharge limit ``S̄_dis`` [kWh] given the SoC before the step.

    Physical: ``keep·SoC₀ + (g_ch S_ch − g_dis S_dis)/cap ∈ [SoC_min, SoC_max]`` with one of the
    two zero, and the rate limits (12)–(13); paper adds the headroom rules (10)–(11).
    """
    d = p.data
    spec = d.case.battery
    cap = d.cap_kwh
    e_hi = (spec.soc_max - p.keep * soc0) * cap
    e_lo = (spec.soc_min - p.keep * soc0) * cap
    ub_ch = np.minimum(d.sch_max, e_hi / p.g_ch)
    ub_dis = np.minimum(d.sdis_max, -e_lo / p.g_dis)
    if d.battery_model is BatteryModel.PAPER:
        ub_ch = np.minimum(ub_ch, (spec.soc_max - soc0) * cap / spec.eff_charge)
        ub_dis = np.minimum(ub_dis, (soc0 - spec.soc_min) * cap / spec.eff_discharge)
    lb_ch = np.maximum(0.0, e_lo / p.g_ch)
    return lb_ch, ub_ch, np.maximum(ub_dis, 0.0)


def _bounds(p: FastPlan, steps: np.ndarray, soc0: np.ndarray) -> _Bounds:
    d = p.data
    e = d.energy_kwh[steps]
    v = d.value_step[steps]
    lb, ub, ubd = _battery_limits(p, soc0)
    lo, hi = e * p.lo_fac, e * p.hi_fac
    th_ch, th_dis = (p.g_ch * v - p.cdeg)[:, None], (p.g_dis * v + p.cdeg)[:, None]
    return _Bounds(lo_p=lo, hi_p=hi, th_ch=th_ch, th_dis=th_dis, lb_ch=lb, ub_ch=ub, ub_dis=ubd, value=v,
                   ip=d.import_price[steps], ep=d.export_price[steps], span_p=hi - lo, span_c=ub - lb,
                   thc=th_ch * p.inv_sig_b, thd=th_dis * p.inv_sig_b)


def _pool_open(p: FastPlan, ip: np.ndarray, ep: np.ndarray) -> np.ndarray:
    """(B,) whether linked communities can gain by trading: ``π_imp − τ > π_exp``."""
    return ip - p.tau > ep


def _port_prices(p: FastPlan, reg: np.ndarray, q: np.ndarray, ip: np.ndarray,
                 ep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Import and export price ``(P_i, P_e)`` (B, n_c) of every community from its clique's regime."""
    n_c = p.data.n_c
    pi = np.repeat(ip[:, None], n_c, axis=1)
    pe = np.repeat(ep[:, None], n_c, axis=1)
    if p.n_k:
        inc = np.flatnonzero(p.clique >= 0)
        rk = reg[:, p.clique[inc]]
        qk = q[:, p.clique[inc]]
        tau = p.tau
        pi[:, inc] = np.where(rk == FLOAT, qk + tau, np.where(rk == LOW, ep[:, None] + tau, ip[:, None]))
        pe[:, inc] = np.where(rk == FLOAT, qk, np.where(rk == HIGH, ip[:, None] - tau, ep[:, None]))
    return pi, pe


def _sum_by(x: np.ndarray, member: np.ndarray) -> np.ndarray:
    """Sum the last axis of ``x`` (..., n) by group: ``x @ member`` as one 2-D product."""
    return (x.reshape(-1, x.shape[-1]) @ member).reshape(*x.shape[:-1], member.shape[1])


# ----------------------------------------------------------------------------- the ε = 0 start

def _aggregate(p: FastPlan, bd: _Bounds, price: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Net demand ``Σ_{n∈c} (P_n + S_n)`` [kWh] of every community when all its agents face
    the price ``price[b, j, c]`` (ε = 0), and its slope [kWh/(currency/kWh)] -> (B, J, n_c) each.

    A vertical unit (a = 0) is a jump: it adds no slope.
    """
    n_pq = p.n_pq
    nu = price[:, :, p.comm]  # (B, J, n_m)
    nup = nu[:, :, :n_pq]
    lo, hi = bd.lo_p[:, None, :], bd.hi_p[:, None, :]
    v = (p.theta_p - nup) * p.inv_sig_p
    inside = (v > lo) & (v < hi)
    y = np.minimum(np.maximum(v, lo), hi)
    if p.any_vert:
        step = np.where(nup < p.theta_p, hi, np.where(nup > p.theta_p, lo, 0.5 * (lo + hi)))
        y = np.where(p.vert_p, step, y)
        inside &= ~p.vert_p
    g = inside * -p.inv_sig_p
    if p.n_b:
        nb = nu[:, :, n_pq:]
        vc = (bd.th_ch[:, :, None] - nb) * p.inv_sig_b
        vd = (bd.th_dis[:, :, None] - nb) * p.inv_sig_b
        lc, hc, ld = bd.lb_ch[:, None, :], bd.ub_ch[:, None, :], -bd.ub_dis[:, None, :]
        yb = np.minimum(np.maximum(vc, lc), hc) + np.minimum(np.maximum(vd, ld), 0.0)
        gb = (((vc > lc) & (vc < hc)).astype(float) + ((vd > ld) & (vd < 0.0))) * -p.inv_sig_b
        y = np.concatenate([y, yb], axis=2)
        g = np.concatenate([g, gb], axis=2)
    return _sum_by(y, p.member), _sum_by(g, p.member)


def _root(f: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]], a: np.ndarray, b: np.ndarray,
          fa: np.ndarray, fb: np.ndarray, active: np.ndarray, probes: np.ndarray, *, width: float = 1e-10,
          iters: int = 60) -> np.ndarray:
    """Root of increasing piecewise-linear ``f`` on ``[a, b]``, elementwise where ``active``.

    ``fa = f(a) < 0 < f(b) = fb`` where active; ``f(x, rows)`` evaluates rows ``rows`` of a
    (R, K, M) array of points and returns values and slopes of that shape. The ``probes[b, j]``
    (points on the steep pieces of batteries with a = 0, which switch over ~1e-5
    currency/kWh and make Newton from the flat sides oscillate) are evaluated first, all at
    once, to narrow the bracket; then Newton steps on the local piece, or Illinois secant
    steps when Newton leaves the bracket. Stops at ``|f| <= 1e-9`` or a bracket narrower than
    ``width``: it is a start for the active-set iteration, which settles the rest exactly.
    """
    a, b, fa, fb = a.copy(), b.copy(), fa.copy(), fb.copy()
    ga = np.zeros(a.shape)
    gb = np.zeros(a.shape)
    if probes.shape[1]:
        pr = np.broadcast_to(probes[:, None, :], a.shape + probes.shape[1:])
        inside = (pr > a[:, :, None]) & (pr < b[:, :, None]) & active[:, :, None]
        rows = np.flatnonzero(inside.any(axis=(1, 2)))
        if len(rows):
            px = pr[rows]
            fx, gx = f(px, rows)
            ins = inside[rows]
            lowp = ins & (fx <= 0.0)
            highp = ins & (fx >= 0.0)
            # best probe on each side: the largest point below the root, the smallest above
            ia = np.argmax(np.where(lowp, px, -np.inf), axis=2)[:, :, None]
            ib = np.argmin(np.where(highp, px, np.inf), axis=2)[:, :, None]
            has_a, has_b = lowp.any(axis=2), highp.any(axis=2)
            take = np.take_along_axis
            a[rows] = np.where(has_a, take(px, ia, 2)[:, :, 0], a[rows])
            fa[rows] = np.where(has_a, take(fx, ia, 2)[:, :, 0], fa[rows])
            ga[rows] = np.where(has_a, take(gx, ia, 2)[:, :, 0], 0.0)
            b[rows] = np.where(has_b, take(px, ib, 2)[:, :, 0], b[rows])
            fb[rows] = np.where(has_b, take(fx, ib, 2)[:, :, 0], fb[rows])
            gb[rows] = np.where(has_b, take(gx, ib, 2)[:, :, 0], 0.0)
    side = np.zeros(a.shape, dtype=np.int8)
    done = ~active | (fa == 0.0) | (fb == 0.0)
    root = np.where(fa == 0.0, a, np.where(fb == 0.0, b, np.nan))
    # start: Newton from a bracket end with a slope, else the secant point
    na = a - fa / np.where(ga > 0.0, ga, np.inf)
    nb = b - fb / np.where(gb > 0.0, gb, np.inf)
    sec = a - fa * (b - a) / np.where(fb - fa > 0.0, fb - fa, np.inf)
    x = np.where((na > a) & (na < b), na, np.where((nb > a) & (nb < b), nb,
                                                   np.where((sec > a) & (sec < b), sec, 0.5 * (a + b))))
    x = np.where(np.isnan(root), x, root)
    x = np.where(active, x, a)
    for _ in range(iters):
        rows = np.flatnonzero(~done.all(axis=1))
        if not len(rows):
            break
        xr = x[rows]
        fx, gx = f(xr[:, :, None], rows)
        fx, gx = fx[:, :, 0], gx[:, :, 0]
        ar, br, far, fbr, sr, dr = a[rows], b[rows], fa[rows], fb[rows], side[rows], done[rows]
        low = fx <= 0.0
        ar = np.where(low & ~dr, xr, ar)
        br = np.where(~low & ~dr, xr, br)
        # Illinois: halve the stale end's value when the same end moves twice
        fbr = np.where(low & (sr == 1), 0.5 * fbr, fbr)
        far = np.where(~low & (sr == -1), 0.5 * far, far)
        far = np.where(low, fx, far)
        fbr = np.where(~low, fx, fbr)
        sr = np.where(low, 1, -1).astype(np.int8)
        dr = dr | (np.abs(fx) <= 1e-9) | (br - ar <= width * (1.0 + np.abs(xr)))
        newton = xr - fx / np.where(gx > 0.0, gx, np.inf)
        secant = ar - far * (br - ar) / np.where(fbr - far > 0.0, fbr - far, np.inf)
        secant = np.where((secant > ar) & (secant < br), secant, 0.5 * (ar + br))
        use_newton = (gx > 0.0) & (newton > ar) & (newton < br)
        x[rows] = np.where(dr, xr, np.where(use_newton, newton, secant))
        a[rows], b[rows], fa[rows], fb[rows], side[rows], done[rows] = ar, br, far, fbr, sr, dr
    return x


def _initial_guess(p: FastPlan, bd: _Bounds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Regimes, pool potentials and community prices of the market without the ε term.

    With ``R_c`` a community's aggregate net demand at one price, a pool exports
    ``max(0, −R_c(q))`` and imports ``max(0, R_c(q + τ))`` from each member; its excess supply
    increases with ``q``, and its root, clipped to ``[π_exp, π_imp − τ]``, gives the regime. A
    community's price is then the root of ``R_c`` clipped to ``[P_e, P_i]``.
    """
    ip, ep = bd.ip, bd.ep
    B = len(ip)
    tau = p.tau
    n_c = p.data.n_c
    # points on the steep pieces of batteries: just inside the charge and discharge thresholds
    if p.n_b:
        width = np.minimum(bd.ub_ch.min(axis=1), bd.ub_dis.min(axis=1))
        half = 0.5 * p.sig_b.min() * np.maximum(width, 1e-9)
        probes = np.stack([bd.th_ch[:, 0] - half, bd.th_dis[:, 0] + half], axis=1)
    else:
        probes = np.zeros((B, 0))
    cand = np.stack([ep, ep + tau, ip - tau, ip], axis=1)  # (B, 4)
    R4, _ = _aggregate(p, bd, np.repeat(cand[:, :, None], n_c, axis=2))  # (B, 4, n_c)
    reg = np.zeros((B, p.n_k), dtype=np.int8)
    q = np.zeros((B, p.n_k))
    r_e = R4[:, 0].copy()  # demand at P_e and P_i, regime NONE
    r_i = R4[:, 3].copy()
    if p.n_k:
        openp = _pool_open(p, ip, ep)
        kc = np.maximum(p.clique, 0)
        inc = p.clique >= 0

        def excess(qk: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            # qk (R, n_k, M) -> excess supply and its slope, (R, n_k, M)
            qc = qk[:, kc, :].transpose(0, 2, 1)  # (R, M, n_c)
            M = qc.shape[1]
            R, g = _aggregate(p, bd.take(rows), np.concatenate([qc, qc + tau], axis=1))
            r0, r1, g0, g1 = R[:, :M], R[:, M:], g[:, :M], g[:, M:]
            ex = np.where(r0 < 0, -r0, 0.0) - np.where(r1 > 0, r1, 0.0)
            dex = np.where(r0 < 0, -g0, 0.0) - np.where(r1 > 0, g1, 0.0)
            return (ex @ p.cmember).transpose(0, 2, 1), (dex @ p.cmember).transpose(0, 2, 1)

        z_lo = (np.maximum(-R4[:, 0], 0.0) - np.maximum(R4[:, 1], 0.0)) @ p.cmember
        z_hi = (np.maximum(-R4[:, 2], 0.0) - np.maximum(R4[:, 3], 0.0)) @ p.cmember
        lo_q = np.repeat(ep[:, None], p.n_k, axis=1)
        hi_q = np.repeat((ip - tau)[:, None], p.n_k, axis=1)
        reg[:] = np.where(z_lo >= 0, LOW, np.where(z_hi <= 0, HIGH, FLOAT))
        reg[~openp] = NONE
        fl = reg == FLOAT
        if fl.any():
            q[:] = _root(excess, lo_q, hi_q, z_lo, z_hi, fl, np.concatenate([probes, probes - tau], axis=1))
        q[:] = np.where(reg == LOW, lo_q, np.where(reg == HIGH, hi_q, q))
        rc = np.where(inc, reg[:, kc], NONE)
        r_e = np.where(rc == HIGH, R4[:, 2], r_e)
        r_i = np.where(rc == LOW, R4[:, 1], r_i)
        fr = np.flatnonzero(fl.any(axis=1))
        if len(fr):
            qc = q[fr][:, kc]
            R2, _ = _aggregate(p, bd.take(fr), np.stack([qc, qc + tau], axis=1))
            f_c = rc[fr] == FLOAT
            r_e[fr] = np.where(f_c, R2[:, 0], r_e[fr])
            r_i[fr] = np.where(f_c, R2[:, 1], r_i[fr])
    pi, pe = _port_prices(p, reg, q, ip, ep)
    lam = np.where(r_i >= 0, pi, np.where(r_e <= 0, pe, 0.5 * (pi + pe)))
    inner = (r_i < 0) & (r_e > 0)
    if inner.any():

        def short(lam_: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            # lam_ (R, n_c, M) -> minus the net demand and its slope, (R, n_c, M)
            R, g = _aggregate(p, bd.take(rows), lam_.transpose(0, 2, 1))
            return -R.transpose(0, 2, 1), -g.transpose(0, 2, 1)

        lam = np.where(inner, _root(short, pe, pi, -r_e, -r_i, inner, probes), lam)
    return reg, q, lam


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


def _piece(v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Piece of a sloped unit whose unclipped value is ``v``; fixed units (hi <= lo) are LO."""
    return np.where(v >= hi, HI, np.where((v <= lo) | (hi <= lo), LO, MID)).astype(np.int8)


def _start(p: FastPlan, bd: _Bounds, guess: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> _State:
    """Active sets read from the ε = 0 market (:func:`_initial_guess`, or ``guess`` if given)."""
    reg, q, lam = _initial_guess(p, bd) if guess is None else guess
    B = len(bd.ip)
    nu = lam[:, p.comm]  # ν = λ at x = 0
    n_pq = p.n_pq
    nup = nu[:, :n_pq]
    pp = _piece((p.theta_p - nup) * p.inv_sig_p, bd.lo_p, bd.hi_p)
    if p.any_vert:
        vert = p.vert_p & (bd.hi_p > bd.lo_p)
        pp = np.where(vert, np.where(nup < p.theta_p, HI, LO), pp).astype(np.int8)
    nub = nu[:, n_pq:]
    vc = (bd.th_ch - nub) * p.inv_sig_b
    vd = (bd.th_dis - nub) * p.inv_sig_b
    pc = _piece(vc, bd.lb_ch, bd.ub_ch)
    pd = _piece(vd, -bd.ub_dis, np.zeros_like(bd.ub_dis))
    pi, pe = _port_prices(p, reg, q, bd.ip, bd.ep)
    # net demand at the start price: the importers and exporters of the ε = 0 market
    y = np.empty((B, p.data.n_m))
    yp = np.minimum(np.maximum((p.theta_p - nup) * p.inv_sig_p, bd.lo_p), bd.hi_p)
    y[:, :n_pq] = np.where(pp == HI, bd.hi_p, np.where(pp == LO, bd.lo_p, yp))
    y[:, n_pq:] = (np.minimum(np.maximum(vc, bd.lb_ch), bd.ub_ch)
                   + np.minimum(np.maximum(vd, -bd.ub_dis), 0.0))
    # importers and exporters: the water level of each trading community's net positions
    imp = lam >= pi
    exp = (lam <= pe) & ~imp
    ia = np.zeros((B, p.data.n_m))
    ib = np.zeros((B, p.data.n_m))
    if (imp | exp).any():
        wf = _waterfill(p, y, np.where(imp, 1.0, -1.0)).astype(float)
        ia = np.where(imp[:, p.comm], wf, 0.0)
        ib = np.where(exp[:, p.comm], wf, 0.0)
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


_VAL_FIELDS = ("x", "al", "be", "nu", "lam", "pi", "pe")


def _waterfill(p: FastPlan, y: np.ndarray, side: np.ndarray) -> np.ndarray:
    """Which agents trade when each community's net positions ``y`` [kWh] stay fixed.

    For an importing community (``side = +1``) the importers are the agents with ``y_n > u``,
    the water level ``u`` solving ``Σ_{y>u} (y + u)/2 + Σ_{y<=u} y = 0`` (from ``x = y − α``,
    ``α = (x − u)⁺`` and Σ x = 0); exporters (``side = −1``) mirror it with ``−y``. With the
    agents sorted by ``v = side·y``, the top ``k`` trade at level ``(S_k − 2Y)/k``, ``S_k`` their
    sum and ``Y`` the community's; the consistent ``k`` is read off. Rows x agents -> bool.
    """
    v = y * side[:, p.comm]
    big = 2.0 * (np.abs(v).max() + 1.0)
    order = np.argsort(p.comm * big - v, axis=1)  # by community, then v descending
    vs = np.take_along_axis(v, order, axis=1)
    cs = np.cumsum(vs, axis=1)
    start = p.group_start
    before = np.where(start > 0, cs[:, np.maximum(start - 1, 0)], 0.0)
    sk = cs - before  # sum of the top k of the community
    k = np.arange(vs.shape[1]) - start + 1.0
    tot = _sum_by(vs, p.sorted_member)[:, p.sorted_comm]  # Y per position
    level = (sk - 2.0 * tot) / k
    nxt = np.empty_like(vs)
    nxt[:, :-1] = vs[:, 1:]
    nxt[:, -1] = -np.inf
    nxt[:, p.group_last] = -np.inf
    ok = (vs > level) & (level >= nxt)
    thr = _sum_by(np.where(ok, level, 0.0), p.sorted_member)  # one consistent k per community
    has = _sum_by(ok.astype(float), p.sorted_member) > 0
    thr = np.where(has, thr, np.inf)
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
        dm = bd.ub_dis > 0.0
        u_c = np.where(cm & (pc == HI), bd.th_ch - sb * bd.ub_ch, np.inf)
        d_c = np.where(cm & (pc == LO), bd.th_ch - sb * bd.lb_ch, -np.inf)
        u_d = np.where(dm & (pd == HI), bd.th_dis, np.inf)
        d_d = np.where(dm & (pd == LO), bd.th_dis + sb * bd.ub_dis, -np.inf)
        up[:, n_pq:] = np.minimum(u_c, u_d)
        dn[:, n_pq:] = np.maximum(d_c, d_d)
    shift = 2.0 * p.eps * y  # ν − λ of an agent that does not trade
    mem = p.member.astype(bool)[None, :, :]
    hi_c = np.where(mem, (up - shift)[:, :, None], np.inf).min(axis=1)
    lo_c = np.where(mem, (dn - shift)[:, :, None], -np.inf).max(axis=1)
    hi_c = np.minimum(hi_c, pi)
    lo_c = np.maximum(lo_c, pe)
    return np.minimum(lo_c, hi_c), np.maximum(lo_c, hi_c)


def _iterate(p: FastPlan, bd: _Bounds, st: _State) -> tuple[_State, np.ndarray, np.ndarray, _Vals]:
    """One active-set step: solve the linear KKT system of the current active sets, then re-read them.

    Returns the new active sets, whether each row changed, whether each row has a rigid
    community that cannot balance, and the solution of the current sets.
    """
    eps, h, tau, n_pq = p.eps, p.h, p.tau, p.n_pq
    ip, ep = bd.ip, bd.ep
    pp, pc, pd, fa, fb, reg, q = st.pp, st.pc, st.pd, st.ia, st.ib, st.reg, st.q
    lo, hi = bd.lo_p, bd.hi_p
    # ---- each agent on its pieces: s·y = r0 − r1·ν
    mid = pp == MID
    bnd = lo + (pp == HI) * bd.span_p
    s = np.empty(fa.shape)
    r0 = np.empty(fa.shape)
    r1 = np.empty(fa.shape)
    s[:, :n_pq] = 1.0 + mid * (p.sig_p - 1.0)
    r0[:, :n_pq] = bnd + mid * (p.theta_p - bnd)
    r1[:, :n_pq] = mid
    if p.n_b:
        mc, md, ld = pc == MID, pd == MID, pd == LO
        bc = bd.lb_ch + (pc == HI) * bd.span_c
        s[:, n_pq:] = 1.0
        r0[:, n_pq:] = bc + mc * (bd.thc - bc) + md * bd.thd - ld * bd.ub_dis
        r1[:, n_pq:] = (mc.astype(float) + md) * p.inv_sig_b
    k = 1.0 / (s * (1.0 + fa + fb) + (2.0 * eps) * r1)
    c = k * r0
    dd = k * r1
    ks = k * s * h
    e = ks * fa
    g = ks * fb
    sums = _sum_by(np.stack([c, dd, e, g, fa * c, fa * dd, e * fb, fa, fb * c, fb * dd, fb], axis=1), p.member)
    S0, Sr, Si, Se = sums[:, 0], sums[:, 1], sums[:, 2], sums[:, 3]
    # ---- (3) gives λ from the port prices
    den = Sr + Si + Se
    rigid = den <= 0.0
    dsafe = np.where(rigid, 1.0, den)
    if p.n_k:
        # port totals I = Σ_ia (x − u), E = Σ_ib (−x − w) as functions of (μ_imp, μ_exp)
        A0, Ar, Am, Na, B0, Br, Nb = (sums[:, i] for i in range(4, 11))
        L0, Li, Le = S0 / dsafe, Si / dsafe, Se / dsafe
        cI = Na * h - Ar - Si - Am
        I0, Ii, Ie = A0 + cI * L0, Si - Na * h + cI * Li, Am + cI * Le
        cE = Br + Am + Se - Nb * h
        E0, Ei, Ee = -B0 + cE * L0, -Am + cE * Li, Nb * h - Se + cE * Le
        # floating pools: Σ_clique (E − I) = 0 with μ_imp = q + τ, μ_exp = q
        num = (E0 - I0 + tau * (Ei - Ii)) @ p.cmember
        dq = (Ei - Ii + Ee - Ie) @ p.cmember
        fl = reg == FLOAT
        # a pool whose trading communities cannot respond to prices (no sloped unit) cannot
        # be balanced by q: it goes to the grid (regime low or high, decided below)
        trading = (Na + Nb) > 0.0
        stiff = ((_sum_by(r1, p.member) * trading) @ p.cmember) <= 0.0
        solve_q = fl & ~stiff & (dq != 0.0)
        q = np.where(solve_q, -num / np.where(solve_q, dq, 1.0), q)
        pi, pe = _port_prices(p, reg, q, ip, ep)
    else:
        pi = np.repeat(ip[:, None], p.data.n_c, axis=1)
        pe = np.repeat(ep[:, None], p.data.n_c, axis=1)
    lam = (S0 + Si * pi + Se * pe) / dsafe
    # a Newton step far outside the community's ports (a solution has λ between them, up to
    # ε-level spreads) is cut back to them before the pieces are read again: otherwise the
    # active sets can cycle; such a row is not settled
    margin = PRICE_MARGIN * (1.0 + np.abs(pi - pe))
    wild = ((lam < pe - margin) | (lam > pi + margin)) & ~rigid
    if wild.any():
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
    x = k * (r0 - r1 * lam_a) + ks * (fa * dli - fb * dle)
    al = x - h * dli
    be = -x - h * dle
    nu = lam_a + (2.0 * eps) * x
    vals = _Vals(x, al, be, nu, lam, pi, pe)

    # ---- re-read the active sets from the new prices (a unit moves when its value on its
    # current piece is off its clipped response by more than TOL_KWH; fixed units never do)
    nup = nu[:, :n_pq]
    v = (p.theta_p - nup) * p.inv_sig_p
    move = np.abs(bnd + mid * (v - bnd) - np.minimum(np.maximum(v, lo), hi)) > TOL_KWH
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
        move_rows = np.zeros(len(ip), dtype=bool)
    if move.any():
        pp = np.where(move, (v > lo).astype(np.int8) + (v >= hi), pp).astype(np.int8)
        move_rows |= move.any(axis=1)
    changed = move_rows
    if p.n_b:
        nub = nu[:, n_pq:]
        vc = bd.thc - nub * p.inv_sig_b
        mvc = np.abs(np.where(mc, vc, bc) - np.minimum(np.maximum(vc, bd.lb_ch), bd.ub_ch)) > TOL_KWH
        vd = bd.thd - nub * p.inv_sig_b
        cur_d = np.where(md, vd, ld * -bd.ub_dis)
        mvd = np.abs(cur_d - np.minimum(np.maximum(vd, -bd.ub_dis), 0.0)) > TOL_KWH
        if mvc.any():
            pc = np.where(mvc, (vc > bd.lb_ch).astype(np.int8) + (vc >= bd.ub_ch), pc).astype(np.int8)
            changed = changed | mvc.any(axis=1)
        if mvd.any():
            pd = np.where(mvd, (vd > -bd.ub_dis).astype(np.int8) + (vd >= 0.0), pd).astype(np.int8)
            changed = changed | mvd.any(axis=1)
    ia_new = ((al > TOL_KWH) | ((fa > 0) & (al > -TOL_KWH))).astype(float)
    ib_new = ((be > TOL_KWH) | ((fb > 0) & (be > -TOL_KWH))).astype(float)
    mv = (ia_new != fa) | (ib_new != fb)
    if mv.any():
        changed = changed | mv.any(axis=1)
        # a community whose importers (or exporters) are still moving by more than one agent
        # jumps to the water level of its current net positions (only where it already trades
        # on that side: its net positions are then read at its port price)
        dab = _sum_by(np.stack([np.abs(ia_new - fa), np.abs(ib_new - fb), ia_new, ib_new], axis=1), p.member)
        jump_a = (dab[:, 0] > 1.0) & (dab[:, 3] == 0.0) & (sums[:, 7] > 0.0)
        jump_b = (dab[:, 1] > 1.0) & (dab[:, 2] == 0.0) & (sums[:, 10] > 0.0)
        if jump_a.any() or jump_b.any():
            rows = np.flatnonzero((jump_a | jump_b).any(axis=1))
            y = x[rows] + fa[rows] * al[rows] - fb[rows] * be[rows]
            wf = _waterfill(p, y, np.where(jump_a[rows], 1.0, -1.0)).astype(float)
            ja = jump_a[rows][:, p.comm]
            jb = jump_b[rows][:, p.comm]
            ia_new[rows] = np.where(ja, wf, ia_new[rows])
            ib_new[rows] = np.where(jb, wf, ib_new[rows])
    if p.n_k:
        ie = _sum_by(np.stack([fa * al, fb * be], axis=1), p.member)  # (R, 2, n_c)
        z = (ie[:, 1] - ie[:, 0]) @ p.cmember  # pool excess supply of this solution
        qlo, qhi = ep[:, None], (ip - tau)[:, None]
        r_new = reg.copy()
        r_new[fl & (q < qlo - TOL_PRICE)] = LOW
        r_new[fl & (q > qhi + TOL_PRICE)] = HIGH
        # (only once the agents' sets have settled: new traders may still balance the pool)
        calm = ~changed[:, None]
        r_new[fl & stiff & calm & (z < -TOL_KWH)] = HIGH
        r_new[fl & stiff & calm & (z > TOL_KWH)] = LOW
        r_new[(reg == LOW) & (z < -TOL_KWH)] = FLOAT
        r_new[(reg == HIGH) & (z > TOL_KWH)] = FLOAT
        r_new[~_pool_open(p, ip, ep)] = NONE
        # a floating pool out of balance has not settled (its q must still move)
        changed = changed | (fl & (r_new == FLOAT) & (np.abs(z) > 1e-8 * (1.0 + (ie[:, 0] @ p.cmember)))).any(axis=1)
        mv = r_new != reg
        if mv.any():
            # a pool entering low/high sits at that bound; one leaving them starts there
            q = np.where(r_new == LOW, qlo, np.where(r_new == HIGH, qhi, np.where(
                (reg == LOW) & (r_new == FLOAT), qlo, np.where((reg == HIGH) & (r_new == FLOAT), qhi, q))))
            reg = r_new
            changed = changed | mv.any(axis=1)
    changed = changed | wild.any(axis=1)
    return _State(pp, pc, pd, ia_new, ib_new, reg, q), changed, bad.any(axis=1), vals


# ----------------------------------------------------------------------------- one batch of steps

@dataclass
class _Out:
    """Primal and dual values of a batch in market units and market agent order, rows = steps."""

    ok: np.ndarray  #: (B,) solved
    reason: list[str]
    iterations: int
    state: _State
    p: np.ndarray
    sch: np.ndarray
    sdis: np.ndarray
    soc: np.ndarray
    phi: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    gimp: np.ndarray
    gexp: np.ndarray
    aimp: np.ndarray
    aexp: np.ndarray
    lam: np.ndarray
    mu_imp: np.ndarray
    mu_exp: np.ndarray
    rho: np.ndarray
    nu: np.ndarray
    vfac: np.ndarray


_OUT_FIELDS = ("p", "sch", "sdis", "soc", "phi", "alpha", "beta", "gimp", "gexp", "aimp", "aexp", "lam", "mu_imp",
               "mu_exp", "rho", "nu", "vfac")


def _out_rows(out: _Out, sl: slice) -> _Out:
    """Rows ``sl`` of a batch result (copies)."""
    idx = range(len(out.ok))[sl]
    return _Out(ok=out.ok[sl].copy(), reason=[out.reason[i] for i in idx], iterations=0, state=out.state.rows(sl),
                **{f: getattr(out, f)[sl].copy() for f in _OUT_FIELDS})


def _out_put(out: _Out, rows: np.ndarray, other: _Out) -> None:
    """Overwrite rows ``rows`` of ``out`` with the rows of ``other``."""
    out.ok[rows] = other.ok
    for i, r in enumerate(rows):
        out.reason[r] = other.reason[i]
    out.state.put(rows, other.state)
    for f in _OUT_FIELDS:
        getattr(out, f)[rows] = getattr(other, f)


def solve_batch(p: FastPlan, steps: np.ndarray, soc0: np.ndarray, *, max_iter: int | None = None,
                warm: _State | None = None,
                guess: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> _Out:
    """Solve the one-step markets of ``steps`` (independently) with SoC ``soc0`` (B, n_b) before each.

    Returns the primal and dual values of every step; ``ok[b]`` is False (with a ``reason``)
    where the active-set iteration did not settle or an assumption failed. ``warm`` starts from
    the active sets of an earlier solve of the same steps instead of the ε = 0 market;
    ``guess`` gives that market's regimes, pool potentials and prices when already known.
    Rows that have settled are not iterated further.
    """
    d = p.data
    B = len(steps)
    n_m, n_c, n_b = d.n_m, d.n_c, d.n_b
    max_iter = MAX_ITER if max_iter is None else max_iter
    bd = _bounds(p, steps, soc0)
    reason = [""] * B
    fail = (bd.lb_ch > bd.ub_ch + TOL_KWH).any(axis=1) if n_b else np.zeros(B, dtype=bool)
    for b in np.flatnonzero(fail):
        reason[b] = "a battery's forced charge exceeds its charge limit (infeasible SoC bound)"
    if warm is not None:
        st = warm.rows(slice(None))
        st.pp[bd.hi_p <= bd.lo_p] = LO
        if n_b:
            st.pc[bd.ub_ch <= bd.lb_ch] = LO
            st.pd[bd.ub_dis <= 0.0] = LO
    else:
        st = _start(p, bd, guess)
    vals = _Vals(*(np.zeros((B, n)) for n in (n_m, n_m, n_m, n_m, n_c, n_c, n_c)))
    settled = np.zeros(B, dtype=bool)
    act = np.flatnonzero(~fail)
    it = 0
    for it in range(1, max_iter + 1):
        if not len(act):
            break
        if it == RESTART_ITER + 1 and (warm is not None or guess is not None):
            # a start from other steps' active sets or from an ε = 0 market read with other
            # SoC limits is not settling: start these rows again from their own ε = 0 market
            st.put(act, _start(p, bd.take(act)))
        full = len(act) == B
        new, changed, bad, v = _iterate(p, bd if full else bd.take(act), st if full else st.rows(act))
        if full:
            st, vals = new, v
        else:
            st.put(act, new)
            for f in _VAL_FIELDS:
                getattr(vals, f)[act] = getattr(v, f)
        settled[act] = ~changed & ~bad
        act = act[changed | bad]
        if not len(act):
            break
    ok = settled & ~fail
    for b in np.flatnonzero(~settled & ~fail):
        reason[b] = f"active-set iteration did not settle in {max_iter} iterations"
    return _outputs(p, bd, soc0, st, vals, ok, reason, it)


def _outputs(p: FastPlan, bd: _Bounds, soc0: np.ndarray, st: _State, v: _Vals, ok: np.ndarray, reason: list[str],
             iterations: int) -> _Out:
    """Market-order arrays of a settled batch (flows split pro rata inside each pool)."""
    d = p.data
    B = len(bd.ip)
    n_c, n_pq = d.n_c, p.n_pq
    alpha_i = st.ia * np.maximum(v.al, 0.0)
    beta_i = st.ib * np.maximum(v.be, 0.0)
    y = v.x + alpha_i - beta_i
    ie = _sum_by(np.stack([alpha_i, beta_i], axis=1), p.member)
    gimp, gexp = ie[:, 0], ie[:, 1]
    if p.n_k:
        inc = p.clique >= 0
        pooled = ((gimp > TOL_KWH) & (gexp > TOL_KWH))[:, inc] & (st.reg[:, p.clique[inc]] != NONE)
        for b in np.flatnonzero(pooled.any(axis=1) & ok):
            ok[b] = False
            reason[b] = "a pooled community would both import and export (not a pool equilibrium)"
    aimp = np.zeros((B, d.n_arc))
    aexp = np.zeros((B, d.n_arc))
    rho = np.full((B, d.n_arc), np.nan)
    gi, ge = gimp, gexp
    if len(p.link_comm):
        links = d.link_arcs
        kl = p.clique[p.link_comm]
        regl = st.reg[:, kl]
        scale = np.maximum(gexp @ p.cmember, gimp @ p.cmember)[:, kl]
        fl = np.where((regl != NONE) & (scale > 0),
                      gexp[:, p.link_partner] * gimp[:, p.link_comm] / np.where(scale > 0, scale, 1.0), 0.0)
        aimp[:, links] = fl
        aexp[:, d.arc_rev[links]] = fl
        gi = gimp - np.bincount(np.repeat(np.arange(B) * n_c, len(links)) + np.tile(p.link_comm, B),
                                weights=fl.ravel(), minlength=B * n_c).reshape(B, n_c)
        ge = gexp - np.bincount(np.repeat(np.arange(B) * n_c, len(links)) + np.tile(p.link_partner, B),
                                weights=fl.ravel(), minlength=B * n_c).reshape(B, n_c)
        # the pool's price: q when floating, the bound it sits at when low or high
        qeff = np.where(regl == LOW, bd.ep[:, None], np.where(regl == HIGH, (bd.ip - p.tau)[:, None], st.q[:, kl]))
        rho[:, links] = np.where(regl != NONE, qeff, 0.5 * ((bd.ip - p.tau) + bd.ep)[:, None])
    aimp[:, :n_c] = np.maximum(gi, 0.0)  # grid arcs come first, one per community
    aexp[:, :n_c] = np.maximum(ge, 0.0)

    def market(a: np.ndarray) -> np.ndarray:
        out = np.empty_like(a)
        out[:, p.perm] = a
        return out

    sch = np.maximum(y[:, n_pq:], 0.0)
    sdis = np.maximum(-y[:, n_pq:], 0.0)
    soc = p.keep * soc0 + (p.g_ch * sch - p.g_dis * sdis) / d.cap_kwh
    return _Out(ok=ok, reason=reason, iterations=iterations, state=st, p=y[:, :n_pq], sch=sch, sdis=sdis, soc=soc,
                phi=market(-v.x), alpha=market(alpha_i), beta=market(beta_i), gimp=gimp, gexp=gexp, aimp=aimp,
                aexp=aexp, lam=v.lam, mu_imp=v.pi, mu_exp=v.pe, rho=rho, nu=market(v.nu),
                vfac=np.repeat(bd.value[:, None], d.n_b, axis=1))


# ----------------------------------------------------------------------------- the sequence

def _valid_rows(p: FastPlan, out: _Out, soc: np.ndarray) -> np.ndarray:
    """(B,) whether each row of a batch, solved with a guessed SoC, is also the solution for ``soc``
    (B, n_b): every battery's charge and discharge equal its clipped response to its price
    under the limits of that SoC, so every KKT condition still holds."""
    lb, ub, ubd = _battery_limits(p, soc)
    nu = out.nu[:, p.data.bat]
    th = out.vfac
    ch = np.minimum(np.maximum((p.g_ch * th - p.cdeg - nu) * p.inv_sig_b, lb), ub)
    dis = -np.minimum(np.maximum((p.g_dis * th + p.cdeg - nu) * p.inv_sig_b, -ubd), 0.0)
    tol = 1e-9 * (1.0 + out.sch + out.sdis)
    good = (np.abs(ch - out.sch) <= tol) & (np.abs(dis - out.sdis) <= tol) & (lb <= ub + TOL_KWH)
    return good.all(axis=1)


def _true_soc(p: FastPlan, out: _Out, soc: np.ndarray) -> np.ndarray:
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
    spec = d.case.battery
    return np.clip(s, spec.soc_min, spec.soc_max)


def _guess_soc(p: FastPlan, out: _Out, j: int, soc: np.ndarray) -> np.ndarray:
    """Guessed SoC before rows ``j, j+1, ...`` of a batch, from the true ``soc`` before row j.

    Each row keeps its pieces: a battery at a limit takes the limit of the guessed SoC (one that
    fills or empties ends exactly at its SoC bound), any other keeps its S.
    """
    st = out.state
    sl = slice(j, None)
    return _run_batteries(p, soc, st.pc[sl] == HI, st.pc[sl] == LO, st.pd[sl] == LO, st.pd[sl] == HI,
                          out.sch[sl], out.sdis[sl])


def _run_batteries(p: FastPlan, soc: np.ndarray, ch_hi: np.ndarray, ch_lo: np.ndarray, dis_lo: np.ndarray,
                   dis_hi: np.ndarray, sch: np.ndarray, sdis: np.ndarray) -> np.ndarray:
    """SoC before each row when the batteries run row after row from ``soc``.

    Per row and battery: charge at its upper limit (``ch_hi``) or lower limit (``ch_lo``) of the
    running SoC, else ``sch``; discharge at its limit (``dis_lo``), zero (``dis_hi``), else
    ``sdis``. A plain loop over scalars: the batteries are few and each row needs the last.
    """
    d = p.data
    spec = d.case.battery
    n, nb = sch.shape
    out = np.empty((n, nb))
    paper = d.battery_model is BatteryModel.PAPER
    keep, g_ch, g_dis = p.keep, p.g_ch, p.g_dis
    lo, hi = float(spec.soc_min), float(spec.soc_max)
    eta_c, eta_d = float(spec.eff_charge), float(spec.eff_discharge)
    cap = d.cap_kwh.tolist()
    rate_c = d.sch_max.tolist()
    rate_d = d.sdis_max.tolist()
    s = [float(v) for v in soc]
    flags = (ch_hi.tolist(), ch_lo.tolist(), dis_lo.tolist(), dis_hi.tolist())
    sch_l, sdis_l = sch.tolist(), sdis.tolist()
    for m in range(n):
        out[m] = s
        chh, chl, dl, dh = flags[0][m], flags[1][m], flags[2][m], flags[3][m]
        row_c, row_d = sch_l[m], sdis_l[m]
        for b in range(nb):
            sb = s[b]
            e_hi = (hi - keep * sb) * cap[b]
            e_lo = (lo - keep * sb) * cap[b]
            c = row_c[b]
            if chh[b]:
                c = min(rate_c[b], e_hi / g_ch)
                if paper:
                    c = min(c, (hi - sb) * cap[b] / eta_c)
            elif chl[b]:
                c = max(0.0, e_lo / g_ch)
            dd = row_d[b]
            if dl[b]:
                dd = min(rate_d[b], -e_lo / g_dis)
                if paper:
                    dd = min(dd, (sb - lo) * cap[b] / eta_d)
                dd = max(dd, 0.0)
            elif dh[b]:
                dd = 0.0
            s[b] = min(max(keep * sb + (g_ch * c - g_dis * dd) / cap[b], lo), hi)
    return out


def _presimulate(p: FastPlan, steps: np.ndarray, soc: np.ndarray, *, passes: int = PRESIM_PASSES
                 ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """SoC guesses before each of ``steps``, and the ε = 0 market they come from.

    The market without the ε term is read with every step's SoC at ``soc``; the batteries are
    then run in order at its community prices, each clipped to the limits of its running SoC.
    Each further pass reads the market again with the SoC so guessed (a marginal battery's
    charge depends sharply on its price, which depends on its limits).
    """
    d = p.data
    g = np.repeat(soc[None, :], len(steps), axis=0)
    guess: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    for _ in range(passes if d.n_b else 1):
        bd = _bounds(p, steps, g)
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
        new = _run_batteries(p, soc, vc >= d.sch_max, vc <= 0.0, vd >= d.sdis_max, vd <= 0.0, sch, sdis)
        done = np.array_equal(new, g)
        g = new
        if done:
            break
    assert guess is not None
    return g, guess


def solve_sequential(p: FastPlan, sol: Solution, soc_init: np.ndarray,
                     fallback: Callable[[int, np.ndarray], np.ndarray] | None, *,
                     snap: float = 0.0, batch: int = MAX_BATCH) -> FastStats:
    """Clear every step of the case in order, writing into ``sol``.

    Steps are solved in batches, each step with a guessed SoC before it (at first the SoC
    before the batch). The steps of a batch are kept in order while their batteries'
    responses are unchanged under the true SoC (their KKT points are then unchanged). From
    the first that is not, the SoC before each later step is guessed again from the pieces
    of the steps before it, and the steps whose solution does not hold under their new guess
    are solved again together, warm-started from their active sets.

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
    """
    d = p.data
    T = d.steps
    spec = d.case.battery
    lo, hi = spec.soc_min, spec.soc_max
    stats = FastStats()
    soc = np.asarray(soc_init, dtype=float).copy()
    t0 = 0
    out: _Out | None = None  # solutions of steps t0, t0+1, ... with the SoC guesses soc0
    soc0 = np.zeros((0, d.n_b))
    while t0 < T:
        if out is None:
            steps = np.arange(t0, min(T, t0 + batch))
            soc0, guess = _presimulate(p, steps, soc)
            if d.n_b:
                # the ε = 0 prices were read with the SoC before the batch: read them again
                # where the guessed SoC moves a battery's limits
                out = solve_batch(p, steps, soc0, guess=guess)
            else:
                out = solve_batch(p, steps, soc0, guess=guess)
            stats.iterations += out.iterations
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
            keep = slice(0, n_keep)
            if d.n_b:
                out.soc[keep] = p.keep * true[keep] + (p.g_ch * out.sch[keep] - p.g_dis * out.sdis[keep]) / d.cap_kwh
            if snap:
                for name in ("p", "sch", "sdis", "phi", "alpha", "beta", "gimp", "gexp", "aimp", "aexp"):
                    arr = getattr(out, name)[keep]
                    arr[np.abs(arr) < snap] = 0.0
            for name in _OUT_FIELDS:
                getattr(sol, name)[t0:t0 + n_keep] = getattr(out, name)[keep]
            soc = np.clip(out.soc[n_keep - 1], lo, hi) if d.n_b else soc
            stats.fast_steps += n_keep
        t0 += n_keep
        if n_keep == B:
            out = None
            continue
        j = n_keep
        if not out.ok[j] and (same[j] or np.array_equal(soc0[j], soc)):
            # solved with the true SoC and still failed
            if fallback is None:
                msg = (f"step {t0}: fast market path failed: {out.reason[j]}; use method='auto' to have"
                       " Clarabel solve such steps")
                raise MarketError(msg, step=t0, group="Market-method")
            stats.failures[t0] = out.reason[j]
            soc = np.clip(fallback(t0, soc), lo, hi)
            stats.qp_steps += 1
            t0 += 1
            j += 1
            if j >= B:
                out = None
                continue
        # guess the SoC before the remaining steps again; solve those whose solution fails it
        stats.resolves += 1
        rest = _out_rows(out, slice(j, None))
        g = _guess_soc(p, rest, 0, soc) if d.n_b else np.zeros((B - j, 0))
        redo = ~rest.ok | ~(np.all(g == soc0[j:], axis=1) | (_valid_rows(p, rest, g) if d.n_b else True))
        redo[0] |= not rest.ok[0]
        rows = np.flatnonzero(redo)
        if len(rows):
            o2 = solve_batch(p, t0 + rows, g[rows], warm=rest.state.rows(rows))
            stats.iterations += o2.iterations
            _out_put(rest, rows, o2)
        # rows kept from the earlier solve hold under their new guess: refresh their SoC
        if d.n_b:
            kept = ~redo
            rest.soc[kept] = p.keep * g[kept] + (p.g_ch * rest.sch[kept] - p.g_dis * rest.sdis[kept]) / d.cap_kwh
        out, soc0 = rest, g
    return stats
