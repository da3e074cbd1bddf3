"""Small market cases built directly as :class:`~gridmarket.case.model.Case` objects, and an
independent cvxpy reference of the market written from shared MODEL.md.

The reference deliberately shares no code with ``gridmarket.market``: it states the
equations (1)–(18) and the battery models with cvxpy expressions per window, so that a
formulation mistake in the engine shows up as a disagreement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from gridmarket.case.model import (
    Agent,
    BatterySpec,
    Case,
    GridPrices,
    MarketOptions,
    NetworkOptions,
    PlacementOptions,
    TimeOptions,
)
from gridmarket.enums import AgentKind, BatteryModel, TerminalSoc

__all__ = [
    "Reference",
    "battery",
    "consumer",
    "make_case",
    "passive",
    "producer",
    "random_case",
    "reference_market",
]


def consumer(name: str, community: str, *, a: float = 0.0, b: float = 1.0, c: float = 0.0,
             flex: float = 0.0) -> Agent:
    return Agent(name=name, kind=AgentKind.CONSUMER, community=community, element=f"Load.{name}",
                 profile=name, a=a, b=b, c=c, flex=flex)


def producer(name: str, community: str, *, a: float = 0.0, b: float = 0.0, c: float = 0.0) -> Agent:
    return Agent(name=name, kind=AgentKind.PRODUCER, community=community, element=f"PVSystem.{name}",
                 profile=name, a=a, b=b, c=c)


def battery(name: str, community: str, *, units: int = 1, a: float = 0.0) -> Agent:
    return Agent(name=name, kind=AgentKind.BATTERY, community=community, element=f"bus:{name.lower()}",
                 units=units, a=a)


def passive(name: str) -> Agent:
    return Agent(name=name, kind=AgentKind.PASSIVE, community=None, element=f"Load.{name}", profile=name)


def make_case(agents: Sequence[Agent], profile_kw: dict[str, Sequence[float]] | np.ndarray, *,
              steps: int | None = None, import_price: float | Sequence[float] = 0.8,
              export_price: float | Sequence[float] = 0.3, links: str | Sequence[tuple[str, str]] = "all",
              horizon: int = 1, battery_model: str = "physical", trade_fee: float = 0.001,
              tie_break: float = 1e-6, step_hours: float = 1.0, battery_spec: BatterySpec | None = None,
              start: str | None = "2024-03-01T00:00", name: str = "market-test",
              terminal_soc: str = "free") -> Case:
    """A :class:`Case` with the given agents; ``profile_kw`` maps agent name -> kW per step
    (batteries may be omitted) or is an array (steps, n_agents).

    ``terminal_soc`` (overriding ``battery_spec``'s) is ``"free"`` here: the market tests that
    predate the cyclic terminal SoC derive their expected numbers for batteries that end where
    the market leaves them (the study's behaviour); tests of the cyclic rule pass ``"cyclic"``.
    """
    agents = tuple(agents)
    if isinstance(profile_kw, np.ndarray):
        prof = np.asarray(profile_kw, dtype=float)
    else:
        n = steps if steps is not None else max(len(v) for v in profile_kw.values())
        prof = np.column_stack([np.broadcast_to(np.asarray(profile_kw.get(a.name, np.zeros(n)), float), (n,))
                                for a in agents]) if agents else np.zeros((n, 0))
    steps = prof.shape[0]
    prof = prof.copy()
    prof.setflags(write=False)
    communities: list[str] = []
    for a in agents:
        if a.community is not None and a.community not in communities:
            communities.append(a.community)
    if links == "all":
        pairs = tuple((c, d) for k, c in enumerate(communities) for d in communities[k + 1:])
    else:
        pairs = tuple(tuple(p) for p in links)  # type: ignore[misc]
    ip = np.broadcast_to(np.asarray(import_price, dtype=float), (steps,)).copy()
    ep = np.broadcast_to(np.asarray(export_price, dtype=float), (steps,)).copy()
    ip.setflags(write=False)
    ep.setflags(write=False)
    import pandas as pd

    return Case(
        name=name, root=Path("."), network=NetworkOptions(master=Path("Master.dss")),
        time=TimeOptions(steps=steps, step_hours=step_hours, start=pd.Timestamp(start) if start else None),
        market=MarketOptions(horizon=horizon, battery_model=BatteryModel(battery_model), trade_fee=trade_fee,
                             tie_break=tie_break),
        grid=GridPrices(import_price=ip, export_price=ep),
        battery=replace(battery_spec or BatterySpec(), terminal_soc=TerminalSoc(terminal_soc)),
        placement=PlacementOptions(), agents=agents, communities=tuple(communities), links=pairs,
        profile_kw=prof)


def random_case(seed: int, *, n_agents: int = 12, n_communities: int = 3, n_batteries: int = 2, steps: int = 3,
                links: str | Sequence[tuple[str, str]] = "all", horizon: int = 1, battery_model: str = "physical",
                passive_share: float = 0.0, trade_fee: float = 0.01, time_varying_prices: bool = True,
                battery_spec: BatterySpec | None = None, terminal_soc: str = "free") -> Case:
    """A seeded random case: about half consumers (some flexible), half PV, ``n_batteries``
    batteries of 1–3 SBUs, optionally some passive agents, prices varying per step;
    ``terminal_soc`` as in :func:`make_case`."""
    rng = np.random.default_rng(seed)
    comms = [f"C{k + 1}" for k in range(n_communities)]
    agents: list[Agent] = []
    cols: list[np.ndarray] = []
    hours = np.arange(steps)
    for i in range(n_agents):
        comm = comms[i % n_communities]
        if rng.random() < passive_share:
            agents.append(passive(f"X{i}"))
            cols.append(rng.uniform(0.2, 2.0, steps))
        elif i % 2 == 0:
            flex = float(rng.choice([0.0, 0.0, 0.2, 0.5]))
            agents.append(consumer(f"L{i}", comm, a=float(rng.uniform(0.0, 0.05)), b=float(rng.uniform(0.9, 1.5)),
                                   c=float(rng.uniform(0, 0.1)), flex=flex))
            cols.append(rng.uniform(0.2, 3.0, steps))
        else:
            agents.append(producer(f"PV{i}", comm, a=float(rng.uniform(0.0, 0.08)), b=float(rng.uniform(0.0, 0.2))))
            sun = np.clip(np.sin(np.pi * (hours + rng.uniform(0, 6)) / 12.0), 0, None)
            cols.append(rng.uniform(0.5, 5.0) * sun * (rng.random(steps) > 0.1))
    for k in range(n_batteries):
        agents.append(battery(f"B{k}", comms[k % n_communities], units=int(rng.integers(1, 4)),
                              a=float(rng.choice([0.0, 0.01]))))
        cols.append(np.zeros(steps))
    if time_varying_prices:
        ip = rng.uniform(0.6, 1.0, steps)
        ep = ip - rng.uniform(0.2, 0.5, steps)
    else:
        ip, ep = np.full(steps, 0.8), np.full(steps, 0.3)
    spec = battery_spec or BatterySpec(soc_init=float(rng.uniform(0.25, 0.75)))
    return make_case(agents, np.column_stack(cols), import_price=ip, export_price=ep, links=links,
                     horizon=horizon, battery_model=battery_model, trade_fee=trade_fee, battery_spec=spec,
                     name=f"random-{seed}", terminal_soc=terminal_soc)


# ----------------------------------------------------------------------------- cvxpy reference

@dataclass
class Reference:
    """The cvxpy reference's results: reported welfare per step [currency] and SoC [fraction]."""

    welfare: np.ndarray  #: (steps,)
    objective: float  #: optimal value of the maximised objective (ε terms included), summed
    P: np.ndarray  #: (steps, n_agents), kWh; zero for batteries and passive agents
    S: np.ndarray  #: (steps, n_agents), kWh
    soc: np.ndarray  #: (steps, n_agents), NaN for non-batteries
    solve_seconds: float  #: wall time of ``prob.solve`` (canonicalisation + solver)
    solver_seconds: float  #: the solver's own time (``solver_stats.solve_time``)


def reference_market(case: Case, *, horizon: int | None = None, battery_model: str | None = None,
                     cyclic_end: bool = False) -> Reference:
    """Solve the market of ``case`` with cvxpy, straight from MODEL.md, window by window.

    Objective per window (maximised): Σ_t [Σ_n f_n + g] with, for batteries,
    v_w·(SoC_end − (1−λ_sd)^L SoC_start)·cap valuing stored energy once at the window end.
    ``cyclic_end``: the last window ends every battery at ``[battery].soc_init`` (MODEL.md,
    *Terminal state of charge*; exact for a single window, H = steps).
    """
    import time

    import cvxpy as cp

    H = horizon or case.market.horizon
    model = BatteryModel(battery_model or case.market.battery_model)
    T = case.time.steps
    dt = case.time.step_hours
    spec = case.battery
    eps = case.market.tie_break
    tau = case.market.trade_fee
    agents = list(case.agents)
    n = len(agents)
    comm_names = list(case.communities)
    nc = len(comm_names)
    member = np.zeros((nc, n))
    for i, a in enumerate(agents):
        if a.kind is not AgentKind.PASSIVE:
            member[comm_names.index(a.community), i] = 1.0
    kinds = [a.kind for a in agents]
    is_c = np.array([k is AgentKind.CONSUMER for k in kinds])
    is_p = np.array([k is AgentKind.PRODUCER for k in kinds])
    is_b = np.array([k is AgentKind.BATTERY for k in kinds])
    is_m = ~np.array([k is AgentKind.PASSIVE for k in kinds])
    aa = np.array([a.a for a in agents])
    bb = np.array([a.b for a in agents])
    flex = np.array([a.flex for a in agents])
    cap = np.array([a.units * spec.unit_kwh for a in agents])
    prated = np.array([a.units * spec.unit_kw for a in agents])
    bidx = np.flatnonzero(is_b)
    ip_all = np.asarray(case.grid.import_price, float)
    ep_all = np.asarray(case.grid.export_price, float)
    v_all = 0.5 * (ip_all + ep_all) if spec.value == "mean-price" else np.full(T, float(spec.value))
    pairs = [(comm_names.index(c), comm_names.index(d)) for c, d in case.links]
    directed = pairs + [(j, i) for i, j in pairs]  # (importer, exporter)

    welfare = np.zeros(T)
    Pout = np.zeros((T, n))
    Sout = np.zeros((T, n))
    socout = np.full((T, n), np.nan)
    objective = 0.0
    secs = 0.0
    solver_secs = 0.0
    soc_prev = np.full(len(bidx), spec.soc_init)
    for t0 in range(0, T, H):
        L = min(H, T - t0)
        ip, ep = ip_all[t0:t0 + L], ep_all[t0:t0 + L]
        vw = float(np.mean(v_all[t0:t0 + L]))
        D = case.profile_kw[t0:t0 + L] * dt
        P = cp.Variable((L, n))
        sch = cp.Variable((L, len(bidx)), nonneg=True)
        sdis = cp.Variable((L, len(bidx)), nonneg=True)
        soc = cp.Variable((L, len(bidx)))
        phi = cp.Variable((L, n))
        alpha = cp.Variable((L, n), nonneg=True)
        beta = cp.Variable((L, n), nonneg=True)
        g_imp_grid = cp.Variable((L, nc), nonneg=True)
        g_exp_grid = cp.Variable((L, nc), nonneg=True)
        g_cc = cp.Variable((L, max(len(directed), 1)), nonneg=True)  # energy flowing exporter -> importer
        # S per agent via a selection matrix
        sel = np.zeros((len(bidx), n))
        sel[np.arange(len(bidx)), bidx] = 1.0
        S = (sch - sdis) @ sel if len(bidx) else np.zeros((L, n))
        cons = []
        # (2) agent balance (market agents); passive agents fixed at zero trade
        cons.append(cp.multiply(is_m, P + S + phi - alpha + beta) == 0)
        cons += [phi[:, ~is_m] == 0, alpha[:, ~is_m] == 0, beta[:, ~is_m] == 0, P[:, is_b] == 0]
        # (14)-(16)
        if is_c.any():
            cons += [P[:, is_c] <= D[:, is_c], P[:, is_c] >= (1 - flex[is_c]) * D[:, is_c]]
        if is_p.any():
            cons += [P[:, is_p] <= 0, -P[:, is_p] <= D[:, is_p]]
        cons.append(P[:, ~is_m] == 0)
        # (3)
        cons.append(phi @ member.T == 0)
        # (4)-(8): imports of c = grid + Σ flows into c; exports = grid + Σ flows out of c
        into = np.zeros((max(len(directed), 1), nc))
        outof = np.zeros((max(len(directed), 1), nc))
        for k, (i, j) in enumerate(directed):
            into[k, i] = 1.0
            outof[k, j] = 1.0
        cons.append(alpha @ member.T == g_imp_grid + g_cc @ into)
        cons.append(beta @ member.T == g_exp_grid + g_cc @ outof)
        if not directed:
            cons.append(g_cc == 0)
        # batteries
        if len(bidx):
            cb = cap[bidx]
            keep = 1 - spec.self_discharge
            if model is BatteryModel.PHYSICAL:
                dE = spec.eff_charge * sch - sdis / spec.eff_discharge
            else:
                dE = sch - sdis
            prev = cp.vstack([soc_prev[None, :], soc[:-1]]) if L > 1 else soc_prev[None, :]
            cons.append(soc == keep * prev + cp.multiply(dE, 1.0 / cb))
            cons += [soc >= spec.soc_min, soc <= spec.soc_max]
            if cyclic_end and t0 + L == T:
                cons.append(soc[L - 1] == spec.soc_init)
            cons += [sch <= np.minimum(prated[bidx] * dt, spec.rate_charge * cb),
                     sdis <= np.minimum(prated[bidx] * dt, spec.rate_discharge * cb)]
            if model is BatteryModel.PAPER:
                cons += [spec.eff_charge * sch <= cp.multiply(spec.soc_max - prev, cb),
                         spec.eff_discharge * sdis <= cp.multiply(prev - spec.soc_min, cb)]
            abat = aa[bidx] + spec.a
            bat_welfare = (vw * cp.sum(cp.multiply(soc[L - 1] - keep ** L * soc_prev, cb))
                           - spec.degradation_cost * cp.sum(sch + sdis)
                           - cp.sum(cp.multiply(abat, cp.square(sch - sdis))))
        else:
            bat_welfare = 0.0
        mk = is_c | is_p
        agent_welfare = cp.sum(cp.multiply(bb[mk], P[:, mk]) - cp.multiply(aa[mk], cp.square(P[:, mk])))
        grid = -cp.sum(ip @ g_imp_grid - ep @ g_exp_grid) - tau * cp.sum(g_cc)
        # the tie-break: MODEL.md's ε(ΣΦ² + α² + β²), plus ε(S_ch² + S_dis²) as the engine documents;
        # without the latter a battery indifferent at its threshold leaves a non-unique SoC to the
        # next window, and per-window welfare would differ by that choice.
        tie = eps * (cp.sum_squares(phi) + cp.sum_squares(alpha) + cp.sum_squares(beta))
        if len(bidx):
            tie = tie + eps * (cp.sum_squares(sch) + cp.sum_squares(sdis))
        prob = cp.Problem(cp.Maximize(agent_welfare + bat_welfare + grid - tie), cons)
        tic = time.perf_counter()
        prob.solve(solver=cp.CLARABEL, canon_backend=cp.SCIPY_CANON_BACKEND)
        secs += time.perf_counter() - tic
        solver_secs += float(prob.solver_stats.solve_time or 0.0)
        if prob.status != cp.OPTIMAL:
            msg = f"reference window at step {t0}: {prob.status}"
            raise RuntimeError(msg)
        objective += float(prob.value)
        Pv = P.value
        Pout[t0:t0 + L] = Pv
        # reported welfare per step (no ε), battery value attributed per step as in MODEL.md
        w = (Pv[:, mk] * bb[mk] - aa[mk] * Pv[:, mk] ** 2).sum(axis=1)
        w -= (ip * g_imp_grid.value.sum(axis=1) - ep * g_exp_grid.value.sum(axis=1))
        if directed:
            w -= tau * g_cc.value.sum(axis=1)
        if len(bidx):
            sc, sd = sch.value, sdis.value
            de = (spec.eff_charge * sc - sd / spec.eff_discharge) if model is BatteryModel.PHYSICAL else sc - sd
            disc = (1 - spec.self_discharge) ** np.arange(L - 1, -1, -1)
            w += (vw * disc[:, None] * de).sum(axis=1) - spec.degradation_cost * (sc + sd).sum(axis=1)
            w -= ((aa[bidx] + spec.a) * (sc - sd) ** 2).sum(axis=1)
            Sout[t0:t0 + L, bidx] = sc - sd
            socout[t0:t0 + L, bidx] = soc.value
            soc_prev = np.clip(soc.value[L - 1], spec.soc_min, spec.soc_max)
        welfare[t0:t0 + L] = w
    return Reference(welfare=welfare, objective=objective, P=Pout, S=Sout, soc=socout, solve_seconds=secs,
                     solver_seconds=solver_secs)


def with_agents(case: Case, extra: Sequence[Agent], extra_profiles: np.ndarray | None = None) -> Case:
    """``case`` with more agents appended (as the study loop adds batteries)."""
    prof = np.zeros((case.time.steps, len(extra))) if extra_profiles is None else extra_profiles
    p = np.hstack([case.profile_kw, prof])
    p.setflags(write=False)
    comms = list(case.communities)
    for a in extra:
        if a.community is not None and a.community not in comms:
            comms.append(a.community)
    return replace(case, agents=case.agents + tuple(extra), profile_kw=p, communities=tuple(comms))


# ----------------------------------------------------------------------------- KKT certificate

def kkt_violations(case: Case, result, *, battery_model: str | None = None,
                   soc_init: dict[str, float] | None = None) -> dict[str, float]:
    """Largest violation of each KKT condition of the one-step markets of ``result`` [kWh or
    currency/kWh], written from MODEL.md (eqs. 1–18) with the ε term ``ε(ΣΦ² + α² + β² + S_ch²
    + S_dis²)`` that the engine documents, and the prices it reports (``result.solution``:
    ``λ`` (lam), ``μ_imp``, ``μ_exp``, ``ρ`` (rho), ``ν`` (nu)). Like :func:`reference_market`,
    it uses no code of ``gridmarket.market``: a result that passes is an optimum of the QP.

    Signs: the market minimises ``−W + ε·(...)``; with ``ν_n`` the price of agent n's balance
    (2), ``λ_c`` of (3), ``μ_imp,c``/``μ_exp,c`` of (4)/(5) and ``ρ`` of (8) on each arc c <- j:

    * Φ: ``2εΦ_n + ν_n − λ_c = 0``; α: ``2εα_n − ν_n + μ_imp,c >= 0`` (= 0 where α > 0);
      β: ``2εβ_n + ν_n − μ_exp,c >= 0`` (= 0 where β > 0);
    * P: ``g = 2aP − b + ν`` is 0 inside the bounds, <= 0 at the upper, >= 0 at the lower;
    * battery: no feasible direction of ``(S_ch, S_dis)`` decreases
      ``a(S_ch − S_dis)² + ε(S_ch² + S_dis²) + c_deg(S_ch + S_dis) − v ΔE + ν(S_ch − S_dis)``;
    * arcs: ``π_imp − μ_imp,c >= 0`` and ``μ_exp,c − π_exp >= 0`` on grid arcs, ``ρ + τ − μ_imp,c
      >= 0`` and ``μ_exp,j − ρ >= 0`` on the link arc c <- j, each = 0 where energy flows.
    """
    sol = result.solution
    model = BatteryModel(battery_model or case.market.battery_model)
    T = case.time.steps
    dt = case.time.step_hours
    spec = case.battery
    eps = case.market.tie_break
    tau = case.market.trade_fee
    market = [a for a in case.agents if a.kind is not AgentKind.PASSIVE]
    col = {a.name: i for i, a in enumerate(case.agents)}
    comms = list(case.communities)
    cm = np.array([comms.index(a.community) for a in market], dtype=np.int64)
    pq = [i for i, a in enumerate(market) if a.kind is not AgentKind.BATTERY]
    bat = [i for i, a in enumerate(market) if a.kind is AgentKind.BATTERY]
    ip = np.asarray(case.grid.import_price, float)
    ep = np.asarray(case.grid.export_price, float)
    v_all = 0.5 * (ip + ep) if spec.value == "mean-price" else np.full(T, float(spec.value))
    if model is BatteryModel.PHYSICAL:
        g_ch, g_dis = spec.eff_charge, 1.0 / spec.eff_discharge
    else:
        g_ch, g_dis = 1.0, 1.0
    keep = 1.0 - spec.self_discharge
    # arcs in the order of the settlements frame: (community, partner)
    first = result.settlements[result.settlements.step == 0]
    arcs = list(zip(first.community, first.partner, strict=True))
    rev = [arcs.index((j, c)) if j != "grid" else -1 for c, j in arcs]
    out: dict[str, float] = {}

    def worst(name: str, value: np.ndarray | float) -> None:
        value = float(np.max(np.abs(value), initial=0.0))
        out[name] = max(out.get(name, 0.0), value)

    qtol = 1e-7  # a quantity counts as positive above this [kWh]
    P = np.zeros((T, len(market)))
    S = np.zeros((T, len(market)))
    P[:, pq] = sol.p
    S[:, bat] = sol.sch - sol.sdis
    member = np.zeros((len(market), len(comms)))
    member[np.arange(len(market)), cm] = 1.0
    soc_prev = np.array([(soc_init or {}).get(market[i].name, spec.soc_init) for i in bat], dtype=float)
    for t in range(T):
        lam, mi, me, nu = sol.lam[t], sol.mu_imp[t], sol.mu_exp[t], sol.nu[t]
        phi, al, be = sol.phi[t], sol.alpha[t], sol.beta[t]
        # ---- primal feasibility
        worst("(2) agent balance", P[t] + S[t] + phi - al + be)
        worst("(3) community balance", phi @ member)
        worst("(4)-(5) community trade", np.r_[al @ member - sol.gimp[t], be @ member - sol.gexp[t]])
        for c, name in enumerate(comms):
            mine = [k for k, (cc, _) in enumerate(arcs) if cc == name]
            worst("(6)-(7) partner sums", [sol.gimp[t, c] - sol.aimp[t, mine].sum(),
                                           sol.gexp[t, c] - sol.aexp[t, mine].sum()])
        worst("(8) link balance", [sol.aimp[t, k] - sol.aexp[t, rev[k]] for k in range(len(arcs)) if rev[k] >= 0])
        worst("(17) signs", np.minimum(0.0, np.r_[al, be, sol.aimp[t], sol.aexp[t]]))
        # ---- stationarity and complementarity of Φ, α, β
        worst("stationarity Φ", 2 * eps * phi + nu - lam[cm])
        ga = 2 * eps * al - nu + mi[cm]
        gb = 2 * eps * be + nu - me[cm]
        worst("dual α", np.minimum(ga, 0.0))
        worst("dual β", np.minimum(gb, 0.0))
        worst("complementarity α", np.where(al > qtol, ga, 0.0))
        worst("complementarity β", np.where(be > qtol, gb, 0.0))
        # ---- consumers and producers
        for i in pq:
            a = market[i]
            e = case.profile_kw[t, col[a.name]] * dt
            lo, hi = ((1 - a.flex) * e, e) if a.kind is AgentKind.CONSUMER else (-e, 0.0)
            x = P[t, i]
            worst("(14)-(16) bounds P", [min(0.0, x - lo), max(0.0, x - hi)])
            g = 2 * a.a * x - a.b + nu[i]
            if hi - lo <= qtol:
                continue
            if x < hi - qtol and x > lo + qtol:
                worst("stationarity P", g)
            elif x >= hi - qtol:
                worst("stationarity P", max(0.0, g))
            else:
                worst("stationarity P", min(0.0, g))
        # ---- batteries
        for k, i in enumerate(bat):
            a = market[i]
            cap = a.units * spec.unit_kwh
            sch, sdis, soc = sol.sch[t, k], sol.sdis[t, k], sol.soc[t, k]
            s0 = soc_prev[k]
            de = g_ch * sch - g_dis * sdis
            rate_c = min(a.units * spec.unit_kw * dt, spec.rate_charge * cap)
            rate_d = min(a.units * spec.unit_kw * dt, spec.rate_discharge * cap)
            worst("(9) SoC recursion", soc - (keep * s0 + de / cap))
            lim = [(-sch, (-1.0, 0.0)), (sch - rate_c, (1.0, 0.0)), (-sdis, (0.0, -1.0)),
                   (sdis - rate_d, (0.0, 1.0)), (soc - spec.soc_max, (g_ch, -g_dis)),
                   (spec.soc_min - soc, (-g_ch, g_dis))]
            if model is BatteryModel.PAPER:
                lim += [(spec.eff_charge * sch / cap - (spec.soc_max - s0), (spec.eff_charge, 0.0)),
                        (spec.eff_discharge * sdis / cap - (s0 - spec.soc_min), (0.0, spec.eff_discharge))]
            worst("(10)-(13) battery limits", [max(0.0, c) for c, _ in lim])
            ab = a.a + spec.a
            v = v_all[t]
            grad = np.array([2 * ab * (sch - sdis) + 2 * eps * sch + spec.degradation_cost - g_ch * v + nu[i],
                             -2 * ab * (sch - sdis) + 2 * eps * sdis + spec.degradation_cost + g_dis * v - nu[i]])
            active = [np.array(n) for c, n in lim if c >= -1e-9]
            for d in ((1, 0), (-1, 0), (0, 1), (0, -1), (g_dis, g_ch), (-g_dis, -g_ch)):
                d = np.asarray(d, float) / np.hypot(*d)
                if all(n @ d <= 1e-12 for n in active):
                    worst("stationarity battery", min(0.0, grad @ d))
            soc_prev[k] = min(max(soc, spec.soc_min), spec.soc_max)
        # ---- arcs
        for k, (c, j) in enumerate(arcs):
            ci = comms.index(c)
            fi, fe = sol.aimp[t, k], sol.aexp[t, k]
            if j == "grid":
                si, se = ip[t] - mi[ci], me[ci] - ep[t]
            else:
                si = sol.rho[t, k] + tau - mi[ci]
                se = me[comms.index(j)] - sol.rho[t, k]  # the exporter j's side of the same flow
                fe = sol.aexp[t, rev[k]]
            worst("dual arcs", [min(0.0, si), min(0.0, se)])
            worst("complementarity arcs", [si if fi > qtol else 0.0, se if fe > qtol else 0.0])
    return out
