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
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from enum import Enum

import clarabel
import numpy as np
import scipy.sparse as sp

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
from gridmarket.market.network import NetworkConstraints, check_network, window_rows
from gridmarket.market.prices import Solution
from gridmarket.market.results import MarketResult, MarketStatus, make_result
from gridmarket.market.validate import assert_valid_market

__all__ = ["SCALE_FROM_KWH", "SNAP_KWH", "MarketMethod", "WindowOutcome", "WindowSolver", "clear_market", "kwh_scale",
           "solver_settings"]

log = logging.getLogger(__name__)


class MarketMethod(str, Enum):
    """How :func:`clear_market` solves the market."""

    AUTO = "auto"  #: the fast KKT path where it applies (sequential market), Clarabel elsewhere
    FAST = "fast"  #: the fast path only; raise MarketError where it does not apply
    QP = "qp"  #: the general QP on Clarabel for every window (the reference)

#: energies closer than this to zero [kWh] are reported as 0 (below the solver's tolerance)
SNAP_KWH = 1e-9
#: the QP is solved in scaled units when an agent's energy per step exceeds this [kWh] (kwh_scale)
SCALE_FROM_KWH = 100.0
#: QPs of independent steps (no battery) with network rows solved side by side
QP_THREADS = min(4, os.cpu_count() or 1)
#: Clarabel's gap and feasibility tolerances in a scaled QP (the default ones: solver_settings)
SCALED_TOL = 1e-13

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


def kwh_scale(data: MarketData) -> float:
    """The energy unit [kWh] of the QP's variables for ``data``: 1 while every agent's energy per
    step is at most :data:`SCALE_FROM_KWH`, else the power of ten nearest to a tenth of the
    largest (so the largest scaled energy lies in [~3, ~30]).

    Clarabel's tolerances (1e-9) are absolute on residuals of order one: a consumer of 5e5 kWh
    per step with ``a = 0.02`` puts 5e9 into the objective and the solver stalls or reports a
    market with unlimited grid imports infeasible (issue 15). Scaled, the inputs within the
    documented limits (1e6 kW per agent) clear.
    """
    big = max([float(np.max(x, initial=0.0)) for x in (np.abs(data.energy_kwh), data.sch_max, data.sdis_max)])
    return 1.0 if big <= SCALE_FROM_KWH else float(10.0 ** np.round(np.log10(big / 10.0)))


class WindowSolver:
    """A Clarabel solver bound to one :class:`MarketModel`, updated window after window.

    With ``scale = s > 1`` [kWh] (default :func:`kwh_scale` of the model's data) Clarabel sees
    the scaled problem ``x = D x'`` (energies in units of ``s`` kWh, SoC as is), every row divided
    by its largest coefficient (``E``) and the objective by ``s²`` (``σ = 1/s²``: the quadratic
    coefficients stay as they are, prices become ``b/s``); ``x = D x'`` and the duals
    ``z = E z' / σ`` are returned in market units, so prices are unchanged. (One unit for all
    energies: scaling each agent by its own size was measured to converge to a worse objective.)
    """

    def __init__(self, model: MarketModel, settings: clarabel.DefaultSettings | None = None, *,
                 scale: float | None = None) -> None:
        self.model = model
        self.scale = kwh_scale(model.data) if scale is None else float(scale)
        if settings is None:
            settings = solver_settings()
            if self.scale != 1.0:
                # the small agents beside a big one are 1e-5 of its size: their accuracy (and
                # their communities' prices) needs gaps below the default 1e-9
                settings.tol_gap_abs = settings.tol_gap_rel = settings.tol_feas = SCALED_TOL
        self.settings = settings
        self._solver: clarabel.DefaultSolver | None = None
        self._no_refine: clarabel.DefaultSettings | None = None
        self._base: tuple[sp.csc_matrix, sp.csc_matrix, np.ndarray, np.ndarray] | None = None
        n = model.layout.n
        self._col = np.ones(n)
        self._row = np.ones(model.A.shape[0])
        self._obj = 1.0
        if self.scale != 1.0:
            self._col[:] = self.scale
            self._col[model.layout.var("SoC").ravel()] = 1.0
            big = abs(model.A @ sp.diags(self._col)).max(axis=1).toarray().ravel()
            self._row = 1.0 / np.where(big > 0, big, 1.0)
            self._obj = self.scale ** -2

    def warm(self) -> None:
        """Build what :meth:`solve_rows` caches, before threads call it side by side."""
        self._scaled_base()
        self._rows_settings()

    def _rows_settings(self) -> clarabel.DefaultSettings:
        """Settings of a window with network rows: the model's, without iterative refinement of
        the KKT solves (half the time of such a window on the Costa Rica cases; the termination
        tolerances still hold, and a window that does not reach them is solved again with it)."""
        s = self._no_refine
        if s is None:
            s = self._no_refine = solver_settings()
            for k in ("tol_gap_abs", "tol_gap_rel", "tol_feas"):
                setattr(s, k, getattr(self.settings, k))
            s.iterative_refinement_enable = False
        return s

    def _scaled_base(self) -> tuple[sp.csc_matrix, sp.csc_matrix, np.ndarray, np.ndarray]:
        """The model's scaled ``P`` and ``A`` (CSC, sorted) and, per entry of ``A``, its column
        and its place within the column (cached: every network window reuses them)."""
        cached = self._base
        if cached is None:
            m = self.model
            dc = sp.diags(self._col)
            P = sp.csc_matrix(self._obj * (dc @ m.P @ dc))
            A = sp.csc_matrix(sp.diags(self._row) @ m.A @ dc)
            P.sort_indices()
            A.sort_indices()
            cnt = np.diff(A.indptr)
            ecol = np.repeat(np.arange(A.shape[1]), cnt)
            cached = (P, A, ecol, np.arange(A.nnz) - A.indptr[ecol])
            self._base = cached
        return cached

    def _augmented(self, sub: sp.csc_matrix, net_row: np.ndarray, n: int, n_rows: int
                   ) -> tuple[sp.csc_matrix, sp.csc_matrix]:
        """Scaled ``P`` and ``A`` of the model with ``R`` network rows ``sub`` (scaled, CSC,
        sorted) and their slacks: ``A = [[A₀, 0], [sub, −diag(net_row)], [0, −I]]``,
        ``P = diag(P₀, 0)``, assembled column by column without sparse block operations."""
        P0, A0, ecol0, k0 = self._scaled_base()
        R = sub.shape[0]
        c0, c1 = np.diff(A0.indptr), np.diff(sub.indptr)
        left = np.concatenate([[0], np.cumsum(c0 + c1)])
        nnz_left = int(left[-1])
        data = np.empty(nnz_left + 2 * R)
        ind = np.empty(nnz_left + 2 * R, dtype=np.int64)
        pos0 = left[ecol0] + k0
        data[pos0], ind[pos0] = A0.data, A0.indices
        ecol1 = np.repeat(np.arange(n), c1)
        pos1 = left[ecol1] + c0[ecol1] + (np.arange(sub.nnz) - sub.indptr[ecol1])
        data[pos1], ind[pos1] = sub.data, sub.indices + n_rows
        j = np.arange(R)
        data[nnz_left + 2 * j], ind[nnz_left + 2 * j] = -net_row, n_rows + j
        data[nnz_left + 2 * j + 1], ind[nnz_left + 2 * j + 1] = -1.0, n_rows + R + j
        indptr = np.concatenate([left, nnz_left + 2 * (j + 1)])
        A = sp.csc_matrix((data, ind, indptr), shape=(n_rows + 2 * R, n + R))
        P = sp.csc_matrix((P0.data, P0.indices, np.concatenate([P0.indptr, np.full(R, P0.indptr[-1])])),
                          shape=(n + R, n + R))
        return P, A

    def solve(self, w: Window) -> WindowOutcome:
        """Solve the model with the data of window ``w``."""
        t0 = time.perf_counter()
        q, b = self.model.vectors(w)
        scaled = self.scale != 1.0
        if scaled:
            q = self._obj * self._col * q
            b = self._row * b
        if self._solver is None:
            m = self.model
            cones = []
            if m.n_zero:
                cones.append(clarabel.ZeroConeT(m.n_zero))
            if m.n_nonneg:
                cones.append(clarabel.NonnegativeConeT(m.n_nonneg))
            P, A = m.P, m.A
            if scaled:
                dc = sp.diags(self._col)
                P = sp.csc_matrix(self._obj * (dc @ P @ dc))
                A = sp.csc_matrix(sp.diags(self._row) @ A @ dc)
                P.sort_indices()
                A.sort_indices()
            self._solver = clarabel.DefaultSolver(P, q, A, b, cones, self.settings)
        else:
            self._solver.update(q=q, b=b)
        sol = self._solver.solve()
        name = str(sol.status)
        x, z = np.asarray(sol.x), np.asarray(sol.z)
        if scaled:
            x = self._col * x
            z = self._row * z / self._obj
        return WindowOutcome(x, z, _STATUS.get(name, MarketStatus.NUMERICAL_ERROR),
                             name, int(sol.iterations), time.perf_counter() - t0)

    def solve_rows(self, w: Window, rows: sp.spmatrix, rhs: np.ndarray, penalty: float) -> WindowOutcome:
        """Solve window ``w`` with extra rows ``rows @ x − slack <= rhs``, ``slack >= 0`` priced at
        ``penalty`` per unit (network constraints, :mod:`gridmarket.market.network`).

        A one-off solver (the rows differ from window to window). ``x`` holds the model's columns
        then the slacks; ``z`` the model's rows, then the extra rows' duals (>= 0), then the
        slacks' sign rows.
        """
        t0 = time.perf_counter()
        m = self.model
        R = rows.shape[0]
        n, n_rows = m.layout.n, m.A.shape[0]
        q, b = m.vectors(w)
        q = np.concatenate([q, np.full(R, float(penalty))])
        b = np.concatenate([b, np.asarray(rhs, dtype=float), np.zeros(R)])
        col = np.concatenate([self._col, np.ones(R)])
        # the model's rows keep their scaling (the slack columns add nothing to them); a network
        # row is scaled by its largest coefficient on the scaled columns, a slack's sign row by 1
        net_row = np.ones(R)
        if self.scale != 1.0 and R:
            sub = sp.csc_matrix(rows @ sp.diags(self._col))
            big = np.maximum(abs(sub).max(axis=1).toarray().ravel(), 1.0)  # the slack's own −1
            net_row = 1.0 / big
            sub = sp.csc_matrix(sp.diags(net_row) @ sub)
        else:  # unscaled: the rows as they are
            sub = sp.csc_matrix(rows)
        sub.sort_indices()
        row = np.concatenate([self._row, net_row, np.ones(R)])
        Ps, As = self._augmented(sub, net_row, n, n_rows)
        cones = []
        if m.n_zero:
            cones.append(clarabel.ZeroConeT(m.n_zero))
        cones.append(clarabel.NonnegativeConeT(m.n_nonneg + 2 * R))
        qs, bs = self._obj * col * q, row * b
        sol = clarabel.DefaultSolver(Ps, qs, As, bs, cones, self._rows_settings()).solve()
        name = str(sol.status)
        if _STATUS.get(name) is not MarketStatus.OPTIMAL:  # again with the refinement's accuracy
            sol = clarabel.DefaultSolver(Ps, qs, As, bs, cones, self.settings).solve()
            name = str(sol.status)
        x = col * np.asarray(sol.x)
        z = row * np.asarray(sol.z) / self._obj
        return WindowOutcome(x, z, _STATUS.get(name, MarketStatus.NUMERICAL_ERROR),
                             name, int(sol.iterations), time.perf_counter() - t0)


def network_matrix(model: MarketModel, nc: NetworkConstraints, idx: np.ndarray, start: int) -> sp.csc_matrix:
    """Rows ``idx`` of ``nc`` on the columns of ``model`` for the window starting at ``start`` (CSC,
    sorted indices): ``sens[r, n] / Δt`` on agent n's ``P`` and ``S_ch`` and minus that on its
    ``S_dis`` at the row's step (``p_t`` in kW is energy per step / Δt); passive agents' columns
    are dropped."""
    d = model.data
    lay = model.layout
    dense = nc.sens[idx].toarray()  # a few rows of one window: dense is cheaper than sparse slicing
    k = np.asarray(nc.step, dtype=np.int64)[idx] - start
    rr, cc, vv = [], [], []
    for var, where, sign in (("P", d.pos[d.pq], 1.0), ("Sch", d.pos[d.bat], 1.0), ("Sdis", d.pos[d.bat], -1.0)):
        if not len(where):
            continue
        blk = dense[:, where]
        r, c = np.nonzero(blk)
        rr.append(r)
        cc.append(lay.var(var)[k[r], c])
        vv.append(sign * blk[r, c] / d.step_hours)
    if not rr:
        return sp.csc_matrix((len(idx), lay.n))
    return sp.csc_matrix((np.concatenate(vv), (np.concatenate(rr), np.concatenate(cc))), shape=(len(idx), lay.n))


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
    if out.status is MarketStatus.INFEASIBLE and not _certificate_holds(model, w, out.z):
        return _numerical_failure(model, w, out)
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


def _certificate_holds(model: MarketModel, w: Window, z: np.ndarray, tol: float = 1e-6) -> bool:
    """Whether ``z`` proves the window infeasible (a Farkas certificate: ``z`` in the dual cone,
    ``Aᵀz = 0``, ``bᵀz < 0``, to ``tol`` relative to the sizes of A, b and z), and the window can
    be infeasible at all: without batteries it cannot (grid imports and exports are unlimited,
    every bound interval is non-empty once the inputs are validated)."""
    if model.data.n_b == 0 or not np.all(np.isfinite(z)):
        return False
    _, b = model.vectors(w)
    zn = float(np.abs(z).max(initial=0.0))
    if zn == 0.0:
        return False
    if float(z[model.n_zero:].min(initial=0.0)) < -tol * zn:
        return False
    scale_a = float(abs(model.A).max()) if model.A.nnz else 1.0
    if float(np.abs(model.A.T @ z).max(initial=0.0)) > tol * scale_a * zn:
        return False
    return float(b @ z) < 0.0


def _numerical_failure(model: MarketModel, w: Window, out: WindowOutcome) -> MarketError:
    """The error of a window the solver called infeasible although it is not: name the range of the
    inputs (the real cause: their scale), the largest agent and the limits."""
    d = model.data
    e = np.abs(w.energy_kwh)
    nz = e[e > 0]
    where = ""
    if nz.size:
        k, i = np.unravel_index(int(np.argmax(e)), e.shape)
        where = (f"; energies per step span {float(nz.min()):.3g} to {float(nz.max()):.3g} kWh (largest: "
                 f"{d.names[int(d.pq[i])]} at step {w.start + int(k)})")
    reason = ("the window has no battery, so with unlimited grid imports and exports it is feasible"
              if d.n_b == 0 else "its infeasibility certificate does not hold (Aᵀz ≠ 0 or bᵀz ≥ 0)")
    msg = (f"step {w.start}: market not solved {status_text(out)}: the solver reported it infeasible, but"
           f" {reason}: a numerical failure on badly scaled inputs{where}; the documented limit is 1e6 kW"
           " per agent")
    return MarketError(msg, step=w.start, group="Solver")


def status_text(out: WindowOutcome) -> str:
    """``(Clarabel status X)``."""
    return f"(Clarabel status {out.solver_status})"


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
    pools = d.pool_arcs
    if len(pools):
        sol.rho[sl, pools] = z[model.rows("Pool-balance")][:, d.arc_pool[pools]]
    sol.vfac[sl] = w.discount[:, None] * w.value[None, :]
    # interior-point noise: energies within SNAP_KWH of zero are reported as exactly zero
    for arr in (sol.p, sol.sch, sol.sdis, sol.phi, sol.alpha, sol.beta, sol.gimp, sol.gexp, sol.aimp, sol.aexp):
        part = arr[sl]
        part[np.abs(part) < SNAP_KWH] = 0.0


@dataclass(frozen=True)
class _Prepared:
    """A window ready for Clarabel: its solver, data, rows of ``nc`` and their matrix (None: no rows)."""

    ws: WindowSolver
    w: Window
    idx: np.ndarray
    rows: sp.csc_matrix | None


class _Reuse:
    """Steps of an earlier clearing (``prev``) whose QP a new clearing with rows ``nc`` repeats."""

    def __init__(self, prev: MarketResult, nc: NetworkConstraints, data: MarketData) -> None:
        self.prev = prev
        self.nc = nc
        self.data = data
        old = prev.network_rows
        self.old: NetworkConstraints | None = old if isinstance(old, NetworkConstraints) and old.rows else None
        self.fields = [f.name for f in fields(Solution)]
        # each step's rows, found once (not by a scan of every row per step)
        self.new_rows = _rows_by_step(nc)
        self.old_rows = _rows_by_step(self.old) if self.old is not None else {}

    def matches(self, t: int, soc: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The rows of step ``t`` in the new and the earlier clearing when, with SoC ``soc`` before
        it, the step is the same QP as there; else None."""
        old, prev, nc = self.old, self.prev, self.nc
        if old is None or len(prev.window_status) != self.data.steps:
            return None
        idx, pidx = self.new_rows.get(t), self.old_rows.get(t)
        if idx is None or pidx is None or len(idx) != len(pidx):
            return None
        if [nc.name[i] for i in idx] != [old.name[i] for i in pidx] or \
                [nc.kind[i] for i in idx] != [old.kind[i] for i in pidx]:
            return None
        if not np.array_equal(nc.rhs[idx], old.rhs[pidx]) or \
                not np.array_equal(nc.sens[idx].toarray(), old.sens[pidx].toarray()):
            return None
        b = self.data.battery
        before = np.clip(prev.solution.soc[t - 1], b.soc_min, b.soc_max) if t else self.data.soc_init
        if not np.array_equal(np.asarray(soc, dtype=float), np.asarray(before, dtype=float)):
            return None
        return idx, pidx

    def step(self, t: int, soc: np.ndarray, sol: Solution, net_dual: np.ndarray,
             net_slack: np.ndarray) -> MarketStatus | None:
        """Copy step ``t`` of the earlier clearing into ``sol`` (and its rows' duals and slacks)
        when its QP is the same (:meth:`matches`); its window status, or None."""
        rows = self.matches(t, soc)
        if rows is None:
            return None
        idx, pidx = rows
        prev = self.prev
        for name in self.fields:
            getattr(sol, name)[t] = getattr(prev.solution, name)[t]
        net_dual[idx] = prev.network_duals[pidx]
        net_slack[idx] = prev.network_slack[pidx]
        return prev.window_status[t]


def _rows_by_step(nc: NetworkConstraints) -> dict[int, np.ndarray]:
    """Step -> indices of its rows in ``nc`` (in row order)."""
    step = np.asarray(nc.step, dtype=np.int64)
    order = np.argsort(step, kind="stable")
    steps, first = np.unique(step[order], return_index=True)
    return {int(t): part for t, part in zip(steps.tolist(), np.split(order, first[1:]), strict=True)}


def clear_market(case: Case, *, soc_init: Mapping[str, float] | None = None, horizon: int | None = None,
                 battery_model: BatteryModel | str | None = None,
                 method: MarketMethod | str = MarketMethod.AUTO, steps_after: int = 0,
                 soc_target: Mapping[str, float] | None = None, pools: bool | None = None,
                 network: NetworkConstraints | None = None, reuse: MarketResult | None = None) -> MarketResult:
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
    pools : bool, optional
        How linked communities trade (:mod:`gridmarket.market.pool`): True, every clique of
        linked communities through one pool (O(C) variables); False, over one arc per ordered
        pair (MODEL.md eq. 8); None (default), pools for cliques of more than
        ``ARC_CLIQUE_MAX`` communities. The results are the same; the ``settlements`` frame
        then has one row per community and pool instead of per partner community.
    network : NetworkConstraints, optional
        Linear network rows ``sens @ p_t − slack <= rhs`` with slacks priced at
        ``case.market.network_penalty`` (:mod:`gridmarket.market.network`). Windows that hold rows
        are solved by Clarabel (the fast path hands those steps over); the result's
        ``network_duals``, ``network_slack``, ``price_voltage``, ``price_congestion``,
        ``network_congestion_rent`` and ``network_penalty_cost`` report them. None or no rows:
        the market as without it.
    reuse : MarketResult, optional
        An earlier clearing of the same case with the same keywords (and other rows): a step of
        the sequential market whose rows are the same as there (elements, coefficients and right-hand
        sides, bit for bit) and whose SoC before it is the same takes that clearing's solution
        instead of a new QP (the QP would be the same; the network-aware outer loop keeps the rows
        of the steps already within their limits).

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
                                   steps_after=steps_after, pools=pools)
    H = int(horizon if horizon is not None else case.market.horizon)
    assert_valid_market(data, horizon=H)
    T = data.steps
    sol = Solution.empty(data)
    n_agents = len(case.agents)
    nc = network if network is not None else NetworkConstraints.empty(n_agents)
    check_network(nc, n_agents=n_agents, steps=T)
    net_dual = np.zeros(nc.rows)
    net_slack = np.zeros(nc.rows)
    statuses: list[MarketStatus] = []
    solvers_used: list[str] = []
    iterations = 0
    if data.n_m and T:
        H = min(H, T)
        solvers: dict[int, WindowSolver] = {}
        lo, hi = data.case.battery.soc_min, data.case.battery.soc_max

        def prepare(start: int, L: int, soc: np.ndarray) -> _Prepared:
            nonlocal t_build
            ws = solvers.get(L)
            if ws is None:
                t0 = time.perf_counter()
                ws = solvers[L] = WindowSolver(create_model(data, L))
                t_build += time.perf_counter() - t0
            w = data.window(start, L, soc)
            idx = window_rows(nc, start, L)
            rows = None
            if len(idx):
                t0 = time.perf_counter()
                rows = network_matrix(ws.model, nc, idx, start)
                t_build += time.perf_counter() - t0
            return _Prepared(ws, w, idx, rows)

        def run(prep: _Prepared) -> WindowOutcome:
            if prep.rows is None:
                return prep.ws.solve(prep.w)
            return prep.ws.solve_rows(prep.w, prep.rows, nc.rhs[prep.idx], case.market.network_penalty)

        def apply(prep: _Prepared, out: WindowOutcome) -> np.ndarray:
            nonlocal t_solve, iterations
            ws, w, idx = prep.ws, prep.w, prep.idx
            if prep.rows is not None:
                n, m = ws.model.layout.n, ws.model.A.shape[0]
                net_slack[idx] = out.x[n:n + len(idx)]
                net_dual[idx] = out.z[m:m + len(idx)]
                out = replace(out, x=out.x[:n], z=out.z[:m])
            t_solve += out.seconds
            iterations += out.iterations
            if not out.status.ok:
                raise diagnose(ws.model, w, out)
            statuses.append(out.status)
            solvers_used.append("clarabel")
            _extract(ws.model, w, out.x, out.z, sol)
            # the solver meets the SoC bounds to ~1e-9; keep the next window's start inside them
            return np.asarray(sol.soc[w.start + w.length - 1])

        def clarabel_window(start: int, L: int, soc: np.ndarray) -> np.ndarray:
            prep = prepare(start, L, soc)
            return apply(prep, run(prep))

        why = fast_unsupported(data, horizon=H) if method is not MarketMethod.QP else "method='qp'"
        if why is None:
            t0 = time.perf_counter()
            plan = fast_plan(data)
            t_build += time.perf_counter() - t0
            t0 = time.perf_counter()
            build_before = t_build
            order: list[tuple[int, str]] = []

            same = _Reuse(reuse, nc, data) if reuse is not None and nc.rows else None
            ready: dict[int, tuple[_Prepared, WindowOutcome]] = {}
            if nc.rows and not data.n_b and method is not MarketMethod.FAST and QP_THREADS > 1:
                # no battery: the steps with rows do not depend on one another (no SoC between
                # them), so their QPs are solved side by side (Clarabel releases the GIL); the
                # sequence below takes each result in its turn, as if solved there
                todo = [t for t in sorted(set(np.asarray(nc.step, dtype=np.int64).tolist()))
                        if same is None or same.matches(t, data.soc_init) is None]
                if len(todo) > 1:
                    preps = [prepare(t, 1, data.soc_init) for t in todo]
                    preps[0].ws.warm()
                    with ThreadPoolExecutor(min(QP_THREADS, len(todo))) as pool:
                        ready = {t: (p, o) for t, p, o in zip(todo, preps, pool.map(run, preps), strict=True)}

            def fallback(t: int, soc: np.ndarray) -> np.ndarray:
                order.append((t, "clarabel"))
                if same is not None:
                    got = same.step(t, soc, sol, net_dual, net_slack)
                    if got is not None:
                        statuses.append(got)
                        return np.asarray(sol.soc[t])
                if t in ready:
                    return apply(*ready.pop(t))
                return clarabel_window(t, 1, soc)

            force = None
            if nc.rows:  # steps with network rows go to Clarabel
                force = np.zeros(T, dtype=bool)
                force[np.asarray(nc.step, dtype=np.int64)] = True
            stats: FastStats = solve_sequential(plan, sol, data.soc_init.copy(),
                                                None if method is MarketMethod.FAST else fallback, snap=SNAP_KWH,
                                                force=force)
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
                       window_solver=tuple(solvers_used), network=nc, network_duals=net_dual, network_slack=net_slack)
