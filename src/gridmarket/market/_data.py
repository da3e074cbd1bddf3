"""The arrays of one case that the market QP needs, extracted once per case.

Everything here is in market units: energy per step [kWh], prices [currency/kWh], SoC as a
fraction of capacity. Agents are kept in case order; *market agents* are the non-passive
ones. Consumers and producers share one block of ``P`` variables (the *P block*), batteries
one block of ``S_ch, S_dis, SoC`` variables.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from gridmarket.case.model import Case
from gridmarket.enums import AgentKind, BatteryModel
from gridmarket.errors import MarketError
from gridmarket.market.battery import Batteries, make_batteries
from gridmarket.market.pool import link_arcs, pool_names

__all__ = ["BATTERY", "CONSUMER", "GRID", "POOL", "PRODUCER", "MarketData", "Window", "market_data"]

#: integer codes of the market agent kinds
CONSUMER, PRODUCER, BATTERY = 0, 1, 2
#: partner index of the upstream grid in the arc arrays
GRID = -1
#: partner index of a pool arc: the community trades with its clique's pool (gridmarket.market.pool)
POOL = -2
_KIND_CODE = {AgentKind.CONSUMER: CONSUMER, AgentKind.PRODUCER: PRODUCER, AgentKind.BATTERY: BATTERY}


@dataclass(frozen=True)
class Window:
    """Step-dependent data of one window of ``length`` steps starting at ``start``.

    Attributes
    ----------
    energy_kwh : ndarray, shape (length, n_pq)
        Consumer demand ``P̄`` or producer available energy, per step [kWh], >= 0.
    import_price, export_price : ndarray, shape (length,)
        ``π_imp``, ``π_exp`` [currency/kWh].
    value : ndarray, shape (n_b,)
        ``v_n`` applied in this window [currency/kWh] (see :func:`MarketData.window`).
    discount : ndarray, shape (length,)
        ``(1 − λ_sd)^(length − 1 − t)``: how much of a kWh stored in step ``t`` is left at
        the window's end.
    soc0 : ndarray, shape (n_b,)
        SoC before the window's first step [fraction of capacity].
    soc_lo, soc_hi : ndarray, shape (length, n_b)
        SoC band at the end of each step [fraction] (:attr:`Batteries.band_lo`): the SoC
        bounds, narrowed near the run's end when the terminal SoC is cyclic.
    """

    start: int
    length: int
    energy_kwh: np.ndarray
    import_price: np.ndarray
    export_price: np.ndarray
    value: np.ndarray
    discount: np.ndarray
    soc0: np.ndarray
    soc_lo: np.ndarray
    soc_hi: np.ndarray

    @property
    def steps(self) -> range:
        """Global step indices of the window."""
        return range(self.start, self.start + self.length)


@dataclass(frozen=True)
class MarketData:
    """Market arrays of a case (built by :func:`market_data`)."""

    case: Case
    battery_model: BatteryModel
    step_hours: float
    steps: int
    names: tuple[str, ...]  #: market agent names
    pos: np.ndarray  #: (n_m,) index of each market agent in ``case.agents``
    kind: np.ndarray  #: (n_m,) CONSUMER / PRODUCER / BATTERY
    comm: np.ndarray  #: (n_m,) community index
    communities: tuple[str, ...]
    const: np.ndarray  #: (n_m,) c_n [currency per step]
    # P block: consumers and producers, in market order
    pq: np.ndarray  #: (n_pq,) market positions
    fixed: np.ndarray  #: P-block positions of inflexible consumers (flex = 0)
    flex_p: np.ndarray  #: P-block positions of flexible consumers
    flex: np.ndarray  #: (len(flex_p),) their flex
    prod: np.ndarray  #: P-block positions of producers
    a_pq: np.ndarray  #: (n_pq,) a_n [currency/kWh²]
    b_pq: np.ndarray  #: (n_pq,) b_n [currency/kWh]
    energy_kwh: np.ndarray  #: (steps, n_pq) demand / available energy [kWh]
    # batteries, in market order
    bat: np.ndarray  #: (n_b,) market positions
    battery: Batteries  #: gains, rate limits, SoC band and welfare terms of the batteries
    value_step: np.ndarray  #: (steps,) v per step [currency/kWh]
    # grid and partners
    import_price: np.ndarray  #: (steps,)
    export_price: np.ndarray  #: (steps,)
    trade_fee: float
    tie_break: float
    arc_comm: np.ndarray  #: (n_arc,) community owning the arc (the importer of γ_imp|(c,j))
    arc_partner: np.ndarray  #: (n_arc,) partner community index, GRID for the upstream grid, POOL for a pool
    arc_rev: np.ndarray  #: (n_arc,) index of the reverse arc (j, c), -1 for grid arcs
    #: (n_arc,) pool of a pool arc (partner POOL), -1 for other arcs; see gridmarket.market.pool
    arc_pool: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    n_pool: int = 0  #: pools (cliques of linked communities trading through one pool)

    @property
    def cap_kwh(self) -> np.ndarray:
        """(n_b,) capacity [kWh]."""
        return self.battery.cap_kwh

    @property
    def sch_max(self) -> np.ndarray:
        """(n_b,) ``min(P_rated Δt, λ_ch cap)`` [kWh]."""
        return self.battery.sch_max

    @property
    def sdis_max(self) -> np.ndarray:
        """(n_b,) ``min(P_rated Δt, λ_dis cap)`` [kWh]."""
        return self.battery.sdis_max

    @property
    def a_bat(self) -> np.ndarray:
        """(n_b,) quadratic cost on S [currency/kWh²]."""
        return self.battery.a

    @property
    def soc_init(self) -> np.ndarray:
        """(n_b,) SoC before step 0 [fraction]."""
        return self.battery.soc_init

    @property
    def n_m(self) -> int:
        return len(self.names)

    @property
    def n_pq(self) -> int:
        return len(self.pq)

    @property
    def n_b(self) -> int:
        return len(self.bat)

    @property
    def n_c(self) -> int:
        return len(self.communities)

    @property
    def n_arc(self) -> int:
        return len(self.arc_comm)

    @property
    def link_arcs(self) -> np.ndarray:
        """Indices of the community-to-community arcs (eq. 8 holds on each)."""
        return np.flatnonzero(self.arc_partner >= 0)

    @property
    def pool_arcs(self) -> np.ndarray:
        """Indices of the community-to-pool arcs (the pool balance holds over each pool's)."""
        return np.flatnonzero(self.arc_partner == POOL)

    def partner_names(self) -> list[str]:
        """Partner of every arc: ``"grid"``, a pool name or a community name."""
        pools = pool_names(self.n_pool)
        return ["grid" if j == GRID else pools[k] if j == POOL else self.communities[j]
                for j, k in zip(self.arc_partner.tolist(), self.arc_pool.tolist(), strict=True)]

    def arc_names(self) -> list[str]:
        """``"C1<-grid"`` / ``"C1<-C2"`` / ``"C1<-pool"``: the arc's owner and partner."""
        owners = self.arc_comm.tolist()
        return [f"{self.communities[c]}<-{j}" for c, j in zip(owners, self.partner_names(), strict=True)]

    def window(self, start: int, length: int, soc0: np.ndarray) -> Window:
        """Step data of the window ``[start, start + length)`` with SoC ``soc0`` before it.

        The value of stored energy applied in the window is the mean of the per-step
        values ``v_t`` over the window (for ``length = 1`` exactly the step's ``v``).
        """
        sl = slice(start, start + length)
        sd = self.case.battery.self_discharge
        v = float(np.mean(self.value_step[sl]))
        return Window(
            start=start, length=length, energy_kwh=self.energy_kwh[sl],
            import_price=self.import_price[sl], export_price=self.export_price[sl],
            value=np.full(self.n_b, v), discount=(1.0 - sd) ** np.arange(length - 1, -1, -1, dtype=float),
            soc0=np.asarray(soc0, dtype=float), soc_lo=self.battery.band_lo[sl], soc_hi=self.battery.band_hi[sl])


def market_data(case: Case, *, battery_model: BatteryModel | str | None = None,
                soc_init: Mapping[str, float] | None = None, soc_target: Mapping[str, float] | None = None,
                steps_after: int = 0, pools: bool | None = None) -> MarketData:
    """Extract the market arrays of ``case``.

    Parameters
    ----------
    case : Case
        The case.
    battery_model : BatteryModel or str, optional
        Overrides ``case.market.battery_model``.
    soc_init : mapping, optional
        Battery name -> SoC before step 0 [fraction]; others start at ``[battery].soc_init``.
    soc_target : mapping, optional
        Battery name -> SoC at the end of the run [fraction] when ``[battery].terminal_soc`` is
        cyclic; others end where they start in this call. A slice of a longer run (such as a
        chunk of ``run_long``) passes the SoC the whole run started from.
    steps_after : int
        Steps of the run after the case's last step (0: the case is the whole run). With a
        cyclic terminal SoC the batteries must be back at their target at the end of the run,
        so the SoC band of this call's steps leaves room for the steps that follow.
    pools : bool, optional
        True: every clique of linked communities trades through one pool (O(C) variables,
        :mod:`gridmarket.market.pool`); False: one arc per ordered pair (MODEL.md eq. 8); None
        (default): pools for the cliques of more than ``pool.ARC_CLIQUE_MAX`` communities.

    Raises
    ------
    MarketError
        A market agent has no community, ``soc_init`` or ``soc_target`` names an agent that is
        not a battery, or ``steps_after < 0``.
    """
    model = BatteryModel(battery_model if battery_model is not None else case.market.battery_model)
    dt = float(case.time.step_hours)
    steps = int(case.time.steps)
    spec = case.battery
    market = [(i, a) for i, a in enumerate(case.agents) if a.kind is not AgentKind.PASSIVE]
    communities = tuple(case.communities)
    cidx = {c: k for k, c in enumerate(communities)}
    orphans = [a.name for _, a in market if a.community not in cidx]
    if orphans:
        msg = (f"market agent(s) {', '.join(orphans[:5])} belong to no community of the case"
               f" ({len(orphans)} agent(s)); every non-passive agent needs one of {list(communities)}")
        raise MarketError(msg, group="Agent-community")
    names = tuple(a.name for _, a in market)
    pos = np.array([i for i, _ in market], dtype=np.int64)
    kind = np.array([_KIND_CODE[a.kind] for _, a in market], dtype=np.int64)
    comm = np.array([cidx[a.community] for _, a in market], dtype=np.int64)  # type: ignore[index]
    a_all = np.array([a.a for _, a in market], dtype=float)
    b_all = np.array([a.b for _, a in market], dtype=float)
    flex_all = np.array([a.flex for _, a in market], dtype=float)
    units = np.array([a.units for _, a in market], dtype=float)

    pq = np.flatnonzero(kind != BATTERY)
    kind_pq = kind[pq]
    flex_pq = flex_all[pq]
    fixed = np.flatnonzero((kind_pq == CONSUMER) & (flex_pq == 0.0))
    flex_p = np.flatnonzero((kind_pq == CONSUMER) & (flex_pq != 0.0))
    prod = np.flatnonzero(kind_pq == PRODUCER)
    energy = np.asarray(case.profile_kw, dtype=float)[:, pos[pq]] * dt if steps else np.zeros((0, len(pq)))

    bat = np.flatnonzero(kind == BATTERY)
    bat_names = {names[m]: k for k, m in enumerate(bat)}

    def per_battery(given: Mapping[str, float] | None, default: np.ndarray, label: str) -> np.ndarray:
        out = default.copy()
        if given:
            unknown = [n for n in given if n not in bat_names]
            if unknown:
                msg = (f"{label} names {', '.join(map(repr, unknown))}, which is not a battery agent of case"
                       f" {case.name!r}; batteries: {list(bat_names) or 'none'}")
                raise MarketError(msg, group="Battery-soc-init")
            for n, v in given.items():
                out[bat_names[n]] = float(v)
        return out

    soc0 = per_battery(soc_init, np.full(len(bat), float(spec.soc_init)), "soc_init")
    target = per_battery(soc_target, soc0, "soc_target")
    if steps_after < 0:
        msg = f"steps_after must be >= 0 (steps of the run after this market's last step), got {steps_after}"
        raise MarketError(msg, group="Battery-terminal-soc")
    batteries = make_batteries(spec, model, names=tuple(names[m] for m in bat), units=units[bat], a_agent=a_all[bat],
                               soc_init=soc0, soc_target=target, steps=steps, steps_after=int(steps_after),
                               step_hours=dt)

    ip = np.asarray(case.grid.import_price, dtype=float)
    ep = np.asarray(case.grid.export_price, dtype=float)
    if isinstance(spec.value, str):
        if spec.value != "mean-price":
            msg = f"[battery].value must be a number or 'mean-price', got {spec.value!r}"
            raise MarketError(msg, group="Battery-value")
        value = 0.5 * (ip + ep)
    else:
        value = np.full(steps, float(spec.value))

    flat = itertools.chain.from_iterable(case.links)  # linear in the links (a full mesh: C(C-1)/2)
    pairs = np.fromiter(map(cidx.__getitem__, flat), dtype=np.int64, count=2 * len(case.links)).reshape(-1, 2)
    arcs = link_arcs(len(communities), pairs, pools=pools)

    return MarketData(
        case=case, battery_model=model, step_hours=dt, steps=steps, names=names, pos=pos, kind=kind,
        comm=comm, communities=communities, const=np.array([a.c for _, a in market], dtype=float),
        pq=pq, fixed=fixed, flex_p=flex_p, flex=flex_pq[flex_p], prod=prod, a_pq=a_all[pq], b_pq=b_all[pq],
        energy_kwh=energy, bat=bat, battery=batteries, value_step=value, import_price=ip, export_price=ep,
        trade_fee=float(case.market.trade_fee), tie_break=float(case.market.tie_break),
        arc_comm=arcs.comm, arc_partner=arcs.partner, arc_rev=arcs.rev, arc_pool=arcs.pool, n_pool=arcs.n_pool)
