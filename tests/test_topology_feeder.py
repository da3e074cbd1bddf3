"""The engine's and the inspector's topology on a small compiled feeder: a transformer, a line
written downstream-first, lengths in m and kft, a switch; hops, km and downstream buses by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridmarket.network import OpenDSSNetwork
from gridmarket.network.inspect import inspect_feeder
from gridmarket.topology import Topology

MASTER = """\
Clear
Set DefaultBaseFrequency=50
New Circuit.t phases=3 basekV=11 pu=1.0 bus1=src
New Line.mv bus1=src bus2=mv1 phases=3 r1=0.1 x1=0.1 r0=0.1 x0=0.1 c1=0 c0=0 length=2 units=km
New Transformer.tx1 phases=3 windings=2 buses=[mv1 lv0] conns=[delta wye] kVs=[11 0.4] kVAs=[250 250] %R=1 XHL=4
! (units after the impedances: OpenDSS resets a line's units when r1... follow them)
! written downstream-first: lv1 is farther from the source than lv0
New Line.l1 bus1=lv1 bus2=lv0 phases=3 r1=0.2 x1=0.1 r0=0.2 x0=0.1 c1=0 c0=0 length=150 units=m
New Line.l2 bus1=lv1 bus2=lv2 phases=3 r1=0.2 x1=0.1 r0=0.2 x0=0.1 c1=0 c0=0 length=1 units=kft
New Line.sw bus1=lv2 bus2=lv3 phases=3 switch=yes
New Load.ld bus1=lv3 phases=3 kV=0.4 kW=10 kvar=2
Set VoltageBases=[11 0.4]
CalcVoltageBases
"""


@pytest.fixture()
def master(tmp_path: Path) -> Path:
    path = tmp_path / "Master.dss"
    path.write_text(MASTER)
    return path


def _check(topo: Topology) -> None:
    assert topo.source == "src"
    assert topo.hops() == {"src": 0, "mv1": 1, "lv0": 2, "lv1": 3, "lv2": 4, "lv3": 5}
    km = topo.distance_km()
    assert km["lv0"] == pytest.approx(2.0)
    assert km["lv1"] == pytest.approx(2.15)
    assert km["lv3"] == pytest.approx(2.15 + 0.3048)  # switches weigh 0 km (OpenDSS gives them 1 m)
    assert topo.downstream_bus("line.l1") == "lv1"
    assert topo.downstream_bus("transformer.tx1") == "lv0"
    assert topo.kind("line.sw") == "switch" and topo.kind("transformer.tx1") == "transformer"
    assert topo.lv_areas() == {"transformer.tx1": ("lv0", "lv1", "lv2", "lv3")}
    assert topo.nearest_customer_bus(["lv0", "src"], ["lv3"]) == {"lv0": "lv3", "src": "lv3"}


def test_engine_topology(master: Path) -> None:
    net = OpenDSSNetwork(master)
    _check(net.topology)
    assert net.downstream_bus("line.l1.2") == "lv1"
    assert net.downstream_bus("transformer.tx1") == "lv0"
    assert net.downstream_buses() == {"line.mv": "mv1", "line.l1": "lv1", "line.l2": "lv2", "line.sw": "lv3",
                                      "transformer.tx1": "lv0"}
    assert net.bus_distance("lv3")["src"] == 5
    assert net.lines.loc["line.l2", "length_km"] == pytest.approx(0.3048)


def test_inspector_topology(master: Path) -> None:
    _check(inspect_feeder(master).topology)
