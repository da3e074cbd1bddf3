"""gridmarket.topology on hand-built graphs, checked against hand-counted hops and km and a
plain breadth-first search on random trees and meshes."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from gridmarket.topology import Edge, Topology, bus_name

# src -line.m1 (1 km)- m1 -transformer.t1- a0 -line.a1 (0.1 km, written a1 -> a0)- a1 -line.a2 (0.2 km)- a2
#                      m1 -line.m2 (2 km)- m2 -transformer.t2 (written b0 -> m2)- b0 -switch.s1- b1
# an island x1 - x2 and an isolated bus "iso"
EDGES = [
    Edge("line.m1", "SRC.1.2.3", "m1", 1.0),
    Edge("transformer.t1", "m1", "a0.1.2.3", 0.0, "transformer"),
    Edge("line.a1", "a1.1", "a0.1", 0.1),
    Edge("line.a2", "a1", "a2", 0.2),
    Edge("line.m2", "m1", "m2", 2.0),
    Edge("transformer.t2", "b0", "m2", 0.0, "transformer"),
    Edge("switch.s1", "b0", "b1", 0.0, "switch"),
    Edge("line.x", "x1", "x2", 0.5),
]


@pytest.fixture()
def topo() -> Topology:
    return Topology(EDGES, "src", buses=["iso"])


def test_bus_name_drops_nodes_and_case() -> None:
    assert bus_name(" Bus1.1.2 ") == "bus1"


def test_hops_and_km_from_the_source(topo: Topology) -> None:
    assert topo.hops() == {"src": 0, "m1": 1, "a0": 2, "a1": 3, "a2": 4, "m2": 2, "b0": 3, "b1": 4}
    km = topo.distance_km()
    expected = {"src": 0.0, "m1": 1.0, "a0": 1.0, "a1": 1.1, "a2": 1.3, "m2": 3.0, "b0": 3.0, "b1": 3.0}
    assert km.keys() == expected.keys()
    for b, v in expected.items():
        assert km[b] == pytest.approx(v, abs=1e-12)
    hops = topo.hops_array()
    assert hops[topo.index["iso"]] == -1 and hops[topo.index["x1"]] == -1
    assert np.isinf(topo.distance_km_array()[topo.index["x2"]])


def test_hops_from_another_bus(topo: Topology) -> None:
    assert topo.hops("a2.1") == {"a2": 0, "a1": 1, "a0": 2, "m1": 3, "src": 4, "m2": 4, "b0": 5, "b1": 6}
    assert topo.hops("x1") == {"x1": 0, "x2": 1}
    assert topo.distance_km("b1")["a2"] == pytest.approx(2.0 + 0.1 + 0.2)  # m2-m1, a0-a1, a1-a2
    with pytest.raises(KeyError, match="nowhere"):
        topo.hops("nowhere")


def test_downstream_bus_whatever_the_order_written(topo: Topology) -> None:
    assert topo.downstream_bus("line.a1") == "a1"  # written downstream-first
    assert topo.downstream_bus("line.a1.2") == "a1"  # a conductor of a violation table
    assert topo.downstream_bus("a2") == "a2"  # bare line name
    assert topo.downstream_bus("transformer.t2") == "b0"  # written LV side first
    assert topo.downstream_bus("Line.M1") == "m1"
    assert topo.downstream_bus("line.x") == "x2"  # not connected: a tie, bus2 as written
    down = topo.downstream_buses()
    assert down["line.a1"] == "a1" and down["transformer.t1"] == "a0" and down["switch.s1"] == "b1"
    assert topo.kind("switch.s1") == "switch"
    with pytest.raises(KeyError, match=r"line\.zz"):
        topo.downstream_bus("line.zz")


def test_downstream_of_a_three_winding_transformer() -> None:
    # a 3-winding transformer is three edges with one name: its farthest bus is downstream
    edges = [Edge("line.l0", "s", "h"), Edge("transformer.t3", "h", "x", kind="transformer"),
             Edge("transformer.t3", "h", "y", kind="transformer"),
             Edge("transformer.t3", "x", "y", kind="transformer"), Edge("line.ly", "y", "z")]
    topo = Topology(edges, "s")
    # x and y are both 2 hops from s: the tie goes to the bus written last among t3's buses
    assert topo.downstream_bus("transformer.t3") == "y"


def test_parents_tree(topo: Topology) -> None:
    parents = topo.parents()
    assert parents["src"] is None
    assert parents["a1"] == ("a0", "line.a1")
    assert parents["b0"] == ("m2", "transformer.t2")
    assert parents["b1"] == ("b0", "switch.s1")
    assert "x1" not in parents and "iso" not in parents


def test_lv_areas_and_area_of(topo: Topology) -> None:
    areas = topo.lv_areas()
    assert areas == {"transformer.t1": ("a0", "a1", "a2"), "transformer.t2": ("b0", "b1")}
    owner = topo.area_of()
    assert owner["a2"] == "transformer.t1" and owner["b1"] == "transformer.t2"
    assert owner["m2"] is None and owner["src"] is None


def test_components(topo: Topology) -> None:
    comps = topo.components()
    assert comps[0] == ("a0", "a1", "a2", "b0", "b1", "m1", "m2", "src")
    assert sorted(comps[1:]) == [("iso",), ("x1", "x2")]


def test_nearest_customer_bus(topo: Topology) -> None:
    got = topo.nearest_customer_bus(["a2", "b1", "M1.2", "x1"], ["a1", "b1.1", "m2"])
    assert got == {"a2": "a1", "b1": "b1", "m1": "m2", "x1": None}
    # a0 is one hop from a1 and from m1: the tie goes to the name first in order ("a1"),
    # although m1 comes first in the graph's bus order
    assert topo.index["m1"] < topo.index["a1"]
    assert topo.nearest_customer_bus(["a0"], ["m1", "a1"]) == {"a0": "a1"}
    assert topo.nearest_customer_bus(["a0"], []) == {"a0": None}


def test_source_must_be_a_bus() -> None:
    with pytest.raises(ValueError, match="source bus"):
        Topology([Edge("line.a", "a", "b")], "c")
    with pytest.raises(ValueError, match="kind"):
        Edge("x", "a", "b", kind="fuse")
    with pytest.raises(ValueError, match="length_km"):
        Edge("x", "a", "b", length_km=-1.0)


# ----------------------------------------------------------------- against a plain BFS


def _bfs(adj: dict[str, set[str]], start: str) -> dict[str, int]:
    dist = {start: 0}
    queue = deque([start])
    while queue:
        u = queue.popleft()
        for v in sorted(adj[u]):
            if v not in dist:
                dist[v] = dist[u] + 1
                queue.append(v)
    return dist


def _random_graph(rng: np.random.Generator, n: int, extra: int) -> tuple[list[Edge], list[tuple[str, str]]]:
    """A random tree grown from b0 (child, parent recorded), edges written in random order and
    direction, plus ``extra`` chords (a mesh)."""
    edges, tree = [], []
    for k in range(1, n):
        parent = f"b{int(rng.integers(0, k))}"
        child = f"b{k}"
        tree.append((child, parent))
        a, b = (child, parent) if rng.random() < 0.5 else (parent, child)
        edges.append(Edge(f"line.t{k}", a, b, float(rng.uniform(0.01, 1.0))))
    for k in range(extra):
        a, b = (f"b{int(x)}" for x in rng.integers(0, n, 2))
        if a != b:
            edges.append(Edge(f"line.c{k}", a, b, float(rng.uniform(0.01, 1.0))))
    order = rng.permutation(len(edges))
    return [edges[i] for i in order], tree


@pytest.mark.parametrize("seed", range(6))
def test_random_trees_match_a_plain_search(seed: int) -> None:
    rng = np.random.default_rng(seed)
    edges, tree = _random_graph(rng, 60, 0)
    topo = Topology(edges, "b0")
    adj: dict[str, set[str]] = {b: set() for b in topo.buses}
    for e in edges:
        adj[e.bus1].add(e.bus2)
        adj[e.bus2].add(e.bus1)
    assert topo.hops() == _bfs(adj, "b0")
    # in a tree the downstream bus of every line is the child it was grown for
    down = topo.downstream_buses()
    for k, (child, _parent) in enumerate(tree, start=1):
        assert down[f"line.t{k}"] == child
    # km along the unique path: sum of lengths from each bus up to the root
    length = {frozenset((e.bus1, e.bus2)): e.length_km for e in edges}
    parent_of = dict(tree)
    km = topo.distance_km()
    for bus in topo.buses:
        total, b = 0.0, bus
        while b != "b0":
            total += length[frozenset((b, parent_of[b]))]
            b = parent_of[b]
        assert km[bus] == pytest.approx(total, abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_nearest_customer_matches_per_bus_search_on_meshes(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    edges, _ = _random_graph(rng, 80, 15)
    topo = Topology(edges, "b0")
    adj: dict[str, set[str]] = {b: set() for b in topo.buses}
    for e in edges:
        adj[e.bus1].add(e.bus2)
        adj[e.bus2].add(e.bus1)
    customers = [f"b{int(x)}" for x in rng.choice(80, 7, replace=False)]
    got = topo.nearest_customer_bus(topo.buses, customers)
    for bus in topo.buses:
        dist = _bfs(adj, bus)
        best = min((dist[c], c) for c in customers if c in dist)
        assert got[bus] == best[1], bus


def test_children_and_below(topo: Topology) -> None:
    kids = topo.children()
    assert kids["m1"] == ["a0", "m2"] and kids["a2"] == [] and "x1" not in kids
    assert topo.below("m2") == ["b0", "b1", "m2"]
    assert topo.below("a0.1") == ["a0", "a1", "a2"]
    assert topo.below("x1") == []


def test_from_table_like_network_lines_csv(topo: Topology) -> None:
    import pandas as pd

    frame = pd.DataFrame({
        "element": [e.name for e in EDGES], "bus1": [e.bus1 for e in EDGES], "bus2": [e.bus2 for e in EDGES],
        "kind": [e.kind for e in EDGES], "length_km": [e.length_km if e.name != "line.x" else np.nan for e in EDGES]})
    again = Topology.from_table(frame, "src")
    assert again.hops() == topo.hops() and again.distance_km() == topo.distance_km()
    assert again.downstream_buses() == topo.downstream_buses() and again.lv_areas() == topo.lv_areas()
    # without kind and length: 0 km lines, named by the 'line' column
    bare = Topology.from_table(pd.DataFrame({"line": ["l1", "l2"], "bus1": ["b", "b"], "bus2": ["a", "c"]}), "a")
    assert bare.downstream_buses() == {"l1": "b", "l2": "c"} and bare.kind("l1") == "line"
