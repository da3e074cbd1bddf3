"""Prices from duals, welfare and payments of a cleared market.

Clarabel returns, for ``A x + s = b``, duals ``z`` with ``P x + q + Aᵀ z = 0``; for an
equality row ``aᵀx = b`` the optimal objective moves by ``−z`` per unit of ``b``. The
market minimises ``−W``, so with the row orientations of :mod:`gridmarket.market.build`:

================================  =========================  =====================================
price [currency/kWh]              from                       meaning
================================  =========================  =====================================
``λ_c`` (community price)          ``−z`` of (3)              ``−∂W/∂(extra demand in c)``
``μ_imp,c`` (import settlement)   ``+z`` of (4)              paid per kWh an agent imports (α)
``μ_exp,c`` (export settlement)   ``−z`` of (5)              received per kWh an agent exports (β)
``ρ_{j→c}`` (inter-community)     ``+z`` of (8) on (c, j)     received by exporter j; c pays ρ + τ
``ν_n`` (agent value)             ``+z`` of (2)              agent's marginal value of energy
================================  =========================  =====================================

Payments are positive when the agent pays: ``payment_n = −λ_c Φ_n + μ_imp,c α_n − μ_exp,c β_n``
(``Φ_n > 0`` is a sale into the community). By (3)–(5) a community's payments sum to
``μ_imp,c γ_imp,c − μ_exp,c γ_exp,c``, which complementary slackness splits over the partner
arcs: ``π_imp``/``π_exp`` on the grid arcs, ``ρ + τ`` on imports from and ``ρ`` on exports to
other communities. :func:`settle` returns both sides so callers can check the balance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gridmarket.market._data import BATTERY, CONSUMER, GRID, PRODUCER, MarketData

__all__ = ["WELFARE_PARTS", "Settlement", "Solution", "agent_payments", "agent_welfare", "community_welfare",
           "partner_cost", "payment_imbalance", "realised_agent_welfare",
           "realised_welfare", "settle", "stored_energy_change", "stored_energy_value", "stored_value_terms",
           "welfare_breakdown"]


@dataclass
class Solution:
    """Primal and dual values of every step (rows = global steps), market units.

    Energies [kWh] per step, SoC [fraction] at the end of the step, prices [currency/kWh];
    ``vfac`` [currency/kWh] is the value applied to a kWh stored in the step
    (``v_n δ_k``, see :mod:`gridmarket.market`).
    """

    p: np.ndarray  #: (T, n_pq)
    sch: np.ndarray  #: (T, n_b)
    sdis: np.ndarray  #: (T, n_b)
    soc: np.ndarray  #: (T, n_b)
    phi: np.ndarray  #: (T, n_m)
    alpha: np.ndarray  #: (T, n_m)
    beta: np.ndarray  #: (T, n_m)
    gimp: np.ndarray  #: (T, n_c)
    gexp: np.ndarray  #: (T, n_c)
    aimp: np.ndarray  #: (T, n_arc)
    aexp: np.ndarray  #: (T, n_arc)
    lam: np.ndarray  #: (T, n_c) community price
    mu_imp: np.ndarray  #: (T, n_c)
    mu_exp: np.ndarray  #: (T, n_c)
    rho: np.ndarray  #: (T, n_arc) inter-community price on the arc's imports (NaN on grid arcs)
    nu: np.ndarray  #: (T, n_m) agent balance duals
    vfac: np.ndarray  #: (T, n_b)

    @classmethod
    def empty(cls, d: MarketData) -> Solution:
        T = d.steps

        def z(k: int) -> np.ndarray:
            return np.zeros((T, k))

        return cls(p=z(d.n_pq), sch=z(d.n_b), sdis=z(d.n_b), soc=z(d.n_b), phi=z(d.n_m), alpha=z(d.n_m),
                   beta=z(d.n_m), gimp=z(d.n_c), gexp=z(d.n_c), aimp=z(d.n_arc), aexp=z(d.n_arc),
                   lam=z(d.n_c), mu_imp=z(d.n_c), mu_exp=z(d.n_c), rho=np.full((T, d.n_arc), np.nan),
                   nu=z(d.n_m), vfac=z(d.n_b))

    @property
    def s(self) -> np.ndarray:
        """Battery ``S = S_ch − S_dis`` [kWh], > 0 charging."""
        return self.sch - self.sdis


def stored_energy_change(d: MarketData, sol: Solution) -> np.ndarray:
    """``ΔE`` [kWh] per step and battery: ``η_ch S_ch − S_dis/η_dis`` (physical) or ``S_ch − S_dis``."""
    return d.battery.delta_e(sol.sch, sol.sdis)


def agent_welfare(d: MarketData, sol: Solution) -> np.ndarray:
    """``f_n`` per step and market agent [currency], without ``c_n`` and the ε term.

    Consumers and producers ``b P − a P²``; batteries
    ``v δ ΔE − c_deg (S_ch + S_dis) − a (S_ch − S_dis)²``.
    """
    f = np.zeros((d.steps, d.n_m))
    f[:, d.pq] = d.b_pq * sol.p - d.a_pq * sol.p ** 2
    if d.n_b:
        f[:, d.bat] = d.battery.welfare(sol.vfac, sol.sch, sol.sdis)
    return f


def _by_community(d: MarketData, x: np.ndarray) -> np.ndarray:
    """Sum the columns of ``x`` (one per market agent) by community -> (T, n_c)."""
    return _group_sum(x, d.comm, d.n_c)


def _by_arc_owner(d: MarketData, x: np.ndarray) -> np.ndarray:
    return _group_sum(x, d.arc_comm, d.n_c)


def _group_sum(x: np.ndarray, group: np.ndarray, n: int) -> np.ndarray:
    """Sum the columns of ``x`` (T, k) by ``group`` (k,) -> (T, n), linear in the size of ``x``
    (one sort of the groups and one ``reduceat``; no matrix to build, which costs more than the
    sum on the sequential market's small steps)."""
    out = np.zeros((x.shape[0], n))
    if not len(group) or not x.shape[0]:
        return out
    order = np.argsort(group, kind="stable")
    g = group[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    out[:, g[starts]] = np.add.reduceat(x[:, order], starts, axis=1)
    return out


def partner_cost(d: MarketData, sol: Solution) -> np.ndarray:
    """Per step and arc, the grid/fee part of ``−g`` [currency]: ``π_imp γ_imp − π_exp γ_exp`` on
    grid arcs, ``τ γ_imp`` on community arcs."""
    grid = d.arc_partner == GRID
    cost = np.where(grid[None, :], d.import_price[:, None] * sol.aimp - d.export_price[:, None] * sol.aexp,
                    d.trade_fee * sol.aimp)
    return cost


def community_welfare(d: MarketData, sol: Solution, f: np.ndarray | None = None) -> np.ndarray:
    """Reported welfare per step and community [currency]: its agents' ``f_n`` minus its grid
    and inter-community fee costs (no ε term, no ``c_n``); ``f``: :func:`agent_welfare`, if known."""
    f = agent_welfare(d, sol) if f is None else f
    return _by_community(d, f) - _by_arc_owner(d, partner_cost(d, sol))


def agent_payments(d: MarketData, sol: Solution) -> np.ndarray:
    """``−λ_c Φ_n + μ_imp,c α_n − μ_exp,c β_n`` per step and market agent [currency], > 0 paid."""
    c = d.comm
    return -sol.lam[:, c] * sol.phi + sol.mu_imp[:, c] * sol.alpha - sol.mu_exp[:, c] * sol.beta


@dataclass(frozen=True)
class Settlement:
    """Per step and arc (community c, partner j): energy, prices and what c pays [currency].

    ``import_price`` is what c pays per kWh imported over the arc (``π_imp`` or ``ρ_{j→c} + τ``),
    ``export_price`` what it receives per kWh exported (``π_exp`` or ``ρ_{c→j}``); ``fee`` is
    ``τ γ_imp`` (part of ``payment``).
    """

    import_kwh: np.ndarray
    export_kwh: np.ndarray
    import_price: np.ndarray
    export_price: np.ndarray
    fee: np.ndarray
    payment: np.ndarray


def settle(d: MarketData, sol: Solution) -> Settlement:
    """Settlement of every arc, see :class:`Settlement`."""
    grid = d.arc_partner == GRID
    ip = np.where(grid[None, :], d.import_price[:, None], np.nan)
    ep = np.where(grid[None, :], d.export_price[:, None], np.nan)
    links = d.link_arcs
    ip[:, links] = sol.rho[:, links] + d.trade_fee
    ep[:, links] = sol.rho[:, d.arc_rev[links]]
    pools = d.pool_arcs  # the pool price ρ = q both ways, the importer adds τ
    ip[:, pools] = sol.rho[:, pools] + d.trade_fee
    ep[:, pools] = sol.rho[:, pools]
    fee = np.where(grid[None, :], 0.0, d.trade_fee * sol.aimp)
    pay = ip * sol.aimp - ep * sol.aexp
    return Settlement(sol.aimp, sol.aexp, ip, ep, fee, pay)


def payment_imbalance(d: MarketData, sol: Solution) -> np.ndarray:
    """Per step and community: agents' payments minus what the community pays its partners
    [currency]; zero up to solver tolerance (complementary slackness)."""
    return _by_community(d, agent_payments(d, sol)) - _by_arc_owner(d, settle(d, sol).payment)


# ----------------------------------------------------------------------------- realised welfare

#: parts of :func:`welfare_breakdown`, in the order a report stacks them
WELFARE_PARTS = ("consumers", "producers", "batteries_trading", "batteries_degradation", "grid_import_cost",
                 "grid_export_revenue", "fees", "market_settlement")


def stored_value_terms(d: MarketData, sol: Solution) -> np.ndarray:
    """The batteries' ``v δ ΔE`` welfare terms per step and battery [currency] (the value the
    market puts on energy stored, which no one has paid or received)."""
    return sol.vfac * stored_energy_change(d, sol)


def realised_agent_welfare(d: MarketData, sol: Solution, f: np.ndarray | None = None) -> np.ndarray:
    """:func:`agent_welfare` without the batteries' ``v δ ΔE`` terms [currency], (T, n_m);
    ``f``: :func:`agent_welfare`, if known (not modified)."""
    f = agent_welfare(d, sol) if f is None else f.copy()
    if d.n_b:
        f[:, d.bat] -= stored_value_terms(d, sol)
    return f


def realised_welfare(d: MarketData, sol: Solution, f_realised: np.ndarray | None = None) -> float:
    """Realised welfare of the run [currency]: ``Σ f_n`` without the batteries' ``v δ ΔE`` terms,
    minus the grid and fee costs (``−g`` without ε)."""
    f = realised_agent_welfare(d, sol) if f_realised is None else f_realised
    return float(np.sum(f)) - float(np.sum(partner_cost(d, sol)))


def stored_energy_value(d: MarketData, sol: Solution) -> float:
    """``Σ_b v_end·(E_end − E_start)`` [currency]: the net change of stored energy over the run
    [kWh] (``E = SoC·cap``, from the SoC before step 0 to the SoC after the last step) valued at
    the value of stored energy applied to the last step (``v`` of the last step or window)."""
    if not d.n_b or not d.steps:
        return 0.0
    bt = d.battery
    de = bt.stored_kwh(sol.soc[-1]) - bt.stored_kwh(bt.soc_init)
    return float(np.sum(sol.vfac[-1] * de))


def welfare_breakdown(d: MarketData, sol: Solution, *, f_realised: np.ndarray | None = None,
                      pay: np.ndarray | None = None) -> dict[str, float]:
    """Realised welfare split by who gains it [currency], summed over the steps; the parts add up
    to the realised welfare (reported welfare without the batteries' ``v δ ΔE`` terms).

    The parts follow the money: each agent is credited with its welfare term minus what it
    pays (``payment_n = −λ_c Φ_n + μ_imp,c α_n − μ_exp,c β_n``, the ``payment`` column of the
    market table, so every agent part can be checked against that table):

    ``consumers``
        utility ``b P − a P²`` minus what consumers pay;
    ``producers``
        what producers are paid minus their cost ``a q² + b q``;
    ``batteries_trading``
        what batteries are paid for discharging minus what they pay to charge (``−Σ payment``);
    ``batteries_degradation``
        ``−c_deg (S_ch + S_dis) − a (S_ch − S_dis)²``, the batteries' operating cost (<= 0);
    ``grid_import_cost``
        ``−Σ π_imp γ_imp|(c,G)``: what the communities pay the upstream grid (<= 0);
    ``grid_export_revenue``
        ``Σ π_exp γ_exp|(c,G)``: what the grid pays them (>= 0);
    ``fees``
        ``−τ Σ γ_imp|(c,j)``: inter-community fees (<= 0); the inter-community prices ``ρ`` move
        money between communities and cancel in the total;
    ``market_settlement``
        ``Σ_n payment_n``: what the agents pay into the market, net, which settles the grid's
        bill, the fees and the inter-community trades: ``≈ −(grid_import_cost +
        grid_export_revenue + fees)``, the gap being the payment imbalance (solver tolerance).

    ``f_realised`` (:func:`realised_agent_welfare`) and ``pay`` (:func:`agent_payments`) may be
    passed when already computed.
    """
    if not d.steps or not d.n_m:
        return dict.fromkeys(WELFARE_PARTS, 0.0)
    f = realised_agent_welfare(d, sol) if f_realised is None else f_realised
    pay = agent_payments(d, sol) if pay is None else pay
    grid = d.arc_partner == GRID

    def total(x: Any) -> float:
        return float(np.sum(x))

    kind = d.kind
    return {
        "consumers": total((f - pay)[:, kind == CONSUMER]),
        "producers": total((f - pay)[:, kind == PRODUCER]),
        "batteries_trading": -total(pay[:, kind == BATTERY]),
        "batteries_degradation": -total(d.battery.operating_cost(sol.sch, sol.sdis)) if d.n_b else 0.0,
        "grid_import_cost": -total(d.import_price[:, None] * sol.aimp[:, grid]),
        "grid_export_revenue": total(d.export_price[:, None] * sol.aexp[:, grid]),
        "fees": -total(d.trade_fee * sol.aimp[:, ~grid]),
        "market_settlement": total(pay),
    }
