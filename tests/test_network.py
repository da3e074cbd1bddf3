"""The OpenDSS engine against hand calculations and against OpenDSS's own readings.

Real OpenDSS, no mocks; every circuit is written into tmp_path (shared-data feeders are in
test_cr_mar_powerflow.py and at the end here for ieee_eu_lv).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from _network_fixtures import (
    THREE_PHASE_MASTER,
    V_LN,
    Section,
    closed_form_two_bus,
    shared_master,
    sweep,
    write_feeder,
)
from gridmarket.errors import NetworkError
from gridmarket.network import OpenDSSNetwork, check_limits, count_violations

# --------------------------------------------------------------------------- helpers


def _opendss_pu(net: OpenDSSNetwork) -> dict[str, float]:
    """OpenDSS's own per-unit node voltages of the last solution, by node name."""
    d = net.dss
    return dict(zip(d.Circuit.AllNodeNames(), d.Circuit.AllBusMagPu(), strict=True))


def _opendss_amps(net: OpenDSSNetwork, line_phase: str) -> float:
    """OpenDSS's own current magnitude of one line conductor at terminal 1 [A]."""
    line, phase = line_phase.rsplit(".", 1)
    d = net.dss
    d.Circuit.SetActiveElement(line)
    order = d.CktElement.NodeOrder()
    return float(d.CktElement.CurrentsMagAng()[2 * order.index(int(phase))])


def _prop(net: OpenDSSNetwork, element: str, prop: str) -> str:
    net.dss.Text.Command(f"? {element}.{prop}")
    return net.dss.Text.Result()


@pytest.fixture
def three(tmp_path: Path) -> OpenDSSNetwork:
    path = tmp_path / "three.dss"
    path.write_text(THREE_PHASE_MASTER)
    return OpenDSSNetwork(path, tolerance=None)


# --------------------------------------------------------------------------- physics


def test_two_bus_voltage_drop_equals_hand_calculation(tmp_path: Path) -> None:
    sections = [Section(r_ohm=0.4, x_ohm=0.2)]
    net = OpenDSSNetwork(write_feeder(tmp_path / "two.dss", sections, {1: (1.0, 0.0)}), tolerance=None)
    elements = net.resolve(["Load.ld1"])
    p_kw, q_kvar = 8.0, 3.0
    res = net.run_series(elements, np.array([[p_kw]]), kvar=np.array([[q_kvar]]))

    v2 = closed_form_two_bus(p_kw * 1e3, q_kvar * 1e3, r=0.4, x=0.2 + 1e-6)
    v_sweep, _ = sweep(sections, {1: (p_kw, q_kvar)})
    assert abs(v_sweep[0]) == pytest.approx(v2, rel=1e-10)  # the two hand methods agree
    col = res.node_names.index("b1.1")
    assert res.v_pu[0, col] == pytest.approx(v2 / V_LN, abs=1e-8)
    assert 0.90 < res.v_pu[0, col] < 0.95  # a real drop, not a trivial case
    assert res.i_amps[0, res.line_phase_names.index("line.l1.1")] == pytest.approx(
        math.hypot(p_kw, q_kvar) * 1e3 / v2, rel=1e-7)
    # the engine's reading is OpenDSS's own
    own = _opendss_pu(net)
    assert [own[n] for n in res.node_names] == pytest.approx(res.v_pu[0].tolist(), abs=1e-12)
    assert _opendss_amps(net, "line.l1.1") == pytest.approx(res.i_amps[0, 0], rel=1e-9)


def test_radial_feeder_matches_sweep_at_every_bus_and_section(tmp_path: Path) -> None:
    sections = [Section(0.1, 0.05), Section(0.2, 0.1), Section(0.3, 0.1)]
    loads = {1: (5.0, 1.0), 2: (4.0, 2.0), 3: (6.0, 1.0)}
    net = OpenDSSNetwork(write_feeder(tmp_path / "f.dss", sections, loads), tolerance=None)
    elements = net.resolve([f"Load.ld{k}" for k in loads])
    p = np.array([[v[0] for v in loads.values()]])
    res = net.run_series(elements, p, kvar=np.array([[v[1] for v in loads.values()]]))
    v, i = sweep(sections, loads)
    cols = [res.node_names.index(f"b{k}.1") for k in (1, 2, 3)]
    np.testing.assert_allclose(res.v_pu[0, cols], np.abs(v) / V_LN, atol=1e-8)
    np.testing.assert_allclose(res.i_amps[0], np.abs(i), rtol=1e-7)


def test_loads_keep_their_own_power_factor_unless_pf_given(three: OpenDSSNetwork) -> None:
    elements = three.resolve(["Load.ld", "Load.ld1"])  # kvar/kW = 0.5 and pf 0.95
    three.run_series(elements, np.array([[4.0, 1.0]]))
    d = three.dss
    d.Circuit.SetActiveElement("Load.ld")
    assert d.CktElement.TotalPowers()[1] == pytest.approx(2.0, rel=1e-4)
    d.Circuit.SetActiveElement("Load.ld1")
    assert d.CktElement.TotalPowers()[1] == pytest.approx(math.tan(math.acos(0.95)), rel=1e-4)
    three.run_series(elements, np.array([[4.0, 1.0]]), pf=np.array([1.0, np.nan]))
    d.Circuit.SetActiveElement("Load.ld")
    assert d.CktElement.TotalPowers()[1] == pytest.approx(0.0, abs=1e-5)
    # the element's own ratio is not lost after a run with pf: it comes back without pf
    three.run_series(elements, np.array([[4.0, 1.0]]))
    d.Circuit.SetActiveElement("Load.ld")
    assert d.CktElement.TotalPowers()[1] == pytest.approx(2.0, rel=1e-4)


def test_loadshape_multipliers_do_not_apply(three: OpenDSSNetwork) -> None:
    # Load.ld1 has daily= and yearly= shapes of 0.1..0.4: the set kW must be delivered as is.
    elements = three.resolve(["Load.ld1"])
    for kw in (2.0, 3.0):
        three.run_series(elements, np.array([[kw]]))
        assert three.element_powers_kw(elements)[0] == pytest.approx(kw, rel=1e-5)


# --------------------------------------------------------------------------- dispatch read-back


def test_pv_default_cutin_would_drop_low_output(three: OpenDSSNetwork) -> None:
    """The pitfall itself: an untouched PVSystem at 10 % irradiance gives no power."""
    d = three.dss
    d.Text.Command("Edit PVSystem.pv irradiance=0.1 temperature=25")
    d.Solution.SolveNoControl()
    d.Circuit.SetActiveElement("PVSystem.pv")
    assert abs(d.CktElement.TotalPowers()[0]) < 1e-6
    d.Text.Command("Edit PVSystem.pv irradiance=0.5")  # above the 20 % cut-in it produces
    d.Solution.SolveNoControl()
    assert d.CktElement.TotalPowers()[0] < -1.0


@pytest.mark.parametrize("share", [0.0, 0.05, 0.1, 0.55, 1.0])
def test_pv_generator_storage_and_load_deliver_the_set_power(three: OpenDSSNetwork,
                                                             share: float) -> None:
    names = ["PVSystem.PV", "Generator.G1", "Storage.S1", "Load.LD"]
    elements = three.resolve(names)
    assert elements.names == ("PVSystem.pv", "Generator.g1", "Storage.s1", "Load.ld")
    kw = np.array([[10.0 * share, 2.5, -1.5, 4.0],   # PV at share of Pmpp, storage discharging
                   [10.0 * share, 0.0, 3.0, 0.5]])   # storage charging
    three.run_series(elements, np.array([[5.0, 1.0, 1.0, 1.0]]))  # a different state before
    for step in kw:
        three.run_series(elements, step[None, :])
        np.testing.assert_allclose(three.element_powers_kw(elements), step, rtol=1e-4, atol=1e-5)
    assert three.run_series(elements, kw).steps == 2
    d = three.dss
    d.Circuit.SetActiveElement("PVSystem.pv")
    assert abs(d.CktElement.TotalPowers()[1]) < 1e-4  # PV at unity power factor


def test_battery_on_three_phase_bus_is_three_phase_and_follows_signed_power(
        three: OpenDSSNetwork) -> None:
    bat = three.add_battery("bat_b2", "B2", kw_rated=2.56, kwh=10.24)
    single = three.add_battery("bat_b2_1", "b2.1", kw_rated=2.56, kwh=10.24)
    assert (bat, single) == ("Load.bat_b2", "Load.bat_b2_1")
    assert float(_prop(three, bat, "kV")) == pytest.approx(0.4, rel=1e-6)
    assert int(_prop(three, bat, "phases")) == 3
    assert float(_prop(three, single, "kV")) == pytest.approx(0.4 / math.sqrt(3), rel=1e-6)
    elements = three.resolve([bat, "Load.ld", single])
    for kw in ([2.56, 1.0, -2.0], [-2.56, 1.0, 0.7]):  # each step read back on its own
        three.run_series(elements, np.array([kw]))
        np.testing.assert_allclose(three.element_powers_kw(elements), kw, rtol=1e-4)


def test_grown_battery_bank_takes_its_new_rating(three: OpenDSSNetwork) -> None:
    bat = three.add_battery("bank", "b2", kw_rated=2.56, kwh=10.24)
    with pytest.raises(NetworkError, match="outside its rating"):
        three.run_series(three.resolve([bat]), np.array([[7.0]]))
    three.resize_battery("LOAD.Bank", kw_rated=3 * 2.56, kwh=3 * 10.24)
    elements = three.resolve([bat])
    three.run_series(elements, np.array([[7.0]]))
    assert three.element_powers_kw(elements)[0] == pytest.approx(7.0, rel=1e-4)
    assert three.element_buses(three.resolve([bat, "PVSystem.pv", "Load.ld1"])) == ["b2"] * 3
    with pytest.raises(NetworkError, match="not a battery created by add_battery"):
        three.resize_battery("Load.ld", kw_rated=1, kwh=1)


def test_resolve_keeps_column_order_whatever_the_class_order(three: OpenDSSNetwork) -> None:
    elements = three.resolve(["Load.ld1", "Storage.s1", "Load.ld", "PVSystem.pv"])
    kw = np.array([[0.3, 1.1, 7.0, 2.2]])
    three.run_series(elements, kw)
    np.testing.assert_allclose(three.element_powers_kw(elements), kw[0], rtol=1e-4)


def test_elements_resolved_before_a_battery_is_added_still_work(three: OpenDSSNetwork) -> None:
    early = three.resolve(["Load.ld"])
    res1 = three.run_series(early, np.array([[3.0]]))
    bat = three.add_battery("late", "b2", kw_rated=5, kwh=20)
    res2 = three.run_series(early, np.array([[3.0]]))
    np.testing.assert_allclose(res2.v_pu, res1.v_pu, atol=1e-9)
    both = three.resolve([bat, "Load.ld"])
    three.run_series(both, np.array([[-4.0, 3.0]]))
    np.testing.assert_allclose(three.element_powers_kw(both), [-4.0, 3.0], rtol=1e-4)
    res3 = three.run_series(both, np.array([[-4.0, 3.0]]))
    own = _opendss_pu(three)
    assert [own[n] for n in res3.node_names] == pytest.approx(res3.v_pu[0].tolist(), abs=1e-9)


def test_add_pv_follows_the_set_power_at_low_output(three: OpenDSSNetwork) -> None:
    pv = three.add_pv("roof", "b2.2", 3.0)
    assert pv == "PVSystem.roof"
    assert float(_prop(three, pv, "kVA")) == pytest.approx(3.3)
    elements = three.resolve([pv])
    for kw in (0.3, 0.06, 3.0):
        three.run_series(elements, np.array([[kw]]))
        assert three.element_powers_kw(elements)[0] == pytest.approx(kw, rel=1e-4)


# --------------------------------------------------------------------------- limits on real flows


def test_forced_undervoltage_flags_exactly_the_low_buses(tmp_path: Path) -> None:
    sections = [Section(0.05, 0.02), Section(0.25, 0.1), Section(0.25, 0.1), Section(0.01, 0.01)]
    loads = {2: (3.0, 0.0), 4: (9.0, 2.0)}
    net = OpenDSSNetwork(write_feeder(tmp_path / "uv.dss", sections, loads), tolerance=None)
    elements = net.resolve(["Load.ld2", "Load.ld4"])
    p = np.array([[0.1, 0.1], [3.0, 9.0]])  # step 0 light (no violation), step 1 heavy
    q = np.array([[0.0, 0.0], [0.0, 2.0]])
    res = net.run_series(elements, p, kvar=q)
    v, _ = sweep(sections, loads)
    hand = np.abs(v) / V_LN
    expected = {f"b{k}.1": hand[k - 1] for k in range(1, 5) if hand[k - 1] < 0.95}
    assert set(expected) == {"b2.1", "b3.1", "b4.1"}  # b1 stays above 0.95
    viol = check_limits(res, vmin_pu=0.95, vmax_pu=1.05, times=["light", "heavy"])
    assert list(viol.columns) == ["step", "time", "kind", "element", "value", "limit"]
    assert set(viol["element"]) == set(expected)
    assert (viol["step"] == 1).all() and (viol["time"] == "heavy").all()
    assert (viol["kind"] == "voltage").all() and (viol["limit"] == 0.95).all()
    for _, row in viol.iterrows():
        assert row["value"] == pytest.approx(expected[row["element"]], abs=1e-8)
    counts = count_violations(viol, bus_community={"b2": "C1", "b4": "C2", "b1": "C1"})
    assert counts["violations"] == 3
    assert counts.table.loc[["C1", "C2"], "violations"].tolist() == [1, 1]
    assert counts["v_min_pu"] == pytest.approx(hand[3], abs=1e-8)


def test_line_current_over_normamps_is_flagged_with_its_value(tmp_path: Path) -> None:
    sections = [Section(0.02, 0.01, norm_amps=100.0), Section(0.05, 0.02, norm_amps=30.0)]
    loads = {2: (8.0, 1.0)}
    net = OpenDSSNetwork(write_feeder(tmp_path / "oc.dss", sections, loads), tolerance=None)
    assert net.lines.loc["line.l2", "norm_amps"] == 30.0
    elements = net.resolve(["Load.ld2"])
    res = net.run_series(elements, np.array([[8.0]]), kvar=np.array([[1.0]]))
    _, i = sweep(sections, loads)
    viol = check_limits(res, vmin_pu=0.5, vmax_pu=1.5)
    assert viol[["kind", "element"]].values.tolist() == [["current", "line.l2.1"]]
    assert viol["value"].iloc[0] == pytest.approx(abs(i[1]), rel=1e-7)
    assert viol["value"].iloc[0] == pytest.approx(_opendss_amps(net, "line.l2.1"), rel=1e-9)
    assert viol["limit"].iloc[0] == 30.0
    counts = count_violations(viol, bus_community={"b2": "C"}, line_bus=net.downstream_buses())
    assert counts.community("C")["current_violations"] == 1
    assert counts["loading_max_percent"] == pytest.approx(abs(i[1]) / 30 * 100, rel=1e-7)


# --------------------------------------------------------------------------- topology and tables


def test_tables_distances_and_downstream_bus(tmp_path: Path) -> None:
    sections = [Section(0.1, 0.05)] * 3
    net = OpenDSSNetwork(write_feeder(tmp_path / "t.dss", sections, {3: (1.0, 0.0)}), tolerance=None)
    assert net.node_names == ["src.1", "b1.1", "b2.1", "b3.1"]
    assert list(net.lines.index) == ["line.l1", "line.l2", "line.l3"]
    assert net.lines.loc["line.l2", ["bus1", "bus2", "phases"]].tolist() == ["b1", "b2", 1]
    assert net.buses.loc["b3", "kv_base"] == pytest.approx(0.23)
    assert np.isnan(net.buses.loc["b3", "x"])
    assert net.source_bus == "src"
    assert net.bus_distance("B1.1") == {"b1": 0, "src": 1, "b2": 1, "b3": 2}
    assert net.downstream_bus("L2") == "b2"
    assert net.downstream_bus("line.l1") == "b1"
    assert net.downstream_bus("line.l3.1") == "b3"  # a conductor name from check_limits
    with pytest.raises(NetworkError, match="line 'l9' not found"):
        net.downstream_bus("l9")
    with pytest.raises(NetworkError, match="bus 'nowhere' not found"):
        net.bus_distance("nowhere")


# --------------------------------------------------------------------------- errors


HELD = "New Load.held phases=1 bus1=b1.1 kV=0.23 kW=0 kvar=0 model=1 vminpu=0.05 vmaxpu=1.5"


@pytest.mark.parametrize("method", ["snapshot", "shapes"])
def test_a_step_that_does_not_converge_is_recorded_and_the_series_goes_on(tmp_path: Path, method: str) -> None:
    # 0.4 + j0.2 ohm at 230 V delivers at most ~31 kW: 60 kW held at constant power down to
    # 0.05 pu (the load's own limit, so the retry with its own model cannot help) has no solution
    master = write_feeder(tmp_path / "nc.dss", [Section(0.4, 0.2)], {1: (1.0, 0.0)}, extra=HELD)
    net = OpenDSSNetwork(master, tolerance=None)
    elements = net.resolve(["Load.ld1", "Load.held"])
    kw = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 60.0], [8.0, 0.0], [3.0, 0.0]])
    res = net.run_series(elements, kw, method=method)
    assert res.converged.tolist() == [True, True, False, True, True]
    assert np.isnan(res.v_pu[2]).all() and np.isnan(res.i_amps[2]).all()
    for t in (0, 1, 3, 4):  # the steps after the failure are solved as if it never happened
        assert res.v_pu[t, 1] == pytest.approx(closed_form_two_bus(kw[t].sum() * 1e3, 0.0, 0.4, 0.2 + 1e-6) / V_LN,
                                               abs=1e-8)
    viol = check_limits(res, vmin_pu=0.9, vmax_pu=1.1)
    assert viol[["step", "kind", "element"]].values.tolist() == [[2, "nonconvergence", "circuit"]]
    counts = count_violations(viol)
    assert (counts["nonconverged_steps"], counts["violations"], counts["voltage_violations"]) == (1, 1, 0)


def test_a_step_retried_with_the_loads_own_model_converges(tmp_path: Path) -> None:
    # held at constant power down to 0.5 pu (the engine's band) 60 kW does not converge; the
    # load's own model (OpenDSS default: constant impedance below vminpu 0.95) does
    master = write_feeder(tmp_path / "z.dss", [Section(0.4, 0.2)], {1: (1.0, 0.0)})
    net = OpenDSSNetwork(master, tolerance=None)
    elements = net.resolve(["Load.ld1"])
    res = net.run_series(elements, np.array([[60.0], [5.0]]))
    assert res.converged.all()
    # the same step solved by OpenDSS alone with the load's own limits
    own = OpenDSSNetwork(master, tolerance=None, pq_band_pu=None)
    ref = own.run_series(own.resolve(["Load.ld1"]), np.array([[60.0]]))
    assert res.v_pu[0, 1] == pytest.approx(ref.v_pu[0, 1], abs=1e-9)
    assert res.v_pu[0, 1] < 0.95  # it is in the constant-impedance region
    # physics of the retried step: the load's power and voltage satisfy the two-bus circuit
    p_w = net.element_powers_kw(elements)[0] * 1e3  # last step solved is 5 kW: solve step 0 again
    assert p_w == pytest.approx(5e3, rel=1e-6)
    assert res.v_pu[1, 1] == pytest.approx(closed_form_two_bus(5e3, 0.0, 0.4, 0.2 + 1e-6) / V_LN, abs=1e-8)
    # the engine's band is back: 20 kW (deliverable) arrives at constant power
    again = net.run_series(elements, np.array([[20.0]]))
    assert again.v_pu[0, 1] == pytest.approx(closed_form_two_bus(20e3, 0.0, 0.4, 0.2 + 1e-6) / V_LN, abs=1e-8)
    assert net.element_powers_kw(elements)[0] == pytest.approx(20.0, rel=1e-6)


def test_missing_redirect_file_gives_opendss_message(tmp_path: Path) -> None:
    master = tmp_path / "bad.dss"
    master.write_text("Clear\nNew Circuit.x basekV=0.4\nRedirect nothere.dss\n")
    with pytest.raises(NetworkError, match=r"(?s)cannot compile OpenDSS master.*bad\.dss.*"
                                           r"Redirect file not found.*nothere\.dss"):
        OpenDSSNetwork(master)


def test_syntax_error_gives_opendss_message_and_cwd_is_restored(tmp_path: Path) -> None:
    master = tmp_path / "sub" / "bad.dss"
    master.parent.mkdir()
    master.write_text("Clear\nNew Circuit.x basekV=0.4\nNew Lnie.l1 bus1=a bus2=b\n")
    cwd = Path.cwd()
    with pytest.raises(NetworkError, match=r"(?s)bad\.dss.*Object Type \"Lnie\" not found"):
        OpenDSSNetwork(master)
    assert Path.cwd() == cwd


def test_cwd_is_restored_after_compile(three: OpenDSSNetwork, tmp_path: Path) -> None:
    assert Path.cwd() != tmp_path
    assert three.master.parent == tmp_path


def test_missing_master_and_master_without_circuit(tmp_path: Path) -> None:
    with pytest.raises(NetworkError, match="does not exist"):
        OpenDSSNetwork(tmp_path / "nope.dss")
    (tmp_path / "empty.dss").write_text("Clear\n")
    with pytest.raises(NetworkError, match="defines no circuit"):
        OpenDSSNetwork(tmp_path / "empty.dss")


def test_unknown_elements_are_all_named(three: OpenDSSNetwork) -> None:
    with pytest.raises(NetworkError) as err:
        three.resolve(["Load.ld", "Load.nope", "PVSystem.pv", "PVSystem.ghost", "Line.l1"])
    text = str(err.value)
    assert "3 element(s) not found" in text
    for name in ("Load.nope", "PVSystem.ghost", "Line.l1"):
        assert name in text
    assert "'Load.ld'" not in text
    with pytest.raises(NetworkError, match="listed twice"):
        three.resolve(["Load.ld", "load.LD"])


def test_bad_battery_bus_name_or_node(three: OpenDSSNetwork) -> None:
    with pytest.raises(NetworkError, match="bus 'b9' not found"):
        three.add_battery("x", "b9", kw_rated=1, kwh=1)
    with pytest.raises(NetworkError, match="phase nodes of the bus"):
        three.add_battery("x", "b2.4", kw_rated=1, kwh=1)
    with pytest.raises(NetworkError, match="already exists"):
        three.add_battery("LD", "b2", kw_rated=1, kwh=1)


def test_powers_beyond_ratings_are_refused(three: OpenDSSNetwork) -> None:
    bat = three.add_battery("b", "b2", kw_rated=2.56, kwh=10.24)
    elements = three.resolve(["PVSystem.pv", bat])
    with pytest.raises(NetworkError, match=r"PVSystem\.pv: set power 12 kW at step 1"):
        three.run_series(elements, np.array([[1.0, 0.0], [12.0, 0.0]]))
    with pytest.raises(NetworkError, match=r"PVSystem\.pv: set power -1 kW"):
        three.run_series(elements, np.array([[-1.0, 0.0]]))
    with pytest.raises(NetworkError, match=r"Load\.b: set power -3 kW"):
        three.run_series(elements, np.array([[1.0, -3.0]]))
    with pytest.raises(ValueError, match="unity power factor"):
        three.run_series(elements, np.array([[1.0, 1.0]]), pf=np.array([0.9, 1.0]))


def test_element_set_of_another_network_and_bad_shapes(three: OpenDSSNetwork,
                                                      tmp_path: Path) -> None:
    other_path = tmp_path / "other.dss"
    other_path.write_text(THREE_PHASE_MASTER)
    other = OpenDSSNetwork(other_path)
    elements = other.resolve(["Load.ld"])
    with pytest.raises(ValueError, match="another OpenDSSNetwork"):
        three.run_series(elements, np.array([[1.0]]))
    with pytest.raises(ValueError, match=r"kw must have shape \(steps, 1\)"):
        other.run_series(elements, np.ones((2, 2)))
    with pytest.raises(ValueError, match="kvar or pf"):
        other.run_series(elements, np.ones((1, 1)), kvar=np.ones((1, 1)), pf=np.ones(1))


def test_progress_is_called_per_step(three: OpenDSSNetwork) -> None:
    seen: list[int] = []
    three.run_series(three.resolve(["Load.ld"]), np.ones((4, 1)), progress=seen.append)
    assert seen == [0, 1, 2, 3]


# --------------------------------------------------------------------------- ieee_eu_lv


@pytest.mark.needs_shared
def test_ieee_eu_lv_compiles_and_solves_with_set_powers() -> None:
    net = OpenDSSNetwork(shared_master("ieee_eu_lv/Master.dss"))
    loads = [f"Load.load{k}" for k in range(55, 0, -1)]  # reversed: order must not matter
    elements = net.resolve(loads)
    rng = np.random.default_rng(7)
    kw = rng.uniform(0.2, 4.0, size=(6, len(loads)))
    res = net.run_series(elements, kw)
    assert res.v_pu.shape == (6, 2721) and not np.isnan(res.v_pu).any()
    assert np.nanmin(res.v_pu) > 0.9 and np.nanmax(res.v_pu) < 1.06
    # Yearly= shapes do not scale the set kW (OpenDSS's default tolerance: 1e-4 pu)
    np.testing.assert_allclose(net.element_powers_kw(elements), kw[-1], rtol=1e-3)
    own = _opendss_pu(net)
    assert [own[n] for n in res.node_names] == pytest.approx(res.v_pu[-1].tolist(), abs=1e-12)
    worst = res.line_phase_names[int(np.argmax(res.i_amps[-1]))]
    assert _opendss_amps(net, worst) == pytest.approx(res.i_amps[-1].max(), rel=1e-9)
    # a battery at a bare 3-phase bus is a 3-phase unit at the LL voltage
    bat = net.add_battery("bat34", "34", kw_rated=2.56, kwh=10.24)
    assert int(_prop(net, bat, "phases")) == 3
    assert float(_prop(net, bat, "kV")) == pytest.approx(0.416, rel=1e-3)
    both = net.resolve([bat, *loads])
    net.run_series(both, np.hstack([[[-2.0]], kw[-1:]]))
    assert net.element_powers_kw(both)[0] == pytest.approx(-2.0, rel=1e-4)


def test_load_added_by_command_keeps_its_own_power_factor(three: OpenDSSNetwork) -> None:
    three.command("New Load.extra bus1=b2.3 phases=1 kV=0.23 kW=2 kvar=1 model=1")
    elements = three.resolve(["Load.extra"])
    three.run_series(elements, np.array([[3.0]]))
    d = three.dss
    d.Circuit.SetActiveElement("Load.extra")
    p, q = d.CktElement.TotalPowers()[:2]
    assert (p, q) == (pytest.approx(3.0, rel=1e-4), pytest.approx(1.5, rel=1e-4))
    with pytest.raises(NetworkError, match=r"OpenDSS command .* failed.*"):
        three.command("New Load.bad bus1=b2 kW=x1")
    for text in ("clear", "Compile other.dss", "new circuit.x"):
        with pytest.raises(NetworkError, match="would replace the circuit"):
            three.command(text)
