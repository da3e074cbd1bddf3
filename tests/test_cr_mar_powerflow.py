"""The Costa Rican MAR feeder (../shared/data/cr_mar): a day of hourly power flows with PV.

Loads follow their own 15-minute smart-meter shapes averaged to 1 h (P and Q from the CSVs of
each load's ``daily=`` shape); a 3 kW PV sits at every load bus and follows ``MyIrrad`` of
cr_mar/PVcurves.dss. The data README reports LV Vmax of about 1.09 pu around 11:00 for this
set-up; check_limits must report that overvoltage. The feeder data are read in place, never
copied into the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _network_fixtures import shared_master
from gridmarket.network import (
    OpenDSSNetwork,
    check_limits,
    count_violations,
    monitored_mask,
)

pytestmark = pytest.mark.needs_shared

PV_KW = 3.0


@pytest.fixture(scope="module")
def master() -> Path:
    return shared_master("cr_mar/DSS/Master_MAR.dss")


def _my_irrad(cr_mar: Path) -> np.ndarray:
    """The 24 hourly values of Loadshape ``MyIrrad`` in cr_mar/PVcurves.dss [pu]."""
    text = (cr_mar / "PVcurves.dss").read_text()
    found = re.search(r"Loadshape\.MyIrrad\b[^\n]*mult=\[([^\]]*)\]", text, re.IGNORECASE)
    assert found, "MyIrrad not found in PVcurves.dss"
    values = np.array([float(v) for v in found.group(1).split()])
    assert values.shape == (24,)
    return values


def _hourly_load_profiles(net: OpenDSSNetwork, cr_mar: Path
                          ) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Loads, their buses, and hourly mean P [kW] and Q [kvar] from their daily= shape CSVs."""
    csvs = {p.stem.lower(): p for p in (cr_mar / "DSS" / "profiles").rglob("*.csv")}
    d = net.dss
    names, buses, p_cols, q_cols = [], [], [], []
    i = d.Loads.First()
    while i:
        shape = d.Loads.Daily().lower()
        data = pd.read_csv(csvs[shape], header=None).to_numpy(dtype=float)
        assert data.shape == (96, 2), shape
        hourly = data.reshape(24, 4, 2).mean(axis=1)
        names.append(f"Load.{d.Loads.Name()}")
        buses.append(d.CktElement.BusNames()[0])
        p_cols.append(hourly[:, 0])
        q_cols.append(hourly[:, 1])
        i = d.Loads.Next()
    return names, buses, np.column_stack(p_cols), np.column_stack(q_cols)


@pytest.fixture(scope="module")
def day(master: Path) -> dict[str, object]:
    cr_mar = master.parents[1]
    net = OpenDSSNetwork(master)
    loads, buses, p_load, q_load = _hourly_load_profiles(net, cr_mar)
    pvs = [net.add_pv(f"pv{k}", bus.split(".")[0], PV_KW, kva=3.3)
           for k, bus in enumerate(buses)]
    elements = net.resolve(loads + pvs)
    irrad = _my_irrad(cr_mar)
    kw = np.hstack([p_load, np.outer(irrad, np.full(len(pvs), PV_KW))])
    kvar = np.hstack([q_load, np.full((24, len(pvs)), np.nan)])
    result = net.run_series(elements, kw, kvar=kvar)
    return {"net": net, "elements": elements, "kw": kw, "kvar": kvar, "result": result,
            "loads": loads, "buses": buses, "pvs": pvs}


def test_day_solves_and_midday_overvoltage_is_reported(day: dict) -> None:
    net, res = day["net"], day["result"]
    assert res.v_pu.shape == (24, len(net.node_names)) and not np.isnan(res.v_pu).any()
    lv = monitored_mask(res.node_names, net.buses, "lv")
    assert 300 < lv.sum() < len(lv)  # the MV nodes are excluded
    v_lv = res.v_pu[:, lv]
    peak_step = int(np.argmax(v_lv.max(axis=1)))
    assert peak_step in (9, 10, 11, 12)  # 10:00-12:00, irradiance 0.96-1.0
    assert 1.07 < v_lv.max() < 1.11  # data README: about 1.09 pu
    viol = check_limits(res, vmin_pu=0.95, vmax_pu=1.05, monitored_nodes=lv)
    over = viol[(viol["kind"] == "voltage") & (viol["value"] > 1.05)]
    assert peak_step in set(over["step"])
    assert over["value"].max() == pytest.approx(v_lv.max())
    assert set(over["step"]) <= set(range(6, 18))  # only while the sun shines
    assert not (viol[viol["kind"] == "voltage"]["step"] < 6).any()


def test_community_counts_on_transformer_groups(day: dict, master: Path) -> None:
    lv_list = pd.read_csv(master.parent / "LoadsLVList.csv")
    bus_community = {b.lower(): f"G{g}" for b, g in zip(lv_list["BUS_BT"], lv_list["GROUP_LV"],
                                                          strict=True)}
    net, res = day["net"], day["result"]
    viol = check_limits(res, vmin_pu=0.95, vmax_pu=1.05,
                        monitored_nodes=monitored_mask(res.node_names, net.buses, "lv"))
    counts = count_violations(viol, bus_community=bus_community, line_bus=net.downstream_buses())
    assert sorted(counts.communities) == ["G1", "G2", "G3"]
    assert counts["voltage_violations"] > 0
    per_group = counts.table.loc[["G1", "G2", "G3"], "voltage_violations"]
    assert 0 < per_group.sum() <= counts["voltage_violations"]


def test_loads_and_low_pv_deliver_the_set_power(day: dict) -> None:
    net, elements, kw, kvar = day["net"], day["elements"], day["kw"], day["kvar"]
    step = kw[12].copy()
    n_loads = len(day["loads"])
    step[n_loads:] = 0.1 * PV_KW  # 10 % of rating: below OpenDSS's default 20 % cut-in
    net.run_series(elements, step[None, :], kvar=kvar[12][None, :])
    np.testing.assert_allclose(net.element_powers_kw(elements), step, rtol=1e-3, atol=1e-6)


def test_battery_on_split_phase_bus_is_240_v_and_follows_signed_power(day: dict) -> None:
    net = day["net"]
    d = net.dss
    explicit = net.add_battery("bat158", "BUSLVMAR158.1.2", kw_rated=2.56, kwh=10.24)
    bare = net.add_battery("bat154", "BUSLVMAR154", kw_rated=2.56, kwh=10.24)
    for name, bus in ((explicit, "buslvmar158.1.2"), (bare, "buslvmar154.1.2")):
        d.Circuit.SetActiveElement(name)
        assert d.CktElement.BusNames()[0] == bus
        assert d.CktElement.NumPhases() == 1
        d.Text.Command(f"? {name}.kV")
        assert float(d.Text.Result()) == pytest.approx(0.24)
    elements = net.resolve([explicit, bare, *day["loads"]])
    loads_kw = day["kw"][19, : len(day["loads"])]
    for s in ([2.56, -1.2], [-2.56, 0.4]):
        net.run_series(elements, np.concatenate([s, loads_kw])[None, :])
        np.testing.assert_allclose(net.element_powers_kw(elements)[:2], s, rtol=1e-3)
