"""Assemble the market QP of shared MODEL.md as sparse matrices, once per case and window length.

Clarabel's standard form is used directly::

    minimise    ½ xᵀ P x + qᵀ x
    subject to  A x + s = b,   s ∈ {0}^{m_eq} × ℝ₊^{m_ineq}

Welfare is maximised by minimising ``−W + ε(ΣΦ² + α² + β² + S_ch² + S_dis²)``. The matrices
``P`` and ``A`` depend only on the case (agents, communities, links, batteries, window
length); everything that changes from window to window (demand, available PV, prices, the
value of stored energy, the SoC before the window) enters ``q`` and ``b`` only, through the
``q_params``/``b_param`` hooks that :meth:`MarketModel.vectors` evaluates with vectorised
numpy (no loop over agents).

Variables of one step, in this order (``k`` = step inside the window; the window stacks the
steps one after the other), all in [kWh] except ``SoC`` [fraction of capacity]:

========  ======  ============================================================
block     size    meaning
========  ======  ============================================================
``P``     n_pq    consumption of consumers (≥ 0) and producers (≤ 0), eq. (14)
``Sch``   n_b     battery charge drawn from the community, ≥ 0
``Sdis``  n_b     battery discharge delivered to the community, ≥ 0
``SoC``   n_b     state of charge at the end of the step
``Phi``   n_m     net sale into the agent's community (Φ_n > 0 sells)
``Alpha`` n_m     import from partners (α_n ≥ 0)
``Beta``  n_m     export to partners (β_n ≥ 0)
``Gimp``  n_c     community import γ_imp,c
``Gexp``  n_c     community export γ_exp,c
``Aimp``  n_arc   γ_imp|(c,j): community c imports from partner j (grid or community)
``Aexp``  n_arc   γ_exp|(c,j): community c exports to partner j
========  ======  ============================================================

Each constraint block has one ``define_*`` function, named after its equation, whose
docstring states the maths; blocks are named ``{Component}-{kind}[-{attr}]`` and kept as
:class:`RowBlock` so that prices (duals) and infeasibility diagnoses can name them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from gridmarket.market._data import GRID, MarketData, Window
from gridmarket.market.pool import pool_names

__all__ = [
    "Layout",
    "MarketModel",
    "RowBlock",
    "create_model",
    "define_agent_balance",
    "define_agent_bounds",
    "define_battery_headroom",
    "define_battery_rates",
    "define_battery_soc",
    "define_battery_soc_bounds",
    "define_community_balance",
    "define_community_trade",
    "define_link_balance",
    "define_objective",
    "define_partner_sums",
    "define_pool_balance",
    "define_trade_signs",
]

ZERO, NONNEG = "zero", "nonneg"
Param = Callable[[Window], np.ndarray]


class Layout:
    """Column indices of the variable blocks of a window of ``length`` steps."""

    def __init__(self, length: int, sizes: dict[str, int]) -> None:
        self.length = length
        self.sizes = dict(sizes)
        self.offsets: dict[str, int] = {}
        off = 0
        for name, n in sizes.items():
            self.offsets[name] = off
            off += n
        self.per_step = off
        self.n = off * length

    def var(self, name: str) -> np.ndarray:
        """Columns of block ``name``, shape (length, size)."""
        k = self.sizes[name]
        return (np.arange(self.length)[:, None] * self.per_step + self.offsets[name]
                + np.arange(k)[None, :])


@dataclass
class RowBlock:
    """One constraint block: ``length × len(entities)`` rows of one cone.

    ``rows[k, i]`` is the row of entity ``i`` at window step ``k`` (set when the model is
    assembled); the right-hand side is ``b_const + b_param(window)``.
    """

    name: str
    equation: str
    description: str
    cone: str
    entities: tuple[str, ...]
    b_const: np.ndarray
    b_param: Param | None = None
    rows: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))

    @property
    def size(self) -> int:
        return int(self.b_const.size)


class _Builder:
    """Collects row blocks, matrix entries and the objective of one window model."""

    def __init__(self, data: MarketData, length: int) -> None:
        self.data = data
        self.length = length
        self.layout = Layout(length, {
            "P": data.n_pq, "Sch": data.n_b, "Sdis": data.n_b, "SoC": data.n_b,
            "Phi": data.n_m, "Alpha": data.n_m, "Beta": data.n_m, "Gimp": data.n_c, "Gexp": data.n_c,
            "Aimp": data.n_arc, "Aexp": data.n_arc,
        })
        self.blocks: list[RowBlock] = []
        self.entries: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        self.p_entries: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.q0 = np.zeros(self.layout.n)
        self.q_params: list[tuple[np.ndarray, Param]] = []

    def var(self, name: str) -> np.ndarray:
        return self.layout.var(name)

    def block(self, name: str, equation: str, description: str, cone: str, entities: list[str] | tuple[str, ...],
              *, b_const: float | np.ndarray = 0.0, b_param: Param | None = None) -> int | None:
        """Declare a block of ``length × len(entities)`` rows; None when it has no rows."""
        if len(entities) == 0 or self.length == 0:
            return None
        shape = (self.length, len(entities))
        const = np.broadcast_to(np.asarray(b_const, dtype=float), shape).copy()
        self.blocks.append(RowBlock(name, equation, description, cone, tuple(entities), const, b_param))
        return len(self.blocks) - 1

    def add(self, blk: int | None, cols: np.ndarray, vals: float | np.ndarray, *,
            rows: np.ndarray | None = None, steps: np.ndarray | None = None) -> None:
        """Add ``vals`` at (row of entity ``rows[j]`` at step ``steps[k]``, column ``cols[k, j]``)."""
        if blk is None or cols.size == 0:
            return
        k_ent = len(self.blocks[blk].entities)
        steps = np.arange(self.length) if steps is None else np.asarray(steps)
        rows = np.arange(cols.shape[1]) if rows is None else np.asarray(rows)
        local = steps[:, None] * k_ent + rows[None, :]
        v = np.broadcast_to(np.asarray(vals, dtype=float), local.shape)
        self.entries.append((blk, local.ravel(), np.asarray(cols).ravel(), v.ravel().copy()))

    def quad(self, cols_i: np.ndarray, cols_j: np.ndarray, vals: float | np.ndarray) -> None:
        """Add ``vals`` to P[cols_i, cols_j] (upper triangle: cols_i <= cols_j)."""
        v = np.broadcast_to(np.asarray(vals, dtype=float), cols_i.shape)
        self.p_entries.append((cols_i.ravel(), cols_j.ravel(), v.ravel().copy()))


# ----------------------------------------------------------------------------- objective

def define_objective(m: _Builder, d: MarketData) -> None:
    r"""Objective (1) as a minimisation: ``−W + ε·(Σ Φ² + α² + β² + S_ch² + S_dis²)``.

    Consumers and producers share ``f_n = b_n P_n − a_n P_n²`` (a producer's cost
    ``a q² + b q`` with ``q = −P`` is the same expression), so the P block contributes
    ``a_n P_n² − b_n P_n``. A battery contributes

    .. math:: −v_n δ_k ΔE_{n,k} + c_{deg}(S_{ch} + S_{dis}) + a_n (S_{ch} − S_{dis})²

    with ``ΔE = η_ch S_ch − S_dis/η_dis`` (physical) or ``S_ch − S_dis`` (paper) and
    ``δ_k = (1 − λ_sd)^{H−1−k}`` (1 in a one-step QP). The grid arcs cost
    ``π_imp γ_imp|(c,G) − π_exp γ_exp|(c,G)``, community arcs ``τ γ_imp|(c,j)``.
    """
    eps = d.tie_break
    P = m.var("P")
    m.quad(P, P, 2.0 * d.a_pq[None, :])
    m.q0[P] = -d.b_pq[None, :]
    for name in ("Phi", "Alpha", "Beta"):
        c = m.var(name)
        m.quad(c, c, 2.0 * eps)
    if d.n_b:
        sch, sdis = m.var("Sch"), m.var("Sdis")
        a = d.battery.a[None, :]
        m.quad(sch, sch, 2.0 * a + 2.0 * eps)
        m.quad(sdis, sdis, 2.0 * a + 2.0 * eps)
        m.quad(sch, sdis, -2.0 * a)
        bt = d.battery
        cdeg, g_ch, g_dis = bt.cdeg, bt.g_ch, bt.g_dis

        def q_sch(w: Window) -> np.ndarray:
            return cdeg - g_ch * w.discount[:, None] * w.value[None, :]

        def q_sdis(w: Window) -> np.ndarray:
            return cdeg + g_dis * w.discount[:, None] * w.value[None, :]

        m.q_params += [(sch, q_sch), (sdis, q_sdis)]
    grid = np.flatnonzero(d.arc_partner == GRID)
    links = np.flatnonzero(d.arc_partner != GRID)  # community and pool arcs: the importer pays τ
    m.q_params.append((m.var("Aimp")[:, grid], lambda w: np.repeat(w.import_price[:, None], len(grid), axis=1)))
    m.q_params.append((m.var("Aexp")[:, grid], lambda w: -np.repeat(w.export_price[:, None], len(grid), axis=1)))
    m.q0[m.var("Aimp")[:, links]] = d.trade_fee


# ----------------------------------------------------------------------------- balances

def define_agent_balance(m: _Builder, d: MarketData) -> None:
    """(2) Agent balance: ``P_n + S_ch,n − S_dis,n + Φ_n − α_n + β_n = 0`` for every market agent.

    Its dual is the agent's marginal value of energy [currency/kWh] (the community price
    up to the ε tie-break).
    """
    blk = m.block("Agent-balance", "(2)", "agent energy balance", ZERO, d.names)
    m.add(blk, m.var("P"), 1.0, rows=d.pq)
    m.add(blk, m.var("Sch"), 1.0, rows=d.bat)
    m.add(blk, m.var("Sdis"), -1.0, rows=d.bat)
    m.add(blk, m.var("Phi"), 1.0)
    m.add(blk, m.var("Alpha"), -1.0)
    m.add(blk, m.var("Beta"), 1.0)


def define_community_balance(m: _Builder, d: MarketData) -> None:
    """(3) Community balance: ``Σ_{n∈Ω_c} Φ_n = 0``. Dual ``z``: the price is ``λ_c = −z``."""
    blk = m.block("Community-balance", "(3)", "community balance", ZERO, d.communities)
    m.add(blk, m.var("Phi"), 1.0, rows=d.comm)


def define_community_trade(m: _Builder, d: MarketData) -> None:
    """(4) ``Σ_{n∈Ω_c} α_n − γ_imp,c = 0`` and (5) ``Σ_{n∈Ω_c} β_n − γ_exp,c = 0``.

    Duals ``z``: import settlement price ``μ_imp,c = z₄``, export ``μ_exp,c = −z₅``.
    """
    every = np.arange(d.n_c)
    blk = m.block("Community-import", "(4)", "community import sum", ZERO, d.communities)
    m.add(blk, m.var("Alpha"), 1.0, rows=d.comm)
    m.add(blk, m.var("Gimp"), -1.0, rows=every)
    blk = m.block("Community-export", "(5)", "community export sum", ZERO, d.communities)
    m.add(blk, m.var("Beta"), 1.0, rows=d.comm)
    m.add(blk, m.var("Gexp"), -1.0, rows=every)


def define_partner_sums(m: _Builder, d: MarketData) -> None:
    """(6) ``γ_imp,c − Σ_{j∈ω_c} γ_imp|(c,j) = 0`` and (7) the same for exports; ω_c holds the grid."""
    every = np.arange(d.n_c)
    blk = m.block("Community-partners-import", "(6)", "imports split over partners", ZERO, d.communities)
    m.add(blk, m.var("Gimp"), 1.0, rows=every)
    m.add(blk, m.var("Aimp"), -1.0, rows=d.arc_comm)
    blk = m.block("Community-partners-export", "(7)", "exports split over partners", ZERO, d.communities)
    m.add(blk, m.var("Gexp"), 1.0, rows=every)
    m.add(blk, m.var("Aexp"), -1.0, rows=d.arc_comm)


def define_link_balance(m: _Builder, d: MarketData) -> None:
    """(8) ``γ_imp|(c,j) − γ_exp|(j,c) = 0`` for every ordered pair of linked communities.

    Its dual ``z`` is the inter-community price ``ρ_{j→c} = z`` [currency/kWh] received by
    the exporter j; the importer c pays ``ρ_{j→c} + τ``.
    """
    links = d.link_arcs
    arcs = d.arc_names()
    names = [arcs[a] for a in links]
    blk = m.block("Link-balance", "(8)", "inter-community trade balance", ZERO, names)
    m.add(blk, m.var("Aimp")[:, links], 1.0)
    m.add(blk, m.var("Aexp")[:, d.arc_rev[links]], -1.0)


def define_pool_balance(m: _Builder, d: MarketData) -> None:
    """(8), pool form: ``Σ_{c∈K} γ_imp|(c,K) − γ_exp|(c,K) = 0`` for every pool ``K`` (a clique of
    linked communities, :mod:`gridmarket.market.pool`).

    Its dual ``z`` is the pool price ``q = z`` [currency/kWh] received by every exporter into the
    pool; an importer pays ``q + τ``.
    """
    pa = d.pool_arcs
    blk = m.block("Pool-balance", "(8)", "pool trade balance", ZERO, pool_names(d.n_pool))
    m.add(blk, m.var("Aimp")[:, pa], 1.0, rows=d.arc_pool[pa])
    m.add(blk, m.var("Aexp")[:, pa], -1.0, rows=d.arc_pool[pa])


# ----------------------------------------------------------------------------- agent bounds

def define_agent_bounds(m: _Builder, d: MarketData) -> None:
    """(14)–(16) ``P̲_n ≤ P_n ≤ P̄_n`` [kWh].

    Consumers: ``P ∈ [(1 − flex)·D, D]`` with ``D`` the step's demand; ``flex = 0`` is an
    equality ``P = D`` (block ``Consumer-fix-P``). Producers: ``q = −P ∈ [0, available]``.
    """
    P = m.var("P")
    names = [d.names[k] for k in d.pq]
    fx, fl, pr = d.fixed, d.flex_p, d.prod
    blk = m.block("Consumer-fix-P", "(14)-(15)", "inflexible consumer demand", ZERO, [names[k] for k in fx],
                  b_param=lambda w: w.energy_kwh[:, fx])
    m.add(blk, P[:, fx], 1.0)
    blk = m.block("Consumer-bounds-P", "(14)-(15)", "consumer demand upper bound P <= D", NONNEG,
                  [names[k] for k in fl], b_param=lambda w: w.energy_kwh[:, fl])
    m.add(blk, P[:, fl], 1.0)
    low = 1.0 - d.flex
    blk = m.block("Consumer-bounds-P", "(14)-(15)", "consumer demand lower bound P >= (1-flex) D", NONNEG,
                  [names[k] for k in fl], b_param=lambda w: -low[None, :] * w.energy_kwh[:, fl])
    m.add(blk, P[:, fl], -1.0)
    blk = m.block("Producer-bounds-P", "(14),(16)", "producer output q = -P <= available", NONNEG,
                  [names[k] for k in pr], b_param=lambda w: w.energy_kwh[:, pr])
    m.add(blk, P[:, pr], -1.0)
    blk = m.block("Producer-bounds-P", "(16)", "producer sign P <= 0", NONNEG, [names[k] for k in pr])
    m.add(blk, P[:, pr], 1.0)


def define_trade_signs(m: _Builder, d: MarketData) -> None:
    """(17) ``α_n, β_n ≥ 0`` and ``γ_imp|(c,j), γ_exp|(c,j) ≥ 0`` (so ``γ_imp,c, γ_exp,c ≥ 0`` too)."""
    blk = m.block("Trade-sign", "(17)", "agent import alpha >= 0", NONNEG, d.names)
    m.add(blk, m.var("Alpha"), -1.0)
    blk = m.block("Trade-sign", "(17)", "agent export beta >= 0", NONNEG, d.names)
    m.add(blk, m.var("Beta"), -1.0)
    arcs = d.arc_names()
    blk = m.block("Trade-sign", "(17)", "partner import gamma >= 0", NONNEG, arcs)
    m.add(blk, m.var("Aimp"), -1.0)
    blk = m.block("Trade-sign", "(17)", "partner export gamma >= 0", NONNEG, arcs)
    m.add(blk, m.var("Aexp"), -1.0)


# ----------------------------------------------------------------------------- batteries

def _bat_names(d: MarketData) -> list[str]:
    return [d.names[k] for k in d.bat]


def define_battery_rates(m: _Builder, d: MarketData) -> None:
    """(12)–(13) ``0 ≤ S_ch ≤ min(P_rated Δt, λ_ch cap)``, ``0 ≤ S_dis ≤ min(P_rated Δt, λ_dis cap)`` [kWh]."""
    names = _bat_names(d)
    bt = d.battery
    for var, cap, eq, what in (("Sch", bt.sch_max, "(12)", "charge"), ("Sdis", bt.sdis_max, "(13)", "discharge")):
        blk = m.block(f"Battery-rate-{what}", eq, f"battery {what} rate limit", NONNEG, names,
                      b_const=cap[None, :])
        m.add(blk, m.var(var), 1.0)
        blk = m.block(f"Battery-rate-{what}", eq, f"battery {what} >= 0", NONNEG, names)
        m.add(blk, m.var(var), -1.0)


def define_battery_soc(m: _Builder, d: MarketData) -> None:
    """(9') / (9) SoC recursion, as a fraction of capacity.

    Physical: ``SoC_k = (1 − λ_sd) SoC_{k−1} + (η_ch S_ch − S_dis/η_dis)/cap``;
    paper: ``SoC_k = (1 − λ_sd) SoC_{k−1} + (S_ch − S_dis)/cap``. ``SoC_{−1}`` is the SoC
    before the window (a parameter: the previous window's end, or ``soc_init``).
    """
    if not d.n_b:
        return
    bt = d.battery
    keep, g_ch, g_dis = bt.keep, bt.g_ch, bt.g_dis
    L = m.length

    def first(w: Window) -> np.ndarray:
        out = np.zeros((L, d.n_b))
        out[0] = keep * w.soc0
        return out

    soc = m.var("SoC")
    blk = m.block("Battery-soc-recursion", "(9')" if g_ch != 1.0 or g_dis != 1.0 else "(9)",
                  "battery SoC recursion", ZERO, _bat_names(d), b_param=first)
    m.add(blk, soc, 1.0)
    if L > 1:
        m.add(blk, soc[:-1], -keep, steps=np.arange(1, L))
    m.add(blk, m.var("Sch"), -g_ch / bt.cap_kwh[None, :])
    m.add(blk, m.var("Sdis"), g_dis / bt.cap_kwh[None, :])


def define_battery_soc_bounds(m: _Builder, d: MarketData) -> None:
    """(10')–(11') ``SoC_min ≤ SoC_k ≤ SoC_max`` (both battery models), per step in the band
    ``[lo_k, hi_k]`` of :attr:`Window.soc_lo`/``soc_hi``.

    With ``terminal_soc = "free"`` the band is ``[SoC_min, SoC_max]``. With ``"cyclic"`` it
    narrows near the run's end to the SoC from which the target (the initial SoC) is still
    reachable within the rate limits (:func:`gridmarket.market.battery.terminal_band`), down to
    the target itself at the run's last step: the terminal constraint of the last window, and
    for every earlier step (sequential or multi-period) a bound that keeps it reachable, so
    every window stays feasible.
    """
    names = _bat_names(d)
    blk = m.block("Battery-soc-bounds", "(10')", "battery SoC upper bound", NONNEG, names,
                  b_param=lambda w: w.soc_hi)
    m.add(blk, m.var("SoC"), 1.0)
    blk = m.block("Battery-soc-bounds", "(11')", "battery SoC lower bound", NONNEG, names,
                  b_param=lambda w: -w.soc_lo)
    m.add(blk, m.var("SoC"), -1.0)


def define_battery_headroom(m: _Builder, d: MarketData) -> None:
    """Paper model only, (10) ``η_ch S_ch ≤ (SoC_max − SoC_{k−1}) cap`` and
    (11) ``η_dis S_dis ≤ (SoC_{k−1} − SoC_min) cap`` (the study's sign typo fixed), divided by cap.
    """
    bt = d.battery
    if not bt.paper or not d.n_b:
        return
    names = _bat_names(d)
    L = m.length
    soc = m.var("SoC")

    def soc0_first(sign: float) -> Param:
        def f(w: Window) -> np.ndarray:
            out = np.zeros((L, d.n_b))
            out[0] = sign * w.soc0
            return out
        return f

    blk = m.block("Battery-headroom-charge", "(10)", "battery charge headroom", NONNEG, names,
                  b_const=bt.soc_max, b_param=soc0_first(-1.0))
    m.add(blk, m.var("Sch"), bt.eff_charge / bt.cap_kwh[None, :])
    if L > 1:
        m.add(blk, soc[:-1], 1.0, steps=np.arange(1, L))
    blk = m.block("Battery-headroom-discharge", "(11)", "battery discharge headroom", NONNEG, names,
                  b_const=-bt.soc_min, b_param=soc0_first(1.0))
    m.add(blk, m.var("Sdis"), bt.eff_discharge / bt.cap_kwh[None, :])
    if L > 1:
        m.add(blk, soc[:-1], -1.0, steps=np.arange(1, L))


# ----------------------------------------------------------------------------- the model

@dataclass
class MarketModel:
    """The assembled QP of one window length: fixed matrices plus per-window hooks.

    Attributes
    ----------
    P : scipy.sparse.csc_matrix
        Upper triangle of the objective's Hessian.
    A : scipy.sparse.csc_matrix
        Constraint matrix; rows ``[0, n_zero)`` are equalities, the rest ``≥``-type
        (``A x ≤ b``).
    """

    data: MarketData
    length: int
    layout: Layout
    P: sp.csc_matrix
    A: sp.csc_matrix
    q0: np.ndarray
    b0: np.ndarray
    n_zero: int
    n_nonneg: int
    blocks: tuple[RowBlock, ...]
    q_params: tuple[tuple[np.ndarray, Param], ...]

    def block(self, name: str) -> RowBlock:
        """The first block called ``name``."""
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(name)

    def rows(self, name: str) -> np.ndarray:
        """Rows of block ``name``, shape (length, k); empty when the block has no rows."""
        for b in self.blocks:
            if b.name == name:
                return b.rows
        return np.zeros((self.length, 0), dtype=np.int64)

    def vectors(self, w: Window) -> tuple[np.ndarray, np.ndarray]:
        """``q`` and ``b`` of window ``w``."""
        if w.length != self.length:
            msg = f"window of {w.length} steps given to a model of {self.length}"
            raise ValueError(msg)
        q = self.q0.copy()
        for idx, fn in self.q_params:
            if idx.size:
                q[idx] = fn(w)
        b = self.b0.copy()
        for blk in self.blocks:
            if blk.b_param is not None:
                b[blk.rows] += blk.b_param(w)
        return q, b


_DEFINES = (define_agent_balance, define_community_balance, define_community_trade, define_partner_sums,
            define_link_balance, define_pool_balance,
            define_agent_bounds, define_battery_soc, define_battery_soc_bounds,
            define_battery_rates, define_battery_headroom, define_trade_signs)


def create_model(data: MarketData, length: int) -> MarketModel:
    """Assemble the QP of a window of ``length`` steps (``length = 1``: the sequential market).

    Parameters
    ----------
    data : MarketData
        Market arrays of the case.
    length : int
        Steps in the window.

    Returns
    -------
    MarketModel
        Matrices and the hooks that fill ``q`` and ``b`` for a window.
    """
    m = _Builder(data, length)
    define_objective(m, data)
    for define in _DEFINES:
        define(m, data)
    order = [i for i, b in enumerate(m.blocks) if b.cone == ZERO] + [
        i for i, b in enumerate(m.blocks) if b.cone == NONNEG]
    start = np.zeros(len(m.blocks), dtype=np.int64)
    off = 0
    for i in order:
        blk = m.blocks[i]
        start[i] = off
        blk.rows = off + np.arange(blk.size).reshape(blk.b_const.shape)
        off += blk.size
    n_rows = off
    n_zero = sum(m.blocks[i].size for i in order if m.blocks[i].cone == ZERO)
    rows = [start[blk] + local for blk, local, _, _ in m.entries]
    cols = [c for _, _, c, _ in m.entries]
    vals = [v for _, _, _, v in m.entries]
    def cat(xs: list[np.ndarray], dt: type) -> np.ndarray:
        return np.concatenate(xs).astype(dt) if xs else np.zeros(0, dtype=dt)

    A = sp.coo_matrix((cat(vals, float), (cat(rows, np.int64), cat(cols, np.int64))),
                      shape=(n_rows, m.layout.n)).tocsc()
    A.sum_duplicates()
    A.sort_indices()
    pi = cat([e[0] for e in m.p_entries], np.int64)
    pj = cat([e[1] for e in m.p_entries], np.int64)
    pv = cat([e[2] for e in m.p_entries], float)
    lo, hi = np.minimum(pi, pj), np.maximum(pi, pj)
    P = sp.coo_matrix((pv, (lo, hi)), shape=(m.layout.n, m.layout.n)).tocsc()
    P.sum_duplicates()
    P.eliminate_zeros()
    P.sort_indices()
    b0 = np.zeros(n_rows)
    for blk in m.blocks:
        b0[blk.rows] = blk.b_const
    blocks = tuple(m.blocks[i] for i in order)
    return MarketModel(data=data, length=length, layout=m.layout, P=P, A=A, q0=m.q0, b0=b0, n_zero=n_zero,
                       n_nonneg=n_rows - n_zero, blocks=blocks, q_params=tuple(m.q_params))
