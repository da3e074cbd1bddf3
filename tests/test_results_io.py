"""Results are written whole or not at all, and refuse to clobber without --overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from gridmarket.errors import ResultsError
from gridmarket.results import Results, write_results


def _results() -> Results:
    return Results(summary={"case": "x"}, tables={"a.csv": pd.DataFrame({"v": [0.1, 1 / 3]})})


def test_written_whole(tmp_path: Path) -> None:
    out = write_results(_results(), tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == [".gridmarket", "a.csv", "summary.json"]
    assert json.loads((out / "summary.json").read_text()) == {"case": "x"}
    assert (out / "a.csv").read_text() == "v\n0.1\n0.3333333333\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_existing_folder_is_refused_unless_overwrite(tmp_path: Path) -> None:
    out = write_results(_results(), tmp_path / "out")
    (out / "keep.txt").write_text("x")
    with pytest.raises(ResultsError, match="already exists; pass --overwrite"):
        write_results(_results(), out)
    assert (out / "keep.txt").exists()
    write_results(_results(), out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "a.csv").exists()


def test_failure_midway_leaves_nothing(tmp_path: Path) -> None:
    def boom(path: Path) -> None:
        (path / "half.png").write_text("partial")
        raise RuntimeError("figure failed")

    with pytest.raises(RuntimeError, match="figure failed"):
        write_results(_results(), tmp_path / "out", extra={"fig": boom})
    assert list(tmp_path.iterdir()) == []


def test_interrupt_midway_leaves_nothing(tmp_path: Path) -> None:
    def interrupt(path: Path) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_results(_results(), tmp_path / "out", extra={"fig": interrupt})
    assert list(tmp_path.iterdir()) == []


def test_parent_that_is_a_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ResultsError, match="file.txt is a file, not a folder"):
        write_results(_results(), tmp_path / "file.txt" / "out")


def test_unwritable_parent_is_named(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        import os

        if os.access(ro, os.W_OK):  # root ignores permission bits
            pytest.skip("running as root: permission bits are not enforced")
        with pytest.raises(ResultsError, match="not writable"):
            write_results(_results(), ro / "out")
    finally:
        ro.chmod(0o700)
