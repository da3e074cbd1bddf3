"""The catalogue of bad inputs (tests/bad_cases/catalogue.toml): every wrong input gives its
one error, word for word, through the API and through the command line (exit status 2, no
traceback), and a failed run leaves no results folder and no temporary files."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path
from typing import Any

import pytest

from casefactory import write_tiny_case
from gridmarket import errors
from gridmarket.case import CaseWarning, load_case
from gridmarket.cli import check_case_network, main
from gridmarket.errors import CaseError, GridmarketError
from gridmarket.study import run_study

CATALOGUE_PATH = Path(__file__).parent / "bad_cases" / "catalogue.toml"
CATALOGUE: list[dict[str, Any]] = tomllib.loads(CATALOGUE_PATH.read_text(encoding="utf-8"))["bad"]
API = [e for e in CATALOGUE if e["stage"] != "cli"]


def apply_edits(root: Path, edits: list[dict[str, Any]]) -> None:
    """Apply the catalogue's mutations (see the header of catalogue.toml) to the case at ``root``."""
    for edit in edits:
        path = root / edit["file"]
        if "replace" in edit:
            old, new = edit["replace"]
            text = path.read_text(encoding="utf-8")
            assert old in text, f"{old!r} not in {path}: the catalogue entry is out of date"
            path.write_text(text.replace(old, new, 1), encoding="utf-8")
        elif "append" in edit:
            with path.open("a", encoding="utf-8") as f:
                f.write(edit["append"])
        elif "write" in edit:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(edit["write"], encoding="utf-8")
        elif "write_hex" in edit:
            path.write_bytes(bytes.fromhex(edit["write_hex"]))
        elif "prepend_hex" in edit:
            path.write_bytes(bytes.fromhex(edit["prepend_hex"]) + path.read_bytes())
        elif edit.get("delete"):
            path.unlink()
        elif edit.get("folder"):
            path.unlink()
            path.mkdir()
        elif "symlink" in edit:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(edit["symlink"])
        else:  # pragma: no cover - a broken catalogue entry
            raise AssertionError(f"unknown edit {edit}")


def _case(tmp_path: Path, entry: dict[str, Any]) -> Path:
    root = write_tiny_case(tmp_path / "case").resolve()
    apply_edits(root, entry["edits"])
    return root


def _text(template: str, root: Path) -> str:
    """``template`` with ``{root}`` (the case folder), ``{cwd}`` (the working folder of the CLI
    run: the case's parent) and ``{home}`` (the home folder) filled in."""
    return (template.replace("{root}", str(root)).replace("{cwd}", str(root.parent))
            .replace("{home}", str(Path.home().resolve())))


def _assert_error(exc: BaseException, entry: dict[str, Any], root: Path) -> None:
    expected = _text(entry["error"], root)
    assert isinstance(exc, getattr(errors, entry.get("type", "CaseError"))), repr(exc)
    if isinstance(exc, CaseError):
        assert [str(p) for p in exc.problems] == [expected]
    else:
        assert str(exc) == expected


def test_the_catalogue_is_complete() -> None:
    ids = [e["id"] for e in CATALOGUE]
    assert len(ids) == len(set(ids)) >= 80
    for e in CATALOGUE:
        assert e["stage"] in {"load", "check", "run", "cli"}, e["id"]
        assert e.get("what") and (("error" in e) != ("warning" in e)), e["id"]
        assert e.get("type", "CaseError") in errors.__all__, e["id"]
    stages = {e["stage"] for e in CATALOGUE}
    assert stages == {"load", "check", "run", "cli"}


@pytest.mark.parametrize("entry", API, ids=[e["id"] for e in API])
def test_bad_input_gives_its_one_error(entry: dict[str, Any], tmp_path: Path) -> None:
    root = _case(tmp_path, entry)
    if "warning" in entry:
        with pytest.warns(CaseWarning) as record:
            load_case(root)
        assert [str(w.message) for w in record] == [_text(entry["warning"], root)]
        return
    if entry["stage"] == "load":
        with pytest.raises(GridmarketError) as info:
            load_case(root)
        _assert_error(info.value, entry, root)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        case = load_case(root)  # loads cleanly: the problem shows only against the network
    if entry["stage"] == "check":
        with pytest.raises(GridmarketError) as info:
            check_case_network(case)
        _assert_error(info.value, entry, root)
        # the API's study loop makes the same checks before any work, with the same error
        with pytest.raises(GridmarketError) as info:
            run_study(case)
    else:
        check_case_network(case)
        with pytest.raises(GridmarketError) as info:
            run_study(case)
    _assert_error(info.value, entry, root)


@pytest.mark.parametrize("entry", CATALOGUE, ids=[e["id"] for e in CATALOGUE])
def test_cli_prints_the_error_and_exits_2(entry: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root = _case(tmp_path, entry)
    monkeypatch.chdir(tmp_path)  # `run` without --out writes to ./results
    out = tmp_path / "out"
    run = ["run", str(root), "--out", str(out), "-q", "--no-report"]
    if entry["stage"] == "cli":
        commands = [[_text(a, root) for a in entry["args"]]]
    elif entry["stage"] == "run" or "warning" in entry:
        commands = [run]
    else:  # `check` finds it, and `run` finds it before any work
        commands = [["check", str(root)], run]
    for args in commands:
        before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
        status = main(args)
        err = capsys.readouterr().err
        assert "Traceback" not in err
        if "warning" in entry:
            assert status == 0
            assert err == f"warning: {_text(entry['warning'], root)}\n"
            return
        assert status == 2, err
        expected = _text(entry["error"], root)
        if entry.get("type", "CaseError") == "CaseError":
            head, *items = err.splitlines()
            assert head.startswith("error: ") and head.endswith(" has 1 problem:")
            assert "\n".join(items) == f"  - {expected}"
        else:
            assert err == f"error: {expected}\n"
        # nothing was written: no results folder, no temporary or leftover files anywhere
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_errors_of_the_study_loop_name_their_iteration() -> None:
    market = errors.in_iteration(errors.MarketError("step 3: market infeasible", step=3, group="G"), 2)
    assert (str(market), market.step, market.group, market.iteration) == (
        "iteration 2, step 3: market infeasible", 3, "G", 2)
    flow = errors.in_iteration(errors.PowerFlowError("power flow did not converge at step 5", step=5), 1)
    assert isinstance(flow, errors.PowerFlowError) and str(flow) == "iteration 1: power flow did not converge at step 5"
    other = errors.in_iteration(errors.PowerFlowError("solver gave up", step=4), 0)
    assert str(other) == "iteration 0, step 4: solver gave up"
    net = errors.in_iteration(errors.NetworkError("bus 'x' not found"), 3)
    assert type(net) is errors.NetworkError and str(net) == "iteration 3: bus 'x' not found"
    assert net.__cause__ is not None and net.__cause__ is not net


LIST_PATH = Path(__file__).parent / "bad_cases" / "CATALOGUE.md"


def catalogue_markdown() -> str:
    """The catalogue as a Markdown table: input -> the first line of its error (or warning).

    Regenerate tests/bad_cases/CATALOGUE.md with ``python tests/test_bad_cases.py``.
    """
    rows = ["# The bad-input catalogue", "",
            "Generated from catalogue.toml by `python tests/test_bad_cases.py`; checked by"
            " tests/test_bad_cases.py. `{root}` is the case folder, `{cwd}` the working folder.", "",
            f"{len(CATALOGUE)} entries.", "",
            "| # | id | stage | input | first line of the error |", "|---|---|---|---|---|"]
    for k, e in enumerate(CATALOGUE, 1):
        text = e.get("error", e.get("warning", "")).splitlines()[0]
        if "warning" in e:
            text = f"warning: {text}"
        cell = text.replace("|", "\\|")
        rows.append(f"| {k} | {e['id']} | {e['stage']} | {e['what'].replace('|', '/')} | `{cell}` |")
    return "\n".join(rows) + "\n"


def test_the_catalogue_list_is_current() -> None:
    assert LIST_PATH.read_text(encoding="utf-8") == catalogue_markdown(), "run: python tests/test_bad_cases.py"


if __name__ == "__main__":
    LIST_PATH.write_text(catalogue_markdown(), encoding="utf-8")
