"""Clear the market of a case: roll windows over the steps, solve each QP with Clarabel.

The QP of a window length is assembled once (:func:`~gridmarket.market.build.create_model`)
and handed to one ``clarabel.DefaultSolver``; every later window of that length only
updates ``q`` and ``b`` in place (``solver.update``), so the sparsity structure and the
solver's symbolic work are reused. A failed solve becomes a
:class:`~gridmarket.errors.MarketError` that names the step and the constraint group, read
from Clarabel's infeasibility certificate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

import clarabel
import numpy as np

from gridmarket.case.model import Case
from gridmarket.enums import BatteryModel
from gridmarket.errors import MarketError
from gridmarket.market._data import MarketData, Window, market_data
from gridmarket.market.build import NONNEG, MarketModel, RowBlock, create_model
from gridmarket.market.fast import (
    FastStats,
    fast_plan,
    fast_unsupported,
    solve_sequential,
)
from gridmarket.market.prices import Solution
from gridmarket.market.results import MarketResult, MarketStatus, make_result
from gridmarket.market.validate import assert_valid_market

__all__ = ["SNAP_KWH", "MarketMethod", "WindowOutcome", "WindowSolver", "clear_market", "solver_settings"]

log = logging.getLogger(__name__)


class MarketMethod(str, Enum):
    """How :func:`clear_market` solves the market."""

    AUTO = "auto"  #: the fast KKT path where it applies (sequential market), Clarabel elsewhere
    FAST = "fast"  #: the fast path only; raise MarketError where it does not apply
    QP = "qp"  #: the general QP on Clarabel for every window (the reference)

#: energies closer than this to zero [kWh] are reported as 0 (below the solver's tolerance)
SNAP_KWH = 1e-9

_STATUS = {
    "Solved": MarketStatus.OPTIMAL,
    "AlmostSolved": MarketStatus.ALMOST_OPTIMAL,
    "PrimalInfeasible": MarketStatus.INFEASIBLE,
    "AlmostPrimalInfeasible": MarketStatus.INFEASIBLE,
    "DualInfeasible": MarketStatus.UNBOUNDED,
    "AlmostDualInfeasible": MarketStatus.UNBOUNDED,
    "MaxIterations": MarketStatus.ITERATION_LIMIT,
    "MaxTime": MarketStatus.TIME_LIMIT,
    "NumericalError": MarketStatus.NUMERICAL_ERROR,
    "InsufficientProgress": MarketStatus.NUMERICAL_ERROR,
    "Unsolved": MarketStatus.NUMERICAL_ERROR,
    "CallbackTerminated": MarketStatus.NUMERICAL_ERROR,
}


#: variable blocks of the QP as MODEL.md writes them
_SYMBOL = {"P": "P", "Sch": "S_ch", "Sdis": "S_dis", "SoC": "SoC", "Phi": "Φ", "Alpha": "α", "Beta": "β",
           "Gimp": "γ_imp", "Gexp": "γ_exp", "Aimp": "γ_imp|(c,j)", "Aexp": "γ_exp|(c,j)"}


def solver_settings() -> clarabel.DefaultSettings:
    """Clarabel settings of the market: quiet, presolve off (needed for in-place updates)."""
    s = clarabel.DefaultSettings()
    s.verbose = False
    s.presolve_enable = False
    s.chordal_decomposition_enable = False
    s.input_sparse_dropzeros = False
    s.tol_gap_abs = 1e-9
    s.tol_gap_rel = 1e-9
    s.tol_feas = 1e-9
    return s


@dataclass(frozen=True)
class WindowOutcome:
    """Raw result of one window solve."""

    x: np.ndarray
    z: np.ndarray
    status: MarketStatus
    solver_status: str  #: Clarabel's own status name
    iterations: int
    seconds: float  #: wall time of update + solve


class WindowSolver:
    """A Clarabel solver bound to one :class:`MarketModel`, updated window after window."""

    def __init__(self, model: MarketModel, settings: clarabel.DefaultSettings | None = None) -> None:
        self.model = model
        self.settings = settings or solver_settings()
        self._solver: clarabel.DefaultSolver | None = None

    def solve(self, w: Window) -> WindowOutcome:
        """Solve the model with the data of window ``w``."""
        t0 = time.perf_counter()
        q, b = self.model.vectors(w)
        if self._solver is None:
            m = self.model
            cones = []
            if m.n_zero:
                cones.append(clarabel.ZeroConeT(m.n_zero))
            if m.n_nonneg:
                cones.append(clarabel.NonnegativeConeT(m.n_nonneg))
            self._solver = clarabel.DefaultSolver(m.P, q, m.A, b, cones, self.settings)
        else:
            self._solver.update(q=q, b=b)
        sol = self._solver.solve()
        name = str(sol.status)
        return WindowOutcome(np.asarray(sol.x), np.asarray(sol.z), _STATUS.get(name, MarketStatus.NUMERICAL_ERROR),
                             name, int(sol.iterations), time.perf_counter() - t0)


# ----------------------------------------------------------------------------- diagnosis

def _steps_text(w: Window) -> str:
    return f"step {w.start}" if w.length == 1 else f"steps {w.start}-{w.start + w.length - 1}"


def _members(names: tuple[str, ...], weight: np.ndarray, limit: int = 5) -> str:
    """Names with weight above 1e-3 of the largest, largest first."""
    order = np.argsort(-weight)
    keep = [names[i] for i in order if weight[i] > 1e-3 * weight[order[0]]]
    more = f" and {len(keep) - limit} more" if len(keep) > limit else ""
    return ", ".join(keep[:limit]) + more


def diagnose(model: MarketModel, w: Window, out: WindowOutcome) -> MarketError:
    """Turn a failed window solve into a :class:`MarketError` naming step and constraint group.

    For an infeasible QP Clarabel's dual ray ``z`` is a Farkas certificate: the rows with
    ``z ≠ 0`` are the constraints that cannot hold together. They are summed by group;
    bound (inequality) groups rank before balances, as the bound is what usually cannot be
    met. For an unbounded QP the primal ray ``x`` names the variables that grow.
    """
    head = {MarketStatus.INFEASIBLE: "market infeasible",
            MarketStatus.UNBOUNDED: "market unbounded"}.get(out.status, "market not solved")
    status = f"(Clarabel status {out.solver_status})"
    if out.status is MarketStatus.INFEASIBLE and np.all(np.isfinite(out.z)):
        groups: dict[str, list[tuple[np.ndarray, RowBlock]]] = {}
        for blk in model.blocks:
            groups.setdefault(blk.name, []).append((np.abs(out.z[blk.rows]), blk))
        total = {name: float(sum(a.sum() for a, _ in parts)) for name, parts in groups.items()}
        ineq = {b.name for b in model.blocks if b.cone == NONNEG}
        ranked = sorted((n for n in total if total[n] > 0), key=lambda n: (n not in ineq, -total[n]))
        if ranked:
            top = ranked[0]
            weight, blk = max(groups[top], key=lambda p: float(p[0].max()))
            # the earliest step whose rows carry a noticeable share of the certificate
            k = int(np.flatnonzero(weight.max(axis=1) > 1e-2 * weight.max())[0])
            step = w.start + k
            members = _members(blk.entities, weight.sum(axis=0))
            grand = sum(total.values())
            others = sorted(ranked[1:], key=lambda n: -total[n])
            also = [f"{n} ({100 * total[n] / grand:.0f}%)" for n in others if total[n] > 1e-2 * grand][:5]
            msg = (f"step {step}: {head} {status}; likely group: {blk.description} ({top}, eq. {blk.equation})"
                   f" for {members}" + (f"; also involved: {', '.join(also)}" if also else "")
                   + (f"; window {_steps_text(w)}" if w.length > 1 else ""))
            return MarketError(msg, step=step, group=top)
    if out.status is MarketStatus.UNBOUNDED and np.all(np.isfinite(out.x)):
        lay = model.layout
        best = ("", 0.0, "")
        d = model.data
        ent = {"P": [d.names[k] for k in d.pq], "Sch": [d.names[k] for k in d.bat],
               "Sdis": [d.names[k] for k in d.bat], "SoC": [d.names[k] for k in d.bat],
               "Phi": list(d.names), "Alpha": list(d.names), "Beta": list(d.names),
               "Gimp": list(d.communities), "Gexp": list(d.communities), "Aimp": d.arc_names(),
               "Aexp": d.arc_names()}
        for name in lay.sizes:
            v = np.abs(out.x[lay.var(name)])
            if v.size and v.max() > best[1]:
                kk, ii = np.unravel_index(int(np.argmax(v)), v.shape)
                best = (_SYMBOL[name], float(v.max()), f"{ent[name][int(ii)]} at step {w.start + int(kk)}")
        msg = (f"step {w.start}: {head} {status}; likely group: objective (welfare grows without bound"
               f" along variable {best[0]} of {best[2]}); check a >= 0 and import price >= export price")
        return MarketError(msg, step=w.start, group="Objective")
    msg = (f"step {w.start}: {head} {status} after {out.iterations} iterations in {_steps_text(w)};"
           " the solver could not reach its tolerances (badly scaled coefficients?)")
    return MarketError(msg, step=w.start, group="Solver")


# ----------------------------------------------------------------------------- the run

def _extract(model: MarketModel, w: Window, x: np.ndarray, z: np.ndarray, sol: Solution) -> None:
    lay = model.layout
    sl = slice(w.start, w.start + w.length)
    d = model.data
    sol.p[sl] = x[lay.var("P")]
    sol.sch[sl] = x[lay.var("Sch")]
    sol.sdis[sl] = x[lay.var("Sdis")]
    sol.soc[sl] = x[lay.var("SoC")]
    sol.phi[sl] = x[lay.var("Phi")]
    sol.alpha[sl] = x[lay.var("Alpha")]
    sol.beta[sl] = x[lay.var("Beta")]
    sol.gimp[sl] = x[lay.var("Gimp")]
    sol.gexp[sl] = x[lay.var("Gexp")]
    sol.aimp[sl] = x[lay.var("Aimp")]
    sol.aexp[sl] = x[lay.var("Aexp")]
    sol.nu[sl] = z[model.rows("Agent-balance")]
    sol.lam[sl] = -z[model.rows("Community-balance")]
    sol.mu_imp[sl] = z[model.rows("Community-import")]
    sol.mu_exp[sl] = -z[model.rows("Community-export")]
    links = d.link_arcs
    if len(links):
        sol.rho[sl, links] = z[model.rows("Link-balance")]
    sol.vfac[sl] = w.discount[:, None] * w.value[None, :]
    # interior-point noise: energies within SNAP_KWH of zero are reported as exactly zero
    for arr in (sol.p, sol.sch, sol.sdis, sol.phi, sol.alpha, sol.beta, sol.gimp, sol.gexp, sol.aimp, sol.aexp):
        part = arr[sl]
        part[np.abs(part) < SNAP_KWH] = 0.0


def clear_market(case: Case, *, soc_init: Mapping[str, float] | None = None, horizon: int | None = None,
                 battery_model: BatteryModel | str | None = None,
                 method: MarketMethod | str = MarketMethod.AUTO, steps_after: int = 0,
                 soc_target: Mapping[str, float] | None = None) -> MarketResult:
    """Clear the market of every step of ``case`` (shared MODEL.md, eqs. 1–18).

    Parameters
    ----------
    case : Case
        The case; its passive agents take no part.
    soc_init : mapping of str to float, optional
        Battery name -> SoC before step 0 [fraction of capacity], overriding
        ``[battery].soc_init`` for the batteries named.
    horizon : int, optional
        Steps per QP window, overriding ``[market].horizon`` (1 = sequential). Windows of
        ``horizon`` steps roll over the case; the last one may be shorter.
    battery_model : BatteryModel or str, optional
        ``"physical"`` or ``"paper"``, overriding ``[market].battery_model``.
    method : MarketMethod or str
        ``"auto"`` (default): the sequential market (horizon 1) is solved from its KKT
        conditions by :mod:`gridmarket.market.fast`, any step it cannot settle and every other
        case by Clarabel; ``"fast"``: the fast path only (MarketError where it does not
        apply); ``"qp"``: Clarabel for every window. ``MarketResult.solver`` says which ran
        (``"fast"``, ``"clarabel"``, ``"fast+clarabel"``, or ``"none"`` when there is nothing
        to clear), ``window_solver`` per window.
    steps_after : int
        Steps of the run after this case's last step, for a case that is a slice of a longer
        run (``run_long``'s chunks): with ``[battery] terminal_soc = "cyclic"`` the batteries
        must be back at ``soc_target`` at the end of the whole run, not of the slice.
    soc_target : mapping of str to float, optional
        Battery name -> SoC at the end of the run (cyclic) [fraction]; by default the SoC
        before step 0 of this call. A slice of a longer run passes the run's initial SoC.

    Returns
    -------
    MarketResult
        Frames, dispatch arrays [kWh per step], prices [currency/kWh] and welfare [currency].

    Raises
    ------
    MarketError
        An input breaks a rule (checked before solving; names step, group and agents), or a
        window QP is infeasible, unbounded or not solved (names the step and the likely
        constraint group); with ``method="fast"``, also when the fast path does not apply.
    """
    method = MarketMethod(method)
    t_build = 0.0
    t_solve = 0.0
    data: MarketData = market_data(case, battery_model=battery_model, soc_init=soc_init, soc_target=soc_target,
                                   steps_after=steps_after)
    H = int(horizon if horizon is not None else case.market.horizon)
    assert_valid_market(data, horizon=H)
    T = data.steps
    sol = Solution.empty(data)
    statuses: list[MarketStatus] = []
    solvers_used: list[str] = []
    iterations = 0
    if data.n_m and T:
        H = min(H, T)
        solvers: dict[int, WindowSolver] = {}
        lo, hi = data.case.battery.soc_min, data.case.battery.soc_max

        def clarabel_window(start: int, L: int, soc: np.ndarray) -> np.ndarray:
            nonlocal t_build, t_solve, iterations
            ws = solvers.get(L)
            if ws is None:
                t0 = time.perf_counter()
                ws = solvers[L] = WindowSolver(create_model(data, L))
                t_build += time.perf_counter() - t0
            w = data.window(start, L, soc)
            out = ws.solve(w)
            t_solve += out.seconds
            iterations += out.iterations
            if not out.status.ok:
                raise diagnose(ws.model, w, out)
            statuses.append(out.status)
            solvers_used.append("clarabel")
            _extract(ws.model, w, out.x, out.z, sol)
            # the solver meets the SoC bounds to ~1e-9; keep the next window's start inside them
            return np.asarray(sol.soc[start + L - 1])

        why = fast_unsupported(data, horizon=H) if method is not MarketMethod.QP else "method='qp'"
        if why is None:
            t0 = time.perf_counter()
            plan = fast_plan(data)
            t_build += time.perf_counter() - t0
            t0 = time.perf_counter()
            build_before = t_build
            order: list[tuple[int, str]] = []

            def fallback(t: int, soc: np.ndarray) -> np.ndarray:
                order.append((t, "clarabel"))
                return clarabel_window(t, 1, soc)

            stats: FastStats = solve_sequential(plan, sol, data.soc_init.copy(),
                                                None if method is MarketMethod.FAST else fallback, snap=SNAP_KWH)
            # wall time of the sequence, Clarabel fallbacks included, their QP assembly excluded
            t_solve = time.perf_counter() - t0 - (t_build - build_before)
            iterations += stats.iterations
            if stats.failures:
                log.info("market: %d of %d steps solved by Clarabel (fast path: %s)", stats.qp_steps, T,
                         "; ".join(f"step {t}: {r}" for t, r in list(stats.failures.items())[:3]))
            # per-window records in step order: fast steps are OPTIMAL
            byq = dict(order)
            qstat = iter(statuses)
            statuses = [next(qstat) if t in byq else MarketStatus.OPTIMAL for t in range(T)]
            solvers_used = ["clarabel" if t in byq else "fast" for t in range(T)]
        elif method is MarketMethod.FAST:
            msg = f"market of case {case.name!r}: the fast path does not apply: {why}; use method='auto' or 'qp'"
            raise MarketError(msg, group="Market-method")
        else:
            soc = data.soc_init.copy()
            for start in range(0, T, H):
                L = min(H, T - start)
                soc = np.clip(clarabel_window(start, L, soc), lo, hi)
    else:
        H = max(1, min(H, T))
        statuses = [MarketStatus.NOT_SOLVED]
    worst = MarketStatus.ALMOST_OPTIMAL if MarketStatus.ALMOST_OPTIMAL in statuses else statuses[0]
    kinds = sorted(set(solvers_used), key=["fast", "clarabel"].index) if solvers_used else ["none"]
    return make_result(data, sol, status=worst, window_status=tuple(statuses), horizon=H, iterations=iterations,
                       build_seconds=t_build, solve_seconds=t_solve, solver="+".join(kinds),
                       window_solver=tuple(solvers_used))
