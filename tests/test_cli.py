"""The command line: exit statuses, readable errors, results folders written whole or not at
all (also when interrupted at any stage, by a real SIGINT), and reproducible runs.

The bad inputs themselves (and their exact messages) are the catalogue of
tests/test_bad_cases.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from casefactory import replace_in, write_stressed_case, write_tiny_case
from gridmarket import __version__, contract
from gridmarket.cli import main
from gridmarket.outdir import mark_folder

RESULT_FILES = ["summary.json", "iterations.csv", "market.parquet", "communities.parquet", "violations.parquet",
                "voltages.parquet", "batteries.csv", "report.html"]


def _tree(root: Path) -> list[str]:
    """Every path under ``root`` (hidden temporary folders included), relative, sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_run_writes_every_results_file(tiny_case: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "res"
    assert main(["run", str(tiny_case), "--out", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    assert "results written to" in text and "tiny" in text
    for name in RESULT_FILES:
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["case"] == "tiny" and summary["iterations"] == len(pd.read_csv(out / "iterations.csv"))
    market = pd.read_parquet(out / "market.parquet")
    assert list(market.columns) == list(contract.table("market.parquet").names)
    # a second run refuses to clobber, with exit status 2 and one readable line
    assert main(["run", str(tiny_case), "--out", str(out), "-q"]) == 2
    assert capsys.readouterr().err == f"error: results folder {out} already exists; pass --overwrite to replace it\n"
    assert main(["run", str(tiny_case), "--out", str(out), "-q", "--overwrite", "--no-report"]) == 0
    assert not (out / "report.html").exists()  # replaced whole, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res", "tiny"]


def test_check_lists_every_problem_with_status_2(tiny_case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tiny_case)]) == 0
    assert "is valid" in capsys.readouterr().out
    replace_in(tiny_case / "agents.csv", "Load.H2", "Load.H9")
    replace_in(tiny_case / "case.toml", "vmin_pu = 0.95", "vmin_pu = 1.5")
    assert main(["check", str(tiny_case)]) == 2
    assert capsys.readouterr().err == (
        "error: case 'tiny' has 1 problem:\n"
        "  - case.toml, [network].vmin_pu: must be below vmax_pu = 1.05, got 1.5\n")
    replace_in(tiny_case / "case.toml", "vmin_pu = 1.5", "vmin_pu = 0.95")
    replace_in(tiny_case / "case.toml", "vmax_pu = 1.05", 'vmax_pu = 1.05\nmonitored_buses = ["b9"]')
    assert main(["check", str(tiny_case)]) == 2
    assert capsys.readouterr().err == (
        "error: case 'tiny' has 2 problems:\n"
        "  - agents.csv, row 3 (H2): 1 element(s) not found in Master.dss: 'Load.H9'\n"
        "  - case.toml, [network].monitored_buses: 1 monitored bus(es) not in the network: b9\n")


def test_report_rebuilds_from_a_results_folder(tiny_case: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    assert main(["run", str(tiny_case), "--out", str(out), "-q", "--no-report"]) == 0
    assert not (out / "report.html").exists()
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").stat().st_size > 1000


# ------------------------------------------------------------------------- exit statuses


def test_usage_error_exits_2_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--bogus"]) == 2
    err = capsys.readouterr().err
    assert "No such option: --bogus" in err and "Traceback" not in err and "internal error" not in err


def _bug(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("boom")


def test_unexpected_exception_is_a_bug_exit_1_traceback_only_with_debug(
        tiny_case: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("gridmarket.case.load_case", _bug)  # a bug inside gridmarket
    assert main(["check", str(tiny_case)]) == 1
    err = capsys.readouterr().err
    assert err == ("internal error: RuntimeError: boom\nThis is a bug in gridmarket; please report it with the"
                   " command you ran (rerun with --debug for the traceback).\n")
    assert main(["--debug", "check", str(tiny_case)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and 'raise RuntimeError("boom")' in err
    assert err.endswith("internal error: RuntimeError: boom\nThis is a bug in gridmarket; please report it with"
                        " the command you ran (rerun with --debug for the traceback).\n")


def test_debug_shows_the_traceback_of_an_input_error_too(tiny_case: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tiny_case / "agents.csv").unlink()
    assert main(["check", str(tiny_case)]) == 2
    plain = capsys.readouterr().err
    assert plain == f"error: case 'tiny' has 1 problem:\n  - agents.csv: file not found in {tiny_case}\n"
    assert main(["--debug", "check", str(tiny_case)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "gridmarket.errors.CaseError" in err
    assert err.endswith(plain)


# ------------------------------------------------------------------------- whole or absent


def _interrupt_after(calls: int, real: Callable[..., Any]) -> Callable[..., Any]:
    """``real``, but Ctrl-C (KeyboardInterrupt) on call number ``calls`` (1-based), after it ran."""
    count = {"n": 0}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        count["n"] += 1
        result = real(*args, **kwargs)
        if count["n"] >= calls:
            raise KeyboardInterrupt
        return result

    return wrapper


STAGES = {  # stage -> (object, attribute, call on which to interrupt)
    "load": ("gridmarket.case", "load_case", 1),
    "network check": ("gridmarket.study.pipeline", "attach_agents", 1),
    "market, iteration 0": ("gridmarket.study.pipeline", "clear_market", 1),
    "market, iteration 1": ("gridmarket.study.pipeline", "clear_market", 2),
    "power flow, iteration 2": ("gridmarket.network.opendss.OpenDSSNetwork", "run_series", 3),
    "results tables": ("gridmarket.results", "_write_table", 4),
    "report": ("gridmarket.report", "build_report", 1),
}


@pytest.mark.parametrize("overwrite", [False, True], ids=["new", "overwrite"])
@pytest.mark.parametrize("stage", list(STAGES))
def test_interrupt_at_any_stage_leaves_no_results_and_no_temporary_files(
        stage: str, overwrite: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # the stressed case runs several iterations; the tiny one (one iteration) makes a quick report
    case = (write_stressed_case if "iteration" in stage else write_tiny_case)(tmp_path / "case")
    out = tmp_path / "deep" / "res"  # its parent does not exist either
    if overwrite:
        out.mkdir(parents=True)
        (out / "old.csv").write_text("an earlier run\n")
        mark_folder(out, "results")  # an earlier run's folder: gridmarket may replace it
    before = _tree(tmp_path)
    target, attr, calls = STAGES[stage]
    module, _, cls = target.partition(".OpenDSSNetwork")
    import importlib

    obj = importlib.import_module(module)
    if cls or target.endswith("OpenDSSNetwork"):
        obj = obj.OpenDSSNetwork
    monkeypatch.setattr(obj, attr, _interrupt_after(calls, getattr(obj, attr)))
    args = ["run", str(case), "--out", str(out), "-q"] + (["--overwrite"] if overwrite else [])
    assert main(args) == 130
    assert capsys.readouterr().err == "interrupted; no results were written\n"
    assert _tree(tmp_path) == before  # the earlier results untouched, nothing new, no temporary files


CHILD = textwrap.dedent("""
    import os, sys, time
    stage, args = sys.argv[1], sys.argv[2:]

    def pause(label, seconds=60):
        print("STAGE", label, flush=True)
        time.sleep(seconds)  # the parent's SIGINT arrives here, inside the stage

    def before(obj, name, label, seconds=60):
        real = getattr(obj, name)
        def wrapper(*a, **k):
            pause(label, seconds)
            return real(*a, **k)
        setattr(obj, name, wrapper)

    import gridmarket.case, gridmarket.report, gridmarket.results, gridmarket.study.pipeline
    from gridmarket.network.opendss import OpenDSSNetwork
    if stage == "load":
        before(gridmarket.case, "load_case", stage)
    elif stage == "market":
        before(gridmarket.study.pipeline, "clear_market", stage)
    elif stage == "power flow":
        before(OpenDSSNetwork, "run_series", stage)
    elif stage == "tables":
        before(gridmarket.results, "_write_table", stage)
    elif stage == "report":
        before(gridmarket.report, "build_report", stage)
    elif stage == "rename":  # inside the final rename: Ctrl-C is held back until the folder is whole
        import gridmarket.outdir
        real_rename = gridmarket.outdir._rename_noreplace
        def rename(src, dst, *a, **k):
            if os.path.basename(dst) == "res":
                pause(stage, 3)
            return real_rename(src, dst, *a, **k)
        gridmarket.outdir._rename_noreplace = rename
    from gridmarket.cli import main
    sys.exit(main(args))
""")


def test_real_sigint_at_each_stage_leaves_results_whole_or_absent(tmp_path: Path) -> None:
    # "rename" first: its pause is short (Ctrl-C is held back there, so it cannot end the pause)
    stages = ["rename", "power flow", "report"]  # every stage is interrupted in-process above
    procs = {}
    for stage in stages:  # started together: the machine's cores overlap their start-up
        case = write_tiny_case(tmp_path / stage / "case")
        out = tmp_path / stage / "res"
        procs[stage] = (out, subprocess.Popen(
            [sys.executable, "-c", CHILD, stage, "run", str(case), "--out", str(out), "-q"]
            + ([] if stage == "report" else ["--no-report"]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"}))
    for stage, (out, proc) in procs.items():
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == f"STAGE {stage}\n", (line, proc.stderr.read() if proc.stderr else "")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, (stage, err)
        assert "Traceback" not in err
        if stage == "rename":
            assert err == f"interrupted; the results were complete before the interrupt: {out}\n"
            assert sorted(p.name for p in out.parent.iterdir()) == ["case", "res"]
            for name in RESULT_FILES[:-1]:  # run with --no-report
                assert (out / name).is_file(), name
        else:
            assert err == "interrupted; no results were written\n"
            assert sorted(p.name for p in out.parent.iterdir()) == ["case"], stage


def test_interrupts_are_held_back_during_the_rename() -> None:
    from gridmarket.results import _interrupts_deferred

    done = []
    with pytest.raises(KeyboardInterrupt), _interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("the block ran to its end")
    assert done == ["the block ran to its end"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ------------------------------------------------------------------------- reproducible


def test_two_runs_give_identical_files_except_the_runtime(tmp_path: Path) -> None:
    case = write_stressed_case(tmp_path / "case")  # with batteries placed in iteration 1
    replace_in(case / "case.toml", "ladder = [1, 3, 5]", "ladder = [1, 3, 5]\nmax_iterations = 2")
    outs = [tmp_path / "r1", tmp_path / "r2"]
    for out in outs:
        assert main(["run", str(case), "--out", str(out), "-q"]) == 0
    names = sorted(p.name for p in outs[0].iterdir())
    assert names == sorted(p.name for p in outs[1].iterdir())
    assert len(pd.read_csv(outs[0] / "iterations.csv")) > 1  # batteries were placed: several iterations
    assert sum(n.endswith(".png") for n in names) >= 3
    for name in names:
        a, b = (out / name for out in outs)
        if name == "summary.json":
            sa, sb = json.loads(a.read_text()), json.loads(b.read_text())
            assert {k for k in sa if sa[k] != sb.get(k)} <= {"runtime_s", "command_runtime_s"}
            assert sa.keys() == sb.keys()
        elif name == "report.html":  # shows the runtime too
            runtime = re.compile(rb"<tr><th>(Whole command runtime|Runtime) \[s\]</th><td>[0-9.]+</td></tr>")
            assert runtime.sub(b"", a.read_bytes()) == runtime.sub(b"", b.read_bytes())
            assert len(runtime.findall(a.read_bytes())) == 2
        else:
            assert a.read_bytes() == b.read_bytes(), name
