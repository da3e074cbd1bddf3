"""Fault injection: SIGTERM and SIGINT at random moments of a real ``gridmarket run``
(a subprocess, many times) never leave a partial or stray folder, and the previous results
survive whole unless the new ones were complete.

Each child runs the real command line (:func:`gridmarket.cli.main`) on the tiny case with
``--overwrite`` onto the results of an earlier run; the signal arrives uniformly at random
between the moment the child's interpreter is ready and the measured length of a run, so it
falls in every stage: loading, network check, market, power flow, tables, figures, report,
the final move and the clean-up.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from casefactory import write_tiny_case

CHILD = "import sys, gridmarket.cli as c; print('ready', flush=True); sys.exit(c.main(sys.argv[1:]))"

#: files every complete results folder of the tiny case holds (report runs add report.html)
COMPLETE = {".gridmarket", "summary.json", "iterations.csv", "agents.csv", "batteries.csv", "market.parquet",
            "communities.parquet", "violations.parquet", "voltages.parquet"}


def _digest(folder: Path) -> str:
    """One hash over the folder's identity (a new folder is a new inode: the old one exists
    while the new one is made) and every file's name and bytes (hidden ones included)."""
    h = hashlib.sha256(str(folder.stat().st_ino).encode())
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def _start(case: Path, out: Path, report: bool) -> subprocess.Popen[str]:
    args = ["run", str(case), "--out", str(out), "--overwrite", "-q"] + ([] if report else ["--no-report"])
    return subprocess.Popen([sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=case.parent, env={**os.environ, "COLUMNS": "200"})


def test_sigterm_and_sigint_at_random_moments_leave_no_partial_or_stray_folder(tmp_path: Path) -> None:
    case = write_tiny_case(tmp_path / "case")
    out = tmp_path / "out"
    lengths: dict[bool, float] = {}
    for report in (False, False, True):  # the earlier results, and the length of a run (the first is a cold start)
        proc = _start(case, out, report)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        t0 = time.perf_counter()  # from the moment a signal may be sent, as below
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        lengths[report] = min(lengths.get(report, math.inf), time.perf_counter() - t0)
    rng = random.Random(int(os.environ.get("GRIDMARKET_FAULT_SEED", "15")))
    runs = 20
    outcomes: dict[str, int] = {}
    signals: dict[str, int] = {}
    for k in range(runs):
        report = k % 4 == 3  # a quarter of the runs also draw the figures and the report
        sig = (signal.SIGTERM, signal.SIGINT)[(k + k // 4) % 2]  # both, also on the report runs
        before = _digest(out)
        proc = _start(case, out, report)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.0, 0.8 * lengths[report]))
        proc.send_signal(sig)
        stdout, err = proc.communicate(timeout=120)
        assert "Traceback" not in err, err
        # never a partial or stray folder: only the case and the results folder are there
        assert sorted(p.name for p in tmp_path.iterdir()) == ["case", "out"], (k, sig, err)
        names = {p.name for p in out.iterdir()}
        assert COMPLETE <= names, (k, sorted(names))
        assert not report or "report.html" in names or proc.returncode != 0
        if "results written to" in stdout:  # finished; the signal came at the very end (or after exit)
            outcome = "finished before the signal"
            assert proc.returncode in (0, -sig) or "the results were complete before the interrupt" in err, err
            assert _digest(out) != before
        elif err.endswith("no results were written\n") or proc.returncode == -sig:
            # interrupted (or killed before main() installed its handlers): the old results, whole
            outcome = "interrupted, previous results kept"
            assert proc.returncode in (128 + sig, -sig), (proc.returncode, err)
            assert _digest(out) == before, (proc.returncode, stdout, err)
        else:  # the signal came during the final move: held back until the new folder was whole
            outcome = "interrupted after the new results were complete"
            assert "the results were complete before the interrupt" in err, err
            assert proc.returncode == 128 + sig
            assert _digest(out) != before
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        signals[sig.name] = signals.get(sig.name, 0) + 1
    print(f"{runs} runs signalled {signals}: {outcomes}; stray folders: 0")
    assert outcomes.get("interrupted, previous results kept", 0) >= runs // 4  # the signals did interrupt runs


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_are_reported_like_ctrl_c(sig: signal.Signals, tmp_path: Path) -> None:
    case = write_tiny_case(tmp_path / "case")
    # a case whose power flow is slow enough to be signalled inside it: many steps
    proc = subprocess.Popen([sys.executable, "-c", CHILD.replace(
        "print('ready', flush=True); ",
        "import gridmarket.study.loop as l; real = l.run_study\n"
        "def slow(*a, **k):\n"
        "    print('ready', flush=True); import time; time.sleep(30)\n"
        "l.run_study = slow; import gridmarket.study as s; s.run_study = slow; "
        "import gridmarket.study.run as r; r.run_study = slow; "),
        "run", str(case), "--out", str(tmp_path / "out"), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig
    assert err == f"stopped by {sig.name}; no results were written\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case"]


def test_ctrl_c_in_a_dask_sweep_stops_it_without_worker_tracebacks(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    from casefactory import write_stressed_case

    case = write_stressed_case(tmp_path / "case")
    (tmp_path / "s.toml").write_text("[parameters]\nimport_price = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2]\n")
    out = tmp_path / "o"
    # Ctrl-C in a terminal goes to the whole process group: the sweep and every Dask process
    proc = subprocess.Popen([sys.executable, "-c", CHILD, "sweep", str(case), str(tmp_path / "s.toml"), "--out",
                             str(out), "-w", "2", "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    deadline = time.monotonic() + 90
    while not list(out.glob("scenarios/*/results")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)  # the workers are running scenarios
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=90)
    assert "Traceback" not in err, err
    if proc.returncode == 0:
        pytest.skip("the sweep finished before the interrupt (a very fast machine)")
    assert proc.returncode == 130
    assert err == ("interrupted; the scenarios finished so far are kept in"
                   f" {out} and a rerun reuses them; sweep.csv was not updated\n")
    hidden = [p for p in out.rglob(".*") if p.name != ".gridmarket"]
    assert hidden == []  # no temporary folder of a scenario was left
