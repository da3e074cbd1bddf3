"""Community rules of :func:`gridmarket.cases.generic.new_case` and the sweep: which households
trade together.

Rules (``communities=``):

- ``"transformer"``: by the transformer that feeds the load's LV area (its distribution transformer,
  :meth:`gridmarket.topology.Topology.area_of`; loads with no transformer above them share one group);
- ``"branch"``: by feeder branch (:func:`gridmarket.cases.ieee_eu_lv.feeder_branches`, from the
  source bus, 20 % share);
- ``"knn:<k>"``: groups of about ``k`` households: the unassigned load farthest from the source
  starts a group with its ``k − 1`` nearest unassigned loads (Euclidean on bus coordinates;
  electrical hops when any load bus has no coordinates); a remainder of fewer than ``k`` (the last
  group) joins, household by household, the group of its nearest assigned household, so no group
  is smaller than ``k`` unless the feeder has fewer than ``k`` households;
- a CSV path: columns ``load`` (or ``agent``/``name``) and ``community``, an empty community making
  the load a passive agent (no market, no PV).

Communities are named ``C1``, ``C2``, ... in the order of their first load in the feeder (a CSV's
own names are kept); :func:`communities_and_labels` also returns the rule's own label of each
(``transformer.tx1``, ``branch 2``, ``group 3`` renamed to its ``C`` name).
"""

from __future__ import annotations

import csv
import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gridmarket.errors import GridmarketError
from gridmarket.network.inspect import FeederInfo

__all__ = ["CommunityRule", "assign_communities", "communities_and_labels", "nearest_household", "parse_rule"]


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


def _by_transformer(info: FeederInfo, members: Mapping[str, str]) -> dict[str, str]:
    """The transformer that feeds each household's bus (its LV area, :meth:`Topology.area_of`)."""
    area = info.topology.area_of()
    return {name: area.get(bus) or "(no transformer)" for name, bus in members.items()}


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
    topo = info.topology
    if use_xy:
        src = info.buses.get(info.source_bus)
        origin = (np.array([src.x, src.y]) if src is not None and np.isfinite([src.x, src.y]).all()
                  else xy.mean(axis=0))
        far = np.hypot(*(xy - origin).T)
    else:
        hops = topo.hops()
        far = np.array([hops.get(members[n], -1) for n in names], dtype=float)

    def distances(seed: int, among: list[int]) -> dict[int, float]:
        if use_xy:
            return {i: float(np.hypot(*(xy[i] - xy[seed]))) for i in among}
        hs = topo.hops(members[names[seed]])
        return {i: float(hs.get(members[names[i]], math.inf)) for i in among}

    free = list(range(len(names)))
    group_of: dict[int, int] = {}
    groups = 0
    while len(free) >= k or (free and groups == 0):
        seed = max(free, key=lambda i: (far[i], -i))
        d = distances(seed, free)
        chosen = sorted(free, key=lambda i: (d[i], i))[:k]
        for i in chosen:
            group_of[i] = groups
        groups += 1
        free = [i for i in free if i not in chosen]
    # a remainder of fewer than k joins, one by one, the group of its nearest grouped household
    for i in free:
        d = distances(i, list(group_of))
        group_of[i] = group_of[min(group_of, key=lambda j: (d[j], j))]
    # number the groups by their first household in feeder order, so "group g" becomes Cg
    number: dict[int, int] = {}
    for i in range(len(names)):
        number.setdefault(group_of[i], len(number) + 1)
    return {names[i]: f"group {number[group_of[i]]}" for i in range(len(names))}


def _raw_communities(info: FeederInfo, members: Mapping[str, str], rule: CommunityRule
                     ) -> tuple[dict[str, str | None], bool]:
    """The rule's own label per household, and whether the labels are names to keep (CSV)."""
    missing = [n for n, b in members.items() if b not in info.buses]
    if missing:
        msg = f"{len(missing)} household bus(es) not in the feeder: {missing[:5]}"
        raise GridmarketError(msg)
    if rule.kind in ("transformer", "branch", "knn"):
        reached = info.topology.hops()
        cut = [n for n, b in members.items() if b not in reached]
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


def communities_and_labels(info: FeederInfo, members: Mapping[str, str], rule: CommunityRule
                            ) -> tuple[dict[str, str | None], dict[str, str]]:
    raw, keep = _raw_communities(info, members, rule)
    named = _renumber(raw, list(members), keep=keep)
    labels = {} if keep else {str(named[n]): str(raw[n]) for n in members}
    return named, labels



def nearest_household(info: FeederInfo, bus: str, households: Mapping[str, str]) -> str | None:
    """The household at ``bus`` (the first in ``households`` order), else one at the electrically
    nearest bus with households (fewest series elements; ties by bus name,
    :meth:`gridmarket.topology.Topology.nearest_customer_bus`); None when none is connected."""
    at = [n for n, b in households.items() if b == bus]
    if at:
        return at[0]
    topo = info.topology
    if bus not in info.buses or bus not in topo:
        return None
    near = topo.nearest_customer_bus([bus], households.values())[bus]
    return None if near is None else next(n for n, b in households.items() if b == near)
