"""gridmarket.cases.generic.new_case on four kinds of feeder: the IEEE European LV feeder
(three-phase four-wire, 230 V single-phase loads), the Costa Rica MAR feeder (120/240 V
split-phase), the synthetic feeder generator's output, and a small hand-written feeder with a
three-phase load, a split-phase leg, and every way of giving a loadshape.

Expected agents, buses, communities and profiles are derived here from the feeders' own DSS
text and data files (regular expressions and numpy), not from gridmarket's reading of them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import opendssdirect
import pandas as pd
import pytest

from conftest import shared_data
from gridmarket.case import CaseWarning, load_case
from gridmarket.cases import write_case_source
from gridmarket.cases.generic import DEFAULT_RESIDENTIAL_SHAPE, new_case
from gridmarket.errors import GridmarketError
from gridmarket.study import check_network, run_study

_LOAD = re.compile(r"^\s*new\s+load\.(\S+)\s.*?\bbus1=(\S+)", re.IGNORECASE)
_PV = re.compile(r"^New PVSystem\.(\S+) phases=(\d) bus1=(\S+) kV=(\S+) .*?Pmpp=(\S+)", re.IGNORECASE)


def _dss_loads(path: Path) -> dict[str, str]:
    """Load name -> bus1 as written in a DSS file (lower case)."""
    out = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _LOAD.match(line)
        if m:
            out[m.group(1).lower()] = m.group(2).lower()
    return out


def _case_pv(case_dir: Path) -> dict[str, tuple[int, str, float, float]]:
    """PV name -> (phases, bus1, kV, Pmpp) from the case's PVSystems.dss."""
    out = {}
    for line in (case_dir / "network" / "PVSystems.dss").read_text().splitlines():
        m = _PV.match(line)
        if m:
            out[m.group(1)] = (int(m.group(2)), m.group(3), float(m.group(4)), float(m.group(5)))
    return out


def _agents(case_dir: Path) -> pd.DataFrame:
    return pd.read_csv(case_dir / "agents.csv", dtype={"name": str, "community": str})


def _check_runs(case_dir: Path) -> dict[str, str]:
    """The case loads, every element exists in the network, one iteration runs; agent -> bus."""
    case = load_case(case_dir)
    check_network(case)
    study = run_study(case, max_iterations=1)
    assert len(study.iterations) == 1
    assert np.isfinite(study.iterations[0].welfare)
    return study.agent_buses


def _partition(groups: dict[str, str]) -> set[frozenset[str]]:
    out: dict[str, set[str]] = {}
    for name, g in groups.items():
        out.setdefault(g, set()).add(name)
    return {frozenset(v) for v in out.values()}


# ---------------------------------------------------------------------------- IEEE EU LV

@pytest.fixture(scope="module")
def ieee_dir() -> Path:
    d = shared_data() / "ieee_eu_lv"
    if not (d / "Master.dss").is_file():
        pytest.skip(f"IEEE EU LV feeder not found at {d}")
    return d


def test_ieee_three_phase_four_wire_feeder(ieee_dir: Path, tmp_path: Path) -> None:
    out = new_case(ieee_dir / "Master.dss", tmp_path / "ieee", pv_kwp=4.0, communities="branch", steps=4,
                   start_hour=10.0)
    loads = _dss_loads(ieee_dir / "Loads.txt")
    assert len(loads) == 55
    agents = _agents(out)
    consumers = agents[agents["kind"] == "consumer"]
    producers = agents[agents["kind"] == "producer"]
    assert set(consumers["name"]) == set(loads)
    assert len(producers) == len(loads)
    # every household gets a 230 V single-phase PV on its own bus and phase
    pv = _case_pv(out)
    for name, bus1 in loads.items():
        assert pv[f"pv_{name}"] == (1, bus1, 0.23, 4.0)
    # the feeder is redirected by absolute path, not copied
    master = (out / "network" / "Master.dss").read_text()
    # the path as given (absolute, symlinks not resolved: the data folder the user named)
    assert f'Redirect "{os.path.abspath(ieee_dir / "Master.dss")}"' in master
    assert sorted(p.name for p in (out / "network").iterdir()) == ["Master.dss", "PVSystems.dss"]
    buses = _check_runs(out)
    for name, bus1 in loads.items():
        assert buses[name] == bus1.split(".")[0]
        assert buses[f"pv_{name}"] == bus1.split(".")[0]
    # profile: hours 10..13 of the load's own 1-minute file (Yearly=Shape_k, useactual=no x kW=1)
    prof = pd.read_csv(out / "profiles.csv")
    minute = np.loadtxt(ieee_dir / "Daily_1min_100profiles" / "load_profile_7.txt")
    np.testing.assert_allclose(prof["load7"], minute[600:840].reshape(4, 60).mean(axis=1), atol=1e-6)
    # the branch rule finds the same three communities as the shipped default case
    default = pd.read_csv(Path(__file__).resolve().parents[1] / "src/gridmarket/data/default_case/agents.csv")
    dc = default[default["kind"] == "consumer"]
    assert _partition(dict(zip(consumers["name"], consumers["community"], strict=True))) == \
        _partition(dict(zip(dc["name"].str.lower(), dc["community"], strict=True)))


# ---------------------------------------------------------------------------- Costa Rica MAR

def test_cr_mar_split_phase_feeder(cr_mar_dir: Path, tmp_path: Path) -> None:
    dss = cr_mar_dir / "DSS"
    out = new_case(dss / "Master_MAR.dss", tmp_path / "mar", pv_percent_of_peak=100.0,
                   communities="transformer", steps=4, start_hour=10.0)
    text = (dss / "MAR_LoadsLV.dss").read_text(encoding="utf-8", errors="replace")
    loads = _dss_loads(dss / "MAR_LoadsLV.dss")
    group = {m.group(1).lower(): m.group(2) for m in re.finditer(r"new Load\.(\S+) .*?!Group=(\d)", text)}
    shape = {m.group(1).lower(): m.group(2).lower() for m in re.finditer(r"new Load\.(\S+) .*?daily=(\S+)", text)}
    files = {m.group(1).lower(): m.group(2).replace("\\", "/") for m in re.finditer(
        r"New Loadshape\.(\S+) .*?Pmult=\(file=([^,]+),", (dss / "MAR_Loadshapes.dss").read_text())}
    assert len(loads) == 92
    agents = _agents(out)
    consumers = agents[agents["kind"] == "consumer"].set_index("name")
    assert set(consumers.index) == set(loads)
    # communities = the three distribution transformers (the feeder's own !Group= comments)
    assert _partition(consumers["community"].to_dict()) == _partition(group)
    # P from each load's 15-minute curve (kW = 1, useactual=no): hours 10-13
    prof = pd.read_csv(out / "profiles.csv")
    pv = _case_pv(out)
    n_pv = 0
    for name, bus1 in loads.items():
        p15 = np.loadtxt(dss / files[shape[name]], delimiter=",", ndmin=2)[:, 0]
        hourly = p15[40:56].reshape(4, 4).mean(axis=1)
        np.testing.assert_allclose(prof[name], hourly, atol=1e-6)
        peak = round(float(np.round(hourly, 6).max()), 3)
        if peak >= 1e-3:  # 100 % of the peak; zero-demand loads get no PV
            # 240 V across both legs of the split-phase bus
            assert pv[f"pv_{name}"] == (1, bus1, 0.24, pytest.approx(peak))
            assert bus1.endswith(".1.2")
            n_pv += 1
        else:
            assert f"pv_{name}" not in pv
    assert len(agents[agents["kind"] == "producer"]) == n_pv > 50
    buses = _check_runs(out)
    for name, bus1 in loads.items():
        assert buses[name] == bus1.split(".")[0]


# ---------------------------------------------------------------------------- synthetic feeder

def test_synthetic_feeder(tmp_path: Path) -> None:
    from gridmarket.cases.synthetic import household_profiles, write_feeder

    master = write_feeder(tmp_path / "feeder", n_households=12, seed=3, steps=24)
    loads = _dss_loads(master.parent / "Loads.dss")
    feeder_pv = {m.group(1).lower(): float(m.group(2)) for m in re.finditer(
        r"New PVSystem\.(\S+) .*?Pmpp=(\S+)", (master.parent / "PVSystems.dss").read_text())}
    assert len(loads) == 12

    # (a) without a penetration: the feeder's own PV systems are the producers
    own = new_case(master, tmp_path / "own", communities="knn:4")
    agents = _agents(own)
    cons = agents[agents["kind"] == "consumer"]
    prod = agents[agents["kind"] == "producer"].set_index("name")
    assert set(cons["name"]) == set(loads)
    assert set(prod.index) == set(feeder_pv)
    for name, kwp in feeder_pv.items():
        assert prod.loc[name, "scale"] == pytest.approx(kwp)
    assert sorted(cons.groupby("community").size()) == [4, 4, 4]
    prof = pd.read_csv(own / "profiles.csv")
    expected = household_profiles(12, 24, seed=3)  # the generator's own demand (6 significant digits)
    got = prof[[f"h{k}" for k in range(1, 13)]].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    buses = _check_runs(own)
    for name, bus1 in loads.items():
        assert buses[name] == bus1.split(".")[0]

    # (b) with a penetration: the feeder's PV is switched off and one PV per household added
    with pytest.warns(CaseWarning, match=r"(?i)gives one community for all 12 households .*transformer\.t1"):
        new = new_case(master, tmp_path / "new", pv_kwp=2.5, communities="transformer")
    assert set(_agents(new).query("kind == 'producer'")["name"]) == {f"pv_{n}" for n in loads}
    dss = opendssdirect.NewContext()
    dss.Text.Command(f'compile "{new / "network" / "Master.dss"}"')
    enabled = set()
    i = dss.PVsystems.First()
    while i:
        if dss.CktElement.Enabled():
            enabled.add(dss.PVsystems.Name().lower())
        i = dss.PVsystems.Next()
    assert enabled == {f"pv_{n}" for n in loads}
    _check_runs(new)


# ---------------------------------------------------------------------------- every connection

MIXED = """\
Clear
New Circuit.mixed basekV=11 pu=1.0 phases=3 bus1=src
New Transformer.T1 phases=3 windings=2 buses=[src lv] conns=[delta wye] kVs=[11 0.4] kVAs=[250 250] XHL=4
New Line.L1 bus1=lv bus2=b1 phases=3 r1=0.1 x1=0.05 r0=0.3 x0=0.1 c1=0 c0=0 units=km length=0.1 normamps=300
New Line.L2 bus1=b1 bus2=b2 phases=3 r1=0.1 x1=0.05 r0=0.3 x0=0.1 c1=0 c0=0 units=km length=0.1 normamps=300
New Transformer.T2 phases=1 windings=3 buses=[b2.1.0 sp.1.0 sp.0.2] kVs=[0.23 0.12 0.12] kVAs=[25 25 25]
~ xhl=2 xht=2 xlt=1.6
New Loadshape.day npts=4 interval=6 mult=(0.5 1 2 0.5)
New Loadshape.actual npts=24 interval=1 mult=(1 1 1 1 1 1 2 2 2 2 2 2 3 3 3 3 3 3 0 0 0 0 0 0) useactual=yes
New Loadshape.var npts=3 hour=(0 12 24) mult=(0 1 0)
New Load.three phases=3 bus1=b1.1.2.3 kV=0.4 kW=6 pf=0.9 daily=day
New Load.single phases=1 bus1=b2.2 kV=0.23 kW=2 pf=0.95 daily=actual
New Load.leg phases=1 bus1=sp.1 kV=0.12 kW=1 pf=0.95
New Load.both phases=1 bus1=sp.1.2 kV=0.24 kW=3 pf=0.95 yearly=var
New Load.fixed phases=1 bus1=b2.3 kV=0.23 kW=1.5 pf=1 status=fixed daily=day
Set VoltageBases=[11 0.4]
CalcVoltageBases
SetkVBase bus=sp kVLN=0.12
"""


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    path = tmp_path / "mixed" / "Master.dss"
    path.parent.mkdir()
    path.write_text(MIXED)
    return path


def test_every_connection_and_loadshape_kind(mixed: Path, tmp_path: Path) -> None:
    out = new_case(mixed, tmp_path / "case", pv_percent_of_peak=50.0, steps=4, step_hours=6.0)
    prof = pd.read_csv(out / "profiles.csv")
    default = np.asarray(DEFAULT_RESIDENTIAL_SHAPE).reshape(4, 6).mean(axis=1)
    expected = {
        "three": 6.0 * np.array([0.5, 1.0, 2.0, 0.5]),  # daily mult x kW, 6-h samples
        "single": np.array([1.0, 2.0, 3.0, 0.0]),  # useactual: the values themselves, 6-h means
        "leg": 1.0 * default,  # no loadshape: the documented residential day x kW
        "both": 3.0 * np.array([0.25, 0.75, 0.75, 0.25]),  # hour=(0 12 24) triangle, linear between
        "fixed": np.full(4, 1.5),  # status=fixed keeps its kW
    }
    for name, values in expected.items():
        np.testing.assert_allclose(prof[name], values, atol=1e-6, err_msg=name)
    pv = _case_pv(out)
    assert pv["pv_three"] == (3, "b1.1.2.3", 0.4, 6.0)  # three-phase four-wire
    assert pv["pv_single"] == (1, "b2.2", 0.23, 1.5)
    assert pv["pv_leg"] == (1, "sp.1.2", 0.24, pytest.approx(round(0.5 * default.max(), 3)))  # both legs
    assert pv["pv_both"] == (1, "sp.1.2", 0.24, 1.125)
    assert pv["pv_fixed"] == (1, "b2.3", 0.23, 0.75)
    agents = _agents(out).set_index("name")
    # communities by distribution transformer: the split-phase loads hang on T2, the rest on T1
    assert agents.loc["three", "community"] == agents.loc["single", "community"] == agents.loc["fixed", "community"]
    assert agents.loc["leg", "community"] == agents.loc["both", "community"] != agents.loc["three", "community"]
    buses = _check_runs(out)
    assert buses["pv_leg"] == buses["leg"] == "sp"


def test_community_csv_template_and_settings(mixed: Path, tmp_path: Path) -> None:
    csv = tmp_path / "com.csv"
    csv.write_text("load,community\nthree,North\nsingle,North\nleg,South\nboth,South\nfixed,\n")
    template = tmp_path / "template.toml"
    template.write_text('[case]\ncurrency = "EUR"\n[grid]\nimport_price = 0.5\nexport_price = 0.1\n'
                        "[battery]\nunit_kw = 5.0\n[consumers]\nb = [0.9, 1.3]\nflex = 0.0\n"
                        "[producers]\nkva_ratio = 1.25\n")
    out = new_case(mixed, tmp_path / "case", pv_kwp=2.0, communities=csv, template=template,
                   settings={"grid.export_price": 0.2, "placement.ladder": [1, 2]}, import_price=0.6, steps=2,
                   step_hours=12.0, start="2024-01-01T00:00")
    case = load_case(out)
    assert case.currency == "EUR" and case.battery.unit_kw == 5.0 and case.placement.ladder == (1, 2)
    assert case.grid.import_price.tolist() == [0.6, 0.6] and case.grid.export_price.tolist() == [0.2, 0.2]
    assert case.communities == ("North", "South")
    agents = _agents(out).set_index("name")
    assert agents.loc["fixed", "kind"] == "passive" and "pv_fixed" not in agents.index  # empty community
    cons = agents[agents["kind"] == "consumer"]
    assert cons["b"].between(0.9, 1.3).all() and cons["b"].nunique() == len(cons)
    assert (cons["flex"] == 0).all()
    assert "kVA=2.5 Pmpp=2" in (out / "network" / "PVSystems.dss").read_text()
    _check_runs(out)


def test_write_case_source_accepts_a_feeder(mixed: Path, tmp_path: Path) -> None:
    out = write_case_source(str(mixed), tmp_path / "c", options={"pv_kwp": 1.0, "communities": "knn:2"})
    # five households in groups of two: the fifth joins its nearest group instead of standing alone
    assert load_case(out).communities == ("C1", "C2")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"pv_kwp": 1.0, "pv_percent_of_peak": 50.0}, "not both"),
    ({"communities": "by-street"}, "unknown community rule 'by-street'"),
    ({"communities": "knn:0"}, "k in 'knn:<k>'"),
    ({"settings": {"grid.import_prise": 0.5}}, "import_prise"),
    ({"settings": {"gird.import_price": 0.5}}, "did you mean 'grid'"),
    ({"loadshape": "weekly"}, "loadshape must be"),
])
def test_bad_arguments_are_named(mixed: Path, tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(GridmarketError, match=re.escape(message)):
        new_case(mixed, tmp_path / "c", **kwargs)
    assert not (tmp_path / "c").exists()


def test_community_csv_must_cover_the_loads(mixed: Path, tmp_path: Path) -> None:
    csv = tmp_path / "com.csv"
    csv.write_text("load,community\nthree,A\nsingel,A\n")
    with pytest.raises(GridmarketError, match=r"4 load\(s\) missing.*did you mean 'single'"):
        new_case(mixed, tmp_path / "c", communities=csv)


def test_new_case_command(mixed: Path, tmp_path: Path) -> None:
    from gridmarket.cli_cases import new_case_command

    res = new_case_command(str(mixed), tmp_path / "c", pv_kwp=1.0, communities="knn:5", pv_percent_of_peak=None,
                           settings=["grid.import_price=0.65", 'case.currency="EUR"'])
    assert "5 consumer(s), 5 producer(s); 1 community (C1)" in res.text
    case = load_case(res.path)
    assert case.grid.import_price[0] == 0.65 and case.currency == "EUR"
    with pytest.raises(GridmarketError, match="unknown new-case option"):
        new_case_command(str(mixed), tmp_path / "d", pv_kwh=1.0)
