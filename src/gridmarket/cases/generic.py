"""Turn any OpenDSS feeder into a case folder: ``gridmarket new-case FEEDER.dss OUT``.

:func:`new_case` reads the feeder through OpenDSS (:func:`gridmarket.network.inspect.inspect_feeder`)
and writes a case folder (shared CASE_FORMAT.md) whose ``network/Master.dss`` redirects the
feeder's own master **by absolute path** (the feeder is never copied) and adds PV systems in
``network/PVSystems.dss``.

Rules (deterministic; each case's ``PROVENANCE.md`` repeats the ones it used)
------------------------------------------------------------------------------
**Consumers.** Every enabled Load becomes a consumer agent of the same (lower-case) name, driving
``Load.<name>``. Its profile column [kW, mean over the step] comes from the load's own loadshape,
chosen by ``loadshape`` (``"auto"``: ``daily``, else ``yearly``, else ``duty``; OpenDSS itself
fills ``yearly`` from ``daily``): ``mult``/``Pmult`` × the load's kW, or the multipliers
themselves with ``useactual=yes``. Sample ``i`` of a shape with interval Δ covers hours
``[iΔ, (i+1)Δ)`` (what OpenDSS's time loop uses when it steps from hour 0) and the shape repeats
after ``npts·Δ`` h; shapes given by an ``hour`` array are interpolated linearly, as OpenDSS does.
Step ``s`` covers hours ``[start_hour + s·Δt, start_hour + (s+1)·Δt)`` of the shapes' clock and
its value is the exact mean over that interval. A load with ``status=fixed`` keeps its kW; a
load without a loadshape follows :data:`DEFAULT_RESIDENTIAL_SHAPE` × its kW (the kW is the peak).
When the shape has ``Qmult``, the agent's ``pf`` is P̄/√(P̄²+Q̄²) over the case's steps; otherwise
``pf`` is left empty (the element's own kvar/kW ratio applies).

**PV.** With ``pv_kwp`` (kWp per household) or ``pv_percent_of_peak`` (kWp = % of the load's peak
step-mean demand over the case's steps), every market load at LV (rated below 1 kV) gets a
``PVSystem.pv_<load>`` on exactly the load's connection — its ``bus1`` nodes, phases, kV and
connection — so a 230 V phase-neutral load gets a 230 V single-phase PV, a 120/240 V split-phase
load on ``bus.1.2`` at 0.24 kV a PV across both legs, a three-phase four-wire load a three-phase
PV; a 120 V load on one leg of a split-phase bus gets its PV across both legs (240 V), as rooftop
PV is connected there. ``kVA = kva_ratio × kWp``, unity pf, no cut-in/cut-out. Every PVSystem the
feeder already had is switched off (``enabled=no``), so the penetration is the one asked for.
Without either argument, the feeder's own PVSystems become the producers (each in the community
of the household at its bus, else the electrically nearest one), following their own loadshape ×
irradiance, or :func:`default_pv_shape`. Producer profiles are kW per kWp (column ``pv_pu``) with
``scale`` = kWp.

**Communities** (``communities=``): ``"transformer"`` — by the first transformer upstream of the
load (its distribution transformer); ``"branch"`` — by feeder branch (the rule of
:func:`gridmarket.cases.ieee_eu_lv.feeder_branches`, from the source bus, 20 % share);
``"knn:<k>"`` — groups of ``k`` households: the unassigned load farthest from the source starts
a group with its ``k − 1`` nearest unassigned loads (Euclidean on bus coordinates; electrical hops
when any load bus has no coordinates); a CSV path — columns ``load`` (or ``agent``/``name``) and
``community``, an empty community making the load a passive agent (no market, no PV).
Communities are named ``C1``, ``C2``, ... in the order of their first load in the feeder.

**Economics** come from the arguments, then a template TOML, then the defaults below. The template
holds any case.toml section except ``[network].master`` (``[case]``, ``[network]``, ``[time]``,
``[market]``, ``[grid]``, ``[communities]``, ``[battery]``, ``[placement]``) plus ``[consumers]``
(``a``, ``b``, ``flex``, ``pf``) and ``[producers]`` (``a``, ``b``, ``kva_ratio``); an agent
coefficient may be a number or a ``[lo, hi]`` range spread over the loads by the golden-ratio
sequence of their position (:func:`gridmarket.cases.profiles.spread`).
"""

from __future__ import annotations

import csv
import difflib
import math
import tomllib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from gridmarket.case.schema import CaseToml
from gridmarket.cases.profiles import spread
from gridmarket.cases.writer import Key, Section, render_toml, write_case
from gridmarket.errors import GridmarketError
from gridmarket.network.inspect import FeederInfo, LoadInfo, LoadShapeInfo, PVInfo, inspect_feeder

__all__ = [
    "AGENT_DEFAULTS",
    "DEFAULT_RESIDENTIAL_SHAPE",
    "CommunityRule",
    "assign_communities",
    "case_toml_text",
    "default_pv_shape",
    "load_profiles",
    "new_case",
    "parse_rule",
    "shape_step_means",
]

#: Generic residential day used for loads without a loadshape: 24 hourly multipliers of the
#: load's kW (hour h covers h:00-h+1:00), peak 1.0 at 19:00, a morning peak at 07:00-09:00 and an
#: evening peak at 18:00-21:00; daily energy 13.9 × kW kWh. Illustrative, not measured.
DEFAULT_RESIDENTIAL_SHAPE: tuple[float, ...] = (
    0.40, 0.33, 0.30, 0.29, 0.29, 0.33, 0.47, 0.70, 0.75, 0.62, 0.55, 0.52,
    0.52, 0.50, 0.48, 0.50, 0.58, 0.72, 0.90, 1.00, 0.95, 0.83, 0.68, 0.52,
)

#: Default agent coefficients (as the shipped default case): consumers a [currency/kWh²],
#: b [currency/kWh], flex [-]; producers a, b, and the inverter kVA per kWp.
AGENT_DEFAULTS: dict[str, dict[str, float]] = {
    "consumers": {"a": 0.02, "b": 1.00, "flex": 0.2},
    "producers": {"a": 0.01, "b": 0.05, "kva_ratio": 1.1},
}
_AGENT_KEYS = {"consumers": ("a", "b", "flex", "pf"), "producers": ("a", "b", "kva_ratio")}
_CASE_SECTIONS = tuple(CaseToml.model_fields)
_LV_KV = 1.0  #: loads rated below this [kV] are low voltage and get PV
_PV_PEAK = 0.8  #: [kW/kWp] peak of the default clear-sky PV shape
_SUBSAMPLES = 60  #: samples per step when averaging a continuous shape
_MIN_KWP = 1e-3  #: [kWp] smaller PV systems are not written


# ---------------------------------------------------------------------------- shapes

def shape_step_means(values: np.ndarray, *, interval_h: float, steps: int, step_hours: float,
                     start_hour: float = 0.0, hours: np.ndarray | None = None) -> np.ndarray:
    """Mean of a periodic loadshape over each step.

    Parameters
    ----------
    values : numpy.ndarray
        Samples, shape (n,), any unit (the result has the same unit).
    interval_h : float
        Sample interval Δ [h]: sample ``i`` holds over ``[iΔ, (i+1)Δ)``; the shape repeats
        every ``nΔ`` h. Use 0 with ``hours``.
    steps, step_hours : int, float
        The case's steps and their length Δt [h].
    start_hour : float
        Hour of the shape's clock at which step 0 begins [h].
    hours : numpy.ndarray, optional
        Time of each sample [h] for a variable-interval shape (``interval_h == 0``): values
        in between are interpolated linearly and the shape repeats every ``hours[-1]`` h.

    Returns
    -------
    numpy.ndarray
        Shape (steps,): the exact mean over ``[start_hour + sΔt, start_hour + (s+1)Δt)``
        (fixed interval), or the mean of 60 evenly spaced samples in it (``hours``).
    """
    v = np.asarray(values, dtype=float).reshape(-1)
    edges = start_hour + step_hours * np.arange(steps + 1)
    if interval_h > 0:
        period = v.size * interval_h
        cum = np.concatenate([[0.0], np.cumsum(v) * interval_h])  # energy at i·Δ
        grid = interval_h * np.arange(v.size + 1)

        def energy(t: np.ndarray) -> np.ndarray:
            k = np.floor(t / period)
            return k * cum[-1] + np.interp(t - k * period, grid, cum)

        e = energy(edges)
        return np.diff(e) / step_hours
    if hours is None or np.asarray(hours).size != v.size or v.size < 2:
        msg = "a variable-interval loadshape needs an hour array of the same length as its values"
        raise GridmarketError(msg)
    h = np.asarray(hours, dtype=float)
    period = float(h[-1])
    if not period > 0:
        msg = f"a loadshape's hour array must end after hour 0, got {period}"
        raise GridmarketError(msg)
    t = edges[:-1, None] + step_hours * (np.arange(_SUBSAMPLES) + 0.5)[None, :] / _SUBSAMPLES
    return np.interp(np.mod(t, period), h, v).mean(axis=1)


def default_pv_shape(steps: int, *, step_hours: float = 1.0, start_hour: float = 0.0) -> np.ndarray:
    """Clear-sky PV output per kWp, mean over each step [kW/kWp].

    ``0.8 · sin(π (h − 6) / 12)^1.2`` for a clock hour ``h`` between 06:00 and 18:00, zero
    otherwise (peak 0.8 kW/kWp at noon; 4.9 kWh/kWp a day); step ``s`` covers clock hours
    ``[start_hour + sΔt, start_hour + (s+1)Δt)`` modulo 24, averaged over 60 samples.
    """
    edges = start_hour + step_hours * np.arange(steps)
    t = edges[:, None] + step_hours * (np.arange(_SUBSAMPLES) + 0.5)[None, :] / _SUBSAMPLES
    h = np.mod(t, 24.0)
    bell = _PV_PEAK * np.clip(np.sin(np.pi * (h - 6.0) / 12.0), 0.0, None) ** 1.2
    return bell.mean(axis=1)


def _shape_of(load_or_pv: LoadInfo | PVInfo, choice: str) -> str:
    order = {"auto": ("daily", "yearly", "duty"), "daily": ("daily",), "yearly": ("yearly",),
             "duty": ("duty",)}[choice]
    for attr in order:
        name = getattr(load_or_pv, attr)
        if name:
            return str(name)
    return ""


@dataclass(frozen=True)
class _Profile:
    p_kw: np.ndarray  #: (steps,) [kW]
    q_kvar: np.ndarray | None  #: (steps,) [kvar] when the shape has Qmult
    source: str  #: "loadshape <name>" | "fixed" | "default shape"


def _means(shape: LoadShapeInfo, mult: np.ndarray, steps: int, step_hours: float, start_hour: float
           ) -> np.ndarray:
    return shape_step_means(mult, interval_h=shape.interval_h, steps=steps, step_hours=step_hours,
                            start_hour=start_hour, hours=shape.hours)


def load_profiles(info: FeederInfo, *, steps: int, step_hours: float = 1.0, start_hour: float = 0.0,
                  loadshape: str = "auto") -> dict[str, _Profile]:
    """Demand of every load of ``info`` per step [kW] (the rules of the module docstring).

    Returns
    -------
    dict
        Load name -> profile with ``p_kw`` (steps,) [kW], ``q_kvar`` or None, and ``source``.
    """
    if loadshape not in ("auto", "daily", "yearly", "duty"):
        msg = f"loadshape must be 'auto', 'daily', 'yearly' or 'duty', got {loadshape!r}"
        raise GridmarketError(msg)
    default = np.asarray(DEFAULT_RESIDENTIAL_SHAPE)
    out: dict[str, _Profile] = {}
    for ld in info.loads:
        if ld.status == "fixed":
            out[ld.name] = _Profile(np.full(steps, ld.kw), np.full(steps, ld.kvar), "fixed")
            continue
        name = _shape_of(ld, loadshape)
        shape = info.loadshapes.get(name) if name else None
        if shape is None:
            p = ld.kw * shape_step_means(default, interval_h=1.0, steps=steps, step_hours=step_hours,
                                         start_hour=start_hour)
            out[ld.name] = _Profile(p, None, "default shape")
            continue
        p = _means(shape, shape.p_mult, steps, step_hours, start_hour)
        q = None if shape.q_mult is None else _means(shape, shape.q_mult, steps, step_hours, start_hour)
        if not shape.use_actual:
            p = p * ld.kw
            q = None if q is None else q * ld.kvar
        out[ld.name] = _Profile(p, q, f"loadshape {shape.name}")
    return out


# ---------------------------------------------------------------------------- communities

@dataclass(frozen=True)
class CommunityRule:
    """A parsed ``communities=`` rule: ``kind`` is ``transformer``, ``branch``, ``knn`` or ``csv``."""

    kind: str
    k: int = 0  #: knn group size
    path: Path | None = None  #: csv file

    def __str__(self) -> str:
        if self.kind == "knn":
            return f"knn:{self.k}"
        if self.kind == "csv":
            return str(self.path)
        return self.kind


def parse_rule(rule: str | Path | CommunityRule) -> CommunityRule:
    """Parse ``"transformer"``, ``"branch"``, ``"knn:<k>"`` or a CSV path into a rule."""
    if isinstance(rule, CommunityRule):
        return rule
    if isinstance(rule, Path):
        return _csv_rule(rule)
    text = str(rule).strip()
    low = text.lower()
    if low in ("transformer", "branch"):
        return CommunityRule(low)
    if low.startswith("knn:"):
        try:
            k = int(low[4:])
        except ValueError:
            k = 0
        if k < 1:
            msg = f"community rule {text!r}: k in 'knn:<k>' must be a whole number >= 1"
            raise GridmarketError(msg)
        return CommunityRule("knn", k=k)
    if low.endswith(".csv") or Path(text).is_file():
        return _csv_rule(Path(text))
    msg = (f"unknown community rule {text!r}; use 'transformer', 'branch', 'knn:<k>' or the path of a "
           "CSV file (columns load, community)")
    raise GridmarketError(msg)


def _csv_rule(path: Path) -> CommunityRule:
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        msg = f"community CSV {str(path)!r} not found"
        raise GridmarketError(msg)
    return CommunityRule("csv", path=p)


def _read_community_csv(path: Path) -> dict[str, str | None]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        msg = f"community CSV {path} has no rows"
        raise GridmarketError(msg)
    cols = {c.strip().lower(): c for c in rows[0] if c is not None}
    key = next((cols[c] for c in ("load", "agent", "name") if c in cols), None)
    if key is None or "community" not in cols:
        msg = f"community CSV {path} needs the columns 'load' (or 'agent'/'name') and 'community', got {list(cols)}"
        raise GridmarketError(msg)
    out: dict[str, str | None] = {}
    for i, row in enumerate(rows, start=2):
        name = (row.get(key) or "").strip().lower()
        if not name:
            msg = f"community CSV {path}, row {i}: empty {key!r}"
            raise GridmarketError(msg)
        if name in out:
            msg = f"community CSV {path}, row {i}: {name!r} appears twice"
            raise GridmarketError(msg)
        out[name] = (row.get(cols["community"]) or "").strip() or None
    return out


def _bfs_tree(info: FeederInfo) -> dict[str, tuple[str, str] | None]:
    """bus -> (parent bus, series element joining them), from the source; None at the source."""
    adj: dict[str, list[tuple[str, str]]] = {}
    for el in info.series:
        for a in el.buses:
            for b in el.buses:
                if a != b:
                    adj.setdefault(a, []).append((b, el.name))
    parent: dict[str, tuple[str, str] | None] = {info.source_bus: None}
    queue = deque([info.source_bus])
    while queue:
        u = queue.popleft()
        for v, via in sorted(adj.get(u, [])):
            if v not in parent:
                parent[v] = (u, via)
                queue.append(v)
    return parent


def _hops_from(info: FeederInfo, start: str, adj: dict[str, set[str]]) -> dict[str, int]:
    dist = {start: 0}
    queue = deque([start])
    while queue:
        u = queue.popleft()
        for v in adj.get(u, ()):
            if v not in dist:
                dist[v] = dist[u] + 1
                queue.append(v)
    return dist


def _by_transformer(info: FeederInfo, members: Mapping[str, str]) -> dict[str, str]:
    parent = _bfs_tree(info)
    out: dict[str, str] = {}
    for name, bus in members.items():
        b = bus
        label = "(no transformer)"
        while True:
            up = parent.get(b)
            if up is None:
                break
            b, el = up
            if el.lower().startswith("transformer."):
                label = el
                break
        out[name] = label
    return out


def _by_branch(info: FeederInfo, members: Mapping[str, str]) -> dict[str, str]:
    from gridmarket.cases.ieee_eu_lv import feeder_branches

    edges = [(a, b) for el in info.series for i, a in enumerate(el.buses) for b in el.buses[i + 1:]]
    try:
        split = feeder_branches(edges, info.source_bus, dict(members))
    except GridmarketError as exc:
        msg = f"community rule 'branch' does not apply to {info.master.name}: {exc}; try 'transformer' or 'knn:<k>'"
        raise GridmarketError(msg) from exc
    return {name: f"branch {g}" for name, g in split.group.items()}


def _by_knn(info: FeederInfo, members: Mapping[str, str], k: int) -> dict[str, str]:
    names = list(members)
    xy = np.array([[info.buses[members[n]].x, info.buses[members[n]].y] for n in names], dtype=float)
    use_xy = bool(names) and bool(np.isfinite(xy).all())
    adj = info.adjacency()
    if use_xy:
        src = info.buses.get(info.source_bus)
        origin = (np.array([src.x, src.y]) if src is not None and np.isfinite([src.x, src.y]).all()
                  else xy.mean(axis=0))
        far = np.hypot(*(xy - origin).T)
    else:
        hops = _hops_from(info, info.source_bus, adj)
        far = np.array([hops.get(members[n], -1) for n in names], dtype=float)
    free = list(range(len(names)))
    out: dict[str, str] = {}
    group = 0
    while free:
        group += 1
        seed = max(free, key=lambda i: (far[i], -i))
        if use_xy:
            d = {i: float(np.hypot(*(xy[i] - xy[seed]))) for i in free}
        else:
            hs = _hops_from(info, members[names[seed]], adj)
            d = {i: float(hs.get(members[names[i]], math.inf)) for i in free}
        chosen = sorted(free, key=lambda i: (d[i], i))[:k]
        for i in chosen:
            out[names[i]] = f"group {group}"
        free = [i for i in free if i not in chosen]
    return out


def _raw_communities(info: FeederInfo, members: Mapping[str, str], rule: CommunityRule
                     ) -> tuple[dict[str, str | None], bool]:
    """The rule's own label per household, and whether the labels are names to keep (CSV)."""
    missing = [n for n, b in members.items() if b not in info.buses]
    if missing:
        msg = f"{len(missing)} household bus(es) not in the feeder: {missing[:5]}"
        raise GridmarketError(msg)
    if rule.kind in ("transformer", "branch", "knn"):
        parent = _bfs_tree(info)
        cut = [n for n, b in members.items() if b not in parent]
        if cut:
            msg = f"{len(cut)} load(s) are not connected to the source bus {info.source_bus!r}: {cut[:5]}"
            raise GridmarketError(msg)
    if rule.kind == "transformer":
        return dict(_by_transformer(info, members)), False
    if rule.kind == "branch":
        return dict(_by_branch(info, members)), False
    if rule.kind == "knn":
        return dict(_by_knn(info, members, rule.k)), False
    assert rule.path is not None
    table = _read_community_csv(rule.path)
    lower = {n.lower(): n for n in members}
    absent = [n for n in members if n.lower() not in table]
    unknown = [n for n in table if n not in lower]
    if absent or unknown:
        parts = []
        if absent:
            parts.append(f"{len(absent)} load(s) missing from it: {absent[:5]}")
        if unknown:
            hint = difflib.get_close_matches(unknown[0], list(lower), n=1)
            parts.append(f"{len(unknown)} name(s) not in the feeder: {unknown[:5]}"
                         + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        msg = f"community CSV {rule.path}: " + "; ".join(parts)
        raise GridmarketError(msg)
    return {n: table[n.lower()] for n in members}, True


def _renumber(raw: Mapping[str, str | None], order: Sequence[str], *, keep: bool) -> dict[str, str | None]:
    """Labels -> C1, C2, ... in order of first appearance (``keep``: the labels are the names)."""
    names: dict[str, str] = {}
    out: dict[str, str | None] = {}
    for n in order:
        label = raw[n]
        if label is None or keep:
            out[n] = label
            continue
        if label not in names:
            names[label] = f"C{len(names) + 1}"
        out[n] = names[label]
    return out


def assign_communities(info: FeederInfo, members: Mapping[str, str],
                       rule: str | Path | CommunityRule) -> dict[str, str | None]:
    """Community of every household by ``rule`` (see the module docstring).

    Parameters
    ----------
    info : FeederInfo
        The feeder.
    members : mapping
        Household (load or consumer agent) name -> bus, in feeder order; names are matched
        case-insensitively against a CSV rule.
    rule : str, Path or CommunityRule

    Returns
    -------
    dict
        Name -> ``"C1"``, ``"C2"``, ... (numbered by first member in ``members`` order; a CSV's
        own names are kept), or None for a passive household (CSV rule, empty community).

    Raises
    ------
    GridmarketError
        An unknown rule, a bus not connected to the source, a CSV that misses or adds loads.
    """
    raw, keep = _raw_communities(info, members, parse_rule(rule))
    return _renumber(raw, list(members), keep=keep)


def _communities_and_labels(info: FeederInfo, members: Mapping[str, str], rule: CommunityRule
                            ) -> tuple[dict[str, str | None], dict[str, str]]:
    raw, keep = _raw_communities(info, members, rule)
    named = _renumber(raw, list(members), keep=keep)
    labels = {} if keep else {str(named[n]): str(raw[n]) for n in members}
    return named, labels


# ---------------------------------------------------------------------------- case.toml

def _merge(dst: dict[str, Any], section: str, values: Mapping[str, Any]) -> None:
    dst.setdefault(section, {}).update(values)


def _settings_tree(settings: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"grid.import_price": 0.7}`` -> ``{"grid": {"import_price": 0.7}}``, keys checked."""
    out: dict[str, dict[str, Any]] = {}
    valid = [*(s for s in _CASE_SECTIONS), *_AGENT_KEYS]
    for key, value in settings.items():
        sec, dot, name = key.partition(".")
        if not dot or sec not in valid:
            hint = difflib.get_close_matches(sec, valid, n=1)
            msg = (f"setting {key!r} must be 'section.key' with a section of {', '.join(valid)}"
                   + (f" (did you mean {hint[0]!r}?)" if hint else ""))
            raise GridmarketError(msg)
        out.setdefault(sec, {})[name] = value
    return out


def _read_template(path: Path) -> dict[str, dict[str, Any]]:
    p = Path(path).expanduser()
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        msg = f"cannot read template {p}: {exc}"
        raise GridmarketError(msg) from exc
    out: dict[str, dict[str, Any]] = {}
    valid = [*_CASE_SECTIONS, *_AGENT_KEYS]
    for sec, values in data.items():
        if sec not in valid or not isinstance(values, dict):
            hint = difflib.get_close_matches(sec, valid, n=1)
            msg = (f"template {p}: unknown section [{sec}]" + (f" (did you mean [{hint[0]}]?)" if hint else "")
                   + f"; valid sections: {', '.join(valid)}")
            raise GridmarketError(msg)
        out[sec] = dict(values)
    return out


def case_toml_text(data: Mapping[str, Mapping[str, Any]], *, header: str = "",
                   comments: Mapping[str, str] | None = None, where: str = "case.toml") -> str:
    """Validate ``data`` against the case.toml schema and render it, every key explicit.

    Parameters
    ----------
    data : mapping
        Section -> key -> value (missing keys take the schema's defaults).
    header, comments : str, mapping
        Comment lines at the top, and per section.
    where : str
        Named in the error message.

    Raises
    ------
    GridmarketError
        Naming each key that breaks the schema.
    """
    try:
        model = CaseToml.model_validate({k: dict(v) for k, v in data.items()})
    except ValidationError as exc:
        problems = "; ".join(f"[{'.'.join(str(x) for x in e['loc'][:2])}]: {e['msg']} (got {e.get('input')!r})"
                             for e in exc.errors())
        msg = f"{where}: {problems}"
        raise GridmarketError(msg) from exc
    dumped = model.model_dump()
    sections = []
    for sec in _CASE_SECTIONS:
        keys = [Key(k, list(v) if isinstance(v, tuple) else v) for k, v in dumped[sec].items() if v is not None]
        if sec == "communities" and isinstance(dumped[sec]["links"], list):
            keys = [Key("links", [list(p) for p in dumped[sec]["links"]])]
        sections.append(Section(sec, keys, comment=(comments or {}).get(sec, "")))
    return render_toml(sections, header=header)


def _coef(value: Any, k: int, offset: float, what: str) -> float:
    """A coefficient: a number, or a [lo, hi] range spread over households (k = 1, 2, ...)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(x, (int, float)) for x in value):
        return spread(k, float(value[0]), float(value[1]), offset=offset)
    msg = f"{what} must be a number or a [lo, hi] range, got {value!r}"
    raise GridmarketError(msg)


# ---------------------------------------------------------------------------- the builder

def _pv_connection(ld: LoadInfo, info: FeederInfo) -> tuple[str, int, float, str]:
    """bus1, phases, kV [kV] and conn of the PV of household ``ld`` (see the module docstring)."""
    bus = info.buses.get(ld.bus)
    nodes = ld.nodes
    if bus is not None and bus.split_phase and ld.phases == 1 and len(nodes) == 1 and nodes[0] in (1, 2):
        return f"{ld.bus}.1.2", 1, 2.0 * bus.kv_base, "wye"
    return ld.bus1, ld.phases, ld.kv, "delta" if ld.delta else "wye"


def _num(x: float) -> str:
    return f"{x:.6g}"


def _unique_name(base: str, taken: set[str]) -> str:
    name = base
    k = 2
    while name in taken:
        name = f"{base}_{k}"
        k += 1
    taken.add(name)
    return name


def _nearest_household(info: FeederInfo, bus: str, households: Mapping[str, str]) -> str | None:
    """The household at ``bus``, else the electrically nearest one (fewest series elements)."""
    at = [n for n, b in households.items() if b == bus]
    if at:
        return at[0]
    if bus not in info.buses:
        return None
    dist = _hops_from(info, bus, info.adjacency())
    best = min(((dist[b], i, n) for i, (n, b) in enumerate(households.items()) if b in dist), default=None)
    return None if best is None else best[2]


def new_case(
    feeder_master: Path | str,
    out: Path | str,
    *,
    pv_kwp: float | None = None,
    pv_percent_of_peak: float | None = None,
    communities: str | Path | CommunityRule = "transformer",
    template: Path | str | None = None,
    settings: Mapping[str, Any] | None = None,
    import_price: float | None = None,
    export_price: float | None = None,
    steps: int | None = None,
    step_hours: float | None = None,
    start: str | None = None,
    start_hour: float = 0.0,
    loadshape: str = "auto",
    pv_shape: Sequence[float] | None = None,
    name: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a case folder for any OpenDSS feeder (rules in the module docstring).

    Parameters
    ----------
    feeder_master : path
        The feeder's OpenDSS master script; redirected by absolute path, never copied.
    out : path
        Case folder to create (atomically).
    pv_kwp : float, optional
        PV per household [kWp], >= 0. Exclusive with ``pv_percent_of_peak``.
    pv_percent_of_peak : float, optional
        PV per household as a percentage of its peak step-mean demand [%], >= 0.
    communities : str, Path or CommunityRule
        ``"transformer"`` (default), ``"branch"``, ``"knn:<k>"`` or a CSV path.
    template : path, optional
        TOML with case.toml sections and ``[consumers]`` / ``[producers]`` coefficients.
    settings : mapping, optional
        Dotted overrides applied over the template, e.g. ``{"grid.import_price": 0.7,
        "consumers.b": [0.9, 1.3]}``.
    import_price, export_price : float, optional
        Grid tariff and feed-in price [currency/kWh] (override template and settings).
    steps, step_hours : int, float, optional
        Number of steps and their length [h] (default: the template's, else 24 and 1).
    start : str, optional
        ISO timestamp of step 0 (only labels the steps); without it steps are numbered.
    start_hour : float
        Hour of the feeder's loadshapes (and of the PV day clock, modulo 24) at which step 0
        begins [h].
    loadshape : str
        Which of a load's shapes to use: ``"auto"`` (daily, yearly, duty), ``"daily"``,
        ``"yearly"`` or ``"duty"``.
    pv_shape : sequence of float, optional
        PV output per kWp for each step [kW/kWp], in [0, 1]; default :func:`default_pv_shape`.
    name : str, optional
        ``[case].name`` (default: the master's file name without suffix, or its folder's name
        when the file is called ``Master``).
    overwrite : bool
        Replace an existing case folder.

    Returns
    -------
    pathlib.Path
        The case folder, absolute.

    Raises
    ------
    GridmarketError
        Bad arguments, a feeder that cannot be read, or a rule that does not apply.
    """
    master = Path(feeder_master).expanduser().resolve()
    if pv_kwp is not None and pv_percent_of_peak is not None:
        msg = "give pv_kwp or pv_percent_of_peak, not both"
        raise GridmarketError(msg)
    for label, v in (("pv_kwp", pv_kwp), ("pv_percent_of_peak", pv_percent_of_peak)):
        if v is not None and not (math.isfinite(v) and v >= 0):
            msg = f"{label} must be a finite number >= 0, got {v!r}"
            raise GridmarketError(msg)
    rule = parse_rule(communities)
    tree, cons, prod = _case_settings(master, template=template, settings=settings, import_price=import_price,
                                      export_price=export_price, steps=steps, step_hours=step_hours, start=start,
                                      name=name)
    n_steps, dt = int(tree["time"]["steps"]), float(tree["time"]["step_hours"])
    kva_ratio = float(prod.get("kva_ratio", 1.1))
    if not kva_ratio >= 1:
        msg = f"[producers].kva_ratio must be >= 1 (inverter kVA per kWp), got {kva_ratio}"
        raise GridmarketError(msg)
    if pv_shape is None:
        pv_pu = default_pv_shape(n_steps, step_hours=dt, start_hour=start_hour)
    else:
        pv_pu = np.asarray(pv_shape, dtype=float).reshape(-1)
        if pv_pu.size != n_steps or not np.all(np.isfinite(pv_pu)) or pv_pu.min() < 0 or pv_pu.max() > 1:
            msg = f"pv_shape must hold {n_steps} values in [0, 1] kW/kWp, got {pv_pu.size} values"
            raise GridmarketError(msg)

    info = inspect_feeder(master)
    if not info.loads:
        msg = f"{master} defines no enabled Load: there are no households to build a case from"
        raise GridmarketError(msg)
    profiles = load_profiles(info, steps=n_steps, step_hours=dt, start_hour=start_hour, loadshape=loadshape)
    households = {ld.name: ld.bus for ld in info.loads}
    com, labels = _communities_and_labels(info, households, rule)
    if all(c is None for c in com.values()):
        msg = "every load is passive (empty community in the CSV): a case needs at least one community"
        raise GridmarketError(msg)

    b = _Build(info=info, com=com, cons=cons, prod=prod, kva_ratio=kva_ratio,
               position={ld.name: k for k, ld in enumerate(info.loads, start=1)})
    b.add_households(profiles, pv_kwp=pv_kwp, pv_percent=pv_percent_of_peak)
    new_pv = pv_kwp is not None or pv_percent_of_peak is not None
    disabled = [pv.name for pv in info.pvsystems] if new_pv else []
    if not new_pv:
        b.adopt_feeder_pv(households, pv_pu, steps=n_steps, step_hours=dt, start_hour=start_hour,
                          loadshape=loadshape)
    if any(a["profile"] == "pv_pu" for a in b.agents):
        b.columns["pv_pu"] = np.round(pv_pu, 6)
    # rows by community (C1, C2, ...; passive last), feeder order within, consumer before its PV
    order = {a["name"]: i for i, a in enumerate(b.agents)}
    b.agents.sort(key=lambda a: (a["community"] is None, _community_key(a["community"]), order[a["name"]]))

    # --- files -----------------------------------------------------------------------------
    header, rows = _profile_rows(b.columns, tree["time"].get("start"), n_steps, dt)
    pv_text = [f"! PV written by gridmarket.cases.generic.new_case for {master.as_posix()}"]
    if new_pv:
        what = (f"{pv_kwp:g} kWp per household" if pv_kwp is not None
                else f"{pv_percent_of_peak:g} % of each household's peak step-mean demand")
        pv_text.append(f"! {what}; kVA = {kva_ratio:g} x kWp, unity pf, on each LV load's own connection.")
    if disabled:
        pv_text.append("! the feeder's own PV systems are switched off (the penetration is the one asked for):")
        pv_text += [f"Edit PVSystem.{n} enabled=no" for n in disabled]
    pv_text += b.pv_lines
    master_text = (
        "! gridmarket generic case: the feeder is redirected by absolute path (not copied);\n"
        "! PVSystems.dss adds the PV. Rules and figures: ../PROVENANCE.md.\n"
        f'Redirect "{master.as_posix()}"\n'
        "Redirect PVSystems.dss\n"
    )
    network = {"Master.dss": master_text, "PVSystems.dss": "\n".join(pv_text) + "\n"}

    members: dict[str, list[str]] = {}
    for a in b.agents:
        if a["kind"] == "consumer":
            members.setdefault(str(a["community"]), []).append(str(a["name"]))
    demand = np.sum([b.columns[ld.name] for ld in info.loads], axis=0)
    facts = {
        "master": master.as_posix(), "n_loads": len(info.loads), "rule": str(rule), "members": members,
        "labels": labels, "sources": b.sources, "loadshape": loadshape, "start_hour": start_hour,
        "n_pv": b.n_pv, "pv_kwp_total": b.pv_kwp, "disabled": disabled,
        "pv_rule": (f"{pv_kwp:g} kWp per household" if pv_kwp is not None else
                    f"{pv_percent_of_peak:g} % of peak" if pv_percent_of_peak is not None else
                    "the feeder's own PV systems"),
        "passive": [a["name"] for a in b.agents if a["kind"] == "passive" and a["element"].startswith("Load.")],
        "demand_kwh": float(demand.sum() * dt), "peak_kw": float(demand.max()),
        "pv_kwh": float(sum(float(np.sum(b.columns[a["profile"]]) * a["scale"] * dt) for a in b.agents
                            if a["kind"] == "producer")),
        "steps": n_steps, "dt": dt, "cons": cons, "prod": prod, "kva_ratio": kva_ratio,
    }
    comments = {
        "network": f"Feeder {master.as_posix()} (redirected, not copied) + gridmarket PV (network/PVSystems.dss).",
        "communities": _community_comment(facts),
    }
    head = ("Written by gridmarket.cases.generic.new_case (gridmarket new-case FEEDER.dss).\n"
            "Rules and figures: PROVENANCE.md.")
    toml = case_toml_text(tree, header=head, comments=comments, where="new_case settings")
    return write_case(Path(out), case_toml=toml, agents=b.agents, profiles_header=header,
                      profiles_rows=rows, network=network, extra={"PROVENANCE.md": _provenance(facts)},
                      overwrite=overwrite)


def _case_settings(master: Path, *, template: Path | str | None, settings: Mapping[str, Any] | None,
                   import_price: float | None, export_price: float | None, steps: int | None,
                   step_hours: float | None, start: str | None, name: str | None
                   ) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """case.toml sections, consumer and producer coefficients: defaults < template < settings <
    arguments."""
    tree: dict[str, dict[str, Any]] = {s: dict(v) for s, v in AGENT_DEFAULTS.items()}
    if template is not None:
        for sec, values in _read_template(Path(template)).items():
            _merge(tree, sec, values)
    for sec, values in _settings_tree(settings or {}).items():
        _merge(tree, sec, values)
    for sec in _AGENT_KEYS:
        bad = [k for k in tree.get(sec, {}) if k not in _AGENT_KEYS[sec]]
        if bad:
            msg = f"[{sec}] has unknown key(s) {bad}; valid keys: {', '.join(_AGENT_KEYS[sec])}"
            raise GridmarketError(msg)
    if tree.get("network", {}).get("master") is not None:
        msg = "[network].master is set by new_case (the feeder is redirected); remove it from the template"
        raise GridmarketError(msg)
    if import_price is not None:
        _merge(tree, "grid", {"import_price": float(import_price)})
    if export_price is not None:
        _merge(tree, "grid", {"export_price": float(export_price)})
    time_sec = tree.setdefault("time", {})
    for key, value in (("steps", steps), ("step_hours", step_hours), ("start", start)):
        if value is not None:
            time_sec[key] = value
    time_sec.setdefault("steps", 24)
    time_sec.setdefault("step_hours", 1.0)
    try:
        n_steps, dt = int(time_sec["steps"]), float(time_sec["step_hours"])
    except (TypeError, ValueError):
        n_steps, dt = 0, 0.0
    if n_steps < 1 or not dt > 0:
        msg = f"steps must be >= 1 and step_hours > 0, got {time_sec['steps']!r} and {time_sec['step_hours']!r}"
        raise GridmarketError(msg)
    net = tree.setdefault("network", {})
    net["master"] = "network/Master.dss"
    net.setdefault("monitored_buses", "lv")
    case_sec = tree.setdefault("case", {})
    case_sec.setdefault("name", master.parent.name if master.stem.lower() == "master" else master.stem)
    if name is not None:
        case_sec["name"] = name
    return tree, tree.pop("consumers"), tree.pop("producers")


@dataclass
class _Build:
    """Agents, profile columns and PV lines of a case being built."""

    info: FeederInfo
    com: Mapping[str, str | None]
    cons: Mapping[str, Any]
    prod: Mapping[str, Any]
    kva_ratio: float
    position: Mapping[str, int]  #: load name -> 1-based position in the feeder
    agents: list[dict[str, Any]] = field(default_factory=list)
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    pv_lines: list[str] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=dict)
    n_pv: int = 0
    pv_kwp: float = 0.0

    def _producer(self, row: dict[str, Any], k: int, community: str) -> dict[str, Any]:
        return {**row, "kind": "producer", "community": community,
                "a": _coef(self.prod.get("a"), k, 0.5, "[producers].a"),
                "b": _coef(self.prod.get("b"), k, 0.7, "[producers].b"), "c": 0.0}

    def add_households(self, profiles: Mapping[str, _Profile], *, pv_kwp: float | None,
                       pv_percent: float | None) -> None:
        """A consumer (or passive load) per load and, with a penetration, its PV."""
        taken = {pv.name for pv in self.info.pvsystems}
        for ld in self.info.loads:
            prof = profiles[ld.name]
            src = "loadshape" if prof.source.startswith("loadshape") else prof.source
            self.sources[src] = self.sources.get(src, 0) + 1
            self.columns[ld.name] = np.round(np.maximum(prof.p_kw, 0.0), 6)
            k, c = self.position[ld.name], self.com[ld.name]
            pf: float | None = None
            if "pf" in self.cons:
                pf = float(self.cons["pf"])
            elif prof.q_kvar is not None:
                p_mean, q_mean = float(prof.p_kw.mean()), float(prof.q_kvar.mean())
                if p_mean > 0:
                    pf = round(p_mean / math.hypot(p_mean, q_mean), 4)
            row = {"name": ld.name, "element": f"Load.{ld.name}", "profile": ld.name, "scale": 1.0, "pf": pf}
            if c is None:
                self.agents.append({**row, "kind": "passive", "community": None})
                continue
            self.agents.append({**row, "kind": "consumer", "community": c,
                                "a": _coef(self.cons.get("a"), k, 0.1, "[consumers].a"),
                                "b": _coef(self.cons.get("b"), k, 0.3, "[consumers].b"), "c": 0.0,
                                "flex": _coef(self.cons.get("flex"), k, 0.5, "[consumers].flex")})
            if (pv_kwp is None and pv_percent is None) or ld.kv >= _LV_KV:
                continue
            kwp = pv_kwp if pv_kwp is not None else (pv_percent or 0.0) / 100.0 * float(self.columns[ld.name].max())
            kwp = round(float(kwp), 3)
            if kwp < _MIN_KWP:
                continue
            pv_name = _unique_name(f"pv_{ld.name}", taken)
            bus1, phases, kv, conn = _pv_connection(ld, self.info)
            self.pv_lines.append(
                f"New PVSystem.{pv_name} phases={phases} bus1={bus1} kV={_num(kv)} conn={conn} "
                f"kVA={_num(self.kva_ratio * kwp)} Pmpp={_num(kwp)} irradiance=1 pf=1 %cutin=0 %cutout=0")
            self.agents.append(self._producer({"name": pv_name, "element": f"PVSystem.{pv_name}",
                                               "profile": "pv_pu", "scale": kwp}, k, c))
            self.pv_kwp += kwp
            self.n_pv += 1

    def adopt_feeder_pv(self, households: Mapping[str, str], pv_pu: np.ndarray, *, steps: int,
                        step_hours: float, start_hour: float, loadshape: str) -> None:
        """The feeder's own PVSystems as producers of the household at (or nearest) their bus."""
        for pv in self.info.pvsystems:
            owner = _nearest_household(self.info, pv.bus, households)
            cap = min(pv.pmpp_kw, pv.kva) / pv.pmpp_kw if pv.pmpp_kw > 0 else 0.0
            if owner is None or cap <= 0:
                continue
            shape_name = _shape_of(pv, loadshape)
            shape = self.info.loadshapes.get(shape_name) if shape_name else None
            if shape is None:
                per_kwp, col = pv_pu, "pv_pu"
            else:
                per_kwp = _means(shape, shape.p_mult, steps, step_hours, start_hour) * pv.irradiance
                col = f"pv_{shape.name}"
            if per_kwp.max() > cap + 1e-12:  # never ask for more than the inverter gives
                per_kwp, col = np.minimum(per_kwp, cap), f"pv_{pv.name}"
            self.columns.setdefault(col, np.round(np.maximum(per_kwp, 0.0), 6))
            row = {"name": _unique_name(pv.name, {a["name"] for a in self.agents}),
                   "element": f"PVSystem.{pv.name}", "profile": col, "scale": round(pv.pmpp_kw, 6)}
            c = self.com[owner]
            if c is None:
                self.agents.append({**row, "kind": "passive", "community": None})
                continue
            self.agents.append(self._producer(row, self.position[owner], c))
            self.pv_kwp += pv.pmpp_kw
            self.n_pv += 1


def _profile_rows(columns: Mapping[str, np.ndarray], start: str | None, steps: int, step_hours: float
                  ) -> tuple[list[str], list[list[Any]]]:
    """profiles.csv header and rows: ``time`` from ``start`` (ISO), else ``step``."""
    if start:
        try:
            times = pd.date_range(pd.Timestamp(start), periods=steps, freq=pd.Timedelta(hours=step_hours))
        except ValueError as exc:
            msg = f"start must be an ISO timestamp, got {start!r}"
            raise GridmarketError(msg) from exc
        fmt = "%Y-%m-%dT%H:%M" if (step_hours * 60).is_integer() else "%Y-%m-%dT%H:%M:%S"
        index: list[Any] = [t.strftime(fmt) for t in times]
    else:
        index = list(range(steps))
    names = list(columns)
    rows = [[index[s], *(float(columns[n][s]) for n in names)] for s in range(steps)]
    return ["time" if start else "step", *names], rows


def _community_key(c: object) -> tuple[int, str]:
    s = str(c or "")
    if s.startswith("C") and s[1:].isdigit():
        return (int(s[1:]), "")
    return (1 << 30, s)


def _community_comment(f: Mapping[str, Any]) -> str:
    lines = [f"Communities by rule {f['rule']!r}:"]
    for c, names in f["members"].items():
        label = f["labels"].get(c)
        lines.append(f"  {c} ({len(names)} households)" + (f": {label}" if label else ""))
    return "\n".join(lines)


def _provenance(f: Mapping[str, Any]) -> str:
    com = "\n".join(
        f"- `{c}` ({len(n)} households{', ' + f['labels'][c] if c in f['labels'] else ''}): "
        + ", ".join(n[:12]) + (" ..." if len(n) > 12 else "")
        for c, n in f["members"].items())
    src = ", ".join(f"{k}: {v}" for k, v in sorted(f["sources"].items()))
    disabled = (f"\nThe feeder's own PV systems were switched off: {', '.join(f['disabled'])}."
                if f["disabled"] else "")
    passive = (f"\nPassive loads (no market, no PV): {', '.join(f['passive'])}." if f["passive"] else "")
    return f"""\
# Generic case — provenance

Written by `gridmarket.cases.generic.new_case` from the OpenDSS feeder `{f['master']}`, which
`network/Master.dss` redirects by absolute path (it is not copied: the case needs the feeder in
place). The rules are in the docstring of `gridmarket/cases/generic.py`.

## Households and profiles
- {f['n_loads']} enabled loads, each a consumer agent of the same name driving `Load.<name>`.
- Profile sources ({f['loadshape']!r} shape choice): {src}.
- {f['steps']} steps of {f['dt']:g} h from hour {f['start_hour']:g} of the loadshapes' clock; each value is
  the mean demand over the step [kW].{passive}

## PV
- Rule: {f['pv_rule']}; {f['n_pv']} systems, {f['pv_kwp_total']:.3f} kWp in total; inverter kVA =
  {f['kva_ratio']:g} × kWp, unity pf, on each LV load's own connection (split-phase legs: across both legs).{disabled}
- Producers follow `pv_pu` [kW/kWp] × their kWp (`scale`).

## Communities (rule `{f['rule']}`)
{com}

## Economics
Consumers: {dict(f['cons'])}; producers: {dict(f['prod'])} (a number, or a [lo, hi] range spread over the
households by the golden-ratio sequence of their position in the feeder). Grid prices and every other
setting: `case.toml`.

## Figures
| quantity | value |
|---|---|
| demand, all loads | {f['demand_kwh']:.1f} kWh (peak {f['peak_kw']:.1f} kW) |
| PV available | {f['pv_kwh']:.1f} kWh |
"""
