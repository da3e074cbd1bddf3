"""``gridmarket new-case FEEDER.dss`` and ``gridmarket sweep`` through :func:`gridmarket.cli.main`.

A synthetic feeder becomes a case that ``gridmarket check`` accepts, with one household (and
one PV on its own connection) per load of the feeder's DSS text and the profiles of the
generator's own demand; option errors exit 2 naming the flag or item. A sweep over the tiny
case writes one sweep.csv row per scenario whose numbers equal each scenario run alone on a case
edited by hand, exits 3 naming its failed scenario, and a rerun reuses the scenarios done.
Every sweep here runs serially (Dask is covered by tests/test_sweep.py).
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from casefactory import replace_in, write_tiny_case
from gridmarket.case import load_case
from gridmarket.cli import main
from gridmarket.study import run_study
from gridmarket.sweep.cli import SOME_FAILED

_LOAD = re.compile(r"^New Load\.(\S+) phases=1 bus1=(\S+) ", re.IGNORECASE)
_PV = re.compile(r"^New PVSystem\.(\S+) phases=1 bus1=(\S+) .*?Pmpp=(\S+)", re.IGNORECASE)


def _run(args: list[str]) -> tuple[int, str, str]:
    """``main(args)``: exit status, stdout, stderr (usable in module-scoped fixtures)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(args)
    return status, stdout.getvalue(), stderr.getvalue()


# ---------------------------------------------------------------------------- new-case

@pytest.fixture(scope="module")
def feeder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-household synthetic feeder with 24 hourly loadshapes; its master."""
    from gridmarket.cases.synthetic import write_feeder

    return write_feeder(tmp_path_factory.mktemp("feeder") / "syn", n_households=12, seed=3, steps=24)


def _feeder_loads(master: Path) -> dict[str, str]:
    """Load name -> bus1 as written in the feeder's Loads.dss (lower case)."""
    lines = (master.parent / "Loads.dss").read_text().splitlines()
    return {m.group(1).lower(): m.group(2).lower() for m in map(_LOAD.match, lines) if m}


def test_new_case_from_a_feeder_with_options_passes_check(feeder: Path, tmp_path: Path) -> None:
    out = tmp_path / "case"
    status, text, err = _run([
        "new-case", str(feeder), str(out), "--pv-kwp", "2.5", "--communities", "knn:4", "--steps", "6",
        "--step-hours", "2", "--start-hour", "6", "--import-price", "0.7", "--export-price", "0.15",
        "--set", "placement.ladder=[1, 2]", "--set", 'case.currency="EUR"', "--name", "syn-6x2h"])
    assert (status, err) == (0, "")
    assert f"case 'syn-6x2h' written to {out}: 12 consumer(s), 12 producer(s); 3 communities" in text
    assert text.endswith(f"run it with: gridmarket run {out}\n")

    status, text, err = _run(["check", str(out)])  # monitored_buses = "customers", the new-case default
    assert (status, err) == (0, "")
    assert "24 agents in 3 communities, 6 steps of 2 h" in text

    # one household per load of the feeder's DSS text, driving that load; one PV per household
    # on exactly the load's bus and phase, of the asked size
    loads = _feeder_loads(feeder)
    assert len(loads) == 12
    agents = pd.read_csv(out / "agents.csv")
    cons = agents[agents["kind"] == "consumer"]
    assert sorted(cons["name"]) == sorted(loads)
    assert set(cons["element"].str.lower()) == {f"load.{n}" for n in loads}
    assert sorted(cons.groupby("community").size()) == [4, 4, 4]
    pv_lines = (out / "network" / "PVSystems.dss").read_text().splitlines()
    pv = {m.group(1): (m.group(2), float(m.group(3))) for m in map(_PV.match, pv_lines) if m}
    assert pv == {f"pv_{n}": (bus, 2.5) for n, bus in loads.items()}

    # the options reached the case: prices, horizon, overrides and name
    case = load_case(out)
    assert case.name == "syn-6x2h" and case.currency == "EUR" and case.placement.ladder == (1, 2)
    assert (case.time.steps, case.time.step_hours) == (6, 2.0)
    np.testing.assert_array_equal(case.grid.import_price, np.full(6, 0.7))
    np.testing.assert_array_equal(case.grid.export_price, np.full(6, 0.15))
    # step s covers hours 6 + 2s .. 8 + 2s of the generator's own hourly demand [kW]
    from gridmarket.cases.synthetic import household_profiles

    hourly = household_profiles(12, 24, seed=3)
    expected = hourly[6:18].reshape(6, 2, 12).mean(axis=1)
    prof = pd.read_csv(out / "profiles.csv")
    np.testing.assert_allclose(prof[[f"h{k}" for k in range(1, 13)]].to_numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("item", ["grid.import_price", "=0.7", " =1"])
def test_a_malformed_set_item_exits_2_naming_it(feeder: Path, tmp_path: Path, item: str) -> None:
    status, text, err = _run(["new-case", str(feeder), str(tmp_path / "c"), "--set", "grid.export_price=0.1",
                              "--set", item])
    assert (status, text) == (2, "")
    assert err == f"error: --set takes section.key=value, got {item!r}\n"
    assert not (tmp_path / "c").exists()


def test_an_unknown_set_key_exits_2_with_a_suggestion(feeder: Path, tmp_path: Path) -> None:
    status, _, err = _run(["new-case", str(feeder), str(tmp_path / "c"), "--set", "gird.import_price=0.5"])
    assert status == 2
    assert err.startswith("error: setting 'gird.import_price'") and "did you mean 'grid'?" in err
    assert "Traceback" not in err and not (tmp_path / "c").exists()


def test_an_unknown_feeder_or_source_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "Master.dss"
    status, text, err = _run(["new-case", str(missing), str(tmp_path / "c"), "--pv-kwp", "3"])
    assert (status, text) == (2, "")
    assert err == f"error: OpenDSS master '{missing}' does not exist\n"
    status, _, err = _run(["new-case", "cr-marr", str(tmp_path / "c"), "--pv-kwp", "3"])
    assert status == 2 and err.startswith("error: unknown case source 'cr-marr'; choose one of: default")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(("source", "args", "message"), [
    ("default", ["--pv-kwp", "3", "--set", "grid.import_price=1"],
     ("option(s) --pv-kwp, --set apply only to a feeder source (the path of an OpenDSS master .dss), not to"
      " 'default'")),
    ("ieee_eu_lv", ["--communities", "branch"], "option(s) --communities apply only to a feeder source"),
    ("default", ["--case", "2"], "option(s) --case do not apply to 'default'"),
    ("FEEDER", ["--case", "2", "--data", "."], "option(s) --case, --data do not apply to a feeder source (.dss)"),
    ("FEEDER", ["--pv-kwp", "3", "--pv-percent", "50"], "give --pv-kwp or --pv-percent, not both"),
])
def test_options_that_do_not_apply_exit_2_naming_the_flags(feeder: Path, tmp_path: Path, source: str,
                                                           args: list[str], message: str) -> None:
    src = str(feeder) if source == "FEEDER" else source
    status, text, err = _run(["new-case", src, str(tmp_path / "c"), *args])
    assert (status, text) == (2, "")
    assert err.startswith(f"error: {message}")
    assert not (tmp_path / "c").exists()


def test_an_existing_case_folder_needs_overwrite(feeder: Path, tmp_path: Path) -> None:
    out = tmp_path / "c"
    assert _run(["new-case", str(feeder), str(out), "--steps", "2"])[0] == 0
    status, _, err = _run(["new-case", str(feeder), str(out), "--steps", "3"])
    assert status == 2 and err == (f"error: cannot write the case to {out}: it exists and is not an empty folder;"
                                   " pass --overwrite to replace it\n")
    assert load_case(out).time.steps == 2
    assert _run(["new-case", str(feeder), str(out), "--steps", "3", "--overwrite"])[0] == 0
    assert load_case(out).time.steps == 3


# ---------------------------------------------------------------------------- sweep

SWEEP = """\
[sweep]
name = "cli sweep"

[base]
max_iterations = 3

[parameters]
vmax_pu = [1.0, 1.05]
import_price = [0.6, 0.9]

[[scenarios]]
name = "broken"
horizon = 99          # > [time].steps: this scenario's case is invalid
"""
GRID = [(vmax, price) for vmax in (1.0, 1.05) for price in (0.6, 0.9)]
IDS = ["vmax_pu-1__import_price-0.6", "vmax_pu-1__import_price-0.9", "vmax_pu-1.05__import_price-0.6",
       "vmax_pu-1.05__import_price-0.9", "broken"]


@contextlib.contextmanager
def _recording_progress(calls: list[tuple[str, int, int]]) -> Iterator[None]:
    """Replace the CLI's progress bar by one that records ``(label, done, total)``."""

    @contextlib.contextmanager
    def fake(quiet: bool, *, one_bar: str | None = None) -> Iterator[Callable[[str, int, int], None]]:
        yield lambda label, done, total: calls.append((label, done, total))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("gridmarket.cli._progress", fake)
        yield


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("sweep")
    base = write_tiny_case(root / "tiny")
    (root / "sweep.toml").write_text(SWEEP)
    calls: list[tuple[str, int, int]] = []
    with _recording_progress(calls):
        status, text, err = _run(["sweep", str(base), str(root / "sweep.toml"), "--out", str(root / "out"),
                                  "--scheduler", "serial"])
    return {"root": root, "base": base, "out": root / "out", "status": status, "text": text, "err": err,
            "calls": calls}


def _by_hand(base: Path, dest: Path, vmax: float, price: float) -> Path:
    """The scenario's case written independently: the tiny case's own files edited as text."""
    shutil.copytree(base, dest)
    replace_in(dest / "case.toml", "vmax_pu = 1.05", f"vmax_pu = {vmax}")
    replace_in(dest / "case.toml", "import_price = 0.80", f"import_price = {price}")
    replace_in(dest / "case.toml", "ladder = [1, 3, 5]", "ladder = [1, 3, 5]\nmax_iterations = 3")
    return dest


def test_sweep_writes_one_row_per_scenario(swept: dict) -> None:
    table = pd.read_csv(swept["out"] / "sweep.csv")
    assert table["scenario"].tolist() == IDS
    assert list(zip(table["network.vmax_pu"].iloc[:4], table["grid.import_price"].iloc[:4], strict=True)) == GRID
    assert table["status"].tolist() == ["ok"] * 4 + ["failed"]
    assert (table["placement.max_iterations"] == 3).all()
    for name in ("sweep.png", "sweep.html", "sweep.toml"):
        assert (swept["out"] / name).is_file(), name
    # the progress bar saw every scenario, counting up to the total
    assert swept["calls"] == [(f"{sid}: {'failed' if sid == 'broken' else 'ok'}", k, 5)
                              for k, sid in enumerate(IDS, start=1)]


def test_sweep_numbers_equal_each_scenario_run_alone(swept: dict, tmp_path: Path) -> None:
    table = pd.read_csv(swept["out"] / "sweep.csv").set_index("scenario")
    for sid, (vmax, price) in zip(IDS, GRID, strict=False):
        alone = run_study(load_case(_by_hand(swept["base"], tmp_path / sid, vmax, price)))
        it = alone.iteration_table()
        row = table.loc[sid]
        assert row["welfare_base"] == pytest.approx(it["welfare"].iloc[0], rel=1e-9)
        assert row["welfare_best"] == pytest.approx(it["welfare"].iloc[alone.best], rel=1e-9)
        assert row["violations_base"] == it["violations"].iloc[0]
        assert row["violations_best"] == it["violations"].iloc[alone.best]
        assert row["battery_units"] == it["battery_units"].iloc[alone.best]
        assert row["iterations"] == len(it)
    # a tight upper limit gives violations and placed batteries; a dearer tariff lowers welfare
    assert (table.loc[IDS[:2], "violations_base"] > 0).all() and (table.loc[IDS[:2], "iterations"] > 1).all()
    assert (table.loc[IDS[2:4], "violations_base"] == 0).all()
    assert table.loc[IDS[2], "welfare_base"] > table.loc[IDS[3], "welfare_base"]


def test_a_failed_scenario_exits_3_and_is_named(swept: dict) -> None:
    assert swept["status"] == SOME_FAILED == 3
    assert swept["err"] == ""
    lines = swept["text"].splitlines()
    assert lines[0] == "5 scenario(s): 4 ok (0 reused), 1 failed"
    failed = [line for line in lines if line.startswith("  failed ")]
    assert len(failed) == 1
    assert failed[0].startswith("  failed broken: CaseError:")
    assert "[market].horizon: must be <= [time].steps = 4, got 99" in failed[0]
    assert lines[-1] == f"table: {swept['out'] / 'sweep.csv'}; page: {swept['out'] / 'sweep.html'}"
    assert (swept["out"] / "scenarios" / "broken" / "error.txt").is_file()


def test_a_rerun_reuses_the_scenarios_done(swept: dict) -> None:
    out = swept["out"]
    first = pd.read_csv(out / "sweep.csv")
    stamps = {sid: (out / "scenarios" / sid / "results" / "summary.json").stat().st_mtime_ns for sid in IDS[:4]}
    status, text, _ = _run(["sweep", str(swept["base"]), str(swept["root"] / "sweep.toml"), "--out", str(out),
                            "--scheduler", "serial", "-q"])
    assert status == 3
    assert text.startswith("5 scenario(s): 4 ok (4 reused), 1 failed\n")
    again = pd.read_csv(out / "sweep.csv")
    assert again["cached"].tolist() == [True] * 4 + [False]  # the failed one is tried again
    np.testing.assert_allclose(again["welfare_best"].iloc[:4], first["welfare_best"].iloc[:4], rtol=1e-12)
    for sid, stamp in stamps.items():
        assert (out / "scenarios" / sid / "results" / "summary.json").stat().st_mtime_ns == stamp


def test_a_sweep_without_failures_exits_0_into_the_default_folder(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    base = write_tiny_case(tmp_path / "tiny")
    (tmp_path / "prices.toml").write_text("[[scenarios]]\nexport_price = 0.1\n[[scenarios]]\nexport_price = 0.2\n")
    monkeypatch.chdir(tmp_path)
    status, text, err = _run(["sweep", str(base), "prices.toml", "--scheduler", "serial", "--no-report"])
    assert (status, err) == (0, "")
    assert text.startswith("2 scenario(s): 2 ok (0 reused), 0 failed\n")
    table = pd.read_csv(tmp_path / "results" / "tiny-prices" / "sweep.csv")
    assert table["grid.export_price"].tolist() == [0.1, 0.2]
    assert not (tmp_path / "results" / "tiny-prices" / "scenarios" / "export_price-0.1" / "results"
                / "report.html").exists()
    # a dearer feed-in price is worth more to the exporting community
    assert table["welfare_best"].iloc[1] > table["welfare_best"].iloc[0]


def test_sweep_usage_errors_exit_2_before_any_work(tmp_path: Path) -> None:
    base = write_tiny_case(tmp_path / "tiny")
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text("[[scenarios]]\nexport_price = 0.1\n")
    bad.write_text("[parameters]\npv_scael = [1, 2]\n")
    out = str(tmp_path / "out")
    status, text, err = _run(["sweep", str(base), str(good), "--out", out, "--scheduler", "serial", "--workers", "2"])
    assert (status, text) == (2, "")
    assert err == "error: --workers sizes the local cluster only; it does not apply to serial runs\n"
    status, text, err = _run(["sweep", str(base), str(bad), "--out", out, "--scheduler", "serial"])
    assert (status, text) == (2, "")
    assert err.startswith(f"error: {bad}: ") and "did you mean 'pv_scale'" in err
    status, _, err = _run(["sweep", str(tmp_path / "nocase"), str(good), "--out", out, "--scheduler", "serial"])
    assert status == 2 and "case folder not found" in err
    assert not (tmp_path / "out").exists()
