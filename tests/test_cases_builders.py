"""Case builders: the shipped default case and the Costa Rica MAR cases 1 and 2.

Real files only. Expected values are recomputed here independently of the builders (plain
``open``/``csv`` reading of the source data), not copied from their output.
"""

from __future__ import annotations

import csv
import filecmp
import os
import re
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gridmarket.cases import default_case_path, find_shared_data, write_case, write_case_source
from gridmarket.cases.ieee_eu_lv import feeder_branches
from gridmarket.cases.profiles import block_mean, clearest_day, spread, to_hourly
from gridmarket.errors import GridmarketError

dss = pytest.importorskip("opendssdirect")

REPO = Path(__file__).resolve().parents[1]


def _shared() -> Path:
    env = os.environ.get("GRIDMARKET_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


SHARED = _shared()
HAS_IEEE = (SHARED / "ieee_eu_lv" / "Master.dss").is_file()
HAS_CR = (SHARED / "cr_mar" / "DSS" / "Master_MAR.dss").is_file()
_skip_ieee = pytest.mark.skipif(
    not HAS_IEEE, reason=f"shared data not found at {SHARED / 'ieee_eu_lv'} (set GRIDMARKET_SHARED_DATA)")
_skip_cr = pytest.mark.skipif(
    not HAS_CR, reason=f"cr_mar feeder not found at {SHARED / 'cr_mar'} (it is not redistributable; place "
                       "../shared/data beside the checkout or set GRIDMARKET_SHARED_DATA)")


def needs_ieee(f):  # noqa: ANN001, ANN201 - decorator
    """Mark a test as reading ../shared/data/ieee_eu_lv (skipped without it)."""
    return pytest.mark.needs_shared(_skip_ieee(f))


def needs_cr(f):  # noqa: ANN001, ANN201 - decorator
    """Mark a test as reading ../shared/data/cr_mar (skipped without it)."""
    return pytest.mark.needs_shared(_skip_cr(f))


def _compile(master: Path) -> None:
    """Compile ``master`` with OpenDSS and restore the working directory."""
    cwd = os.getcwd()
    try:
        dss.Text.Command(f'compile "{master.resolve()}"')
    finally:
        os.chdir(cwd)


def _agents(case: Path) -> list[dict[str, str]]:
    with (case / "agents.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _element_bus(element: str) -> str:
    dss.Circuit.SetActiveElement(element)
    return dss.CktElement.BusNames()[0].lower()


def _load_case_or_skip():  # noqa: ANN202 - returns the loader function
    try:
        from gridmarket.case import load_case
    except ImportError as exc:
        pytest.skip(f"gridmarket.case.load_case is not available yet: {exc}")
    return load_case


# ================================================================= default case (shipped)
DEFAULT = default_case_path()


def test_default_case_folder_is_complete_and_small() -> None:
    for rel in ("case.toml", "agents.csv", "profiles.csv", "network/Master.dss", "network/PVSystems.dss",
                "network/Loads.txt", "LICENSE", "PROVENANCE.md"):
        assert (DEFAULT / rel).is_file(), rel
    files = [p for p in DEFAULT.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 1_000_000
    assert not [p for p in files if "load_profile" in p.name or p.name in ("LoadShapes.txt", "Monitors.txt")]
    master = "\n".join(line for line in (DEFAULT / "network" / "Master.dss").read_text().splitlines()
                       if not line.lstrip().startswith("!"))
    assert "loadshape" not in master.lower() and "monitor" not in master.lower()
    assert not re.search(r"^\s*solve", master, re.IGNORECASE | re.MULTILINE)
    assert "yearly=" not in (DEFAULT / "network" / "Loads.txt").read_text().lower()
    lic = (DEFAULT / "LICENSE").read_text()
    assert "Electric Power Research Institute" in lic and "Team Nando" in lic


def test_default_case_toml() -> None:
    cfg = tomllib.loads((DEFAULT / "case.toml").read_text(encoding="utf-8"))
    net = dict(cfg["network"])
    monitored = net.pop("monitored_buses")
    assert net == {"master": "network/Master.dss", "vmin_pu": 0.95, "vmax_pu": 1.05}
    # the households' connection buses, read independently from the shipped Loads.txt
    loads = (DEFAULT / "network" / "Loads.txt").read_text()
    buses = {m.split(".")[0].lower() for m in re.findall(r"Bus1=(\S+)", loads, flags=re.IGNORECASE)}
    assert set(monitored) == buses and len(monitored) == len(buses)
    assert cfg["time"]["steps"] == 24 and cfg["time"]["step_hours"] == 1.0
    assert cfg["grid"]["import_price"] > cfg["grid"]["export_price"] > 0
    assert cfg["placement"]["ladder"] == [1, 3, 5]


def test_default_profiles_are_24_hourly_rows() -> None:
    cfg = tomllib.loads((DEFAULT / "case.toml").read_text(encoding="utf-8"))
    prof = pd.read_csv(DEFAULT / "profiles.csv")
    assert len(prof) == 24 and prof.columns[0] == "time"
    t = pd.to_datetime(prof["time"])
    assert t.iloc[0] == pd.Timestamp(cfg["time"]["start"])
    assert (t.diff().iloc[1:] == pd.Timedelta(hours=1)).all()
    values = prof.drop(columns="time").to_numpy()
    assert np.isfinite(values).all() and (values >= 0).all()
    assert set(a["profile"] for a in _agents(DEFAULT)) == set(prof.columns[1:])


def test_default_agents_match_network_elements() -> None:
    agents = _agents(DEFAULT)
    _compile(DEFAULT / "network" / "Master.dss")
    loads = {n.lower() for n in dss.Loads.AllNames()}
    pvs = {n.lower() for n in dss.PVsystems.AllNames()}
    assert len(loads) == 55 and len(pvs) == 55
    cons = [a for a in agents if a["kind"] == "consumer"]
    prod = [a for a in agents if a["kind"] == "producer"]
    assert len(cons) == 55 and len(prod) == 55 and len(agents) == 110
    assert {a["element"].split(".", 1)[1].lower() for a in cons} == loads
    assert {a["element"].split(".", 1)[1].lower() for a in prod} == pvs
    assert all(a["element"].startswith("Load.") for a in cons)
    assert all(a["element"].startswith("PVSystem.") for a in prod)
    # every PV sits on its household's bus and phase, in the same community, sized 3-5 kWp
    com = {a["name"]: a["community"] for a in agents}
    for a in prod:
        k = a["name"][2:]
        assert _element_bus(a["element"]) == _element_bus(f"Load.LOAD{k}")
        assert com[a["name"]] == com[f"LOAD{k}"]
        dss.PVsystems.Name(a["element"].split(".", 1)[1])
        assert dss.PVsystems.Pmpp() == pytest.approx(float(a["scale"]))
        assert 3.0 <= float(a["scale"]) <= 5.0
    # three communities by branch, each with consumers and producers
    sizes = pd.Series([a["community"] for a in cons]).value_counts().to_dict()
    assert sizes == {"C1": 19, "C2": 13, "C3": 23}
    # the economics make PV export attractive and consumers buy at the tariff
    cfg = tomllib.loads((DEFAULT / "case.toml").read_text(encoding="utf-8"))
    for a in prod:
        assert float(a["b"]) + 2 * float(a["a"]) * float(a["scale"]) < cfg["grid"]["export_price"]
    for a in cons:
        assert float(a["b"]) > cfg["grid"]["import_price"]


def test_default_snapshot_power_flow_converges() -> None:
    _compile(DEFAULT / "network" / "Master.dss")
    dss.Solution.Solve()
    assert dss.Solution.Converged()
    assert len(dss.Circuit.AllBusNames()) == 907


@needs_ieee
def test_default_pv_energy_equals_kwp_times_shape() -> None:
    """Recompute the PV column from the AusNet year: the day of [time].start, 30-min pairs."""
    cfg = tomllib.loads((DEFAULT / "case.toml").read_text(encoding="utf-8"))
    day = pd.Timestamp(cfg["time"]["start"]).day_of_year - 1
    year = np.load(SHARED / "profiles" / "ausnet_pv" / "Residential PV data 30-min resolution.npy")
    hourly = (year[day, 0::2] + year[day, 1::2]) / 2
    prof = pd.read_csv(DEFAULT / "profiles.csv")
    np.testing.assert_allclose(prof["pv_pu"].to_numpy(), hourly, atol=1e-6)
    kwp = sum(float(a["scale"]) for a in _agents(DEFAULT) if a["kind"] == "producer")
    energy_case = sum(float(a["scale"]) * prof[a["profile"]].sum()
                      for a in _agents(DEFAULT) if a["kind"] == "producer")
    energy_source = kwp * year[day].sum() * 0.5  # 48 half-hours [kWh]
    assert energy_case == pytest.approx(energy_source, rel=1e-5)
    # the chosen day is the clearest of the year by the documented rule, and the day exports
    assert day == clearest_day(year)
    load_kw = prof[[c for c in prof.columns if c.startswith("LOAD")]].sum(axis=1).to_numpy()
    pv_kw = kwp * prof["pv_pu"].to_numpy()
    assert (pv_kw > load_kw)[10:15].all() and (pv_kw < load_kw)[[0, 3, 20, 23]].all()


@needs_ieee
@pytest.mark.parametrize("k", [1, 27, 55])
def test_default_load_hourly_mean_of_minutes(k: int) -> None:
    with (SHARED / "ieee_eu_lv" / "Daily_1min_100profiles" / f"load_profile_{k}.txt").open() as f:
        minutes = [float(line) for line in f if line.strip()]
    assert len(minutes) == 1440
    expected = [sum(minutes[60 * h:60 * h + 60]) / 60 for h in range(24)]
    prof = pd.read_csv(DEFAULT / "profiles.csv")
    np.testing.assert_allclose(prof[f"LOAD{k}"].to_numpy(), expected, atol=1e-6)


@needs_ieee
def test_default_case_rebuild_is_deterministic_and_matches_shipped(tmp_path: Path) -> None:
    from gridmarket.cases.ieee_eu_lv import build_case

    a = build_case(tmp_path / "a", data_dir=SHARED)
    b = build_case(tmp_path / "b", data_dir=SHARED)
    files = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert filecmp.cmp(a / rel, b / rel, shallow=False), rel
        if rel != "PROVENANCE.md":  # the shipped one also holds the script's power-flow figures
            assert filecmp.cmp(a / rel, DEFAULT / rel, shallow=False), f"{rel}: rerun scripts/build_default_case.py"
    for rel in ("Lines.txt", "LineCode.txt", "Transformers.txt", "Buscoords.txt"):
        assert filecmp.cmp(DEFAULT / "network" / rel, SHARED / "ieee_eu_lv" / rel, shallow=False)


def test_default_case_loads() -> None:
    load_case = _load_case_or_skip()
    case = load_case(DEFAULT)
    assert len(case.agents) == 110
    assert case.communities == ("C1", "C2", "C3")
    assert case.profile_kw.shape == (24, 110)


def test_write_case_source_default_copies(tmp_path: Path) -> None:
    out = write_case_source("default", tmp_path / "copy")
    assert (out / "case.toml").read_bytes() == (DEFAULT / "case.toml").read_bytes()
    with pytest.raises(GridmarketError, match="not an empty folder"):
        write_case_source("default", out)
    with pytest.raises(GridmarketError, match="unknown case source 'nope'"):
        write_case_source("nope", tmp_path / "x")


# ================================================================= branch rule, helpers
def test_feeder_branches_rule() -> None:
    # root r - a - j; j has two big branches (b1: 3 loads, b2: 2 loads) and one small one (s: 1)
    edges = [("r", "a"), ("a", "j"), ("j", "b1"), ("b1", "b1x"), ("j", "b2"), ("j", "s"), ("a", "t")]
    loads = {"L1": "t", "L2": "b2", "L3": "b1x", "L4": "b1", "L5": "b1x", "L6": "s", "L7": "b2"}
    split = feeder_branches(edges, "r", loads, min_share=0.25)
    assert split.junction == "j"
    assert split.group == {"L1": 0, "L2": 1, "L3": 2, "L4": 2, "L5": 2, "L6": 0, "L7": 1}
    with pytest.raises(GridmarketError, match="no junction"):
        feeder_branches(edges, "r", loads, min_share=0.5)


def test_resampling_helpers() -> None:
    x = np.arange(96.0)
    np.testing.assert_allclose(to_hourly(x, minutes=15), x.reshape(24, 4).mean(axis=1))
    np.testing.assert_allclose(block_mean(np.ones((2, 6)), 3), np.ones((2, 2)))
    with pytest.raises(GridmarketError, match="needs 96 samples, got 95"):
        to_hourly(x[:-1], minutes=15)
    with pytest.raises(GridmarketError, match="must divide one hour"):
        to_hourly(x, minutes=7)
    assert spread(3, 0.0, 1.0) == spread(3, 0.0, 1.0)
    assert len({spread(k, 0.05, 0.5) for k in range(1, 93)}) > 80
    assert all(0.05 <= spread(k, 0.05, 0.5) <= 0.5 for k in range(1, 93))


def test_write_case_is_atomic_and_refuses_to_clobber(tmp_path: Path) -> None:
    kw = dict(case_toml='[network]\nmaster = "network/Master.dss"\n[time]\nsteps = 1\n',
              agents=[{"name": "H1", "kind": "passive", "element": "Load.H1", "profile": "p", "scale": 1.0}],
              profiles_header=["step", "p"], profiles_rows=[[0, 1.23456789]], network={"Master.dss": "Clear\n"})
    out = write_case(tmp_path / "c", **kw)
    assert (out / "profiles.csv").read_text() == "step,p\n0,1.234568\n"
    assert (out / "agents.csv").read_text().splitlines()[1] == "H1,passive,,Load.H1,p,1,,,,,,"
    with pytest.raises(GridmarketError, match="not empty"):
        write_case(out, **kw)
    with pytest.raises(GridmarketError, match="relative"):
        write_case(tmp_path / "d", **{**kw, "network": {"../evil.dss": ""}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no temporary folders left
    write_case(out, **{**kw, "profiles_rows": [[0, 2.0]]}, overwrite=True)
    assert (out / "profiles.csv").read_text() == "step,p\n0,2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_find_shared_data_names_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(GridmarketError, match=re.escape(str(tmp_path / "nope" / "cr_mar"))):
        find_shared_data(tmp_path / "nope", need="cr_mar")
    from gridmarket.cases.cr_mar import build_case

    with pytest.raises(GridmarketError, match="shared data not found"):
        build_case(tmp_path / "c", case=1, data_dir=tmp_path / "nope")
    assert not (tmp_path / "c").exists()


# ================================================================= Costa Rica MAR
@pytest.fixture(scope="module")
def cr_cases(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    if not HAS_CR:
        pytest.skip(f"cr_mar feeder not found at {SHARED / 'cr_mar'} (it is not redistributable; place "
                    "../shared/data beside the checkout or set GRIDMARKET_SHARED_DATA)")
    from gridmarket.cases.cr_mar import build_case

    root = tmp_path_factory.mktemp("cr")
    return {c: build_case(root / f"case{c}", case=c, data_dir=SHARED) for c in (1, 2)}


def _mar_loads() -> pd.DataFrame:
    t = pd.read_csv(SHARED / "cr_mar" / "DSS" / "LoadsLVList.csv", index_col=0)
    t["k"] = t["DSS_NAME"].str.extract(r"(\d+)$", expand=False).astype(int)
    return t.set_index("k").sort_index()


@needs_cr
@pytest.mark.parametrize("case", [1, 2])
def test_cr_case_network_and_agents(cr_cases: dict[int, Path], case: int) -> None:
    path = cr_cases[case]
    agents = _agents(path)
    table = _mar_loads()
    master = (path / "network" / "Master.dss").read_text()
    assert str((SHARED / "cr_mar" / "DSS" / "Master_MAR.dss").resolve().as_posix()) in master
    assert not (path / "network" / "MAR_LinesLV.dss").exists()  # the feeder is redirected, not copied
    _compile(path / "network" / "Master.dss")
    dss.Solution.Solve()
    assert dss.Solution.Converged()

    loads = [a for a in agents if a["element"].startswith("Load.")]
    pvs = [a for a in agents if a["kind"] == "producer"]
    assert len(loads) == 92 == dss.Loads.Count()
    assert {a["element"].split(".", 1)[1].lower() for a in loads} == {n.lower() for n in dss.Loads.AllNames()}
    # every load agent's bus is the feeder's bus for that load (LoadsLVList.csv BUS_BT)
    for a in loads:
        k = int(a["element"].rsplit("n_1FMAR", 1)[1])
        assert _element_bus(a["element"]).split(".")[0] == table.loc[k, "BUS_BT"].lower()
    # PV: exists, single phase on bus.1.2 of its load's bus, same community
    com = {a["name"]: a["community"] for a in agents}
    assert {a["element"].split(".", 1)[1].lower() for a in pvs} == {n.lower() for n in dss.PVsystems.AllNames()}
    for a in pvs:
        k = int(a["name"][2:])
        dss.Circuit.SetActiveElement(a["element"])
        assert dss.CktElement.BusNames()[0].lower() == f"{table.loc[k, 'BUS_BT'].lower()}.1.2"
        assert com[a["name"]] == com[f"Load{k:02d}"]
    if case == 1:
        cons = {int(a["element"].rsplit("n_1FMAR", 1)[1]) for a in loads if a["kind"] == "consumer"}
        assert cons == set(range(37, 93))
        passive = [a for a in loads if a["kind"] != "consumer"]
        assert len(passive) == 36 and all(a["kind"] == "passive" and a["community"] == "" for a in passive)
        assert {a["community"] for a in agents if a["kind"] != "passive"} == {"C1"}
        assert len(pvs) == 56
    else:
        assert all(a["kind"] == "consumer" for a in loads) and len(pvs) == 92
        by_com: dict[str, set[int]] = {}
        for a in loads:
            by_com.setdefault(a["community"], set()).add(int(a["element"].rsplit("n_1FMAR", 1)[1]))
        assert sorted(by_com) == ["C1", "C2", "C3", "C4", "C5"]
        assert by_com["C5"] == set(range(5, 93, 5))  # dispersed: every 5th load
        groups = table["GROUP_LV"]
        for c in ("C1", "C2", "C3", "C4"):  # compact: each within one transformer group
            assert groups.loc[sorted(by_com[c])].nunique() == 1, c
        assert {groups.loc[min(by_com[c])] for c in ("C1", "C2", "C3", "C4")} == {1, 2, 3}
        assert len(by_com["C1"]) + len(by_com["C2"]) == int((groups == 1).sum()) - 6  # group 1 split in two
        assert abs(len(by_com["C1"]) - len(by_com["C2"])) <= 1
    for a in agents:
        if a["kind"] == "consumer":
            assert float(a["b"]) > 0.80 and 0 <= float(a["a"]) <= 0.05
        if a["kind"] == "producer":
            assert 0.001 <= float(a["a"]) <= 0.05 and 0.05 <= float(a["b"]) <= 0.5


@needs_cr
def test_cr_profiles_are_hourly_means_of_the_load_curves(cr_cases: dict[int, Path]) -> None:
    prof = pd.read_csv(cr_cases[2] / "profiles.csv")
    assert len(prof) == 24
    agents = {a["name"]: a for a in _agents(cr_cases[2])}
    dss_dir = SHARED / "cr_mar" / "DSS"
    daily = {}
    for line in (dss_dir / "MAR_LoadsLV.dss").read_text().splitlines():
        m = re.search(r"Load\.n_1FMAR(\d+)\s.*daily=(\S+)", line)
        if m:
            daily[int(m.group(1))] = m.group(2)
    for k in (1, 2, 5, 60):
        shape = daily[k]
        folder = "residential" if shape.endswith("R") else "commercial"
        with (dss_dir / "profiles" / folder / f"{shape}.csv").open(newline="") as f:
            rows = [r for r in csv.reader(f) if r]
        p = [float(r[0]) for r in rows]
        q = [float(r[1]) for r in rows]
        assert len(p) == 96
        expected = [sum(p[4 * h:4 * h + 4]) / 4 for h in range(24)]
        np.testing.assert_allclose(prof[f"Load{k:02d}"].to_numpy(), expected, atol=1e-6)
        if sum(p) > 0:
            pf = (sum(p) / 96) / np.hypot(sum(p) / 96, sum(q) / 96)
            assert float(agents[f"Load{k:02d}"]["pf"]) == pytest.approx(pf, abs=1e-4)
        else:  # zero-energy curve: kept, with zero demand
            assert (prof[f"Load{k:02d}"] == 0).all()
    # PV: pvlib hourly day of [time].start, per kWp
    cfg = tomllib.loads((cr_cases[2] / "case.toml").read_text(encoding="utf-8"))
    day = pd.Timestamp(cfg["time"]["start"]).strftime("%Y-%m-%d")
    pv = pd.read_csv(SHARED / "profiles" / "pvlib_costa_rica" / "pvlib_clearsky_sanjose_cr_2023_hourly.csv",
                     index_col=0, parse_dates=True).loc[day, "p_ac_pu"].to_numpy()
    np.testing.assert_allclose(prof["pv_pu"].to_numpy(), pv, atol=1e-6)


@needs_cr
def test_cr_case_toml(cr_cases: dict[int, Path]) -> None:
    for path in cr_cases.values():
        cfg = tomllib.loads((path / "case.toml").read_text(encoding="utf-8"))
        assert cfg["placement"]["ladder"] == [1, 3, 5]
        assert cfg["network"]["monitored_buses"] == "lv"
        assert cfg["time"]["steps"] == 24
        assert cfg["grid"]["import_price"] > cfg["grid"]["export_price"]


@needs_cr
def test_cr_cases_load(cr_cases: dict[int, Path]) -> None:
    load_case = _load_case_or_skip()
    one, two = load_case(cr_cases[1]), load_case(cr_cases[2])
    assert one.communities == ("C1",) and len(one.agents) == 92 + 56
    assert two.communities == ("C1", "C2", "C3", "C4", "C5") and len(two.agents) == 92 + 92


def test_cr_build_refuses_bad_arguments(tmp_path: Path) -> None:
    from gridmarket.cases.cr_mar import build_case

    with pytest.raises(GridmarketError, match="case must be 1 or 2, got 3"):
        build_case(tmp_path / "x", case=3, data_dir=tmp_path)
    with pytest.raises(GridmarketError, match="pv_kwp must be positive"):
        build_case(tmp_path / "x", case=1, data_dir=tmp_path, pv_kwp=0)
