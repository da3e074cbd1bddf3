"""Scenario sweeps on Dask: a 2-worker LocalCluster gives the same results as each scenario run
alone on a case edited by hand; a scenario that fails inside its task leaves the others; a
rerun skips the scenarios already done; SWEEP.toml errors are named before anything runs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from casefactory import replace_in, write_tiny_case
from gridmarket.case import load_case
from gridmarket.errors import GridmarketError
from gridmarket.study import run_study
from gridmarket.sweep import SERIAL, parse_sweep, plot_sweep, run_sweep, write_scenario_case

SWEEP = """\
[sweep]
name = "tiny hosting"

[base]
max_iterations = 3

[parameters]
pv_scale = [1.0, 3.0]
vmax_pu = [1.0, 1.05]
import_price = [0.6, 0.8]

[[scenarios]]
name = "broken"
horizon = 99          # > [time].steps: the scenario's case is invalid and its task fails
"""
GRID = [(pv, vmax, price) for pv in (1.0, 3.0) for vmax in (1.0, 1.05) for price in (0.6, 0.8)]


@pytest.fixture(scope="module")
def base_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_case(tmp_path_factory.mktemp("base") / "tiny")


@pytest.fixture(scope="module")
def swept(base_case: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, list]:
    root = tmp_path_factory.mktemp("sweep")
    (root / "sweep.toml").write_text(SWEEP)
    calls: list[tuple[str, int, int]] = []
    table = run_sweep(base_case, root / "sweep.toml", root / "out", n_workers=2,
                      progress=lambda label, done, total: calls.append((label, done, total)))
    return root, table, calls


def _by_hand(base: Path, dest: Path, pv: float, vmax: float, price: float) -> Path:
    """The scenario's case written independently: the tiny case's own files edited as text."""
    shutil.copytree(base, dest)
    replace_in(dest / "case.toml", "vmax_pu = 1.05", f"vmax_pu = {vmax}")
    replace_in(dest / "case.toml", "import_price = 0.80", f"import_price = {price}")
    replace_in(dest / "case.toml", "ladder = [1, 3, 5]", "ladder = [1, 3, 5]\nmax_iterations = 3")
    replace_in(dest / "agents.csv", "PV1,producer,C1,PVSystem.PV1,pv,1,", f"PV1,producer,C1,PVSystem.PV1,pv,{pv},")
    replace_in(dest / "network" / "Master.dss", "kVA=5 Pmpp=4", f"kVA={5 * pv} Pmpp={4 * pv}")
    return dest


def test_sweep_table_and_files(swept: tuple[Path, pd.DataFrame, list]) -> None:
    root, table, calls = swept
    out = root / "out"
    assert len(table) == 9
    assert list(table["status"]) == ["ok"] * 8 + ["failed"]
    assert not table["cached"].any()
    grid = table.iloc[:8]
    assert list(zip(grid["pv_scale"], grid["network.vmax_pu"], grid["grid.import_price"], strict=True)) == GRID
    assert (grid["placement.max_iterations"] == 3).all()
    on_file = pd.read_csv(out / "sweep.csv")
    assert list(on_file["scenario"]) == list(table["scenario"])
    np.testing.assert_allclose(on_file["welfare_best"].iloc[:8], grid["welfare_best"], rtol=1e-9)
    for f in ("sweep.png", "sweep.html", "sweep.toml"):
        assert (out / f).is_file(), f
    for sid in grid["scenario"]:
        assert (out / "scenarios" / sid / "results" / "summary.json").is_file()
        assert (out / "scenarios" / sid / "case" / "case.toml").is_file()
    # a tight upper limit (1.00 pu) gives violations and placed batteries, 1.05 pu none
    assert (grid.loc[grid["network.vmax_pu"] == 1.0, "violations_base"] > 0).all()
    assert (grid.loc[grid["network.vmax_pu"] == 1.05, "violations_base"] == 0).all()
    assert (grid.loc[grid["network.vmax_pu"] == 1.0, "iterations"] > 1).all()
    # progress: once per scenario, counting up to the total
    assert [(d, t) for _, d, t in calls] == [(k, 9) for k in range(1, 10)]
    page = (out / "sweep.html").read_text()
    assert page.count("<tr") == 10 and "broken" in page


def test_a_failing_scenario_is_reported_and_leaves_the_rest(swept: tuple[Path, pd.DataFrame, list]) -> None:
    root, table, _ = swept
    bad = table.set_index("scenario").loc["broken"]
    assert bad["status"] == "failed"
    assert "[market].horizon" in bad["error"] and "got 99" in bad["error"]
    assert pd.isna(bad["welfare_best"])
    err = (root / "out" / "scenarios" / "broken" / "error.txt").read_text()
    assert "CaseError" in err
    assert not (root / "out" / "scenarios" / "broken" / "results").exists()


def test_each_scenario_equals_its_run_alone(swept: tuple[Path, pd.DataFrame, list], base_case: Path,
                                            tmp_path: Path) -> None:
    root, table, _ = swept
    for (pv, vmax, price), (_, row) in zip(GRID, table.iloc[:8].iterrows(), strict=True):
        case = load_case(_by_hand(base_case, tmp_path / row["scenario"], pv, vmax, price))
        alone = run_study(case)
        it = alone.iteration_table()
        res = root / "out" / row["results"]
        swept_it = pd.read_csv(res / "iterations.csv")
        np.testing.assert_allclose(swept_it["welfare"], it["welfare"], rtol=1e-9, atol=1e-9)
        assert swept_it["violations"].tolist() == it["violations"].tolist()
        assert swept_it["battery_units"].tolist() == it["battery_units"].tolist()
        assert row["welfare_best"] == pytest.approx(it["welfare"].iloc[alone.best], rel=1e-9)
        assert row["violations_best"] == it["violations"].iloc[alone.best]
        market = pd.read_parquet(res / "market.parquet")
        mine = alone.to_results().tables["market.parquet"]
        np.testing.assert_allclose(market["P_kw"], mine["P_kw"], rtol=1e-7, atol=1e-8)


def test_rerun_skips_done_scenarios(swept: tuple[Path, pd.DataFrame, list], base_case: Path) -> None:
    root, first, _ = swept
    out = root / "out"
    stamps = {sid: (out / "scenarios" / sid / "results" / "summary.json").stat().st_mtime_ns
              for sid in first["scenario"].iloc[:8]}
    labels: list[str] = []
    again = run_sweep(base_case, root / "sweep.toml", out, scheduler=SERIAL,
                      progress=lambda label, done, total: labels.append(label))
    assert again["cached"].tolist() == [True] * 8 + [False]  # the failed one is tried again
    assert again["status"].tolist() == first["status"].tolist()
    np.testing.assert_allclose(again["welfare_best"].iloc[:8], first["welfare_best"].iloc[:8], rtol=1e-12)
    for sid, stamp in stamps.items():
        assert (out / "scenarios" / sid / "results" / "summary.json").stat().st_mtime_ns == stamp
    assert sum("done earlier" in label for label in labels) == 8


def test_scenario_case_with_communities_steps_and_battery_unit(base_case: Path, tmp_path: Path) -> None:
    out = write_scenario_case(base_case, {"communities": "knn:1", "steps": 2, "sbu_scale": 2.0,
                                          "placement.ladder": [1, 2]}, tmp_path / "s", name="s")
    case = load_case(out)
    com = {a.name: a.community for a in case.agents}
    assert com["H1"] != com["H2"]  # one household per community
    assert com["PV1"] == com["H2"]  # the PV joins the household at its bus (b2)
    assert com["H3"] is None  # passive agents stay passive
    assert case.time.steps == 2 and case.profile_kw.shape[0] == 2
    assert case.battery.unit_kw == pytest.approx(2 * 2.56) and case.battery.unit_kwh == pytest.approx(2 * 10.24)
    assert case.placement.ladder == (1, 2) and case.links == (("C1", "C2"),)
    assert case.name == "tiny/s"


def test_a_sweep_on_a_running_scheduler(base_case: Path, tmp_path: Path) -> None:
    from distributed import LocalCluster

    (tmp_path / "s.toml").write_text('[[scenarios]]\nexport_price = 0.2\n[[scenarios]]\nexport_price = 0.1\n')
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        table = run_sweep(base_case, tmp_path / "s.toml", tmp_path / "out", scheduler=cluster.scheduler_address,
                          figures=False)
    assert table["status"].tolist() == ["ok", "ok"]
    assert table["scenario"].tolist() == ["export_price-0.2", "export_price-0.1"]
    assert not (tmp_path / "out" / "sweep.png").exists()
    record = json.loads((tmp_path / "out" / "scenarios" / "export_price-0.1" / "results" / "scenario.json")
                        .read_text())
    assert record["params"] == {"grid.export_price": 0.1}


def test_plot_sweep_is_a_figure(swept: tuple[Path, pd.DataFrame, list]) -> None:
    _, table, _ = swept
    fig = plot_sweep(table, ["pv_scale", "network.vmax_pu"])
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4
    assert [ax.get_xlabel() for ax in fig.axes[2:]] == ["pv_scale", "network.vmax_pu"]


@pytest.mark.parametrize(("text", "message"), [
    ("[parameters]\npv_scael = [1, 2]\n", "did you mean 'pv_scale'"),
    ("[parameters]\n'grid.import_prise' = [1, 2]\n", "did you mean 'grid.import_price'"),
    ("[parameters]\npv_scale = 2\n", "give a non-empty list"),
    ("[parameters]\nladder = [1, 3, 5]\n", "write e.g. ladder = [[1, 3, 5], [2, 4]]"),
    ("[base]\nmax_iterations = 3\n", "defines no scenario"),
    ("[[scenarios]]\nname = 'a'\n[[scenarios]]\nname = 'a'\npv_scale = 2\n", "used twice"),
    ("[parameter]\npv_scale = [1]\n", "unknown table"),
    ("[parameters]\n'network.master' = ['x']\n", "cannot be swept"),
])
def test_sweep_file_errors_are_named(text: str, message: str) -> None:
    with pytest.raises(GridmarketError, match=re.escape(message)):
        parse_sweep(text)


def test_scenario_ids_are_stable_and_readable() -> None:
    spec = parse_sweep("[base]\nhorizon = 2\n[parameters]\npv_scale = [0.5, 1.5]\nladder = [[1, 3], [2]]\n")
    assert [s.id for s in spec.scenarios] == ["pv_scale-0.5__ladder-1.3", "pv_scale-0.5__ladder-2",
                                              "pv_scale-1.5__ladder-1.3", "pv_scale-1.5__ladder-2"]
    assert spec.swept == ("pv_scale", "placement.ladder")
    assert all(s.params["market.horizon"] == 2 for s in spec.scenarios)


def test_sweep_command_summarises_and_flags_failures(base_case: Path, tmp_path: Path) -> None:
    from gridmarket.sweep.cli import SOME_FAILED, sweep_command

    (tmp_path / "s.toml").write_text('[[scenarios]]\nname = "fine"\n[[scenarios]]\nname = "bad"\n'
                                     'battery_model = "magic"\n')
    res = sweep_command(base_case, tmp_path / "s.toml", tmp_path / "out", scheduler=SERIAL, report=True)
    assert res.exit_code == SOME_FAILED
    assert "2 scenario(s): 1 ok (0 reused), 1 failed" in res.text
    assert "failed bad:" in res.text and "magic" in res.text
    assert (tmp_path / "out" / "scenarios" / "fine" / "results" / "report.html").is_file()


def test_a_community_csv_is_relative_to_the_sweep_file(tmp_path: Path) -> None:
    (tmp_path / "sweep.toml").write_text('[parameters]\ncommunities = ["transformer", "streets.csv"]\n')
    from gridmarket.sweep import read_sweep

    spec = read_sweep(tmp_path / "sweep.toml")
    assert [s.id for s in spec.scenarios] == ["communities-transformer", "communities-streets.csv"]
    assert spec.scenarios[1].params["communities"] == str((tmp_path / "streets.csv").resolve())


def test_source_voltage_and_monitoring_have_short_names() -> None:
    from gridmarket.sweep.spec import canonical

    assert canonical("source_pu") == "network.source_pu"
    assert canonical("monitored_buses") == "network.monitored_buses"
