"""Sensitivities of voltages, currents and transformer loadings (gridmarket.network.sensitivity)
against finite differences of real OpenDSS power flows, computed here from the engine's own
results (node voltages, line currents, the transformer's terminal powers as OpenDSS reports them).

The feeder is small and unbalanced: an 11 kV source, a Dyn 11/0.4 kV transformer, a
three-phase LV main with single-phase and delta loads, a single-phase lateral with PV, and a
split-phase 120/240 V centre-tap transformer on MV phase 3 with 120 V and 240 V loads and PV.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from gridmarket.network import ElementSet, OpenDSSNetwork
from gridmarket.network import sensitivity as sens

FEEDER = """\
Clear
Set DefaultBaseFrequency=50
New Circuit.unbal basekV=11 pu=1.0 phases=3 bus1=mv R1=0.05 X1=0.5 R0=0.05 X0=0.5
New Transformer.tx phases=3 windings=2 buses=[mv lv] conns=[delta wye] kvs=[11 0.4] kvas=[100 100] %r=1 xhl=4
New Line.m1 bus1=lv bus2=b1 phases=3 r1=0.25 x1=0.08 r0=0.75 x0=0.25 c1=0 c0=0 units=km length=0.15 normamps=150
New Line.m2 bus1=b1 bus2=b2 phases=3 r1=0.32 x1=0.08 r0=0.96 x0=0.25 c1=0 c0=0 units=km length=0.2 normamps=120
New Line.lat bus1=b2.1 bus2=b3.1 phases=1 rmatrix=[0.9] xmatrix=[0.1] cmatrix=[0] units=km length=0.1 normamps=60
New Load.a1 bus1=b1.1 phases=1 kV=0.23 kW=6 pf=0.95 model=1
New Load.a2 bus1=b2.2 phases=1 kV=0.23 kW=3 pf=0.9 model=1
New Load.d3 bus1=b2 phases=3 conn=delta kV=0.4 kW=9 pf=0.97 model=1
New Load.y3 bus1=b1 phases=3 conn=wye kV=0.4 kW=4 pf=1 model=1
New Load.lat1 bus1=b3.1 phases=1 kV=0.23 kW=2 pf=0.95 model=1
New PVSystem.pvlat bus1=b3.1 phases=1 kV=0.23 kVA=6 Pmpp=5 irradiance=0.8 pf=1 %cutin=0 %cutout=0
New Transformer.ct phases=1 windings=3 buses=[mv.3 sp.1.0 sp.0.2] conns=[wye wye wye]
~ kvs=[6.351 0.12 0.12] kvas=[25 25 25] %loadloss=0.6 xhl=2.04 xht=2.04 xlt=1.36
New Line.sp bus1=sp.1.2 bus2=h.1.2 phases=2 rmatrix=[0.5 0.1 | 0.1 0.5] xmatrix=[0.2 0.05 | 0.05 0.2]
~ cmatrix=[0 | 0 0] units=km length=0.05 normamps=100
New Load.h1 bus1=h.1 phases=1 kV=0.12 kW=2 pf=0.95 model=1
New Load.h2 bus1=h.2 phases=1 kV=0.12 kW=1 pf=0.95 model=1
New Load.h12 bus1=h.1.2 phases=1 kV=0.24 kW=4 pf=0.9 model=1
New PVSystem.pvh bus1=h.1.2 phases=1 kV=0.24 kVA=6 Pmpp=5 irradiance=0.5 pf=1 %cutin=0 %cutout=0
Set VoltageBases=[11 0.4 0.208]
CalcVoltageBases
"""

ELEMENTS = ["Load.a1", "Load.a2", "Load.d3", "Load.y3", "Load.lat1", "PVSystem.pvlat",
            "Load.h1", "Load.h2", "Load.h12", "PVSystem.pvh"]
KW = np.array([6.0, 3.0, 9.0, 4.0, 2.0, 3.0, 2.0, 1.0, 4.0, 2.5])
PF = np.array([0.95, np.nan, 0.97, 1.0, 0.95, np.nan, 0.95, 0.95, 0.9, np.nan])  # Load.a2: its own pf 0.9
H_KW = 0.05  # finite-difference step [kW]
TOL_PU = 1e-4  # required agreement [pu/kW]


@pytest.fixture(scope="module")
def feeder(tmp_path_factory: pytest.TempPathFactory) -> tuple[OpenDSSNetwork, ElementSet]:
    path: Path = tmp_path_factory.mktemp("unbal") / "Master.dss"
    path.write_text(FEEDER)
    net = OpenDSSNetwork(path, tolerance=1e-12, max_iterations=100)
    es = net.resolve(ELEMENTS)
    return net, es


def _tx_loading(net: OpenDSSNetwork, name: str) -> float:
    """|S| / kVA of winding 1, from OpenDSS's own terminal powers."""
    d = net.dss
    d.Circuit.SetActiveElement(name)
    pw = np.asarray(d.CktElement.Powers(), dtype=float)
    s = pw[0::2] + 1j * pw[1::2]
    nterm, ncond = d.CktElement.NumTerminals(), d.CktElement.NumConductors()
    d.Transformers.Name(name.split(".", 1)[1])
    out = []
    for w in range(nterm):
        d.Transformers.Wdg(w + 1)
        out.append(abs(np.sum(s[w * ncond:(w + 1) * ncond])) / d.Transformers.kVA())
    return out[0]


def _observe(net: OpenDSSNetwork, es: ElementSet, kw: np.ndarray, kvar: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]:
    flow = net.run_series(es, kw, pf=None if kvar is not None else PF, kvar=kvar)
    tx = np.array([_tx_loading(net, t) for t in ("Transformer.tx", "Transformer.ct")])
    return flow.v_pu[0], flow.i_amps[0], tx, flow.node_names, flow.line_phase_names


def _fd(net: OpenDSSNetwork, es: ElementSet, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Central difference of every quantity with respect to element k's consumption [per kW]."""
    sign = -1.0 if ELEMENTS[k].startswith("PVSystem") else 1.0
    up, down = KW.copy(), KW.copy()
    up[k] += H_KW
    down[k] -= H_KW
    vu, iu, tu, _, _ = _observe(net, es, up)
    vd, idn, td, _, _ = _observe(net, es, down)
    return (sign * (vu - vd) / (2 * H_KW), sign * (iu - idn) / (2 * H_KW), sign * (tu - td) / (2 * H_KW))


@dataclass(frozen=True)
class Ref:
    """Finite differences (rows x elements) and the operating point."""

    dv: np.ndarray  #: [pu/kW]
    di: np.ndarray  #: [A/kW]
    dt: np.ndarray  #: [1/kW]
    v0: np.ndarray
    t0: np.ndarray  #: transformer loadings at the operating point, from OpenDSS's terminal powers
    nodes: list[str]
    lines: list[str]


@pytest.fixture(scope="module")
def reference(feeder: tuple[OpenDSSNetwork, ElementSet]) -> Ref:
    net, es = feeder
    cols = [_fd(net, es, k) for k in range(len(ELEMENTS))]
    v0, _, t0, nodes, lines = _observe(net, es, KW)
    return Ref(dv=np.array([c[0] for c in cols]).T, di=np.array([c[1] for c in cols]).T,
               dt=np.array([c[2] for c in cols]).T, v0=v0, t0=t0, nodes=nodes, lines=lines)


def _rows(ref: Ref) -> list[tuple[str, str]]:
    return ([("voltage", n) for n in ref.nodes] + [("current", n) for n in ref.lines]
            + [("transformer", "transformer.tx"), ("transformer", "transformer.ct")])


def _split(s: sens.Sensitivity, ref: Ref) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    nv, ni = len(ref.nodes), len(ref.lines)
    return s.dp[:nv], s.dp[nv:nv + ni], s.dp[nv + ni:]


def test_feeder_is_unbalanced_and_split_phase(reference: Ref) -> None:
    nodes = reference.nodes
    v0 = reference.v0
    assert {"h.1", "h.2", "b3.1"} <= set(nodes)
    b2 = [v0[nodes.index(f"b2.{p}")] for p in (1, 2, 3)]
    assert max(b2) - min(b2) > 5e-3  # phases differ: the case is unbalanced
    dv = reference.dv
    assert np.abs(dv).max() > 1e-3  # sensitivities large enough for 1e-4 to mean something


def _linearised(net: OpenDSSNetwork, es: ElementSet) -> tuple[sens.GridModel, sens.OperatingPoint, np.ndarray]:
    """The model, operating point and Q ratios of the feeder solved at the reference dispatch."""
    net.run_series(es, KW, pf=PF)
    model = sens.grid_model(net)
    return model, sens.read_operating_point(net, model), sens.dispatch_q_ratio(net, es, PF)


def test_ymatrix_matches_finite_differences(feeder: tuple[OpenDSSNetwork, ElementSet],
                                            reference: Ref) -> None:
    net, es = feeder
    model, op, q_ratio = _linearised(net, es)
    s = sens.ymatrix_sensitivities(model, op, es.names, _rows(reference), q_ratio)
    dv, di, dt = _split(s, reference)
    assert np.abs(dv - reference.dv).max() < TOL_PU
    i_scale = np.abs(reference.di).max()
    assert np.abs(di - reference.di).max() < 1e-3 * i_scale
    assert np.abs(dt - reference.dt).max() < TOL_PU
    # the split-phase legs: a 240 V load lowers both legs, a 120 V load on leg 1 lowers leg 1 most
    nodes = reference.nodes
    h1, h2 = nodes.index("h.1"), nodes.index("h.2")
    k12, k1 = ELEMENTS.index("Load.h12"), ELEMENTS.index("Load.h1")
    assert dv[h1, k12] < 0 and dv[h2, k12] < 0
    assert dv[h1, k1] < dv[h2, k1]
    # values at the operating point equal the engine's
    nv = len(nodes)
    assert np.abs(s.value[:nv] - reference.v0).max() < 1e-9
    assert np.abs(s.value[-2:] - reference.t0).max() < 1e-9
    assert model.tx_names == ("transformer.tx", "transformer.ct")
    assert np.abs(model.tx_loading(op.v) - reference.t0).max() < 1e-9


def test_reactive_sensitivity_matches_finite_differences(feeder: tuple[OpenDSSNetwork, ElementSet],
                                                         reference: Ref) -> None:
    net, es = feeder
    pf = np.where(np.isnan(PF), 1.0, PF)
    pf[ELEMENTS.index("Load.a2")] = 0.9  # its own pf
    q_ratio = np.sqrt(1 / pf**2 - 1)
    kvar = KW * q_ratio
    net.run_series(es, KW, kvar=kvar)
    model = sens.grid_model(net)
    op = sens.read_operating_point(net, model)
    s = sens.ymatrix_sensitivities(model, op, es.names, _rows(reference), q_ratio)
    assert s.dq is not None
    nv = len(reference.nodes)
    for k in (ELEMENTS.index("Load.a2"), ELEMENTS.index("Load.h12")):
        up, down = kvar.copy(), kvar.copy()
        up[k] += H_KW
        down[k] -= H_KW
        vu = _observe(net, es, KW, up)[0]
        vd = _observe(net, es, KW, down)[0]
        assert np.abs(s.dq[:nv, k] - (vu - vd) / (2 * H_KW)).max() < TOL_PU


def test_perturbed_matches_finite_differences(feeder: tuple[OpenDSSNetwork, ElementSet],
                                              reference: Ref) -> None:
    net, es = feeder
    rows = _rows(reference)
    s = sens.perturbed_sensitivities(net, es, KW, rows, pf=PF, step_kw=0.2)
    dv, di, dt = _split(s, reference)
    assert np.abs(dv - reference.dv).max() < TOL_PU
    assert np.abs(dt - reference.dt).max() < TOL_PU
    # the network is left at the operating point
    v_now = _observe(net, es, KW)[0]
    assert np.abs(s.value[: len(v_now)] - v_now).max() < 1e-9


def test_unknown_row_is_named(feeder: tuple[OpenDSSNetwork, ElementSet]) -> None:
    net, es = feeder
    model = sens.grid_model(net)
    op = sens.read_operating_point(net, model)
    with pytest.raises(Exception, match="nosuchbus.1"):
        sens.ymatrix_sensitivities(model, op, es.names, [("voltage", "nosuchbus.1")])


def test_model_obeys_kirchhoff_at_the_solved_point(feeder: tuple[OpenDSSNetwork, ElementSet]) -> None:
    """The admittance model read from OpenDSS (every PD element's primitive matrix) and the
    power-conversion branches at OpenDSS's own solved voltages and element currents balance at
    every node but the source's: Y V + C conj(S_b / u_b) = 0 there; the line rows give the
    engine's line currents."""
    net, es = feeder
    flow = net.run_series(es, KW, pf=PF)
    model = sens.grid_model(net)
    op = sens.read_operating_point(net, model)
    vg = np.concatenate([op.v, [0.0]])
    u = vg[model.br_a] - vg[model.br_b]
    inj = model.y @ op.v + model.c_matrix() @ np.conj(op.s_branch / u)
    away = np.array([not nm.startswith("mv.") for nm in model.node_names])
    scale = np.abs(model.y @ op.v).max()
    assert np.abs(inj[away]).max() < 1e-8 * scale
    assert np.abs(inj[~away]).max() > 1e-3 * scale  # the source feeds the circuit
    col = {nm: k for k, nm in enumerate(model.line_names)}
    i_model = np.abs(model.line_rows @ op.v)[[col[nm] for nm in flow.line_phase_names]]
    assert np.abs(i_model - flow.i_amps[0]).max() < 1e-6 * flow.i_amps[0].max()


def test_element_order_only_permutes_the_columns(feeder: tuple[OpenDSSNetwork, ElementSet],
                                                 reference: Ref) -> None:
    net, es = feeder
    model, op, q_ratio = _linearised(net, es)
    rows = _rows(reference)
    s = sens.ymatrix_sensitivities(model, op, es.names, rows, q_ratio)
    back = sens.ymatrix_sensitivities(model, op, es.names[::-1], rows, q_ratio[::-1])
    assert np.abs(back.dp[:, ::-1] - s.dp).max() < 1e-12
    few = sens.ymatrix_sensitivities(model, op, es.names[2:5], rows[:3], q_ratio[2:5])
    assert np.abs(few.dp - s.dp[:3, 2:5]).max() < 1e-12
