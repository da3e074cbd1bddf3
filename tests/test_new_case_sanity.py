"""new-case on a raw feeder: the traps of issue 16 and the base-case warnings of
gridmarket.cases.sanity (no-load and peak-load power flows run in OpenDSS)."""

from __future__ import annotations

import io
import os
import re
import tomllib
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import shared_data
from gridmarket.case import CaseWarning, load_case
from gridmarket.cases.generic import new_case, reconcile_start
from gridmarket.cases.sanity import case_sanity
from gridmarket.cli import main
from gridmarket.cli_cases import new_case_command
from gridmarket.errors import GridmarketError
from gridmarket.study import run_study


@pytest.fixture(scope="module")
def ieee() -> Path:
    d = shared_data() / "ieee_eu_lv"
    if not (d / "Master.dss").is_file():
        pytest.skip(f"IEEE EU LV feeder not found at {d}")
    return d / "Master.dss"


def _feeder_source_pu(master: Path) -> float:
    """The source voltage the feeder's own script sets (``Edit Vsource.Source ... pu=``)."""
    m = re.search(r"^\s*edit\s+vsource\.source\b.*?\bpu=([\d.]+)", master.read_text(), re.IGNORECASE | re.MULTILINE)
    assert m is not None
    return float(m.group(1))


def _run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(args)
    return status, out.getvalue(), err.getvalue()


def _toml(case_dir: Path) -> dict:
    return tomllib.loads((case_dir / "case.toml").read_text())


def test_raw_ieee_feeder_warns_about_the_source_voltage(ieee: Path, tmp_path: Path) -> None:
    out = tmp_path / "raw"
    status, text, err = _run(["new-case", str(ieee), str(out), "--pv-kwp", "4", "--communities", "knn:6"])
    assert status == 0, err
    src = _feeder_source_pu(ieee)
    assert src == pytest.approx(1.05)  # the raw feeder's script, read independently
    warned = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert any(f"source voltage is {src:.4f} pu" in ln and "upper" not in ln for ln in warned), err
    # at no load every bus sits at the source voltage: the margin to vmax = 1.05 is zero
    assert any(f"at no load the monitored buses sit at {src:.4f}-{src:.4f} pu" in ln for ln in warned), err
    assert "base case: source 1.0500 pu; monitored buses (customers): 55" in text
    cfg = _toml(out)
    assert cfg["network"]["monitored_buses"] == "customers"
    assert "source_pu" not in cfg["network"]
    # knn:6 on 55 households: 9 groups, none of one household (55 = 8 x 6 + 7)
    agents = pd.read_csv(out / "agents.csv", dtype=str)
    sizes = agents[agents["kind"] == "consumer"].groupby("community").size()
    assert sorted(sizes.tolist()) == [6] * 8 + [7]
    # the community comment names each community after its own group
    comment = re.findall(r"#\s+C(\d+) \(\d+ households\): group (\d+)", (out / "case.toml").read_text())
    assert len(comment) == 9 and all(a == b for a, b in comment)


def test_source_pu_sets_the_source_and_silences_the_warning(ieee: Path, tmp_path: Path) -> None:
    res = new_case_command(str(ieee), tmp_path / "c", pv_kwp=4.0, communities="knn:6", source_pu=1.0)
    assert _toml(tmp_path / "c")["network"]["source_pu"] == 1.0
    assert not any("source voltage" in w for w in res.warnings), res.warnings
    rep = case_sanity(load_case(tmp_path / "c"))
    # at no load (agents at 0 kW) the customer buses sit at the source voltage (transformer no-load
    # current only): the OpenDSS source really is at 1.0 pu
    assert rep.no_load_min_pu == pytest.approx(1.0, abs=2e-3)
    assert rep.no_load_max_pu == pytest.approx(1.0, abs=2e-3)
    assert rep.source_pu == 1.0 and rep.source_from_case
    # the peak-load flow is the step of the largest demand (profiles.csv, summed by hand)
    prof = pd.read_csv(tmp_path / "c" / "profiles.csv")
    loads = [c for c in prof.columns if c.startswith("load")]
    assert rep.peak_step == int(prof[loads].sum(axis=1).to_numpy().argmax())
    assert rep.peak_min_pu < rep.no_load_min_pu  # load pulls the voltages down


def test_no_battery_at_a_bus_without_customers(ieee: Path, tmp_path: Path) -> None:
    new_case_command(str(ieee), tmp_path / "c", pv_kwp=8.0, communities="knn:6", source_pu=1.0, check=False)
    case = load_case(tmp_path / "c")
    # at 8 kWp per household the base case violates voltage (customer buses) and line currents
    # (cable joints): placement must still only ever pick monitored, i.e. customer, buses
    study = run_study(case, max_iterations=2)
    customers = {study.agent_buses[a.name] for a in case.agents}
    placed = set().union(*(it.banks for it in study.iterations))
    assert placed, "8 kWp per household at a 1.0 pu source should violate somewhere"
    assert study.iterations[0].counts["current_violations"] > 0  # overloaded cables end at joints
    assert placed <= customers, sorted(placed - customers)


def test_start_hour_labels_step_zero(ieee: Path, tmp_path: Path) -> None:
    out = new_case(ieee, tmp_path / "c", pv_kwp=4.0, communities="knn:6", steps=3, start="2024-06-01", start_hour=6)
    prof = pd.read_csv(out / "profiles.csv")
    assert prof["time"].tolist() == ["2024-06-01T06:00", "2024-06-01T07:00", "2024-06-01T08:00"]
    assert _toml(out)["time"]["start"] == "2024-06-01T06:00"
    # the values are hours 6-9 of the loads' own 1-minute shapes (Yearly=Shape_7 of load7, kW = 1)
    minute = np.loadtxt(ieee.parent / "Daily_1min_100profiles" / "load_profile_7.txt")
    np.testing.assert_allclose(prof["load7"], minute[360:540].reshape(3, 60).mean(axis=1), atol=1e-6)
    # a start at 06:00 alone starts the shapes at 06:00 too
    same = new_case(ieee, tmp_path / "d", pv_kwp=4.0, communities="knn:6", steps=3, start="2024-06-01T06:00")
    pd.testing.assert_frame_equal(pd.read_csv(same / "profiles.csv"), prof)


@pytest.mark.parametrize(("start", "hour", "expected"), [
    (None, None, (None, 0.0)),
    (None, 5.5, (None, 5.5)),
    ("2024-06-01", 6, ("2024-06-01T06:00", 6.0)),
    ("2024-06-01", 30.5, ("2024-06-01T06:30", 30.5)),  # a second day of the shapes, 06:30 on the clock
    ("2024-06-01T06:00", None, ("2024-06-01T06:00", 6.0)),
    ("2024-06-01 18:15", 18.25, ("2024-06-01T18:15", 18.25)),
])
def test_reconcile_start(start: str | None, hour: float | None, expected: tuple) -> None:
    assert reconcile_start(start, hour) == expected


def test_a_start_that_contradicts_start_hour_is_an_error(ieee: Path, tmp_path: Path) -> None:
    with pytest.raises(GridmarketError, match=r"puts step 0 at 00:00 but start_hour 6 starts the loadshapes at 06:00"):
        new_case(ieee, tmp_path / "c", pv_kwp=4.0, start="2024-06-01T00:00", start_hour=6)
    assert not (tmp_path / "c").exists()


def test_one_transformer_feeder_warns_one_community(ieee: Path, tmp_path: Path) -> None:
    with pytest.warns(CaseWarning, match=r"'transformer' gives one community for all 55 households"):
        new_case(ieee, tmp_path / "c", pv_kwp=4.0, communities="transformer", steps=2)


def test_the_path_is_kept_as_given(ieee: Path, tmp_path: Path) -> None:
    link = tmp_path / "feeders"
    link.symlink_to(ieee.parent, target_is_directory=True)
    out = new_case(link / "Master.dss", tmp_path / "c", pv_kwp=4.0, communities="knn:6", steps=2)
    master = (out / "network" / "Master.dss").read_text()
    assert f'Redirect "{(link / "Master.dss").as_posix()}"' in master
    assert os.path.realpath(link) != str(link)  # the link really is one


def test_warnings_for_a_violated_base_case_and_a_lonely_household(ieee: Path, tmp_path: Path) -> None:
    csv = tmp_path / "com.csv"
    names = [f"load{k}" for k in range(1, 56)]
    csv.write_text("load,community\n" + "".join(f"{n},{'solo' if n == 'load9' else 'rest'}\n" for n in names))
    res = new_case_command(str(ieee), tmp_path / "c", pv_kwp=4.0, communities=str(csv), source_pu=1.07,
                           steps=4)
    text = "\n".join(res.warnings)
    assert "source voltage is 1.0700 pu ([network] source_pu)" in text
    # at a 1.07 pu source every customer bus is above 1.05 pu at no load
    assert "the base case at no load violates the voltage limits at 55 of 55 monitored buses (100 %" in text
    assert "1 of 2 communities have a single household (solo)" in text


def test_monitoring_cable_joints_is_worth_a_warning(ieee: Path, tmp_path: Path) -> None:
    res = new_case_command(str(ieee), tmp_path / "c", pv_kwp=4.0, communities="knn:6", source_pu=1.0, steps=2,
                           settings={"network.monitored_buses": "lv"})
    # the IEEE feeder: 906 LV buses below the transformer, 55 of them with a household
    text = "\n".join(res.warnings)
    assert "851 of the 906 monitored buses (lv) have no agent" in text, text


def test_source_pu_on_a_named_source_changes_only_that_key(tmp_path: Path) -> None:
    from gridmarket.cases import default_case_path

    res = new_case_command("default", tmp_path / "c", source_pu=0.99)
    assert load_case(tmp_path / "c").network.source_pu == 0.99
    before = (default_case_path() / "case.toml").read_text().splitlines()
    after = (tmp_path / "c" / "case.toml").read_text().splitlines()
    assert [ln for ln in after if ln not in before] == ["source_pu = 0.99"]
    assert len(after) == len(before) + 1
    assert "base case: source 0.9900 pu" in res.text
    with pytest.raises(GridmarketError, match="--calibrated applies to cr_mar"):
        new_case_command("default", tmp_path / "d", calibrated=True)
