"""Network constraints inside the market clearing (issue 13; shared MODEL.md, *Network-aware market*).

The aware market (:mod:`gridmarket.study.aware`) linearises the network around the last AC
power flow and hands the market rows

    ``sens[r] @ p_t − slack_r <= rhs[r]``,   ``slack_r >= 0``, ``t = step[r]``

where ``p_t[n]`` is agent n's net consumption in step t [kW] (load reference: ``P_n + S_n``; a
producer's ``P_n`` is negative; agents in ``case.agents`` order, passive agents with zero
columns). A lower limit is written as a negated row. Each slack costs
``case.market.network_penalty`` [currency per unit of the row quantity, per step] in the
objective, so the market always clears; a slack that stays positive is reported.

Results (:class:`~gridmarket.market.results.MarketResult`)
---------------------------------------------------------
* ``network_duals`` (R,) >= 0 [currency per unit of the row quantity]: ``∂W/∂rhs[r]``, the
  welfare gained per unit the limit is relaxed (welfare without the penalty; 0 where the row
  does not bind, ``network_penalty`` where its slack is positive).
* ``network_slack`` (R,) [unit of the row quantity].
* ``price_energy``, ``price_voltage``, ``price_congestion`` (steps, n_agents) [currency/kWh]:
  the community price and the sums over the step's voltage rows, resp. current and
  transformer rows, of ``dual_r · sens[r, n] / Δt`` (one more kWh consumed in a step of ``Δt``
  hours raises ``p_t[n]`` by ``1/Δt`` kW). Their sum is the agent's marginal price of
  consumption (a distribution locational marginal price); NaN for passive agents, like ``price``.
* ``network_congestion_rent`` [currency]: the merchandising surplus of the network rows,
  ``Σ_r dual_r · (sens[r] @ p_t)`` = ``Σ_r dual_r · (rhs[r] + slack_r)`` (complementary
  slackness). It is what the agents pay through the voltage and congestion components of
  their prices, ``Σ_{t,n} (price_voltage + price_congestion)·E_{t,n}`` with ``E`` the net
  consumption in kWh, collected by the network operator (the DSO) whose limits the rows are:
  a transfer from the agents to the DSO that leaves total welfare unchanged. The community
  settlement (``payment``) is unchanged and does not include it.
* ``network_penalty_cost`` [currency]: ``Σ penalty·slack``, the objective's price of the limits
  that could not be met; not part of reported welfare (like the ε tie-break).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from gridmarket.errors import MarketError

if TYPE_CHECKING:
    from gridmarket.market._data import MarketData

__all__ = ["KINDS", "NetworkConstraints", "NetworkOutcome", "check_network", "network_outcome", "price_components",
           "row_table", "window_rows"]

#: row kinds: a voltage limit, a line current limit, a transformer loading limit
KINDS = ("voltage", "current", "transformer")


@dataclass(frozen=True)
class NetworkConstraints:
    """Linear network rows for the market: ``sens @ p_t − slack <= rhs`` (see the module docstring).

    Attributes
    ----------
    step : ndarray of int, shape (R,)
        Step of the case horizon each row applies to.
    name : tuple of str, length R
        Element label, e.g. ``"bus.1"``, ``"line.l1.2"``, ``"transformer.tx1"``.
    kind : tuple of str, length R
        ``"voltage"``, ``"current"`` or ``"transformer"``.
    sens : scipy.sparse.csr_matrix, shape (R, n_agents)
        ``d quantity / d (agent's net consumption kW)`` [unit per kW].
    rhs : ndarray, shape (R,)
        Right-hand side [unit of the row quantity].
    """

    step: np.ndarray
    name: tuple[str, ...]
    kind: tuple[str, ...]
    sens: sp.csr_matrix
    rhs: np.ndarray

    @property
    def rows(self) -> int:
        """Number of rows R."""
        return len(self.rhs)

    @classmethod
    def empty(cls, n_agents: int) -> NetworkConstraints:
        """No rows, for ``n_agents`` agents."""
        return cls(step=np.zeros(0, dtype=np.int64), name=(), kind=(), sens=sp.csr_matrix((0, n_agents)),
                   rhs=np.zeros(0))


def check_network(nc: NetworkConstraints, *, n_agents: int, steps: int) -> None:
    """Raise :class:`~gridmarket.errors.MarketError` naming the first bad row (shape, step, kind, values)."""
    R = len(np.asarray(nc.rhs))
    where = "network constraints"
    if sp.issparse(nc.sens):
        shape = nc.sens.shape
    else:
        shape = np.shape(nc.sens)
    if len(shape) != 2 or shape[1] != n_agents or shape[0] != R:
        msg = (f"{where}: sens has shape {tuple(shape)}, expected ({R}, {n_agents}) (rows x agents of the case,"
               " in case.agents order)")
        raise MarketError(msg, group="Network-rows")
    for what, n in (("step", len(np.asarray(nc.step))), ("name", len(nc.name)), ("kind", len(nc.kind))):
        if n != R:
            msg = f"{where}: {what} has {n} entries, expected one per row ({R})"
            raise MarketError(msg, group="Network-rows")
    step = np.asarray(nc.step)
    bad = np.flatnonzero((step < 0) | (step >= steps) | (step != np.round(step)))
    if bad.size:
        r = int(bad[0])
        msg = f"{where}: row {r} ({nc.name[r]}): step {step[r]} is outside the case's steps 0..{steps - 1}"
        raise MarketError(msg, step=None, group="Network-rows")
    kinds = [r for r, k in enumerate(nc.kind) if k not in KINDS]
    if kinds:
        r = kinds[0]
        msg = f"{where}: row {r} ({nc.name[r]}): kind {nc.kind[r]!r} is not one of {', '.join(KINDS)}"
        raise MarketError(msg, step=int(step[r]), group="Network-rows")
    rhs = np.asarray(nc.rhs, dtype=float)
    vals = sp.csr_matrix(nc.sens)
    row_ok = np.isfinite(rhs)
    if vals.nnz:
        finite = np.isfinite(vals.data)
        if not finite.all():
            row_ok[np.repeat(np.arange(R), np.diff(vals.indptr))[~finite]] = False
    if not row_ok.all():
        r = int(np.flatnonzero(~row_ok)[0])
        msg = f"{where}: row {r} ({nc.name[r]}) at step {int(step[r])}: rhs or sensitivities are not finite"
        raise MarketError(msg, step=int(step[r]), group="Network-rows")


def window_rows(nc: NetworkConstraints, start: int, length: int) -> np.ndarray:
    """Indices of the rows whose step lies in ``[start, start + length)``."""
    s = np.asarray(nc.step)
    return np.flatnonzero((s >= start) & (s < start + length))


def price_components(nc: NetworkConstraints, duals: np.ndarray, steps: int, step_hours: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``price_voltage`` and ``price_congestion`` (steps, n_agents) [currency/kWh]: per step the sum
    over its voltage (resp. current and transformer) rows of ``dual_r · sens[r, n] / Δt``."""
    n = nc.sens.shape[1]
    R = nc.rows
    out = []
    volt = np.array([k == "voltage" for k in nc.kind], dtype=bool)
    for mask in (volt, ~volt):
        w = np.where(mask, np.asarray(duals, dtype=float), 0.0) / step_hours
        agg = sp.csr_matrix((w, (np.asarray(nc.step, dtype=np.int64), np.arange(R))), shape=(steps, R))
        out.append(np.asarray((agg @ sp.csr_matrix(nc.sens)).toarray()).reshape(steps, n))
    return out[0], out[1]


@dataclass(frozen=True)
class NetworkOutcome:
    """What the network rows did in a cleared market (see the module docstring for the units)."""

    duals: np.ndarray  #: (R,) >= 0 [currency per unit of the row quantity]
    slack: np.ndarray  #: (R,) [unit of the row quantity]
    price_energy: np.ndarray  #: (steps, n_agents) community price [currency/kWh], NaN for passive agents
    price_voltage: np.ndarray  #: (steps, n_agents) [currency/kWh]
    price_congestion: np.ndarray  #: (steps, n_agents) [currency/kWh]
    congestion_rent: float  #: Σ dual·(sens @ p_t) [currency], collected by the DSO
    penalty_cost: float  #: Σ penalty·slack [currency]


def network_outcome(data: MarketData, network: NetworkConstraints | None, duals: np.ndarray | None,
                    slack: np.ndarray | None, price_energy: np.ndarray, energy_kwh: np.ndarray) -> NetworkOutcome:
    """Price components, congestion rent and penalty cost of a cleared market.

    ``price_energy`` (steps, n_agents) is each agent's community price (NaN for passive agents),
    ``energy_kwh`` its net consumption ``P + S`` per step [kWh]. Without rows (``network`` None
    or empty) the components are 0 for market agents.
    """
    T, n = price_energy.shape
    R = 0 if network is None else network.rows
    d = np.zeros(R) if duals is None or not R else np.asarray(duals, dtype=float)
    sl = np.zeros(R) if slack is None or not R else np.asarray(slack, dtype=float)
    passive = np.ones(n, dtype=bool)
    passive[data.pos] = False
    volt = np.zeros((T, n))
    cong = np.zeros((T, n))
    rent = 0.0
    if network is not None and R:
        volt, cong = price_components(network, d, T, data.step_hours)
        sens = sp.csr_matrix(network.sens) @ sp.diags((~passive).astype(float))
        p_kw = energy_kwh / data.step_hours
        quantity = np.asarray(sens.multiply(p_kw[np.asarray(network.step, dtype=np.int64)]).sum(axis=1)).ravel()
        rent = float(d @ quantity)
    volt[:, passive] = np.nan
    cong[:, passive] = np.nan
    for arr in (d, sl, volt, cong):
        arr.setflags(write=False)
    return NetworkOutcome(duals=d, slack=sl, price_energy=price_energy, price_voltage=volt, price_congestion=cong,
                          congestion_rent=rent, penalty_cost=float(data.case.market.network_penalty * sl.sum()))


def row_table(nc: NetworkConstraints, duals: np.ndarray, slack: np.ndarray, *, tol: float = 1e-9) -> pd.DataFrame:
    """One row per network row: ``step, element, kind, rhs, dual, slack, binding`` (dual > ``tol``)
    and ``unmet`` (slack > ``tol``: a limit the market could not meet, to be reported with its
    element and step)."""
    d = np.asarray(duals, dtype=float)
    s = np.asarray(slack, dtype=float)
    return pd.DataFrame({
        "step": np.asarray(nc.step, dtype=np.int64), "element": np.array(nc.name, dtype=object),
        "kind": np.array(nc.kind, dtype=object), "rhs": np.asarray(nc.rhs, dtype=float), "dual": d, "slack": s,
        "binding": d > tol, "unmet": s > tol})
