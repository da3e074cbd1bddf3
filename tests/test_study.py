"""The study loop end to end: placement invariants, dispatch read back from OpenDSS, and an
independent OpenDSS run of one iteration compared with the written voltages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import opendssdirect
import pandas as pd
import pytest

from gridmarket import contract
from gridmarket.case import load_case
from gridmarket.cases import default_case_path
from gridmarket.enums import AgentKind
from gridmarket.results import write_results
from gridmarket.study import StudyResult, run_study

LADDER = (1, 3, 5)


@pytest.fixture(scope="module")
def default_study() -> StudyResult:
    return run_study(load_case(default_case_path()))


@pytest.fixture(scope="module")
def default_results(default_study: StudyResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_results(default_study.to_results(), tmp_path_factory.mktemp("res") / "out")


def _violated_buses(viol: pd.DataFrame, line_bus: dict[str, str]) -> set[str]:
    """Buses with a violation, recomputed here from the violations file's own columns."""
    out = set()
    for kind, element in zip(viol["kind"], viol["element"], strict=True):
        owner = element.rsplit(".", 1)[0]
        out.add(owner if kind == "voltage" else line_bus[owner])
    return out


def test_the_default_case_has_violations_and_the_loop_places_batteries(default_study: StudyResult) -> None:
    table = default_study.iteration_table()
    assert table["violations"].iloc[0] > 0, "the default case is meant to show violations"
    assert len(table) >= 2 and table["battery_units"].iloc[-1] > 0
    assert default_study.stop_reason


def test_batteries_only_where_the_previous_iteration_had_violations(default_results: Path,
                                                                   default_study: StudyResult) -> None:
    bats = contract.read_table(default_results, "batteries.csv")
    viol = contract.read_table(default_results, "violations.parquet")
    assert default_study.network is not None
    line_bus = default_study.network.downstream_buses()
    for k in sorted(bats["iteration"].unique()):
        now = set(bats.loc[bats["iteration"] == k, "bus"])
        before = set(bats.loc[bats["iteration"] == k - 1, "bus"])
        new = now - before
        assert new <= _violated_buses(viol[viol["iteration"] == k - 1], line_bus), (k, new)


def test_banks_only_grow_along_the_ladder(default_results: Path) -> None:
    bats = contract.read_table(default_results, "batteries.csv")
    for _bus, g in bats.sort_values("iteration").groupby("bus"):
        units = g["units"].tolist()
        assert units[0] == LADDER[0]
        for a, b in zip(units, units[1:], strict=False):
            assert b == a or (a in LADDER and b == LADDER[LADDER.index(a) + 1]), units
        np.testing.assert_allclose(g["kw"], g["units"] * 2.56)
        np.testing.assert_allclose(g["kwh"], g["units"] * 10.24)


def test_iteration_table_matches_the_violations_file(default_results: Path) -> None:
    it = contract.read_table(default_results, "iterations.csv")
    viol = contract.read_table(default_results, "violations.parquet")
    viol["owner"] = viol["element"].str.rsplit(".", n=1).str[0]
    for _, row in it.iterrows():
        v = viol[viol["iteration"] == row["iteration"]]
        pairs = v[["owner", "step"]].drop_duplicates()
        assert row["violations"] == len(pairs)
        assert row["voltage_violations"] == len(v[v["kind"] == "voltage"][["owner", "step"]].drop_duplicates())
        assert row["buses_violated"] == v.loc[v["kind"] == "voltage", "owner"].nunique()


def test_dispatch_read_back_from_opendss_equals_the_market(default_study: StudyResult) -> None:
    """The engine is left at the last step of the last iteration: every element's power, as
    OpenDSS computed it, equals the cleared market quantity of that step."""
    net = default_study.network
    assert net is not None
    last = default_study.iterations[-1]
    case = last.case
    t = case.time.steps - 1
    m = last.market.market
    m = m[m["step"] == t].set_index("agent")
    names = [a.name for a in case.agents]
    es = net.resolve([default_study.agent_elements[n] for n in names])
    got = net.element_powers_kw(es)  # consumed for loads/batteries, produced for PV
    want = []
    for a in case.agents:
        row = m.loc[a.name]
        if a.kind is AgentKind.PRODUCER:
            want.append(-row["P_kw"])
        elif a.kind is AgentKind.BATTERY:
            want.append(row["S_kw"])
        else:
            want.append(row["P_kw"])
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_independent_opendss_run_reproduces_written_voltages(default_results: Path) -> None:
    """Apply market.parquet's dispatch of iteration 0 to a fresh OpenDSS circuit, set up here by
    hand (no gridmarket code), and compare with voltages.parquet."""
    market = pd.read_parquet(default_results / "market.parquet")
    volts = pd.read_parquet(default_results / "voltages.parquet")
    market = market.astype({"agent": str})
    agents = pd.read_csv(default_results / "agents.csv", keep_default_na=False)
    element = dict(zip(agents["agent"], agents["element"], strict=True))
    master = default_case_path() / "network" / "Master.dss"
    dss = opendssdirect.DSS if hasattr(opendssdirect, "DSS") else opendssdirect
    cwd = Path.cwd()
    try:
        dss.Text.Command(f'compile "{master}"')
    finally:
        import os

        os.chdir(cwd)
    # constant power over any voltage, no cut-in/out, unity efficiency (what a planner means by "dispatch")
    dss.Text.Command("BatchEdit Load..* model=1 vminpu=0.5 vmaxpu=1.5")
    dss.Text.Command("BatchEdit PVSystem..* %cutin=0 %cutout=0 pf=1 vminpu=0.5 vmaxpu=1.5")
    dss.Text.Command("New XYCurve.flat npts=2 xarray=[0 1] yarray=[1 1]")
    dss.Text.Command("BatchEdit PVSystem..* effcurve=flat P-TCurve=flat")
    pmpp = {}
    for name in dss.PVsystems.AllNames():
        dss.PVsystems.Name(name)
        pmpp[name.lower()] = dss.PVsystems.Pmpp()
    for t in (0, 12, 18):
        rows = market[(market["iteration"] == 0) & (market["step"] == t)]
        for agent, kind, p in zip(rows["agent"], rows["kind"], rows["P_kw"], strict=True):
            cls, name = element[agent].split(".", 1)
            if kind == "producer":
                dss.Text.Command(f"PVSystem.{name}.irradiance={-p / pmpp[name.lower()]:.12g}")
            else:  # the default case's loads are pf 0.95 lagging
                q = p * np.tan(np.arccos(0.95))
                dss.Text.Command(f"Load.{name}.kW={p:.12g}")
                dss.Text.Command(f"Load.{name}.kvar={q:.12g}")
        dss.Text.Command("set mode=snapshot loadmult=1 tolerance=1e-8")
        dss.Solution.Solve()
        assert dss.Solution.Converged()
        mine = volts[(volts["iteration"] == 0) & (volts["step"] == t)]
        for bus, phase, v in zip(mine["bus"], mine["phase"], mine["v_pu"], strict=True):
            dss.Circuit.SetActiveBus(str(bus))
            nodes = list(dss.Bus.Nodes())
            ref = dss.Bus.puVmagAngle()[2 * nodes.index(int(phase))]
            assert abs(ref - v) <= 1e-6, (t, bus, phase, ref, v)


def test_results_are_byte_identical_across_runs(tmp_path: Path) -> None:
    case = load_case(default_case_path())
    a = write_results(run_study(case).to_results(), tmp_path / "a")
    b = write_results(run_study(case).to_results(), tmp_path / "b")
    for f in sorted(a.glob("*.csv")):
        assert f.read_bytes() == (b / f.name).read_bytes(), f.name
    for f in sorted(a.glob("*.parquet")):
        assert pd.read_parquet(f).equals(pd.read_parquet(b / f.name)), f.name
