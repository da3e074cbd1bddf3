"""The outcome of a market run: tidy frames (shared CASE_FORMAT.md) and dispatch arrays."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property, partial
from typing import Any

import numpy as np
import pandas as pd

from gridmarket.enums import AgentKind, BatteryModel
from gridmarket.market._data import MarketData
from gridmarket.market.network import network_outcome
from gridmarket.market.prices import (
    Solution,
    agent_payments,
    agent_welfare,
    community_welfare,
    payment_imbalance,
    realised_agent_welfare,
    realised_welfare,
    settle,
    stored_energy_value,
    welfare_breakdown,
)

__all__ = [
    "COMMUNITY_COLUMNS",
    "MARKET_COLUMNS",
    "SETTLEMENT_COLUMNS",
    "MarketResult",
    "MarketStatus",
    "make_result",
]

#: columns of :attr:`MarketResult.market` (market.csv without ``iteration``)
MARKET_COLUMNS = ("step", "time", "agent", "kind", "community", "P_kw", "S_kw", "phi_kw", "alpha_kw",
                  "beta_kw", "soc", "price", "price_energy", "price_voltage", "price_congestion", "payment")
#: columns of :attr:`MarketResult.communities` (communities.csv without ``iteration``)
COMMUNITY_COLUMNS = ("step", "community", "price", "import_kwh", "export_kwh", "welfare")
#: columns of :attr:`MarketResult.settlements`
SETTLEMENT_COLUMNS = ("step", "community", "partner", "import_kwh", "export_kwh", "import_price",
                      "export_price", "fee", "payment")


class MarketStatus(str, Enum):
    """Outcome of one market QP, whatever the solver (Clarabel's statuses map onto these)."""

    OPTIMAL = "optimal"  #: solved to full accuracy
    ALMOST_OPTIMAL = "almost_optimal"  #: solved to Clarabel's reduced accuracy; results are kept
    INFEASIBLE = "infeasible"  #: no dispatch meets the constraints (raises MarketError)
    UNBOUNDED = "unbounded"  #: welfare unbounded (raises MarketError)
    ITERATION_LIMIT = "iteration_limit"  #: (raises MarketError)
    TIME_LIMIT = "time_limit"  #: (raises MarketError)
    NUMERICAL_ERROR = "numerical_error"  #: (raises MarketError)
    NOT_SOLVED = "not_solved"  #: nothing to solve (no market agents)

    @property
    def ok(self) -> bool:
        """True when the results can be used."""
        return self in (MarketStatus.OPTIMAL, MarketStatus.ALMOST_OPTIMAL, MarketStatus.NOT_SOLVED)


@dataclass(frozen=True)
class MarketResult:
    """Cleared market of every step of a case.

    Units: ``*_kw`` columns are the step's mean power [kW] = energy / ``step_hours``;
    ``*_kwh`` energies per step [kWh]; prices [currency/kWh]; welfare and payments
    [currency]. Signs: load reference (consumption ``P > 0``, production ``P < 0``,
    battery ``S > 0`` charging); ``phi > 0`` sells into the community; ``payment > 0`` is
    paid by the agent.

    Attributes
    ----------
    market : DataFrame
        One row per step and agent (passive agents included, with their profile as ``P_kw``
        and no price), columns :data:`MARKET_COLUMNS`. ``price`` is the agent's marginal price
        of consumption, ``price_energy + price_voltage + price_congestion``: its community price
        ``λ_c`` and the components of the network constraints (0 without them).
    communities : DataFrame
        One row per step and community, columns :data:`COMMUNITY_COLUMNS`; ``price`` is
        ``λ_c``, ``import_kwh``/``export_kwh`` are ``γ_imp,c``/``γ_exp,c`` and ``welfare`` the
        community's reported welfare.
    settlements : DataFrame
        One row per step, community and partner (``grid`` or a community),
        columns :data:`SETTLEMENT_COLUMNS`; ``payment`` is what the community pays.
    welfare : Series
        Reported welfare per step [currency] (index ``step``), without the ε term and the
        constants ``c_n``.
    p_kwh, s_kwh, soc : ndarray, shape (steps, n_agents)
        Cleared ``P`` and ``S`` per agent in case order [kWh per step]; passive agents keep
        their profile, non-batteries have ``S = 0``; ``soc`` [fraction] at the end of each
        step, NaN for non-batteries.
    price : ndarray, shape (steps, n_communities)
        ``λ_c`` [currency/kWh].
    constant : float
        ``Σ c_n`` of the market agents [currency per step], reported apart from welfare.
    solver : str
        ``"fast"`` (every window by the KKT path of :mod:`gridmarket.market.fast`),
        ``"clarabel"`` (the general QP), ``"fast+clarabel"``, or ``"none"`` (no market agents or
        no steps); ``window_solver`` per window. Also :attr:`solver_used`.
    welfare_realised : float
        Reported welfare summed over the steps without the batteries' ``v·ΔE`` terms: money and
        utility that changed hands [currency] (shared MODEL.md, *Reported welfare*).
    stored_energy_value : float
        ``Σ_b v_end·(E_end − E_start)`` [currency], the value of the net change of stored energy
        over the run (``v_end`` the value applied to the last step).
    welfare_breakdown : dict of str to float
        ``welfare_realised`` split by who gains it (:func:`gridmarket.market.prices.welfare_breakdown`,
        parts :data:`gridmarket.market.prices.WELFARE_PARTS`); the parts add up to it.
    network_duals, network_slack : ndarray, shape (R,)
        Duals [currency per unit of the row quantity] and slacks of the network constraints
        ``clear_market(..., network=...)`` added (empty without them).
    price_energy, price_voltage, price_congestion : ndarray, shape (steps, n_agents)
        Per step and agent [currency/kWh]: the community price and the voltage and congestion
        components of the network rows (0 without them; NaN for passive agents).
    network_congestion_rent, network_penalty_cost : float
        What the agents pay the DSO through the network components, ``Σ dual·(sens @ p)``, and
        ``Σ penalty·slack`` [currency] (:mod:`gridmarket.market.network`).
    network_rows : NetworkConstraints or None
        The rows the market was cleared with (None without them), aligned with
        ``network_duals`` and ``network_slack``.
    """

    welfare: pd.Series
    p_kwh: np.ndarray
    s_kwh: np.ndarray
    soc: np.ndarray
    price: np.ndarray
    constant: float
    status: MarketStatus
    window_status: tuple[MarketStatus, ...]
    battery_model: BatteryModel
    horizon: int
    solver: str
    iterations: int
    build_seconds: float
    solve_seconds: float
    payment_imbalance: float  #: largest |agents' payments − partner settlement| of a community [currency]
    solution: Solution  #: raw primal/dual arrays in market order (see gridmarket.market.prices)
    #: per window, what solved it: "fast" (KKT path, gridmarket.market.fast) or "clarabel"
    window_solver: tuple[str, ...] = ()
    welfare_realised: float = 0.0
    stored_energy_value: float = 0.0
    welfare_breakdown: dict[str, float] = field(default_factory=dict)
    network_duals: np.ndarray = field(default_factory=lambda: np.zeros(0))
    network_slack: np.ndarray = field(default_factory=lambda: np.zeros(0))
    price_energy: np.ndarray | None = None
    price_voltage: np.ndarray | None = None
    price_congestion: np.ndarray | None = None
    network_congestion_rent: float = 0.0
    network_penalty_cost: float = 0.0
    network_rows: Any = None
    #: builds (market, communities, settlements) on first use: the study loop and the
    #: benchmarks read the arrays, and the frames cost as much as the fast path's solve
    _frames: Callable[[], tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]] | None = field(
        default=None, repr=False, compare=False)

    @cached_property
    def _built(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        assert self._frames is not None
        return self._frames()

    @property
    def market(self) -> pd.DataFrame:
        """One row per step and agent, columns :data:`MARKET_COLUMNS` (see the class docstring)."""
        return self._built[0]

    @property
    def communities(self) -> pd.DataFrame:
        """One row per step and community, columns :data:`COMMUNITY_COLUMNS`."""
        return self._built[1]

    @property
    def settlements(self) -> pd.DataFrame:
        """One row per step, community and partner, columns :data:`SETTLEMENT_COLUMNS`."""
        return self._built[2]

    @property
    def solver_used(self) -> str:
        """Which solver actually cleared the market: ``"fast"``, ``"clarabel"``, ``"fast+clarabel"``
        (mixed over the steps) or ``"none"`` (nothing to clear); the same as :attr:`solver`."""
        return self.solver

    @property
    def total_welfare(self) -> float:
        """Reported welfare summed over the steps [currency]."""
        return float(self.welfare.sum())


def _times(data: MarketData) -> np.ndarray:
    idx = data.case.time.index
    if isinstance(idx, pd.DatetimeIndex):
        return np.asarray(idx.strftime("%Y-%m-%dT%H:%M"), dtype=object)
    return np.full(data.steps, "", dtype=object)


def make_result(data: MarketData, sol: Solution, *, status: MarketStatus, window_status: tuple[MarketStatus, ...],
                horizon: int, iterations: int, build_seconds: float, solve_seconds: float,
                solver: str = "none", window_solver: tuple[str, ...] = (), network: Any = None,
                network_duals: np.ndarray | None = None, network_slack: np.ndarray | None = None) -> MarketResult:
    """The arrays of a cleared market from its :class:`Solution` (its frames are built on first use).

    ``network`` (a :class:`gridmarket.market.network.NetworkConstraints`) with its row duals
    ``network_duals`` [currency per unit] and slacks fills the voltage and congestion price
    components, the congestion rent and the penalty cost (:func:`gridmarket.market.network.network_outcome`).
    """
    case = data.case
    T, n = data.steps, len(case.agents)
    dt = data.step_hours
    pos = data.pos
    p = np.array(case.profile_kw, dtype=float, copy=True) * dt
    s = np.zeros((T, n))
    soc = np.full((T, n), np.nan)
    phi, alpha, beta = np.zeros((T, n)), np.zeros((T, n)), np.zeros((T, n))
    price = np.full((T, n), np.nan)
    pay = np.zeros((T, n))
    bat_pos = pos[data.bat]
    p[:, pos] = 0.0
    p[:, pos[data.pq]] = sol.p
    s[:, bat_pos] = sol.s
    soc[:, bat_pos] = sol.soc
    phi[:, pos], alpha[:, pos], beta[:, pos] = sol.phi, sol.alpha, sol.beta
    price[:, pos] = sol.lam[:, data.comm]
    pay_m = agent_payments(data, sol)
    pay[:, pos] = pay_m
    f = agent_welfare(data, sol)
    cw = community_welfare(data, sol, f)
    net = network_outcome(data, network, network_duals, network_slack, price, p + s)
    price = net.price_energy + net.price_voltage + net.price_congestion
    f_real = realised_agent_welfare(data, sol, f)

    welfare = pd.Series(cw.sum(axis=1), index=pd.RangeIndex(T, name="step"), name="welfare")
    imb = payment_imbalance(data, sol)
    for arr in (p, s, soc, sol.lam):
        arr.setflags(write=False)
    return MarketResult(
        welfare=welfare,
        p_kwh=p, s_kwh=s, soc=soc, price=sol.lam, constant=float(data.const.sum()), status=status,
        window_status=window_status, battery_model=data.battery_model, horizon=horizon, solver=solver,
        iterations=iterations, build_seconds=build_seconds, solve_seconds=solve_seconds,
        payment_imbalance=float(np.abs(imb).max()) if imb.size else 0.0, solution=sol, window_solver=window_solver,
        welfare_realised=realised_welfare(data, sol, f_real), stored_energy_value=stored_energy_value(data, sol),
        welfare_breakdown=welfare_breakdown(data, sol, f_realised=f_real, pay=pay_m),
        network_duals=net.duals, network_slack=net.slack, price_energy=net.price_energy,
        price_voltage=net.price_voltage, price_congestion=net.price_congestion,
        network_congestion_rent=net.congestion_rent, network_penalty_cost=net.penalty_cost,
        network_rows=network if network is not None and network.rows else None,
        _frames=partial(_frames, data, sol, p, s, soc, phi, alpha, beta, price, pay, cw,
                        (net.price_energy, net.price_voltage, net.price_congestion)))  # picklable


def _frames(data: MarketData, sol: Solution, p: np.ndarray, s: np.ndarray, soc: np.ndarray, phi: np.ndarray,
            alpha: np.ndarray, beta: np.ndarray, price: np.ndarray, pay: np.ndarray, cw: np.ndarray,
            parts: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The tidy frames of :class:`MarketResult` (market, communities, settlements)."""
    case = data.case
    T, n = data.steps, len(case.agents)
    dt = data.step_hours
    names = np.array(case.agent_names, dtype=object)
    kinds = np.array([a.kind.value for a in case.agents], dtype=object)
    comms = np.array([(a.community or "") if a.kind is not AgentKind.PASSIVE else "" for a in case.agents],
                     dtype=object)
    times = _times(data)
    market = pd.DataFrame({
        "step": np.repeat(np.arange(T, dtype=np.int64), n),
        "time": np.repeat(times, n),
        "agent": np.tile(names, T),
        "kind": np.tile(kinds, T),
        "community": np.tile(comms, T),
        "P_kw": (p / dt).ravel(), "S_kw": (s / dt).ravel(), "phi_kw": (phi / dt).ravel(),
        "alpha_kw": (alpha / dt).ravel(), "beta_kw": (beta / dt).ravel(), "soc": soc.ravel(),
        "price": price.ravel(), "price_energy": parts[0].ravel(), "price_voltage": parts[1].ravel(),
        "price_congestion": parts[2].ravel(), "payment": pay.ravel(),
    }, columns=list(MARKET_COLUMNS))
    nc = data.n_c
    communities = pd.DataFrame({
        "step": np.repeat(np.arange(T, dtype=np.int64), nc),
        "community": np.tile(np.array(data.communities, dtype=object), T),
        "price": sol.lam.ravel(), "import_kwh": sol.gimp.ravel(), "export_kwh": sol.gexp.ravel(),
        "welfare": cw.ravel(),
    }, columns=list(COMMUNITY_COLUMNS))
    st = settle(data, sol)
    na = data.n_arc
    partner = np.array(data.partner_names(), dtype=object)
    settlements = pd.DataFrame({
        "step": np.repeat(np.arange(T, dtype=np.int64), na),
        "community": np.tile(np.array([data.communities[c] for c in data.arc_comm], dtype=object), T),
        "partner": np.tile(partner, T),
        "import_kwh": st.import_kwh.ravel(), "export_kwh": st.export_kwh.ravel(),
        "import_price": st.import_price.ravel(), "export_price": st.export_price.ravel(),
        "fee": st.fee.ravel(), "payment": st.payment.ravel(),
    }, columns=list(SETTLEMENT_COLUMNS))
    return market, communities, settlements
