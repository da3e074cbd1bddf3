"""Transformer loadings in PowerFlowResult against a hand-computed balanced circuit; the limit
check's transformer rows; monitored 'customers'; the engine implements PowerFlowEngine."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gridmarket.network import (
    OpenDSSNetwork,
    PowerFlowEngine,
    PowerFlowResult,
    check_limits,
    count_violations,
    monitored_mask,
)

# a stiff 11 kV source, a 50 kVA 11/0.4 kV Dyn transformer (R = 1 %, X = 2 % on its rating,
# no magnetising branch or no-load loss) and a balanced constant-impedance load at 0.4 kV
MASTER = """\
Clear
Set DefaultBaseFrequency=50
New Circuit.tx phases=3 basekV=11 pu=1.0 bus1=hv R1=0 X1=0.000001 R0=0 X0=0.000001
New Transformer.t1 phases=3 windings=2 buses=[hv lv] conns=[delta wye] kVs=[11 0.4] kVAs=[50 50]
~ %Rs=[0.5 0.5] XHL=2 %noloadloss=0 %imag=0
New Line.svc bus1=lv bus2=cust phases=3 r1=0.001 x1=0 r0=0.001 x0=0 c1=0 c0=0 length=1 units=none normamps=400
New Load.ld bus1=cust phases=3 conn=wye kV=0.4 kW=40 kvar=0 model=2
Set VoltageBases=[11 0.4]
CalcVoltageBases
Set tolerance=1e-10
"""


def _hand_loading(p_kw: float) -> float:
    """Winding-1 |S| / 50 kVA of the circuit above, per-phase equivalent on the LV side."""
    z_base = 0.4**2 / 0.05  # ohm on 50 kVA, 0.4 kV
    z_tx = (0.01 + 0.02j) * z_base
    z_line = 0.001
    z_load = 400.0**2 / (p_kw * 1e3)  # constant impedance (model 2) at rated voltage, per phase (wye)
    v_ln = 400.0 / math.sqrt(3.0)  # the ideal transformer's open-circuit secondary voltage
    i = v_ln / (z_tx + z_line + z_load)
    return 3 * v_ln * abs(i) / 50e3  # what the stiff primary delivers into winding 1


@pytest.fixture()
def net(tmp_path: Path) -> OpenDSSNetwork:
    path = tmp_path / "tx.dss"
    path.write_text(MASTER)
    return OpenDSSNetwork(path, tolerance=None)


def test_transformer_loading_against_hand_values(net: OpenDSSNetwork) -> None:
    elements = net.resolve(["Load.ld"])
    res = net.run_series(elements, np.array([[40.0], [60.0], [10.0]]))
    assert res.transformer_names == ["transformer.t1"]
    assert res.transformer_kva.tolist() == [50.0]
    expected = [_hand_loading(p) for p in (40.0, 60.0, 10.0)]
    assert res.transformer_loading[:, 0] == pytest.approx(expected, rel=1e-6)
    assert expected[1] > 1.0 > expected[0]
    tx = net.transformers
    assert tx.loc["transformer.t1", ["bus1", "bus2"]].tolist() == ["hv", "lv"]
    assert tx.loc["transformer.t1", "kva"] == 50.0
    viol = check_limits(res, vmin_pu=0.5, vmax_pu=1.5)
    rows = viol[viol["kind"] == "transformer"]
    assert rows[["step", "element", "limit"]].values.tolist() == [[1, "transformer.t1", 1.0]]
    assert rows["value"].iloc[0] == pytest.approx(expected[1], rel=1e-6)
    # the overload counts for the transformer's secondary bus (downstream)
    assert net.downstream_bus("transformer.t1") == "lv"
    line_bus = net.downstream_buses()
    assert line_bus["transformer.t1"] == "lv" and line_bus["line.svc"] == "cust"
    counts = count_violations(viol, bus_community={"lv": "A", "cust": "B"}, line_bus=line_bus)
    assert counts["transformer_violations"] == 1 and counts["transformers_violated"] == 1
    assert counts.community("A")["transformer_violations"] == 1
    assert counts.community("B")["transformer_violations"] == 0


def test_shapes_method_reads_the_same_loadings(net: OpenDSSNetwork) -> None:
    elements = net.resolve(["Load.ld"])
    kw = np.array([[40.0], [60.0], [10.0]])
    snap = net.run_series(elements, kw)
    shapes = net.run_series(elements, kw, method="shapes")
    assert shapes.transformer_loading == pytest.approx(snap.transformer_loading, rel=1e-6)


def test_hand_made_result_rows_and_counts() -> None:
    res = PowerFlowResult(
        v_pu=np.array([[1.0, 1.0], [1.0, 1.0], [np.nan, np.nan]]), node_names=["a.1", "b.1"],
        i_amps=np.zeros((3, 1)), line_phase_names=["line.l1.1"], norm_amps=np.array([10.0]),
        converged=np.array([True, True, False]), transformer_names=["transformer.ta", "transformer.tb"],
        transformer_loading=np.array([[1.0, 0.5], [1.2, 1.3], [np.nan, np.nan]]),
        transformer_kva=np.array([100.0, 50.0]))
    viol = check_limits(res, vmin_pu=0.9, vmax_pu=1.1)
    assert viol[["step", "kind", "element"]].values.tolist() == [
        [1, "transformer", "transformer.ta"], [1, "transformer", "transformer.tb"], [2, "nonconvergence", "circuit"]]
    assert viol["value"].tolist()[:2] == [1.2, 1.3] and viol["limit"].tolist()[:2] == [1.0, 1.0]
    assert np.isnan(viol["value"].iloc[2]) and np.isnan(viol["limit"].iloc[2])
    counts = count_violations(viol)
    assert (counts["violations"], counts["transformer_violations"], counts["nonconverged_steps"],
            counts["transformers_violated"], counts["steps_violated"]) == (3, 2, 1, 2, 2)
    with pytest.raises(ValueError, match="converged must have shape"):
        PowerFlowResult(v_pu=np.ones((2, 1)), node_names=["a.1"], i_amps=np.zeros((2, 0)), line_phase_names=[],
                        norm_amps=np.zeros(0), converged=np.ones(3, dtype=bool))


def test_monitored_customers() -> None:
    buses = pd.DataFrame({"kv_base": [0.23, 0.23, 0.23]}, index=pd.Index(["a", "b", "c"], name="bus"))
    nodes = ["a.1", "a.2", "b.1", "c.1"]
    mask = monitored_mask(nodes, buses, "customers", customer_buses=["B.1", "a"])
    assert mask.tolist() == [True, True, True, False]
    with pytest.raises(ValueError, match="customer_buses"):
        monitored_mask(nodes, buses, "customers")


def test_the_opendss_engine_is_a_power_flow_engine(net: OpenDSSNetwork) -> None:
    assert isinstance(net, PowerFlowEngine)
