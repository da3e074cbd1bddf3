"""Feeder topology as a graph: hop and electrical distances, downstream buses, LV areas and the
nearest bus with customers. Pure numpy / :mod:`scipy.sparse.csgraph`; no OpenDSS here.

A feeder is a set of buses joined by series elements (*edges*): lines, transformers and
switches. :class:`Topology` is built once from the edges and the source bus (the feeder head)
and answers every graph question the project asks, so that the engine, placement, the case
builders and the report all use one rule:

* **hops**: the number of series elements on the shortest path (lines, transformers and
  switches count one each);
* **distance** [km]: the length of the shortest path, each edge weighted by its length
  (transformers and switches weigh 0 km);
* **downstream bus** of an edge: the end with more hops from the source, whatever order the
  edge was written in (a tie, only possible in a meshed network, goes to the ``bus2`` as
  written; an end not connected to the source counts as farthest);
* **LV areas**: the buses below each transformer, i.e. the connected component of the
  transformer's downstream bus once every transformer is taken out;
* **nearest bus with customers**: for each bus of a set, the bus with customers that is the
  fewest hops away (ties broken by bus name), from one multi-source shortest-path search.

Bus names are lower case and without nodes (``"Bus1.1.2"`` is bus ``"bus1"``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

__all__ = ["EDGE_KINDS", "Edge", "Topology", "bus_name"]

#: Kinds of series element a :class:`Edge` may be.
EDGE_KINDS: tuple[str, ...] = ("line", "transformer", "switch")
_NO_PATH = -1


def bus_name(spec: str) -> str:
    """Bus of a ``bus.node.node`` spec, lower case and stripped: ``"Bus1.1.2"`` -> ``"bus1"``."""
    return str(spec).strip().split(".", 1)[0].lower()


@dataclass(frozen=True)
class Edge:
    """One series element between two buses.

    Attributes
    ----------
    name : str
        Element name, e.g. ``"line.l1"`` or ``"transformer.tx1"`` (kept as given, lower case).
        A multi-winding transformer is several edges with the same name.
    bus1, bus2 : str
        Its buses as written (nodes allowed; they are dropped).
    length_km : float
        Length [km] (>= 0). Only lines have one: transformers and switches weigh 0 km in
        :meth:`Topology.distance_km` whatever is given.
    kind : {"line", "transformer", "switch"}
    """

    name: str
    bus1: str
    bus2: str
    length_km: float = 0.0
    kind: str = "line"

    def __post_init__(self) -> None:
        if self.kind not in EDGE_KINDS:
            msg = f"edge {self.name!r}: kind must be one of {', '.join(EDGE_KINDS)}, got {self.kind!r}"
            raise ValueError(msg)
        if not (np.isfinite(self.length_km) and self.length_km >= 0):
            msg = f"edge {self.name!r}: length_km must be finite and >= 0, got {self.length_km}"
            raise ValueError(msg)


class Topology:
    """The bus graph of a feeder, seen from its source.

    Parameters
    ----------
    edges : iterable of Edge
        Series elements. Edges whose two ends are the same bus are ignored.
    source : str
        Bus of the feeder head (the voltage source); nodes allowed.
    buses : iterable of str, optional
        Further buses (e.g. every bus of the circuit), so that isolated buses exist in the
        graph; the edges' buses are always included.

    Raises
    ------
    ValueError
        If the source bus is not a bus of the graph, or an edge is malformed.
    """

    def __init__(self, edges: Iterable[Edge], source: str, buses: Iterable[str] = ()) -> None:
        edge_list = [e for e in edges if bus_name(e.bus1) != bus_name(e.bus2)]
        names: dict[str, int] = {}
        for b in buses:
            names.setdefault(bus_name(b), len(names))
        for e in edge_list:
            names.setdefault(bus_name(e.bus1), len(names))
            names.setdefault(bus_name(e.bus2), len(names))
        self.source: str = bus_name(source)
        if self.source not in names:
            msg = f"source bus {source!r} is not a bus of the graph"
            raise ValueError(msg)
        self.buses: tuple[str, ...] = tuple(names)
        self.index: dict[str, int] = names
        n = len(names)
        self.edges: tuple[Edge, ...] = tuple(edge_list)
        i = np.array([names[bus_name(e.bus1)] for e in edge_list], dtype=np.intp)
        j = np.array([names[bus_name(e.bus2)] for e in edge_list], dtype=np.intp)
        km = np.array([e.length_km if e.kind == "line" else 0.0 for e in edge_list], dtype=float)
        tx = np.array([e.kind == "transformer" for e in edge_list], dtype=bool)
        self._i, self._j, self._km, self._tx = i, j, km, tx
        # element name -> indices of its distinct buses, in the order written
        ends: dict[str, list[int]] = {}
        for e, a, b in zip(edge_list, i.tolist(), j.tolist(), strict=True):
            lst = ends.setdefault(e.name.lower(), [])
            for x in (a, b):
                if x not in lst:
                    lst.append(x)
        self._ends = ends
        self._kind = {e.name.lower(): e.kind for e in edge_list}
        self._hop_graph = _symmetric(i, j, np.ones(i.size), n)
        self._km_graph = _symmetric(i, j, km, n)  # explicit zeros stay edges (0 km)
        self._src_hops: np.ndarray | None = None
        self._src_km: np.ndarray | None = None

    # ----------------------------------------------------------------- construction

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]], source: str) -> Topology:
        """A graph of unnamed 0-km lines ``(bus1, bus2)`` (names ``"e0"``, ``"e1"``...)."""
        return cls((Edge(f"e{k}", a, b) for k, (a, b) in enumerate(pairs)), source)

    @classmethod
    def from_table(cls, table: Any, source: str,
                   buses: Iterable[str] = ()) -> Topology:
        """A graph from a table of series elements, e.g. ``network_lines.csv`` read by pandas or
        :attr:`OpenDSSNetwork.lines <gridmarket.network.OpenDSSNetwork.lines>` reset.

        ``table`` has columns ``bus1``, ``bus2`` and a name column (``element``, ``line`` or
        ``name``; row numbers when none), optionally ``kind`` (line | transformer | switch;
        ``line`` when absent) and ``length_km`` (0 when absent or NaN).
        """
        b1 = [str(b) for b in table["bus1"]]
        b2 = [str(b) for b in table["bus2"]]
        n = len(b1)
        name_col = next((c for c in ("element", "line", "name") if c in table), None)
        names = [str(x) for x in table[name_col]] if name_col else [f"e{k}" for k in range(n)]
        kinds = [str(x) for x in table["kind"]] if "kind" in table else ["line"] * n
        km = [float(x) for x in table["length_km"]] if "length_km" in table else [0.0] * n
        km = [x if np.isfinite(x) else 0.0 for x in km]
        return cls((Edge(*row) for row in zip(names, b1, b2, km, kinds, strict=True)), source, buses)

    # ----------------------------------------------------------------- look-up

    def __len__(self) -> int:
        return len(self.buses)

    def __contains__(self, bus: object) -> bool:
        return isinstance(bus, str) and bus_name(bus) in self.index

    def _idx(self, bus: str) -> int:
        key = bus_name(bus)
        if key not in self.index:
            msg = f"bus {bus!r} is not in the network"
            raise KeyError(msg)
        return self.index[key]

    def kind(self, element: str) -> str:
        """Kind of a series element (``"line"``, ``"transformer"``, ``"switch"``)."""
        return self._kind[self._element_key(element)]

    def _element_key(self, element: str) -> str:
        key = element.lower()
        if key in self._ends:
            return key
        head, _, tail = key.rpartition(".")
        if head in self._ends and tail.isdigit():  # a conductor: "line.x.2"
            return head
        if f"line.{key}" in self._ends:
            return f"line.{key}"
        msg = f"series element {element!r} is not in the network"
        raise KeyError(msg)

    # ----------------------------------------------------------------- distances

    def hops_array(self, start: str | None = None) -> np.ndarray:
        """Hops from ``start`` (default the source) to every bus, in :attr:`buses` order.

        Returns an int array; ``-1`` for a bus not connected to ``start``.
        """
        if start is None or bus_name(start) == self.source:
            if self._src_hops is None:
                self._src_hops = self._hops_from([self.index[self.source]])
            return self._src_hops.copy()
        return self._hops_from([self._idx(start)])

    def _hops_from(self, starts: Sequence[int]) -> np.ndarray:
        d = csgraph.dijkstra(self._hop_graph, directed=True, indices=list(starts), unweighted=True,
                             min_only=True)
        out = np.full(len(self.buses), _NO_PATH, dtype=np.int64)
        ok = np.isfinite(d)
        out[ok] = np.rint(d[ok]).astype(np.int64)
        return out

    def hops(self, start: str | None = None) -> dict[str, int]:
        """Hops from ``start`` (default the source) to every connected bus: ``{bus: hops}``
        (``start`` itself is 0; buses not connected to it are absent)."""
        d = self.hops_array(start)
        return {b: int(x) for b, x in zip(self.buses, d.tolist(), strict=True) if x >= 0}

    def distance_km_array(self, start: str | None = None) -> np.ndarray:
        """Length of the shortest path [km] from ``start`` (default the source) to every bus,
        in :attr:`buses` order; ``inf`` for a bus not connected to it."""
        if start is None or bus_name(start) == self.source:
            if self._src_km is None:
                self._src_km = np.asarray(csgraph.dijkstra(self._km_graph, directed=True,
                                                           indices=self.index[self.source]), dtype=float)
            return self._src_km.copy()
        return np.asarray(csgraph.dijkstra(self._km_graph, directed=True, indices=self._idx(start)),
                          dtype=float)

    def distance_km(self, start: str | None = None) -> dict[str, float]:
        """Electrical distance [km] along the feeder from ``start`` (default the source) to every
        connected bus: ``{bus: km}``."""
        d = self.distance_km_array(start)
        return {b: float(x) for b, x in zip(self.buses, d.tolist(), strict=True) if np.isfinite(x)}

    # ----------------------------------------------------------------- downstream

    def downstream_bus(self, element: str) -> str:
        """The bus of ``element`` farther (in hops) from the source.

        ``element`` is an edge name (``"line.x"``; ``"x"`` is read as ``"line.x"``) or a
        conductor name from a violation table (``"line.x.2"``). For an element with more than
        two buses (a three-winding transformer) the farthest of them; ties go to the bus
        written last. A bus not connected to the source counts as farthest.

        Raises
        ------
        KeyError
            If the element is not in the graph.
        """
        ends = self._ends[self._element_key(element)]
        d = self._far_hops()
        best = max(range(len(ends)), key=lambda k: (int(d[ends[k]]), k))
        return self.buses[ends[best]]

    def downstream_buses(self) -> dict[str, str]:
        """Downstream bus of every series element: ``{name: bus}`` (see :meth:`downstream_bus`)."""
        d = self._far_hops()
        out = {}
        for name, ends in self._ends.items():
            best = max(range(len(ends)), key=lambda k: (int(d[ends[k]]), k))
            out[name] = self.buses[ends[best]]
        return out

    def _far_hops(self) -> np.ndarray:
        d = self.hops_array()
        return np.where(d < 0, np.iinfo(np.int64).max, d)

    def parents(self) -> dict[str, tuple[str, str] | None]:
        """Shortest-hop tree from the source: ``bus -> (parent bus, element joining them)``,
        ``None`` at the source; buses not connected to the source are absent. Where two
        parents are equally near, the one first in bus order wins (deterministic)."""
        n = len(self.buses)
        d = self.hops_array()
        i = np.concatenate([self._i, self._j])
        j = np.concatenate([self._j, self._i])
        k = np.concatenate([np.arange(self._i.size), np.arange(self._i.size)])
        keep = (d[i] >= 0) & (d[j] == d[i] + 1)  # i is one hop nearer than j
        i, j, k = i[keep], j[keep], k[keep]
        names = np.array(self.buses, dtype=object)
        order = np.lexsort((k, names[i].astype(str), j)) if i.size else np.array([], dtype=np.intp)
        out: dict[str, tuple[str, str] | None] = {self.source: None}
        seen = np.zeros(n, dtype=bool)
        for r in order.tolist():
            child = int(j[r])
            if not seen[child]:
                seen[child] = True
                out[self.buses[child]] = (self.buses[int(i[r])], self.edges[int(k[r])].name)
        return out

    def children(self) -> dict[str, list[str]]:
        """The shortest-hop tree of :meth:`parents` read downwards: ``{bus: child buses}``
        (sorted names; every bus connected to the source has an entry, a leaf an empty list)."""
        out: dict[str, list[str]] = {}
        for bus, up in self.parents().items():
            out.setdefault(bus, [])
            if up is not None:
                out.setdefault(up[0], []).append(bus)
        for kids in out.values():
            kids.sort()
        return out

    def below(self, bus: str) -> list[str]:
        """``bus`` and every bus under it in the shortest-hop tree from the source (sorted);
        empty when ``bus`` is not connected to the source."""
        kids = self.children()
        start = bus_name(bus)
        if start not in kids:
            return []
        out, todo = [], [start]
        while todo:
            b = todo.pop()
            out.append(b)
            todo.extend(kids[b])
        return sorted(out)

    # ----------------------------------------------------------------- areas

    def lv_areas(self) -> dict[str, tuple[str, ...]]:
        """Buses below each transformer: ``{transformer name: buses}`` (sorted names).

        An area is the connected component, once every transformer is taken out, of the
        transformer's downstream bus; the component that holds the source is nobody's area
        (a transformer whose downstream bus lies there, e.g. in a loop, gets no entry). Two
        transformers in parallel feeding one component share it (each lists it).
        """
        labels = self._components_without_transformers()
        src_label = labels[self.index[self.source]]
        members: dict[int, list[str]] = {}
        for b, lab in zip(self.buses, labels.tolist(), strict=True):
            members.setdefault(int(lab), []).append(b)
        out: dict[str, tuple[str, ...]] = {}
        down = self.downstream_buses()
        for name, kind in self._kind.items():
            if kind != "transformer":
                continue
            lab = int(labels[self.index[down[name]]])
            if lab != src_label:
                out[name] = tuple(sorted(members[lab]))
        return out

    def area_of(self) -> dict[str, str | None]:
        """Transformer that feeds each bus: ``{bus: transformer name}``, None for the buses of
        the source's own component (no transformer between them and the source). Where
        several transformers feed one area, the first in name order."""
        out: dict[str, str | None] = dict.fromkeys(self.buses)
        for name, members in sorted(self.lv_areas().items(), reverse=True):
            for b in members:
                out[b] = name
        return out

    def _components_without_transformers(self) -> np.ndarray:
        keep = ~self._tx
        g = _symmetric(self._i[keep], self._j[keep], np.ones(int(keep.sum())), len(self.buses))
        _, labels = csgraph.connected_components(g, directed=False)
        return np.asarray(labels)

    def components(self) -> list[tuple[str, ...]]:
        """Connected components of the whole graph (sorted bus names), the source's first."""
        _, labels = csgraph.connected_components(self._hop_graph, directed=False)
        groups: dict[int, list[str]] = {}
        for b, lab in zip(self.buses, labels.tolist(), strict=True):
            groups.setdefault(int(lab), []).append(b)
        src = int(labels[self.index[self.source]])
        rest = sorted((tuple(sorted(v)) for k, v in groups.items() if k != src))
        return [tuple(sorted(groups[src])), *rest]

    # ----------------------------------------------------------------- nearest customers

    def nearest_customer_bus(self, buses: Iterable[str], customer_buses: Iterable[str]
                             ) -> dict[str, str | None]:
        """For each bus of ``buses``, the bus with customers fewest hops away.

        A bus that has customers is its own nearest. Ties are broken by bus name (the first in
        sorted order), so the answer does not depend on the order of the edges. One
        multi-source shortest-path search over the whole graph, whatever the number of buses
        asked for.

        Parameters
        ----------
        buses : iterable of str
            Buses to answer for (nodes allowed).
        customer_buses : iterable of str
            Buses where customers (agents) connect.

        Returns
        -------
        dict
            Asked bus (lower case, no nodes) -> nearest customer bus, or None when no customer
            bus is connected to it (or there is none).

        Raises
        ------
        KeyError
            If an asked bus is not in the graph.
        """
        asked = [bus_name(b) for b in buses]
        idx = np.array([self._idx(b) for b in asked], dtype=np.intp)
        cust = sorted({bus_name(c) for c in customer_buses if bus_name(c) in self.index})
        if not cust:
            return dict.fromkeys(asked)
        nearest = self._nearest_source(np.array([self.index[c] for c in cust], dtype=np.intp))
        return {b: (None if nearest[k] < 0 else self.buses[nearest[k]])
                for b, k in zip(asked, idx.tolist(), strict=True)}

    def _nearest_source(self, sources: np.ndarray) -> np.ndarray:
        """For every bus, the index of the nearest of ``sources`` (hops; ties: the earlier
        source in ``sources``), -1 when none is connected.

        Each source ``s_r`` (rank r = 0..R-1) gets a private entry node joined to it by a one-way
        edge of weight ``(r + 1) / (R + 2)``, in (0, 1); all bus edges weigh 1. The shortest
        path from the entries to a bus then has length ``hops + (r + 1) / (R + 2)``, minimal
        for the fewest hops
        and, among equals, the lowest rank: the lexicographic rule in one Dijkstra run.
        """
        n, r = len(self.buses), sources.size
        entry = n + np.arange(r)
        w = (np.arange(r, dtype=float) + 1.0) / (r + 2.0)  # > 0 so the edges exist, < 1
        bus_graph = self._hop_graph.tocoo()  # parallel edges already merged (weight 1)
        rows = np.concatenate([bus_graph.row, entry])
        cols = np.concatenate([bus_graph.col, sources])
        vals = np.concatenate([bus_graph.data, w])
        g = sp.csr_matrix((vals, (rows, cols)), shape=(n + r, n + r))
        _, _, src = csgraph.dijkstra(g, directed=True, indices=entry, min_only=True,
                                     return_predecessors=True)
        src = np.asarray(src[:n], dtype=np.intp)
        out = np.full(n, -1, dtype=np.intp)
        ok = src >= 0
        out[ok] = sources[src[ok] - n]
        return out


def _symmetric(i: np.ndarray, j: np.ndarray, w: np.ndarray, n: int) -> sp.csr_matrix:
    """An undirected graph as a symmetric CSR matrix; parallel edges keep the smaller weight."""
    rows = np.concatenate([i, j])
    cols = np.concatenate([j, i])
    vals = np.concatenate([w, w])
    if rows.size:
        # keep the minimum weight of parallel edges (coo->csr would add them up)
        order = np.lexsort((vals, cols, rows))
        rows, cols, vals = rows[order], cols[order], vals[order]
        first = np.ones(rows.size, dtype=bool)
        first[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
        rows, cols, vals = rows[first], cols[first], vals[first]
    return sp.csr_matrix((vals, (rows, cols)), shape=(n, n))
