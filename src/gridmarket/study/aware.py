"""The network-aware market's outer loop (shared MODEL.md, *Network-aware market*):
clear → AC power flow (OpenDSS) → sensitivities at the new operating point and a grown
active set → clear again, until the AC power flow is within limits or
``[market].network_iterations`` clears have run.

Entry point: :func:`clear_aware`. With ``[market].network = "blind"`` the study calls
:func:`~gridmarket.market.clear_market` directly; :func:`clear_aware` is for ``"aware"``
(with nothing near a limit it returns the blind clearing unchanged).

Rows and their linear model (per step ``t``, around the last AC operating point ``p⁰``)::

    voltage, upper:  K (p − p⁰) ≤ V_max − δ − V⁰         (pu)
    voltage, lower: −K (p − p⁰) ≤ V⁰ − (V_min + δ)       (pu)
    current:         S (p − p⁰) ≤ (1 − δ) I_max − |I⁰|    (A)
    transformer:     T (p − p⁰) ≤ (1 − δ) − loading⁰       (fraction of the normal kVA)

``p`` is each agent's net consumption [kW] (``(P + S) / step_hours``; passive agents have zero
columns). **[choice]** The margin δ (``[market].network_margin_pu``) is kept from voltage
limits in pu and, as the same fraction, from current and transformer ratings. A row enters
the active set of its step when the AC power flow violates it or comes within the margin;
rows never leave it (no cycling); a step gets its rows once its AC power flow violates a
limit. **[choice]** To keep the QP small, sensitivities below :data:`DROP_REL` of a row's
largest are dropped and a row parallel (cosine above :data:`MERGE_COS`) to a tighter row of its
step is left to that row (rows violated in the AC power flow are always kept); between outer
iterations only the steps whose dispatch changed are solved again. **[choice]** Each row is
divided by its largest agent sensitivity before it goes to the market, so its slack is in kW-equivalent (the agent that
moves the quantity most would have to move that many kW) and ``[market].network_penalty`` is a
price per kWh-equivalent as the case schema says; :attr:`AwareResult.duals` are converted back
to currency per unit of the row's own quantity (pu, A, fraction) per step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from gridmarket.case.model import Case
from gridmarket.enums import AgentKind
from gridmarket.errors import NetworkError
from gridmarket.market import MarketResult, clear_market
from gridmarket.market.network import NetworkConstraints
from gridmarket.network import ElementSet, OpenDSSNetwork, PowerFlowResult, monitored_mask
from gridmarket.network import sensitivity as sens
from gridmarket.study.dispatch import dispatch_kw

__all__ = ["RESIDUAL_COLUMNS", "RESIDUAL_FILE", "RESIDUAL_FILE_COLUMNS", "SENSITIVITY_FLOOR", "AwareResult",
           "AwareTally", "clear_aware", "relief_per_kw"]

Progress = Callable[[str, int, int], None]

#: an agent whose |sensitivity| is below this cannot influence a row [pu/kW, A/kW, 1/kW]
SENSITIVITY_FLOOR = 1e-6
#: columns of :attr:`AwareResult.residual`
RESIDUAL_COLUMNS = ("step", "time", "kind", "element", "value", "limit", "cause")
#: a row's sensitivities below this fraction of its largest are left out of it (sparse rows) [-]
DROP_REL = 1e-2
#: a row whose direction is within this cosine of a tighter row of its step is left to that row [-]
MERGE_COS = 0.99
#: the study's results file of the violations the aware market left, and its columns
RESIDUAL_FILE = "network_residual.csv"
RESIDUAL_FILE_COLUMNS = ("iteration", *RESIDUAL_COLUMNS)
_SLACK_TOL = 1e-6  # slack above this [kW-equivalent] counts as used
_SAME_KW = 1e-7  # a step whose dispatch moved less than this [kW] keeps its power flow
_FLOW_BLOCK = 64  # steps whose voltages are held before their loadings and limits are checked
_NEAR_PAD = 1e-9  # states are kept this much [pu, fraction] beyond the margin (rounding)


@dataclass
class AwareResult:
    """Outcome of :func:`clear_aware`.

    Attributes
    ----------
    market : MarketResult
        The final clearing (with the network constraints of the last operating point).
    flow : PowerFlowResult
        The AC power flow of ``market``'s dispatch.
    kw : numpy.ndarray
        (steps, n_agents) the dispatch sent to OpenDSS (:func:`~gridmarket.study.dispatch.dispatch_kw`).
    constraints : NetworkConstraints or None
        The rows of the final clearing (scaled to kW-equivalent, see the module docstring);
        None when no row was ever active (the blind clearing).
    duals : numpy.ndarray
        (R,) dual of each row of ``constraints`` in currency per unit of the row's quantity
        (pu, A, fraction of rating) per step; ``market.network_duals`` divided by the row scale.
    residual : pandas.DataFrame
        Violations left in ``flow``, columns :data:`RESIDUAL_COLUMNS`, each with its cause.
    linearisation_error_pu : float
        max |V_AC − V_linear| over the voltage rows of the final clearing [pu]; 0 without rows.
    outer_iterations : int
        Clearings run (1 = the blind clearing was already within limits).
    step_iterations : numpy.ndarray
        (steps,) clearings in which the step had network rows, plus one.
    history : list of dict
        Per clearing: ``iteration``, ``rows``, ``violations``, ``near`` (rows within the margin not
        yet active), ``welfare``, ``seconds_sensitivity``, ``seconds_market``, ``seconds_flow``.
    stop_reason : str
    method : str
        Sensitivity method, ``"ymatrix"`` or ``"perturbed"``.
    """

    market: MarketResult
    flow: PowerFlowResult
    kw: np.ndarray
    constraints: NetworkConstraints | None
    duals: np.ndarray
    residual: pd.DataFrame
    linearisation_error_pu: float
    outer_iterations: int
    step_iterations: np.ndarray
    history: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = ""
    method: str = "ymatrix"

    def summary(self) -> dict[str, Any]:
        """Plain numbers for summary.json (the study writes one per chunk of each iteration):
        clearings, outer iterations per step (max, mean), rows (and binding: dual > 1e-9),
        linearisation error [pu], residual violations (total, by kind, by cause), the network
        rows' congestion rent and penalty cost [currency] (``MarketResult.network_congestion_rent``,
        ``network_penalty_cost``), seconds spent (sensitivities, market, power flow)."""
        h = self.history
        duals = np.asarray(getattr(self.market, "network_duals", np.zeros(0)), dtype=float)
        return {
            "network_outer_iterations": int(self.outer_iterations),
            "network_step_iterations_max": int(self.step_iterations.max()) if self.step_iterations.size else 0,
            "network_step_iterations_mean": float(self.step_iterations.mean()) if self.step_iterations.size else 0.0,
            "network_rows": 0 if self.constraints is None else len(self.constraints.name),
            "network_binding_rows": int(np.count_nonzero(duals > 1e-9)),
            "network_linearisation_error_pu": float(self.linearisation_error_pu),
            "network_residual_violations": int(len(self.residual)),
            "network_residual_by_kind": {str(k): int(v) for k, v in self.residual.groupby("kind").size().items()},
            "network_residual_by_cause": _by_cause(self.residual),
            "network_congestion_rent": float(getattr(self.market, "network_congestion_rent", 0.0)),
            "network_penalty_cost": float(getattr(self.market, "network_penalty_cost", 0.0)),
            "network_stop_reason": self.stop_reason,
            "network_sensitivity_method": self.method,
            "network_seconds": {part: float(sum(x[f"seconds_{part}"] for x in h))
                                for part in ("sensitivity", "market", "flow")},
        }


def _by_cause(residual: pd.DataFrame) -> dict[str, int]:
    """Residual violations counted by cause (the cause's text before its numbers)."""
    if not len(residual):
        return {}
    causes = residual["cause"].astype(str).str.split(" (", regex=False).str[0]
    return {str(k): int(v) for k, v in causes.value_counts().items()}


# --------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class _Row:
    kind: str  #: voltage | current | transformer
    name: str  #: node, line conductor or transformer
    side: int  #: +1 upper limit, −1 lower limit


class _Limits:
    """Every limited quantity of the network: monitored bus-phase voltages, rated line
    conductors, rated transformers (winding 1)."""

    def __init__(self, case: Case, model: sens.GridModel, node_names: list[str], monitored: np.ndarray) -> None:
        self.vmin, self.vmax = case.network.vmin_pu, case.network.vmax_pu
        self.delta = case.market.network_margin_pu
        self.node_names = [n for n, m in zip(node_names, monitored, strict=True) if m]
        y = {n: k for k, n in enumerate(model.node_names)}
        self.node_y = np.array([y[n] for n in self.node_names], dtype=np.intp)
        self.inv_base = 1.0 / model.base_v[self.node_y]
        rated = np.isfinite(model.norm_amps) & (model.norm_amps > 0)
        self.line_names = [n for n, r in zip(model.line_names, rated, strict=True) if r]
        self.line_rows = model.line_rows[np.flatnonzero(rated)]
        self.i_max = model.norm_amps[rated]
        self.line_pos = {n: k for k, n in enumerate(self.line_names)}
        self.tx_rated = np.array([bool(np.all(kva > 0)) for kva in model.tx_kva], dtype=bool)
        self.tx_names = [t for t, r in zip(model.tx_names, self.tx_rated, strict=True) if r]
        self.model = model
        self._cols: tuple[np.ndarray, np.ndarray] | None = None

    def limit(self, row: _Row) -> float:
        """The limit of ``row`` in its own unit (pu, A, fraction)."""
        if row.kind == "voltage":
            return self.vmax if row.side > 0 else self.vmin
        if row.kind == "current":
            return float(self.i_max[self.line_pos[row.name]])
        return 1.0

    def tx_loading(self, v: np.ndarray) -> np.ndarray:
        """(steps, rated transformers) loading at the node voltages ``v`` (steps, n) [fraction]."""
        if not self.tx_names:
            return np.zeros((v.shape[0], 0))
        return self.model.tx_loading(v)[:, self.tx_rated]

    def near(self, v: np.ndarray, tx: np.ndarray, watch: float) -> np.ndarray:
        """(steps,) whether anything is within the margin (plus ``watch``) of its limit at the
        node voltages ``v`` (steps, n) and transformer loadings ``tx`` (steps, rated transformers)."""
        d = self.delta + watch
        out = np.zeros(v.shape[0], dtype=bool)
        if self.node_y.size:
            vm = np.abs(v[:, self.node_y]) * self.inv_base
            out |= (vm.max(axis=1) >= self.vmax - d) | (vm.min(axis=1) <= self.vmin + d)
        if self.i_max.size:
            cur = np.abs(self.line_rows @ v.T).T
            out |= np.any(cur >= (1 - d) * self.i_max, axis=1)
        if tx.shape[1]:
            out |= tx.max(axis=1) >= 1 - d
        return out

    def scan(self, flow: PowerFlowResult, tx: np.ndarray, watch: float = 0.0
             ) -> tuple[dict[int, list[tuple[_Row, float]]], dict[int, list[_Row]]]:
        """Per step: violated rows with their values, and rows within the margin plus ``watch``
        (violated included). ``tx``: (steps, rated transformers) loading."""
        if self._cols is None:
            vc = {n: k for k, n in enumerate(flow.node_names)}
            lc = {n: k for k, n in enumerate(flow.line_phase_names)}
            self._cols = (np.array([vc[n] for n in self.node_names], dtype=np.intp),
                          np.array([lc[n] for n in self.line_names], dtype=np.intp))
        viol: dict[int, list[tuple[_Row, float]]] = {}
        near: dict[int, list[_Row]] = {}
        d = self.delta + watch
        v = flow.v_pu[:, self._cols[0]]
        i = flow.i_amps[:, self._cols[1]]
        ok = _converged(flow)
        v, i, tx = v.copy(), i.copy(), tx.copy()
        v[~ok], i[~ok], tx[~ok] = np.nan, np.nan, np.nan  # a step that did not converge has no limits to check
        checks = (
            ("voltage", self.node_names, v, self.vmax, self.vmax - d, 1),
            ("voltage", self.node_names, v, self.vmin, self.vmin + d, -1),
            ("current", self.line_names, i, self.i_max, (1 - d) * self.i_max, 1),
            ("transformer", self.tx_names, tx, 1.0, 1.0 - d, 1),
        )
        for kind, names, x, lim, band, side in checks:
            if x.shape[1] == 0:
                continue
            over = (x > lim + 1e-12) if side > 0 else (x < lim - 1e-12)
            close = (x >= band) if side > 0 else (x <= band)
            for t, k in zip(*np.nonzero(close), strict=True):
                near.setdefault(int(t), []).append(_Row(kind, names[k], side))
            for t, k in zip(*np.nonzero(over), strict=True):
                viol.setdefault(int(t), []).append((_Row(kind, names[k], side), float(x[t, k])))
        return viol, near


# --------------------------------------------------------------------------- the loop


def _agent_p_kw(case: Case, market: MarketResult) -> np.ndarray:
    """(steps, n_agents) each market agent's net consumption P + S [kW]; passive agents 0."""
    dt = case.time.step_hours
    p = (np.asarray(market.p_kwh) + np.asarray(market.s_kwh)) / dt
    passive = np.array([a.kind is AgentKind.PASSIVE for a in case.agents])
    p[:, passive] = 0.0
    return p


def _run_flow(net: OpenDSSNetwork, es: ElementSet, kw: np.ndarray, pf: np.ndarray | None, lim: _Limits,
              keep: set[int], watch: float, label: str, progress: Progress | None,
              prev: tuple[PowerFlowResult, np.ndarray, dict[int, np.ndarray], np.ndarray] | None = None,
              method: str = "snapshot") -> tuple[PowerFlowResult, dict[int, np.ndarray], np.ndarray]:
    """The AC power flow of ``kw``; the complex node voltages [V] of the steps in ``keep`` and of
    those where anything comes near its limit (the others are not kept: a year of states would
    not fit in memory); the rated transformers' loading of every step.

    ``prev`` (flow, kw, states, loading of the last power flow): only the steps whose dispatch
    changed by more than :data:`_SAME_KW` are solved again, the others keep their results (a
    snapshot step depends on its own powers only). ``method``: ``run_series``'s."""
    steps = kw.shape[0]
    states: dict[int, np.ndarray] = {}
    tx = np.full((steps, len(lim.tx_names)), np.nan)
    todo = np.arange(steps)
    if prev is not None and prev[0].steps == steps:
        todo = np.flatnonzero(np.any(np.abs(kw - prev[1]) > _SAME_KW, axis=1))
        tx = prev[3].copy()
        states = {t: v for t, v in prev[2].items() if t not in set(todo.tolist())}
        if todo.size == 0:
            return prev[0], states, tx

    # the voltages of a block of steps are held, then their loadings and nearness to a limit are
    # computed for the block at once (a little beyond the margin: every step the scan of the
    # power flow's magnitudes finds near a limit keeps its state despite rounding)
    circuit = net.dss.to_dss_python().ActiveCircuit  # numpy-array reads of the voltages
    block = np.empty((min(todo.size, _FLOW_BLOCK), lim.model.n), dtype=np.complex128)
    held: list[int] = []

    def flush() -> None:
        vb = block[: len(held)]
        txb = lim.tx_loading(vb)
        near = lim.near(vb, txb, watch + _NEAR_PAD)
        for j, t in enumerate(held):
            tx[t] = txb[j]
            if t in keep or near[j]:
                states[t] = vb[j].copy()
        held.clear()

    def cb(j: int) -> None:
        block[len(held)] = np.asarray(circuit.YNodeVarray, dtype=float).view(np.complex128)
        held.append(int(todo[j]))
        if len(held) == block.shape[0]:
            flush()
        if progress is not None:
            progress(label, j + 1, todo.size)

    flow = net.run_series(es, kw[todo], pf=pf, progress=cb, method=method)
    if held:
        flush()
    if todo.size == steps:
        return flow, states, tx
    old = prev[0]  # type: ignore[index]
    fields: dict[str, Any] = {}
    for name in ("v_pu", "i_amps", "converged", "transformer_loading"):
        a, b = getattr(old, name), getattr(flow, name)
        if np.shape(a)[:1] != (steps,) or np.shape(b)[:1] != (todo.size,):
            continue  # an engine without this field
        a = np.array(a, copy=True)
        a[todo] = b
        fields[name] = a
    return replace(old, **fields), states, tx


def _shapes_can_run(net: OpenDSSNetwork, es: ElementSet) -> bool:
    """Whether ``run_series``'s ``"shapes"`` method can dispatch ``es`` on ``net``: Loads and
    PVSystems only, and no Storage element in the circuit."""
    return set(es.classes) <= {"Load", "PVSystem"} and int(net.dss.Storages.Count()) == 0


def _converged(flow: PowerFlowResult) -> np.ndarray:
    """(steps,) True where the step's AC power flow converged (every step, for engines that raise instead)."""
    conv = getattr(flow, "converged", None)
    if conv is None or np.size(conv) != flow.steps:
        return np.ones(flow.steps, dtype=bool)
    return np.asarray(conv, dtype=bool)


def _monitored(case: Case, net: OpenDSSNetwork, es: ElementSet) -> np.ndarray:
    """Monitored nodes of ``net.node_names`` (``"customers"``: the buses of the agents' elements)."""
    mon = case.network.monitored_buses
    if isinstance(mon, str) and mon.lower() == "customers":
        mon = tuple(sorted(set(net.element_buses(es))))
    return monitored_mask(net.node_names, net.buses, mon)


@dataclass(frozen=True)
class _StepRows:
    """The rows of one step as linearised (kept while the step stays within its limits)."""

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    rhs: tuple[float, ...]
    scale: tuple[float, ...]
    block: np.ndarray  #: (rows, n_agents) scaled sensitivities
    pred: dict[tuple[int, str], tuple[float, np.ndarray, np.ndarray]]  #: linear predictions of its voltage rows
    dropped: frozenset[tuple[int, str]]  #: its rows left to a parallel, tighter row


def clear_aware(case: Case, net: OpenDSSNetwork, elements: ElementSet, *, pf: np.ndarray | None = None,
                monitored: np.ndarray | None = None, method: str = "ymatrix", watch_pu: float = 0.0,
                converge_pu: float | None = None, drop_rel: float = DROP_REL, merge_cos: float = MERGE_COS,
                defer_near: bool = True, market_kw: Mapping[str, Any] | None = None,
                progress: Progress | None = None, flow_method: str = "snapshot",
                keep_converged: bool = True) -> AwareResult:
    """Clear ``case`` with the network's limits inside the market (outer loop).

    Parameters
    ----------
    case : Case
        The case (its placed batteries included as agents); ``case.market`` gives δ, the slack
        penalty and the iteration limit.
    net : OpenDSSNetwork
        The compiled network; left at the last step of the final AC power flow.
    elements : ElementSet
        ``net.resolve(...)`` of every agent's element, in ``case.agents`` order (what the study
        passes to ``run_series``).
    pf : numpy.ndarray, optional
        (n_agents,) power factor per agent (NaN = the element's own), as for ``run_series``.
    monitored : numpy.ndarray of bool, optional
        Which of ``net.node_names`` (the power flow's nodes) have voltage limits; default from
        ``case.network.monitored_buses`` (``"customers"``: the agents' buses).
    method : {"ymatrix", "perturbed"}
        Sensitivities by the linearised power flow (default) or by perturbed OpenDSS solves.
    watch_pu : float, default 0
        Rows also enter the active set when the AC value is within ``δ + watch_pu`` of a limit
        (as a fraction of the rating for currents and transformers); such rows constrain the
        market at ``δ`` only, so they bind only if the market would push past it.
    converge_pu : float, optional
        Also iterate until the linearisation error is at most this [pu] (the loop's default stop
        is an AC power flow without violations and without new rows within the margin).
    drop_rel : float, default :data:`DROP_REL`
        Sparse rows: an agent whose sensitivity is below this fraction of the row's largest is
        left out of the row (the row stays exact at the operating point; the linearisation
        error reported is against the sparse rows the market saw).
    merge_cos : float, default :data:`MERGE_COS`
        A row whose sensitivity vector is within this cosine of a tighter row of its step (the
        same element on another phase, a bus downstream of another) is left to that row; rows
        the AC power flow violates are always kept. ``1.0`` keeps every row.
    defer_near : bool, default True
        Rows enter with their step only once the AC power flow violates a limit in that step
        (a step only near its limits is within them and gets no rows); False: every step with a
        row near its limit gets its rows at once.
    market_kw : mapping, optional
        Extra keywords of every :func:`~gridmarket.market.clear_market` call (a slice of a longer
        run: ``soc_init``, ``steps_after``, ``soc_target``; ``method``), as the study passes them.
    keep_converged : bool, default True
        A step whose AC power flow is within its limits, that gains no row and whose linearisation
        error is at most δ/2 (``converge_pu`` if given) keeps the rows of its last linearisation,
        and the market repeats its solution (``clear_market(reuse=...)``)
        instead of linearising and solving it again around an operating point that already
        meets the limits; False re-linearises every step with rows at every clearing.
    progress : callable, optional
        ``progress(label, done, total)`` as the power flows' steps complete.
    flow_method : {"snapshot", "shapes", "auto"}, default "snapshot"
        ``run_series``'s method for the outer loop's power flows; ``"auto"``: ``"shapes"`` (the
        study's blind power flow, 2-3x faster per step) when the elements are Loads and PVSystems
        and the circuit has no Storage, else ``"snapshot"``. The two agree to the power-flow
        tolerance, not to rounding.

    Notes
    -----
    The power flows run through ``net.run_series``, so no shape session may be open on ``net``;
    the network is left at the last step of the final power flow.

    Returns
    -------
    AwareResult
    """
    if method not in ("ymatrix", "perturbed"):
        msg = f"method must be 'ymatrix' or 'perturbed', got {method!r}"
        raise ValueError(msg)
    if flow_method not in ("snapshot", "shapes", "auto"):
        msg = f"flow_method must be 'snapshot', 'shapes' or 'auto', got {flow_method!r}"
        raise ValueError(msg)
    if len(elements) != len(case.agents):
        msg = f"elements has {len(elements)} entries for {len(case.agents)} agents"
        raise ValueError(msg)
    steps, n_agents = case.time.steps, len(case.agents)
    pf_arr = None if pf is None or np.all(np.isnan(pf)) else np.asarray(pf, dtype=float)
    market_cols = np.array([a.kind is not AgentKind.PASSIVE for a in case.agents])
    model = _model(net)
    q_ratio = sens.dispatch_q_ratio(net, elements, pf_arr)
    limit_iter = case.market.network_iterations
    if flow_method == "auto":
        flow_method = "shapes" if _shapes_can_run(net, elements) else "snapshot"
    op_from = _OpFrom(model, elements, q_ratio)

    t0 = time.perf_counter()
    mkw = dict(market_kw or {})
    market = clear_market(case, **mkw)
    t_market = time.perf_counter() - t0
    kw = dispatch_kw(case, market)
    if monitored is None:
        monitored = _monitored(case, net, elements)
    lim = _Limits(case, model, net.node_names, monitored)
    t0 = time.perf_counter()
    flow, states, tx = _run_flow(net, elements, kw, pf_arr, lim, set(), watch_pu, "aware 1: power flow", progress,
                                 method=flow_method)
    t_flow = time.perf_counter() - t0
    active: dict[int, list[_Row]] = {}
    history: list[dict[str, Any]] = []
    step_iter = np.ones(steps, dtype=int)
    constraints: NetworkConstraints | None = None
    scale = np.zeros(0)
    lin_pred: dict[tuple[int, str], tuple[float, np.ndarray, np.ndarray]] = {}
    base_op: sens.OperatingPoint | None = None
    dropped: set[tuple[int, str]] = set()  # rows of the last linearisation left to a parallel, tighter row
    frozen: dict[int, _StepRows] = {}  # each step's rows as last linearised
    # a step within its limits keeps its rows once its linearisation error is this small [pu]
    settled = 0.5 * case.market.network_margin_pu if converge_pu is None else converge_pu
    t_sens = 0.0
    k = 1  # clearings run
    while True:
        viol, near = lim.scan(flow, tx, watch_pu)
        step_err = _lin_errors(lin_pred, flow, _agent_p_kw(case, market))
        lin_err = max(step_err.values(), default=0.0)
        n_viol = sum(len(x) for x in viol.values())
        # a step enters the market when its AC power flow violates a limit; its rows near a limit
        # come with it (a step only near its limits is within them: no rows, one QP fewer)
        have = {t: set(rows) for t, rows in active.items()}
        new = {t: [r for r in rows if r not in have.get(t, ())] for t, rows in near.items()
               if t in viol or t in active or not defer_near}
        new = {t: rows for t, rows in new.items() if rows}
        history.append({"iteration": k, "rows": 0 if constraints is None else len(constraints.name),
                        "violations": n_viol, "new_rows": sum(map(len, new.values())),
                        "welfare": float(np.sum(market.welfare)), "linearisation_error_pu": lin_err,
                        "seconds_sensitivity": t_sens, "seconds_market": t_market, "seconds_flow": t_flow})
        if n_viol == 0 and not new and (converge_pu is None or lin_err <= converge_pu):
            stop = "no violations"
            break
        if k >= limit_iter:
            stop = f"reached network_iterations = {limit_iter}"
            break
        if (n_viol and not new and constraints is not None
                and lin_err <= (0.5 * lim.delta if converge_pu is None else converge_pu)
                and _explained(viol, constraints, market, dropped)):
            stop = "only violations the market cannot remove are left (see the residual causes)"
            break
        if not new and k > 1 and history[-2]["violations"] == n_viol and _same(history) and lin_err <= 1e-6:
            stop = "no progress: the active set, the dispatch and the violations did not change"
            break
        for t, rows in new.items():
            active.setdefault(t, []).extend(rows)
        # ---- linearise every active row at the present operating point; a step already within
        # its limits with no new row keeps the rows it has (the market then repeats its solution)
        t0 = time.perf_counter()
        p0 = _agent_p_kw(case, market)
        st: list[int] = []
        nm: list[str] = []
        kd: list[str] = []
        rhs: list[float] = []
        sc: list[float] = []
        blocks = []
        lin_pred = {}
        dropped = set()
        for t in sorted(active):
            kept = (frozen.get(t) if keep_converged and t not in viol and t not in new
                    and step_err.get(t, 0.0) <= settled else None)
            if kept is None:
                rows = active[t]
                keys = [(r.kind, r.name) for r in rows]
                if method == "ymatrix":
                    if base_op is None:  # powers of the elements the market does not dispatch
                        base_op = sens.read_operating_point(net, model)
                    op = op_from(base_op, states[t], kw[t])
                    s = sens.ymatrix_sensitivities(model, op, elements.names, keys, q_ratio)
                else:
                    s = sens.perturbed_sensitivities(net, elements, kw[t], keys, model=model, pf=pf_arr)
                dp = s.dp.copy()
                dp[:, ~market_cols] = 0.0
                side = np.array([r.side for r in rows], dtype=float)
                g_all = dp * side[:, None]
                big = np.max(np.abs(g_all), axis=1) if len(rows) else np.zeros(0)
                if drop_rel > 0:  # sparse rows: the agents that barely move a row are left out of it
                    g_all = np.where(np.abs(g_all) >= drop_rel * big[:, None], g_all, 0.0)
                # room to the bound at the operating point, per unit of the row's largest sensitivity [kW]
                room = side * (np.array([_bound(lim, r) for r in rows]) - s.value)
                violated_now = {r for r, _ in viol.get(t, [])}
                keep = _distinct_rows(g_all, room / np.where(big > 0, big, 1.0), big,
                                      [r in violated_now for r in rows], merge_cos)
                movable = big >= SENSITIVITY_FLOOR  # else no agent can move it: left out, reported with its cause
                take = np.flatnonzero(movable & keep)
                g, m = g_all[take], big[take]
                # side·(x⁰ + K(p − p⁰)) ≤ side·bound  ⇔  side·K p ≤ side·(bound − x⁰) + side·K p⁰
                b = room[take] + g @ p0[t]
                picked = [rows[j] for j in take.tolist()]
                kept = frozen[t] = _StepRows(
                    names=tuple(f"bus.{r.name}" if r.kind == "voltage" else r.name for r in picked),
                    kinds=tuple(r.kind for r in picked), rhs=tuple((b / m).tolist()), scale=tuple(m.tolist()),
                    block=g / m[:, None],
                    pred={(t, r.name): (float(s.value[j]), g_all[j] * r.side, p0[t])
                          for j, r in zip(take.tolist(), picked, strict=True) if r.kind == "voltage"},
                    # a row parallel to a tighter row of the step is left to that one
                    dropped=frozenset((t, rows[j].name) for j in np.flatnonzero(movable & ~keep).tolist()))
                step_iter[t] += 1
            st.extend([t] * len(kept.names))
            nm.extend(kept.names)
            kd.extend(kept.kinds)
            rhs.extend(kept.rhs)
            sc.extend(kept.scale)
            blocks.append(kept.block)
            lin_pred.update(kept.pred)
            dropped.update(kept.dropped)
        t_sens = time.perf_counter() - t0
        scale = np.array(sc)
        constraints = NetworkConstraints(step=np.array(st, dtype=int), name=tuple(nm), kind=tuple(kd),
                                         sens=sp.csr_matrix(np.vstack(blocks) if blocks else np.zeros((0, n_agents))),
                                         rhs=np.array(rhs, dtype=float))
        k += 1
        t0 = time.perf_counter()
        market = clear_market(case, network=constraints, reuse=market if keep_converged else None, **mkw)
        t_market = time.perf_counter() - t0
        kw_prev, kw = kw, dispatch_kw(case, market)
        t0 = time.perf_counter()
        flow, states, tx = _run_flow(net, elements, kw, pf_arr, lim, set(active), watch_pu, f"aware {k}: power flow",
                                     progress, prev=(flow, kw_prev, states, tx), method=flow_method)
        t_flow = time.perf_counter() - t0
    duals = np.zeros(0)
    if constraints is not None:
        duals = np.asarray(getattr(market, "network_duals", np.zeros(len(scale))), dtype=float) / scale
    residual = _residual(lim, viol, market, active, constraints, scale, case.time.index, dropped)
    failed = np.flatnonzero(~_converged(flow))
    if failed.size:
        extra = pd.DataFrame({"step": failed, "time": [case.time.index[t] for t in failed],
                              "kind": "nonconvergence", "element": "circuit", "value": np.nan, "limit": np.nan,
                              "cause": "the AC power flow of this step did not converge: no operating point to "
                                       "linearise around"})
        residual = pd.concat([residual, extra], ignore_index=True) if len(residual) else extra
    return AwareResult(market=market, flow=flow, kw=kw, constraints=constraints, duals=duals, residual=residual,
                       linearisation_error_pu=lin_err, outer_iterations=k, step_iterations=step_iter,
                       history=history, stop_reason=stop, method=method)


def _model(net: OpenDSSNetwork) -> sens.GridModel:
    """:func:`~gridmarket.network.sensitivity.grid_model` of ``net``; a circuit changed since its
    last solve (a battery the study just placed) is solved once first, so OpenDSS has its Y
    matrix and node references (the state it leaves is overwritten by the first power flow)."""
    try:
        return sens.grid_model(net)
    except NetworkError:
        net.dss.Solution.Solve()
        return sens.grid_model(net)


def _lin_error(pred: dict[tuple[int, str], tuple[float, np.ndarray, np.ndarray]], flow: PowerFlowResult,
               p: np.ndarray) -> float:
    """max |V_AC − V_linear| [pu] over the voltage rows of the last linearisation."""
    return max(_lin_errors(pred, flow, p).values(), default=0.0)


def _lin_errors(pred: dict[tuple[int, str], tuple[float, np.ndarray, np.ndarray]], flow: PowerFlowResult,
                p: np.ndarray) -> dict[int, float]:
    """Per step with voltage rows, max |V_AC − V_linear| [pu] over them."""
    col = {n: c for c, n in enumerate(flow.node_names)}
    err: dict[int, float] = {}
    for (t, node), (v0, g, p0) in pred.items():
        err[t] = max(err.get(t, 0.0), abs(float(flow.v_pu[t, col[node]]) - (v0 + float(g @ (p[t] - p0)))))
    return err


def _explained(viol: dict[int, list[tuple[_Row, float]]], constraints: NetworkConstraints,
               market: MarketResult, dropped: set[tuple[int, str]]) -> bool:
    """Every violated row is out of the market (no agent moves it) or its slack is positive."""
    slack = np.asarray(getattr(market, "network_slack", np.zeros(0)), dtype=float)
    rows = {(int(t), nm.removeprefix("bus.")): j
            for j, (t, nm) in enumerate(zip(constraints.step, constraints.name, strict=True))}
    for t, items in viol.items():
        for r, _ in items:
            if (t, r.name) in dropped:  # left to a parallel row: the next clearing takes it itself
                return False
            j = rows.get((t, r.name))
            if j is not None and not (slack.size > j and slack[j] > _SLACK_TOL):
                return False
    return True


def _distinct_rows(g: np.ndarray, room: np.ndarray, big: np.ndarray, forced: list[bool], merge_cos: float
                   ) -> np.ndarray:
    """Which rows of one step go to the market: rows are taken tightest first (least ``room`` to
    their bound at the operating point, per unit of their largest sensitivity [kW]), and a row
    whose direction is within ``cos > merge_cos`` of a row already taken is left out (the taken
    row, parallel and tighter, stands for it: the same element on another phase, or a bus
    downstream of another on the same lateral). Rows the AC power flow violates now
    (``forced``) are always taken; ``merge_cos >= 1`` takes every row."""
    n = g.shape[0]
    keep = np.ones(n, dtype=bool)
    if merge_cos >= 1.0 or n < 2:
        return keep
    norm = np.linalg.norm(g, axis=1)
    unit = g / np.where(norm > 0, norm, 1.0)[:, None]
    taken: list[int] = []
    for j in np.argsort(room, kind="stable"):
        if big[j] < SENSITIVITY_FLOOR:
            continue
        if not forced[j] and taken and float(np.max(unit[taken] @ unit[j])) > merge_cos:
            keep[j] = False
            continue
        taken.append(int(j))
    return keep


def _same(history: list[dict[str, Any]]) -> bool:
    """Welfare of the last two clearings equal to 1e-6 relative."""
    return abs(history[-1]["welfare"] - history[-2]["welfare"]) <= 1e-6 * max(1.0, abs(history[-1]["welfare"]))


def _bound(lim: _Limits, r: _Row) -> float:
    """The limit kept with the margin: V_max − δ, V_min + δ, (1 − δ) I_max, 1 − δ."""
    d = lim.delta
    if r.kind == "voltage":
        return lim.vmax - d if r.side > 0 else lim.vmin + d
    return (1.0 - d) * lim.limit(r)


class _OpFrom:
    """Operating points of steps from their voltages and the powers set on the dispatched
    elements (constant power, shared equally among an element's branches); other elements as
    in ``base``. Which branches belong to which element is found once per clearing."""

    def __init__(self, model: sens.GridModel, elements: ElementSet, q_ratio: np.ndarray) -> None:
        pos = {nm: k for k, nm in enumerate(model.pc_names)}
        col = np.full(len(model.pc_names), -1)
        col[[pos[name] for name in elements.names]] = np.arange(len(elements))
        bc = col[model.br_elem]
        self.sel = np.flatnonzero(bc >= 0)  # branches of the dispatched elements
        self.bc = bc[self.sel]  # their element
        self.sign = np.array([-1.0 if c in ("PVSystem", "Generator") else 1.0 for c in elements.classes])
        self.pq = 1.0 + 1j * q_ratio[self.bc]  # per kW: 1 kW and its kvar
        self.share = model.br_share[self.sel]

    def __call__(self, base: sens.OperatingPoint, v: np.ndarray, kw: np.ndarray) -> sens.OperatingPoint:
        """The operating point at voltages ``v`` [V] with the elements at ``kw`` [kW, run_series convention]."""
        s = base.s_branch.copy()
        p = self.sign * kw  # consumption [kW]
        s[self.sel] = 1000.0 * (p[self.bc] * self.pq) * self.share
        return sens.OperatingPoint(v=v, s_branch=s)


def _residual(lim: _Limits, viol: dict[int, list[tuple[_Row, float]]], market: MarketResult,
              active: dict[int, list[_Row]], constraints: NetworkConstraints | None, scale: np.ndarray,
              times: Any, dropped: set[tuple[int, str]]) -> pd.DataFrame:
    """The violations left, each with why the market could not remove it."""
    out = []
    slack = np.asarray(getattr(market, "network_slack", np.zeros(0)), dtype=float)
    index: dict[tuple[int, str], int] = {}
    if constraints is not None:
        for r_idx, (t, nm) in enumerate(zip(constraints.step, constraints.name, strict=True)):
            index[(int(t), nm.removeprefix("bus."))] = r_idx
    for t in sorted(viol):
        for r, value in viol[t]:
            j = index.get((t, r.name))
            unit = {"voltage": "pu/kW", "current": "A/kW", "transformer": "1/kW"}[r.kind]
            if r not in active.get(t, []):
                cause = "entered the active set only at the last AC power flow (iteration limit)"
            elif (t, r.name) in dropped:
                cause = ("left to a parallel, tighter row of the step at the last linearisation, and violated"
                         " after it (iteration limit)")
            elif j is None:
                cause = f"no agent has sensitivity above {SENSITIVITY_FLOOR:g} {unit} to this {r.kind} row"
            elif slack.size > j and slack[j] > _SLACK_TOL:
                what = {"voltage": "pu", "current": "A", "transformer": "of the rating"}[r.kind]
                cause = (f"slack > 0 ({slack[j] * scale[j]:.4g} {what} beyond the linearised limit): "
                         "the agents that influence it reached their bounds")
            else:
                cause = "linearisation error larger than the margin δ at the last operating point (iteration limit)"
            out.append({"step": t, "time": times[t], "kind": r.kind, "element": r.name, "value": value,
                        "limit": lim.limit(r), "cause": cause})
    return pd.DataFrame(out, columns=list(RESIDUAL_COLUMNS))


# --------------------------------------------------------------------------- in the study


def relief_per_kw(result: AwareResult) -> np.ndarray:
    """(n_agents,) ``Σ_r dual_r · |sens_r,n|`` over the final clearing's rows [currency per kW]:
    the welfare one more kW of flexibility at agent ``n``'s connection, used in every step
    where a row binds and in the direction that relieves it, would be worth (an upper bound:
    it ignores the energy a battery needs to do so). The product is the same whether the rows
    are scaled (the market's view) or in their own units (:attr:`AwareResult.duals`)."""
    n = result.kw.shape[1]
    nc = result.constraints
    if nc is None or not nc.rows:
        return np.zeros(n)
    d = np.asarray(result.market.network_duals, dtype=float)
    if d.size != nc.rows:
        return np.zeros(n)
    return np.asarray(abs(sp.csr_matrix(nc.sens)).T @ d).ravel()


@dataclass
class AwareTally:
    """The aware market's facts of one study iteration, added chunk by chunk
    (:func:`~gridmarket.study.pipeline.run_iteration` calls :meth:`add` after each chunk's
    :func:`clear_aware`).

    Attributes
    ----------
    step_iterations : list of numpy.ndarray
        Per chunk, the clearings in which each step had network rows, plus one.
    clearings : list of int
        Per chunk, the outer loop's clearings.
    linearisation_error_pu : float
        Largest over the chunks [pu].
    residual : list of pandas.DataFrame
        Per chunk, :attr:`AwareResult.residual` with steps counted in the whole horizon.
    congestion_rent, penalty_cost : float
        Σ over the chunks [currency] (``MarketResult.network_congestion_rent`` and
        ``network_penalty_cost``).
    rows, binding : int
        Network rows of the final clearings, and those with a dual above 1e-9.
    relief : numpy.ndarray or None
        (n_agents,) Σ over the chunks of :func:`relief_per_kw` [currency per kW].
    stop_reasons : list of str
        Per chunk, why its outer loop stopped.
    seconds : dict
        Time spent in sensitivities, market and power flows [s].
    """

    step_iterations: list[np.ndarray] = field(default_factory=list)
    clearings: list[int] = field(default_factory=list)
    linearisation_error_pu: float = 0.0
    residual: list[pd.DataFrame] = field(default_factory=list)
    congestion_rent: float = 0.0
    penalty_cost: float = 0.0
    rows: int = 0
    binding: int = 0
    relief: np.ndarray | None = None
    stop_reasons: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(("sensitivity", "market", "flow"), 0.0))

    def add(self, result: AwareResult, s0: int) -> None:
        """Add a chunk's outcome; its steps start at step ``s0`` of the horizon."""
        self.step_iterations.append(np.asarray(result.step_iterations, dtype=int))
        self.clearings.append(int(result.outer_iterations))
        self.linearisation_error_pu = max(self.linearisation_error_pu, float(result.linearisation_error_pu))
        if len(result.residual):
            self.residual.append(result.residual.assign(step=result.residual["step"].to_numpy(dtype=np.int64) + s0))
        self.congestion_rent += float(getattr(result.market, "network_congestion_rent", 0.0))
        self.penalty_cost += float(getattr(result.market, "network_penalty_cost", 0.0))
        if result.constraints is not None:
            self.rows += result.constraints.rows
            self.binding += int(np.count_nonzero(np.asarray(result.market.network_duals) > 1e-9))
        r = relief_per_kw(result)
        self.relief = r if self.relief is None else self.relief + r
        self.stop_reasons.append(result.stop_reason)
        for part in self.seconds:
            self.seconds[part] += float(sum(h[f"seconds_{part}"] for h in result.history))

    def residual_frame(self, iteration: int) -> pd.DataFrame:
        """The residual violations of every chunk, columns :data:`RESIDUAL_FILE_COLUMNS`."""
        if not self.residual:
            return pd.DataFrame({c: pd.Series(dtype=object if c in ("time", "kind", "element", "cause") else float)
                                 for c in RESIDUAL_FILE_COLUMNS})
        df = pd.concat(self.residual, ignore_index=True)
        df.insert(0, "iteration", iteration)
        return df[list(RESIDUAL_FILE_COLUMNS)]

    def summary(self) -> dict[str, Any]:
        """Plain numbers of the whole iteration (benchmarks, comparisons): outer iterations per step
        (mean, max), clearings, linearisation error [pu], residual violations (total, by kind and
        by cause), congestion rent and penalty cost [currency], rows, seconds."""
        it = np.concatenate(self.step_iterations) if self.step_iterations else np.zeros(0, dtype=int)
        res = pd.concat(self.residual, ignore_index=True) if self.residual else pd.DataFrame(columns=RESIDUAL_COLUMNS)
        return {
            "outer_iterations_per_step_mean": round(float(it.mean()), 6) if it.size else 0.0,
            "outer_iterations_per_step_max": int(it.max()) if it.size else 0,
            "clearings": int(sum(self.clearings)),
            "linearisation_error_pu": float(self.linearisation_error_pu),
            "residual_violations": int(len(res)),
            "residual_by_kind": {str(k): int(v) for k, v in res.groupby("kind").size().items()},
            "residual_by_cause": _by_cause(res),
            "congestion_rent": round(self.congestion_rent, 10),
            "penalty_cost": round(self.penalty_cost, 10),
            "rows": int(self.rows), "binding_rows": int(self.binding),
            "stop_reasons": sorted(set(self.stop_reasons)),
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
        }
