"""Stage VI: where batteries go and how banks grow (shared MODEL.md, *Battery placement*).

Pure functions on bus names and counts: no OpenDSS here. The network supplies the
line -> downstream-bus map and hop distances.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping

import pandas as pd

from gridmarket.network.violations import element_of

__all__ = ["violated_buses", "next_banks", "battery_community"]


def violated_buses(violations: pd.DataFrame, downstream_bus: Callable[[str], str]) -> set[str]:
    """Buses with at least one violation: a voltage violation's own bus, a line-current
    violation's downstream bus (lower-case names, no phase suffix)."""
    if violations.empty:
        return set()
    kinds = violations["kind"].to_numpy()
    owners = element_of(violations["element"].astype(str).to_numpy())
    out = set(owners[kinds == "voltage"].tolist())
    out.update(downstream_bus(line) for line in set(owners[kinds == "current"].tolist()))
    return out


def next_banks(banks: Mapping[str, int], violated: Iterable[str], ladder: tuple[int, ...]) -> dict[str, int]:
    """Bank sizes after one placement round.

    Every violated bus without a battery gets ``ladder[0]`` SBUs; a violated bus with a bank
    grows to the next ladder size; a bank at the top of the ladder stays. Banks never shrink.

    Returns the new mapping bus -> SBUs (equal to ``banks`` when nothing can change: the
    ladder is exhausted).
    """
    new = dict(banks)
    for bus in sorted(set(violated)):
        units = banks.get(bus)
        if units is None:
            new[bus] = ladder[0]
        else:
            bigger = [u for u in ladder if u > units]
            if bigger:
                new[bus] = bigger[0]
    return new


def battery_community(bus: str, bus_communities: Mapping[str, list[str]],
                      distances: Callable[[str], Mapping[str, int]]) -> str | None:
    """The community a new battery at ``bus`` joins.

    The most common community among market agents at the bus (ties: first in name order);
    where there are none, that of the electrically nearest bus with agents (fewest lines
    away; ties broken by bus name). None if no agent is reachable.
    """
    here = bus_communities.get(bus)
    if here:
        counts = Counter(here)
        best = max(counts.values())
        return sorted(c for c, n in counts.items() if n == best)[0]
    dist = distances(bus)
    reachable = [(d, b) for b, d in dist.items() if bus_communities.get(b)]
    if not reachable:
        return None
    _, nearest = min(reachable)
    return battery_community(nearest, bus_communities, distances)
