"""Folders gridmarket writes (gridmarket.outdir): what --overwrite may replace, the final move
that never replaces what it did not agree to, concurrent runs, and the user's umask."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from casefactory import write_tiny_case
from gridmarket.errors import ResultsError
from gridmarket.outdir import MARKER, check_out_dir, mark_folder, read_marker, staged, write_bytes_atomic
from gridmarket.results import Results, write_results


def _results() -> Results:
    return Results(summary={"case": "x"}, tables={"a.csv": pd.DataFrame({"v": [1.0]})})


def _fill(tmp: Path, text: str) -> None:
    (tmp / "file.txt").write_text(text)


def test_every_written_folder_has_its_marker(tmp_path: Path) -> None:
    out = write_results(_results(), tmp_path / "res")
    marker = read_marker(out)
    assert marker is not None and marker["kind"] == "results"
    with staged(check_out_dir(tmp_path / "c", kind="case")) as tmp:
        _fill(tmp, "case")
    assert json.loads((tmp_path / "c" / MARKER).read_text())["kind"] == "case"


def test_overwrite_replaces_only_gridmarket_folders_of_the_same_kind_or_empty_ones(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_out_dir(empty).path == empty  # an empty folder, even without --overwrite
    user = tmp_path / "user"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    with pytest.raises(ResultsError, match="not written by gridmarket"):
        check_out_dir(user, overwrite=True)
    mark_folder(user, "case")
    with pytest.raises(ResultsError, match="it is a case folder written by gridmarket, not a results folder"):
        check_out_dir(user, overwrite=True)
    assert (user / "thesis.tex").read_text() == "years of work"
    mark_folder(user, "results")
    assert check_out_dir(user, overwrite=True).replaces is not None


def test_protected_folders_and_their_ancestors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = write_tiny_case(tmp_path / "a" / "b" / "case")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for out, why in [(case, "it is the case folder"), (tmp_path / "a", f"it holds the case folder {case}"),
                     (tmp_path / "a" / "b" / "..", f"it holds the case folder {case}"),
                     (elsewhere, "it is the current working folder"),
                     (tmp_path, f"it holds the current working folder {elsewhere}")]:
        mark_folder(out, "results")  # even a folder marked as gridmarket's: never these
        with pytest.raises(ResultsError) as info:
            check_out_dir(out, overwrite=True, protect=[case])
        assert str(info.value) == f"refusing to write the results folder to {out}: {why}; choose another --out"
        (out / MARKER).unlink()


def test_a_folder_that_appears_during_the_run_is_never_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = check_out_dir(out)  # the path is free when the run starts...
    second = check_out_dir(out)  # ...for a second run to the same folder too
    with staged(first) as tmp:
        _fill(tmp, "first")
    with pytest.raises(ResultsError) as info, staged(second) as tmp:
        _fill(tmp, "second")
    assert str(info.value) == (f"{out} appeared while gridmarket was writing it (another run to the same folder?);"
                               f" it was left as it is and the finished results folder is in {out}-new")
    assert (out / "file.txt").read_text() == "first"
    assert (tmp_path / "out-new" / "file.txt").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out-new"]  # no temporary folder left


def test_with_overwrite_a_folder_replaced_meanwhile_is_not_replaced_again(tmp_path: Path) -> None:
    out = write_results(_results(), tmp_path / "out")
    a = check_out_dir(out, overwrite=True)
    b = check_out_dir(out, overwrite=True)
    with staged(a) as tmp:
        _fill(tmp, "a")
    with pytest.raises(ResultsError, match="was replaced while gridmarket was writing it"), staged(b) as tmp:
        _fill(tmp, "b")
    assert (out / "file.txt").read_text() == "a"  # a's results stand; b's are beside them
    assert (tmp_path / "out-new" / "file.txt").read_text() == "b"


def test_a_user_folder_created_during_the_run_survives(tmp_path: Path) -> None:
    target = check_out_dir(tmp_path / "late")
    with pytest.raises(ResultsError, match="appeared while gridmarket was writing it"), staged(target) as tmp:
        (tmp_path / "late").mkdir()
        (tmp_path / "late" / "mine.txt").write_text("mine")
        _fill(tmp, "results")
    assert (tmp_path / "late" / "mine.txt").read_text() == "mine"
    assert (tmp_path / "late-new" / "file.txt").read_text() == "results"


def test_two_concurrent_cli_runs_to_one_folder_cannot_both_succeed(tmp_path: Path) -> None:
    case = write_tiny_case(tmp_path / "case")
    out = tmp_path / "out"
    child = "import sys, gridmarket.cli as c; sys.exit(c.main(sys.argv[1:]))"
    procs = [subprocess.Popen([sys.executable, "-c", child, "run", str(case), "--out", str(out), "-q", "--no-report"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=120), p.communicate()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    err = next(e for code, (_, e) in results if code == 2)
    assert err.startswith(("error: results folder", f"error: {out} appeared")), err
    marker = read_marker(out)
    assert marker is not None and marker["kind"] == "results"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names in (["case", "out"], ["case", "out", "out-new"])  # no hidden temporary folder


def test_results_follow_the_users_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        figure = {"fig": lambda p: write_bytes_atomic(p / "f.png", b"x")}
        out = write_results(_results(), tmp_path / "res", extra=figure)
        write_bytes_atomic(out / "report.html", b"<html>")
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o750
    for name in ("a.csv", "summary.json", "f.png", "report.html", MARKER):
        assert (out / name).stat().st_mode & 0o777 == 0o640, name


def test_empty_and_too_long_names(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match=r"^--out is empty"):
        check_out_dir("")
    with pytest.raises(ResultsError, match=r"^OUT_DIR is empty: give the case folder"):
        check_out_dir(" ", kind="case", option="OUT_DIR")
    check_out_dir(tmp_path / ("x" * 255))  # the longest name allowed
    with pytest.raises(ResultsError, match="is 256 bytes long; file names may have at most 255 bytes"):
        check_out_dir(tmp_path / ("x" * 256))


def test_files_put_into_an_empty_folder_during_the_run_survive(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = check_out_dir(out)  # empty: may be replaced
    with pytest.raises(ResultsError, match="changed while gridmarket was writing it"), staged(target) as tmp:
        (out / "mine.txt").write_text("mine")  # the user uses the folder meanwhile
        _fill(tmp, "results")
    assert (out / "mine.txt").read_text() == "mine"
    assert (tmp_path / "out-new" / "file.txt").read_text() == "results"


def test_no_combination_lets_overwrite_reach_a_protected_or_foreign_folder(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Every folder of a small tree, in every state (empty, the user's, gridmarket's of another
    kind, gridmarket's results), with and without --overwrite: accepted exactly when it is free
    to replace, and a protected one never."""
    case = write_tiny_case(tmp_path / "w" / "p" / "case")
    cwd = tmp_path / "w" / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    protected = {tmp_path, tmp_path / "w", tmp_path / "w" / "p", case, cwd}
    free = [tmp_path / "w" / "x", tmp_path / "w" / "p" / "y", cwd / "z", case / "results"]
    for folder in free:
        folder.mkdir()
    states = ["empty", "user", "other kind", "results"]
    for folder in sorted(protected | set(free)):
        for state in states:
            for f in [folder / "u.txt", folder / MARKER]:
                f.unlink(missing_ok=True)
            if folder in free and state == "empty":
                pass
            elif state == "user":
                (folder / "u.txt").write_text("mine")
            elif state == "other kind":
                mark_folder(folder, "case")
            elif state == "results":
                mark_folder(folder, "results")
            for overwrite in (False, True):
                empty = not any(folder.iterdir())
                ok = folder not in protected and (empty or (overwrite and state == "results"))
                try:
                    check_out_dir(folder, overwrite=overwrite, protect=[case])
                    accepted = True
                except ResultsError:
                    accepted = False
                assert accepted == ok, (folder, state, overwrite)
        for f in [folder / "u.txt", folder / MARKER]:
            f.unlink(missing_ok=True)
