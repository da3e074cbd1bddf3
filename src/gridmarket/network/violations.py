"""Voltage and current limit checks of eqs. (19)-(20) (shared MODEL.md, *Limits and violations*).

Works on a :class:`~gridmarket.network.opendss.PowerFlowResult` with numpy only; nothing here
talks to OpenDSS.

Counting rule
-------------
A **violation** is one (bus, step), (line, step) or (transformer, step) pair out of limits, or
one step whose power flow did not converge. The check itself is per phase for voltages and
currents (:func:`check_limits` returns one row per bad node or conductor and step); a bus
with two phases out of limits in one step, or a line with three overloaded phases, counts
**once** for that step in :func:`count_violations`. A bus that is both under- and
over-voltage in one step (one phase each) also counts once. A transformer's loading is its
winding-1 ``|S| / kVA``, one row per transformer and step. A step that did not converge has
no voltages (NaN) and is one ``"nonconvergence"`` row (element ``"circuit"``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from gridmarket.enums import ViolationKind
from gridmarket.errors import NetworkError

if TYPE_CHECKING:
    from gridmarket.network.opendss import PowerFlowResult

__all__ = [
    "COUNT_COLUMNS",
    "VIOLATION_COLUMNS",
    "ViolationCounts",
    "check_limits",
    "count_violations",
    "element_of",
    "monitored_mask",
]

#: Columns of :func:`check_limits`.
VIOLATION_COLUMNS = ["step", "time", "kind", "element", "value", "limit"]
#: Columns of :func:`count_violations`.
COUNT_COLUMNS = ["violations", "voltage_violations", "current_violations", "transformer_violations",
                 "nonconverged_steps", "buses_violated", "lines_violated", "transformers_violated",
                 "steps_violated", "v_min_pu", "v_max_pu", "loading_max_percent"]
_INT_COLUMNS = frozenset(COUNT_COLUMNS[:9])
#: element of a non-convergence row of :func:`check_limits`
CIRCUIT = "circuit"
_KIND_ORDER = {ViolationKind.VOLTAGE.value: 0, ViolationKind.CURRENT.value: 1,
               ViolationKind.TRANSFORMER.value: 2, ViolationKind.NONCONVERGENCE.value: 3}
_WHOLE_NAMES = (ViolationKind.TRANSFORMER.value, ViolationKind.NONCONVERGENCE.value)  # no phase suffix
_LV_MAX_KV_LL = 1.0  # a bus is low voltage when its line-to-line base is at most 1 kV


def check_limits(result: PowerFlowResult, *, vmin_pu: float, vmax_pu: float,
                 monitored_nodes: np.ndarray | None = None,
                 times: Sequence[object] | pd.Index | None = None) -> pd.DataFrame:
    """Every node voltage and line current out of its limits, one row per phase and step.

    Eq. (19): ``vmin_pu <= V_k <= vmax_pu`` for every monitored node k; eq. (20):
    ``I_j <= I_j^max`` for every line conductor j, with ``I^max`` the line's normal ampacity;
    every transformer's loading ``|S| / kVA <= 1``; and every step's power flow converged.
    Values exactly on a limit are within it. Nodes with NaN voltage (not energised) and
    conductors without a rating are never violations; a step that did not converge gives one
    ``"nonconvergence"`` row and no other.

    Parameters
    ----------
    result : PowerFlowResult
        Voltages [pu] and currents [A] of a series of steps.
    vmin_pu, vmax_pu : float
        Voltage limits [pu].
    monitored_nodes : numpy.ndarray of bool, optional
        Shape (n_nodes,): which nodes are checked (see :func:`monitored_mask`); all by default.
        Currents are always checked on every line.
    times : sequence, optional
        Label of each step for the ``time`` column (e.g. timestamps); the step index if absent.

    Returns
    -------
    pandas.DataFrame
        Columns ``step`` (int), ``time``, ``kind`` (``"voltage"`` | ``"current"`` |
        ``"transformer"`` | ``"nonconvergence"``), ``element`` (``"bus.phase"`` for a voltage,
        ``"line.name.phase"`` for a current, ``"transformer.name"``, ``"circuit"`` for a step
        that did not converge), ``value`` (voltage [pu], current [A], loading [-]; NaN for
        non-convergence) and ``limit`` (the limit it broke, same unit; 1.0 for a loading),
        sorted by step, kind (in that order) and column order of the result.
    """
    if not vmin_pu < vmax_pu:
        msg = f"vmin_pu must be below vmax_pu, got {vmin_pu} and {vmax_pu}"
        raise ValueError(msg)
    steps = result.v_pu.shape[0]
    labels = _time_labels(times, steps)
    v = result.v_pu
    if monitored_nodes is not None:
        mask = np.asarray(monitored_nodes, dtype=bool)
        if mask.shape != (v.shape[1],):
            msg = f"monitored_nodes must have shape ({v.shape[1]},), got {mask.shape}"
            raise ValueError(msg)
        v = np.where(mask, v, np.nan)
    with np.errstate(invalid="ignore"):
        low, high = v < vmin_pu, v > vmax_pu
        over = result.i_amps > result.norm_amps
        tx = result.transformer_loading
        tx_over = tx > 1.0
    failed = ~np.asarray(result.converged, dtype=bool)
    frames = [
        _rows(low | high, v, np.where(low, vmin_pu, vmax_pu), result.node_names,
              ViolationKind.VOLTAGE, labels),
        _rows(over, result.i_amps, np.broadcast_to(result.norm_amps, over.shape),
              result.line_phase_names, ViolationKind.CURRENT, labels),
        _rows(tx_over, tx, np.ones_like(tx), result.transformer_names, ViolationKind.TRANSFORMER, labels),
        _rows(failed[:, None], np.full((steps, 1), np.nan), np.full((steps, 1), np.nan), [CIRCUIT],
              ViolationKind.NONCONVERGENCE, labels),
    ]
    out = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    out["_kind"] = out["kind"].map(_KIND_ORDER)
    out = out.sort_values(["step", "_kind"], kind="stable").drop(columns="_kind")
    return out.reset_index(drop=True)


def _time_labels(times: Sequence[object] | pd.Index | None, steps: int) -> np.ndarray:
    if times is None:
        return np.arange(steps)
    labels = np.asarray(pd.Index(times), dtype=object)
    if labels.shape[0] != steps:
        msg = f"times must have one label per step ({steps}), got {labels.shape[0]}"
        raise ValueError(msg)
    return labels


def _rows(bad: np.ndarray, value: np.ndarray, limit: np.ndarray, names: Sequence[str],
          kind: ViolationKind, labels: np.ndarray) -> pd.DataFrame:
    """Rows of a violation table for the True cells of ``bad`` (steps x elements)."""
    t, k = np.nonzero(bad)
    return pd.DataFrame({
        "step": t.astype(np.int64),
        "time": pd.Series(labels[t], dtype=object) if t.size else pd.Series([], dtype=object),
        "kind": kind.value,
        "element": np.asarray(names, dtype=object)[k] if t.size else np.array([], dtype=object),
        "value": value[t, k].astype(float),
        "limit": limit[t, k].astype(float),
    }, columns=VIOLATION_COLUMNS)


def element_of(names: Sequence[str] | pd.Series) -> np.ndarray:
    """Bus of ``"bus.phase"`` or line of ``"line.name.phase"``: the name without its phase."""
    arr = np.asarray(names, dtype=object)
    if arr.size == 0:
        return np.array([], dtype=object)
    uniq, inverse = np.unique(arr.astype(str), return_inverse=True)  # few distinct names
    owners = np.char.rpartition(uniq, ".")[:, 0].astype(object)
    return owners[inverse.reshape(-1)]


@dataclass(frozen=True, eq=False)
class ViolationCounts(Mapping[str, float]):
    """Result of :func:`count_violations`: the network totals, read like a dict, plus a table.

    ``counts["violations"]`` is the total for the whole network (keys: :data:`COUNT_COLUMNS`;
    counts are ``int``, worst values ``float``, NaN when there is none); ``counts.table`` has
    one row per scope (``"all"`` and each community).

    Attributes
    ----------
    table : pandas.DataFrame
        Index ``scope``: ``"all"`` then each community; columns :data:`COUNT_COLUMNS`.
    """

    table: pd.DataFrame

    def __getitem__(self, key: str) -> float:
        return self.community("all")[key]

    def __iter__(self) -> Iterator[str]:
        return iter(COUNT_COLUMNS)

    def __len__(self) -> int:
        return len(COUNT_COLUMNS)

    @property
    def communities(self) -> list[str]:
        """Communities with a row, in first-appearance order of ``bus_community``."""
        return [str(c) for c in self.table.index[1:]]

    def community(self, name: str) -> dict[str, float]:
        """The row of one scope (``"all"`` or a community) as a dict."""
        row = self.table.loc[name]
        return {c: int(row[c]) if c in _INT_COLUMNS else float(row[c]) for c in COUNT_COLUMNS}


def count_violations(violations: pd.DataFrame, *,
                     bus_community: Mapping[str, str] | None = None,
                     line_bus: Mapping[str, str] | None = None) -> ViolationCounts:
    """Count violations (bus-step and line-step pairs) for the whole network and per community.

    Parameters
    ----------
    violations : pandas.DataFrame
        From :func:`check_limits`.
    bus_community : mapping, optional
        Lower-case bus name -> community, for the community buses (buses where the
        community's agents connect). Each community gets a row, even with no violation.
    line_bus : mapping, optional
        ``"line.name"`` (or ``"transformer.name"``) -> the bus its violation counts for (its
        downstream bus, :meth:`OpenDSSNetwork.downstream_buses`). A current or transformer
        violation belongs to a community when that bus is one of its buses; without
        ``line_bus`` community rows count voltage violations only. A step that did not
        converge counts for the whole network only (no community row).

    Returns
    -------
    ViolationCounts
        Totals as a mapping (``counts["violations"]``) and ``counts.table``, indexed by
        ``scope``: ``"all"`` then each community in first-appearance order. Columns:
        ``violations`` (= voltage + current + transformer + nonconverged),
        ``voltage_violations`` (distinct (bus, step) pairs), ``current_violations`` (distinct
        (line, step) pairs), ``transformer_violations`` (distinct (transformer, step) pairs),
        ``nonconverged_steps``, ``buses_violated``, ``lines_violated``,
        ``transformers_violated``, ``steps_violated``, ``v_min_pu`` / ``v_max_pu`` (lowest
        under-voltage and highest over-voltage among the violations [pu], NaN if none),
        ``loading_max_percent`` (highest current / limit among the violations [%], NaN if none).
    """
    missing = [c for c in VIOLATION_COLUMNS if c not in violations.columns]
    if missing:
        msg = f"violations table lacks column(s) {missing}; build it with check_limits"
        raise ValueError(msg)
    whole = violations["kind"].isin(_WHOLE_NAMES).to_numpy()
    owner = element_of(violations["element"])
    if whole.any():
        owner[whole] = violations["element"].to_numpy(dtype=object)[whole]
    df = violations.assign(owner=owner)
    rows = {"all": _summary(df)}
    if bus_community is not None:
        bc = {str(b).lower(): c for b, c in bus_community.items()}
        lb = {str(k).lower(): str(v).lower() for k, v in (line_bus or {}).items()}
        is_v = df["kind"] == ViolationKind.VOLTAGE.value
        bus = df["owner"].where(is_v, df["owner"].map(lb))  # non-convergence: no bus, no community
        community = bus.map(bc).to_numpy(dtype=object)
        for c in dict.fromkeys(bc.values()):
            rows[str(c)] = _summary(df[community == c])
    out = pd.DataFrame.from_dict(rows, orient="index", columns=COUNT_COLUMNS)
    out.index.name = "scope"
    int_cols = [c for c in COUNT_COLUMNS if c in _INT_COLUMNS]
    out[int_cols] = out[int_cols].astype(np.int64)
    return ViolationCounts(table=out)


def _summary(df: pd.DataFrame) -> list[float]:
    """One row of :func:`count_violations` for the violations in ``df``."""
    volt = df[df["kind"] == ViolationKind.VOLTAGE.value]
    curr = df[df["kind"] == ViolationKind.CURRENT.value]
    trans = df[df["kind"] == ViolationKind.TRANSFORMER.value]
    v_pairs = len(volt[["owner", "step"]].drop_duplicates())
    i_pairs = len(curr[["owner", "step"]].drop_duplicates())
    t_pairs = len(trans[["owner", "step"]].drop_duplicates())
    failed = int(df.loc[df["kind"] == ViolationKind.NONCONVERGENCE.value, "step"].nunique())
    under = volt["value"][volt["value"] < volt["limit"]]
    above = volt["value"][volt["value"] > volt["limit"]]
    loading = (curr["value"] / curr["limit"] * 100.0) if len(curr) else pd.Series([], dtype=float)
    return [v_pairs + i_pairs + t_pairs + failed, v_pairs, i_pairs, t_pairs, failed,
            volt["owner"].nunique(), curr["owner"].nunique(), trans["owner"].nunique(),
            df["step"].nunique(),
            float(under.min()) if len(under) else math.nan,
            float(above.max()) if len(above) else math.nan,
            float(loading.max()) if len(loading) else math.nan]


def monitored_mask(node_names: Sequence[str], buses: pd.DataFrame,
                   monitored: str | Sequence[str] = "all", *,
                   customer_buses: Iterable[str] | None = None) -> np.ndarray:
    """Which nodes the voltage limits apply to.

    Parameters
    ----------
    node_names : sequence of str
        ``"bus.phase"`` (``PowerFlowResult.node_names``).
    buses : pandas.DataFrame
        ``OpenDSSNetwork.buses``: index lower-case bus name, column ``kv_base`` (LN [kV]).
    monitored : ``"all"``, ``"lv"``, ``"customers"`` or sequence of str
        All nodes; low-voltage nodes only (line-to-line base at most 1 kV, i.e.
        ``kv_base * sqrt(3) <= 1``); the nodes of the buses where customers (agents) connect,
        ``customer_buses``; or the nodes of the named buses (case-insensitive).
    customer_buses : iterable of str, optional
        Buses where the case's agents connect (nodes allowed); required for ``"customers"``.

    Returns
    -------
    numpy.ndarray of bool
        Shape (n_nodes,).

    Raises
    ------
    NetworkError
        If named (or customer) buses are not in the network (all of them are listed).
    ValueError
        ``"customers"`` without ``customer_buses``.
    """
    bus_of = element_of(node_names)
    if isinstance(monitored, str) and monitored.lower() == "customers":
        if customer_buses is None:
            msg = "monitored buses 'customers' need customer_buses (the buses where agents connect)"
            raise ValueError(msg)
        monitored = list(customer_buses)
    if isinstance(monitored, str) and monitored.lower() == "all":
        return np.ones(len(bus_of), dtype=bool)
    if isinstance(monitored, str) and monitored.lower() == "lv":
        kv = buses["kv_base"].reindex(pd.Index(bus_of)).to_numpy(dtype=float)
        return (kv > 0) & (kv * math.sqrt(3.0) <= _LV_MAX_KV_LL + 1e-9)
    if isinstance(monitored, str):
        monitored = [monitored]
    wanted = {str(b).lower().split(".", 1)[0] for b in monitored}
    unknown = sorted(wanted - set(map(str, buses.index)))
    if unknown:
        msg = f"{len(unknown)} monitored bus(es) not in the network: {', '.join(unknown)}"
        raise NetworkError(msg)
    return np.isin(bus_of, list(wanted))
