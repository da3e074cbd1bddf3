"""The command line as a new user meets it (issue 15/16): console lines that do not wrap when
piped, money with its currency, the whole command's time; only gridmarket's own warnings;
names such as NA stay names; new-case folders can be replaced by new-case; check and run
agree; a report into a folder that cannot be written is a clear error."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest

from casefactory import replace_in, write_tiny_case
from gridmarket.case import CaseWarning, load_case
from gridmarket.cli import _show_warning, main
from gridmarket.outdir import read_marker


def test_the_summary_does_not_wrap_when_piped_and_names_currency_and_times(tmp_path: Path) -> None:
    case = write_tiny_case(tmp_path / "case")
    long_name = "a-case-with-a-long-name-" * 5  # 120 characters: past 80 columns
    replace_in(case / "case.toml", 'name = "tiny"', f'name = "{long_name}"')
    out = tmp_path / "res"
    proc = subprocess.run([sys.executable, "-c", "import sys, gridmarket.cli as c; sys.exit(c.main(sys.argv[1:]))",
                           "run", str(case), "--out", str(out), "-q", "--no-report"],
                          capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "COLUMNS"},
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"case '{long_name}': 1 iteration, stopped: no violations"
    assert lines[-1] == f"results written to {out}"  # one line, however long the path
    money = re.findall(r"welfare (-?[\d,]+\.\d\d) (\S+),", proc.stdout)
    assert len(money) == 2 and all(cur == "R$" for _, cur in money)
    loop, whole = map(float, re.fullmatch(r"  time    : study loop ([\d.]+) s, whole command ([\d.]+) s",
                                          lines[3]).groups())  # type: ignore[union-attr]
    assert 0 < loop <= whole


def test_only_gridmarket_warnings_reach_the_user(capsys: pytest.CaptureFixture[str]) -> None:
    _show_warning(RuntimeWarning("invalid value encountered in divide"), RuntimeWarning, "numpy/x.py", 1)
    _show_warning(UserWarning("Tight layout not applied"), UserWarning, "matplotlib/figure.py", 2)
    _show_warning(DeprecationWarning("old"), DeprecationWarning, "pandas/x.py", 3)
    _show_warning(CaseWarning("profiles.csv: column 'x' used by no agent"), CaseWarning, "gridmarket/case/io.py", 4)
    assert capsys.readouterr().err == "warning: profiles.csv: column 'x' used by no agent\n"


def test_a_library_warning_during_a_command_stays_hidden(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    import gridmarket.case

    real = gridmarket.case.load_case

    def load_and_divide(path: Path) -> object:
        np.array([0.0]) / np.array([0.0])  # numpy's RuntimeWarning, as a figure of an empty series gives
        warnings.warn("a matplotlib-style UserWarning", UserWarning, stacklevel=1)
        return real(path)

    monkeypatch.setattr(gridmarket.case, "load_case", load_and_divide)
    assert main(["check", str(write_tiny_case(tmp_path / "case"))]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "is valid" in captured.out


@pytest.mark.parametrize("names", [("NA", "None"), ("null", "nan")], ids=["NA-None", "null-nan"])
def test_names_that_look_missing_stay_names(names: tuple[str, str], tmp_path: Path) -> None:
    case = write_tiny_case(tmp_path / "case")
    a, b = names
    text = (case / "agents.csv").read_text()
    text = text.replace("H1,consumer,C1,", f"{a},consumer,{a},").replace("H2,consumer,C1,", f"{b},consumer,{b},")
    text = text.replace("PV1,producer,C1,", f"PV1,producer,{a},")
    (case / "agents.csv").write_text(text)
    loaded = load_case(case)
    assert [x.name for x in loaded.agents][:2] == [a, b]
    assert loaded.communities == (a, b)  # two communities, not one merged "missing" one
    out = tmp_path / "res"
    assert main(["run", str(case), "--out", str(out), "-q", "--no-report"]) == 0
    market = pd.read_parquet(out / "market.parquet")
    agents = pd.read_csv(out / "agents.csv", keep_default_na=False, dtype=str)
    for table in (market, agents):
        assert {a, b} <= set(table["agent"]) and {a, b} <= set(table["community"])


def test_new_case_can_replace_its_own_folder_but_not_a_users(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c"
    assert main(["new-case", "default", str(out)]) == 0
    assert read_marker(out) is not None and read_marker(out)["kind"] == "case"  # type: ignore[index]
    assert main(["new-case", "default", str(out), "--overwrite"]) == 0
    assert load_case(out).name
    capsys.readouterr()
    # run into the case folder new-case wrote: a case folder is never replaced by results
    assert main(["run", str(out), "--out", str(out), "--overwrite", "-q"]) == 2
    assert capsys.readouterr().err == (f"error: refusing to write the results folder to {out}: it is the case"
                                       " folder; choose another --out\n")


def test_check_and_run_agree_on_a_master_with_a_debugtrace_regcontrol(tmp_path: Path) -> None:
    case = write_tiny_case(tmp_path / "case")
    replace_in(case / "network" / "Master.dss", "New Line.L1 bus1=src bus2=b1",
               "New Transformer.T1 phases=3 windings=2 buses=[src, srcx] conns=[wye, wye] kvs=[0.4, 0.4]"
               " kvas=[100, 100] %r=0.5 xhl=1\n"
               "New RegControl.R1 transformer=T1 winding=2 vreg=120 band=2 ptratio=2 debugtrace=yes\n"
               "New Line.L1 bus1=srcx bus2=b1")
    child = "import sys, gridmarket.cli as c; sys.exit(c.main(sys.argv[1:]))"
    # two commands, as a user types them (a second compile of this master inside one process is
    # the engine's matter: OpenDSS keeps the trace file of the first one open)
    checked = subprocess.run([sys.executable, "-c", child, "check", str(case)], capture_output=True, text=True,
                             timeout=120)
    ran = subprocess.run([sys.executable, "-c", child, "run", str(case), "--out", str(tmp_path / "res"), "-q",
                          "--no-report"], capture_output=True, text=True, timeout=120)
    assert (checked.returncode == 0) == (ran.returncode == 0), (checked.stderr, ran.stderr)
    assert "internal error" not in checked.stderr + ran.stderr


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permission bits")
def test_report_into_a_read_only_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = write_tiny_case(tmp_path / "case")
    out = tmp_path / "res"
    assert main(["run", str(case), "--out", str(out), "-q"]) == 0
    out.chmod(0o555)
    try:
        capsys.readouterr()
        assert main(["report", str(out)]) == 2
        assert capsys.readouterr().err == f"error: cannot write the report into {out}: the folder is not writable\n"
    finally:
        out.chmod(0o755)


def test_report_that_cannot_be_written_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = write_tiny_case(tmp_path / "case")
    out = tmp_path / "res"
    assert main(["run", str(case), "--out", str(out), "-q", "--no-report"]) == 0
    (out / "report.html").mkdir()  # a folder where the report goes: the write fails (also as root)
    capsys.readouterr()
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write the report into {out}: ") and "Traceback" not in err
    assert err.count("\n") == 1
    assert [p.name for p in out.glob(".*")] == [".gridmarket"]  # no temporary file left (figures are whole files)


def test_the_sweep_summary_names_the_currency(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = write_tiny_case(tmp_path / "case")
    (tmp_path / "s.toml").write_text("[parameters]\nimport_price = [0.7]\n")
    assert main(["sweep", str(case), str(tmp_path / "s.toml"), "--out", str(tmp_path / "o"), "--scheduler", "serial",
                 "-q", "--no-report"]) == 0
    assert re.search(r"welfare -?[\d,]+\.\d\d R\$, ", capsys.readouterr().out)
