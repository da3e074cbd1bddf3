"""The community market (shared MODEL.md, eqs. 1–18): build the QP, solve it with Clarabel,
read prices from its duals.

Entry point: :func:`clear_market` ``(case, *, soc_init=None, horizon=None,
battery_model=None, method="auto", pools=None, network=None) -> MarketResult``.

Two solvers give the same result: the general QP on Clarabel (``method="qp"``, the
reference, any horizon) and, for the sequential market (horizon 1), a solver of the KKT
conditions that exploits the structure of one step (:mod:`gridmarket.market.fast`, about
25× faster); ``method="auto"`` uses the second where it applies and Clarabel for anything
it cannot settle. ``MarketResult.solver`` / ``window_solver`` record which ran.

Units and signs
---------------
Inside the market every quantity is an energy per step [kWh] (``profile_kw × step_hours``);
the ``*_kw`` columns of the result frames are ``kWh / step_hours``. Load reference:
consumption ``P > 0``, production ``P < 0``, battery ``S = S_ch − S_dis > 0`` charging.
``Φ_n > 0`` is a sale into the community, ``α_n ≥ 0`` an import from partners, ``β_n ≥ 0``
an export. Prices [currency/kWh]; a ``payment`` > 0 is paid by the agent.

Formulation choices where MODEL.md is silent
--------------------------------------------
* **Objective.** Clarabel minimises ``−W + ε(Σ Φ² + α² + β² + S_ch² + S_dis²)``. The ε tie-break
  is extended to ``S_ch² + S_dis²`` so that a battery never charges and discharges in the same
  step when nothing is gained by it (in the paper model, or with ``v = 0``, the split of
  ``S`` into ``S_ch − S_dis`` would otherwise be arbitrary). Reported welfare excludes every ε
  term and the constants ``c_n``; ``MarketResult.constant`` is ``Σ c_n`` per step.
* **Producers.** ``q = −P ∈ [0, available]``; the cost ``a q² + b q`` equals ``a P² − b P``, so
  consumers and producers share ``f_n = b_n P_n − a_n P_n²``.
* **Inflexible consumers** (``flex = 0``) get the equality ``P = D`` (block ``Consumer-fix-P``)
  rather than two coinciding bounds.
* **Batteries.** ``cap = units·unit_kwh``, ``P_rated = units·unit_kw``. The quadratic
  coefficient is ``[battery].a`` plus the agent's own ``a``; the agent's ``b`` is unused and its
  ``c`` is a constant like any agent's. ``v`` is ``[battery].value`` or, for ``"mean-price"``,
  ``(π_imp,t + π_exp,t)/2``. One-step market: ``f = v_t ΔE_t − c_deg(S_ch + S_dis) − a S²``,
  so (physical model) a battery discharges when its community price exceeds ``v/η_dis``
  and charges below ``v·η_ch``; in the paper model both thresholds are ``v``.
* **Multi-period windows** of ``H`` steps (``[market].horizon``) roll over the case; the last
  window may be shorter. Inside a window SoC is linked step to step and stored energy is
  valued once, at the window's end::

      v_w · cap · (SoC_end − (1 − λ_sd)^L · SoC_start)  =  Σ_k v_w (1 − λ_sd)^(L−1−k) ΔE_k

  i.e. the energy left at the end minus what the initial stock would have decayed to anyway
  (that part is a constant that no decision changes). ``v_w`` is the mean of the per-step
  ``v_t`` over the window. For ``L = 1`` this is exactly the one-step term, so a window of
  one step equals the sequential market, welfare included. The reported per-step battery
  welfare is the k-th term of the sum, so per-step welfare adds up to the window's.
* **SoC carried** from one window to the next is clipped to ``[soc_min, soc_max]`` (it is
  inside up to the solver's 1e-9 tolerance). ``soc`` in the results is the SoC at the end of
  the step.
* **Grid and links.** The upstream grid is always a partner; ``case.links`` (unordered
  pairs) give both directions. The fee ``τ`` is paid by the importing community per kWh
  and collected by no one in the market (it leaves welfare, as in ``g``).
* **Pools** (:mod:`gridmarket.market.pool`). A clique of linked communities (e.g. ``links =
  "all"``) of more than ``ARC_CLIQUE_MAX`` communities trades through one pool instead of
  C(C−1) arcs: each member exports into it and imports from it (paying τ), the pool balances;
  its dual is the pool price ``q`` (exporters receive ``q``, importers pay ``q + τ``). Proven
  equal to the arcs (welfare, dispatch, prices); ``clear_market(pools=True/False)`` forces
  either. The ``settlements`` frame then has one row per member and pool (partner ``"pool"``).
* **Scale.** When an agent's energy per step exceeds ``SCALE_FROM_KWH`` (100 kWh), Clarabel
  solves the QP in energy units of a power of ten (``kwh_scale``) with equilibrated rows and
  tighter tolerances; results are returned in kWh and prices unchanged.
* **Network rows** (:mod:`gridmarket.market.network`). ``clear_market(network=...)`` adds
  linear network limits ``sens @ p_t − slack <= rhs`` with priced slacks on the QP path; the
  fast path hands the steps that have rows to Clarabel. Duals, slacks, the price components
  (``price_energy`` + ``price_voltage`` + ``price_congestion``), the congestion rent (collected
  by the DSO) and the penalty cost are in the result.
* **Prices (duals).** ``λ_c = −z`` of (3); ``μ_imp,c = z`` of (4) and ``μ_exp,c = −z`` of (5)
  settle agents' imports and exports; ``ρ_{j→c} = z`` of (8) is what exporter j receives, the
  importer c pays ``ρ + τ``. With Clarabel's convention (``Px + q + Aᵀz = 0``) these are the
  derivatives of welfare: ``∂W/∂(extra demand of δ kWh in c) = −λ_c``. Community prices lie in
  ``[π_exp, π_imp]`` (up to the ε tie-break).
* **Payments.** ``payment_n = −λ_c Φ_n + μ_imp,c α_n − μ_exp,c β_n``; per community they equal
  what it pays the grid (``π_imp γ_imp − π_exp γ_exp``) and other communities (``(ρ + τ)`` per kWh
  imported, ``−ρ`` per kWh exported); ``MarketResult.settlements`` lists them and
  ``MarketResult.payment_imbalance`` is the largest gap (≈ solver tolerance).
* **Passive agents** take no part; they appear in the market frame with their profile as
  ``P_kw``, no community price and zero payment.
* **Errors.** Inputs are checked before solving (negative demand or available PV, SoC before
  step 0 outside its bounds, ``a < 0``, import price below export price, ...), naming the
  step, the constraint group and the agents. A QP that still fails raises ``MarketError``
  naming the step and the group found from Clarabel's infeasibility certificate.
"""

from gridmarket.market._data import MarketData, Window, market_data
from gridmarket.market.build import MarketModel, RowBlock, create_model
from gridmarket.market.network import NetworkConstraints
from gridmarket.market.prices import Solution, payment_imbalance
from gridmarket.market.results import (
    COMMUNITY_COLUMNS,
    MARKET_COLUMNS,
    SETTLEMENT_COLUMNS,
    MarketResult,
    MarketStatus,
)
from gridmarket.market.solve import (
    MarketMethod,
    WindowSolver,
    clear_market,
    kwh_scale,
    solver_settings,
)
from gridmarket.market.validate import MarketProblem, assert_valid_market, check_market

__all__ = [
    "COMMUNITY_COLUMNS",
    "MARKET_COLUMNS",
    "SETTLEMENT_COLUMNS",
    "MarketData",
    "MarketMethod",
    "MarketModel",
    "MarketProblem",
    "MarketResult",
    "MarketStatus",
    "NetworkConstraints",
    "RowBlock",
    "Solution",
    "Window",
    "WindowSolver",
    "assert_valid_market",
    "check_market",
    "clear_market",
    "create_model",
    "kwh_scale",
    "market_data",
    "payment_imbalance",
    "solver_settings",
]
