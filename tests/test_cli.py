"""The command line: exit statuses, readable errors, results folder written whole."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from casefactory import replace_in
from gridmarket import __version__
from gridmarket.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_run_writes_every_results_file(tiny_case: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "res"
    assert main(["run", str(tiny_case), "--out", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    assert "results written to" in text and "tiny" in text
    for name in ["summary.json", "iterations.csv", "market.csv", "communities.csv", "violations.csv",
                 "voltages.parquet", "batteries.csv", "report.html"]:
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["case"] == "tiny" and summary["iterations"] == len(pd.read_csv(out / "iterations.csv"))
    market = pd.read_csv(out / "market.csv")
    assert list(market.columns) == ["iteration", "step", "time", "agent", "kind", "community", "P_kw", "S_kw",
                                    "phi_kw", "alpha_kw", "beta_kw", "soc", "price", "payment"]
    # a second run refuses to clobber, with exit status 2 and one readable line
    assert main(["run", str(tiny_case), "--out", str(out), "-q"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err


def test_check_reports_a_bad_case_with_status_2(tiny_case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tiny_case)]) == 0
    assert "is valid" in capsys.readouterr().out
    replace_in(tiny_case / "agents.csv", "Load.H2", "Load.H9")
    replace_in(tiny_case / "case.toml", "vmin_pu = 0.95", "vmin_pu = 1.5")
    assert main(["check", str(tiny_case)]) == 2
    err = capsys.readouterr().err
    assert "vmin_pu" in err and "Traceback" not in err


def test_unknown_element_is_named_by_check(tiny_case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    replace_in(tiny_case / "agents.csv", "Load.H2", "Load.H9")
    assert main(["check", str(tiny_case)]) == 2
    err = capsys.readouterr().err
    assert "agents.csv" in err and "row 3 (H2)" in err and "h9" in err.lower()


def test_battery_at_unknown_bus_is_named(tiny_case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with (tiny_case / "agents.csv").open("a") as f:
        f.write("B1,battery,C1,bus:nowhere,,1,0,0,0,0,1,\n")
    assert main(["check", str(tiny_case)]) == 2
    err = capsys.readouterr().err
    assert "row 6 (B1)" in err and "'nowhere' is not in the network" in err


def test_broken_master_passes_on_opendss_message(tiny_case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    replace_in(tiny_case / "network" / "Master.dss", "Set VoltageBases", "Redirect missing_file.dss\nSet VoltageBases")
    assert main(["run", str(tiny_case), "--out", str(tiny_case.parent / "o"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "missing_file.dss" in err and "Traceback" not in err
    assert not (tiny_case.parent / "o").exists()


def test_report_rebuilds_from_a_results_folder(tiny_case: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    assert main(["run", str(tiny_case), "--out", str(out), "-q", "--no-report"]) == 0
    assert not (out / "report.html").exists()
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").stat().st_size > 1000
