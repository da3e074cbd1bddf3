"""The case loader: a valid case loads with the values of its files; harmless variations of the
same text load the same case; every problem is reported at once.

Each broken rule and its exact message is an entry of the catalogue of bad inputs
(tests/bad_cases/catalogue.toml, run by tests/test_bad_cases.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from casefactory import LOAD1, LOAD2, PV, replace_in
from gridmarket.case import Case, load_case
from gridmarket.enums import AgentKind
from gridmarket.errors import CaseError


def test_tiny_case_loads_with_values_from_the_files(tiny_case: Path) -> None:
    case = load_case(tiny_case)
    assert case.name == "tiny"
    assert [a.name for a in case.agents] == ["H1", "H2", "PV1", "H3"]
    assert case.communities == ("C1",)
    assert case.agents[2].kind is AgentKind.PRODUCER
    # passive H3 has scale 0.5 on load1
    np.testing.assert_allclose(case.profile_kw, np.column_stack([LOAD1, LOAD2, PV, 0.5 * LOAD1]))
    np.testing.assert_allclose(case.grid.import_price, 0.8)
    assert case.network.master.is_file()
    assert case.time.steps == 4 and len(case.time.index) == 4
    assert case.time.start == pd.Timestamp("2024-03-01T00:00")
    with pytest.raises(ValueError):
        case.profile_kw[0, 0] = 3.0  # immutable


def test_load_case_accepts_the_toml_file_itself(tiny_case: Path) -> None:
    assert load_case(tiny_case / "case.toml").name == "tiny"


def test_all_problems_are_reported_at_once(tiny_case: Path) -> None:
    replace_in(tiny_case / "agents.csv", "H2,consumer", "H1,consumer")
    replace_in(tiny_case / "profiles.csv", "2024-03-01T02:00,2.0", "2024-03-01T02:00,nan")
    replace_in(tiny_case / "case.toml", "vmin_pu = 0.95", "vmin_pu = 1.2")
    with pytest.raises(CaseError) as info:
        load_case(tiny_case)
    assert [str(p) for p in info.value.problems] == [
        "case.toml, [network].vmin_pu: must be below vmax_pu = 1.05, got 1.2",
        "agents.csv, row 3 (H1): duplicate agent name 'H1' (first on row 2)",
        "profiles.csv, row 4, column 'load1': must be a finite number, got 'nan'",
    ]
    assert str(info.value).startswith("case 'tiny' has 3 problems:\n  - case.toml, [network].vmin_pu:")


def test_price_from_profile_column(tiny_case: Path) -> None:
    lines = (tiny_case / "profiles.csv").read_text().splitlines()
    tariff = [0.5, 0.6, 0.9, 0.7]
    lines = [lines[0] + ",tariff"] + [f"{line},{p}" for line, p in zip(lines[1:], tariff, strict=True)]
    (tiny_case / "profiles.csv").write_text("\n".join(lines) + "\n")
    replace_in(tiny_case / "case.toml", "import_price = 0.80", 'import_price = "tariff"')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        case = load_case(tiny_case)
    np.testing.assert_allclose(case.grid.import_price, tariff)


def test_docs_list_every_agents_column() -> None:
    from gridmarket.case import AGENT_COLUMNS

    doc = (Path(__file__).resolve().parents[1] / "docs" / "case_format.md").read_text()
    for col in AGENT_COLUMNS:
        assert f"| `{col.name}` |" in doc, col.name


# ------------------------------------------------------------------- the same case, written otherwise


def _bom(path: Path) -> None:
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())


def _crlf(path: Path) -> None:
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))


def _blank_lines(path: Path) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2] + [""] + lines[2:]) + "\n\n\n")


def _spaces(path: Path) -> None:
    path.write_text("\n".join(", ".join(f" {c} " if c else c for c in line.split(","))
                              for line in path.read_text().splitlines()) + "\n")


VARIANTS: dict[str, Callable[[Path], None]] = {
    "UTF-8 byte-order mark (Excel, Notepad)": lambda root: [_bom(root / f) for f in
                                                           ("case.toml", "agents.csv", "profiles.csv")],
    "CRLF line ends": lambda root: [_crlf(root / f) for f in ("case.toml", "agents.csv", "profiles.csv")],
    "blank lines": lambda root: [_blank_lines(root / f) for f in ("agents.csv", "profiles.csv")],
    "spaces around fields": lambda root: [_spaces(root / f) for f in ("agents.csv", "profiles.csv")],
    "kind in capitals": lambda root: replace_in(root / "agents.csv", "H2,consumer", "H2,Consumer"),
    "start as a TOML datetime": lambda root: replace_in(root / "case.toml", 'start = "2024-03-01T00:00"',
                                                        "start = 2024-03-01T00:00:00"),
    "start as a TOML date": lambda root: replace_in(root / "case.toml", 'start = "2024-03-01T00:00"',
                                                    "start = 2024-03-01"),
    "integer where a float is expected": lambda root: replace_in(root / "case.toml", "step_hours = 1.0",
                                                                 "step_hours = 1"),
    "times with seconds and a space": lambda root: (root / "profiles.csv").write_text(
        (root / "profiles.csv").read_text().replace("T", " ").replace(":00,", ":00:00,")),
}


def _same(a: Case, b: Case) -> None:
    assert a.agents == b.agents and a.communities == b.communities and a.links == b.links
    assert a.time == b.time and a.network == b.network and a.battery == b.battery
    assert np.array_equal(a.profile_kw, b.profile_kw)
    assert np.array_equal(a.grid.import_price, b.grid.import_price)
    assert np.array_equal(a.grid.export_price, b.grid.export_price)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_harmless_variations_load_the_same_case(tiny_case: Path, variant: str) -> None:
    reference = load_case(tiny_case)
    VARIANTS[variant](tiny_case)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _same(load_case(tiny_case), reference)


def test_rows_are_the_lines_a_spreadsheet_shows(tiny_case: Path) -> None:
    _blank_lines(tiny_case / "profiles.csv")  # line 3 is blank: the row of 02:00 is line 5
    replace_in(tiny_case / "profiles.csv", "2024-03-01T02:00,2.0", "2024-03-01T02:00,x")
    with pytest.raises(CaseError) as info:
        load_case(tiny_case)
    assert [str(p) for p in info.value.problems] == [
        "profiles.csv, row 5, column 'load1': must be a finite number, got 'x'"]


def test_a_step_column_numbers_the_steps(tiny_case: Path) -> None:
    text = (tiny_case / "profiles.csv").read_text()
    for t in range(4):
        text = text.replace(f"2024-03-01T{t:02d}:00,", f"{t},")
    (tiny_case / "profiles.csv").write_text(text.replace("time,", "step,"))
    replace_in(tiny_case / "case.toml", 'start = "2024-03-01T00:00"\n', "")
    case = load_case(tiny_case)
    assert case.time.start is None and list(case.time.index) == [0, 1, 2, 3]
    np.testing.assert_allclose(case.profile_kw[:, 2], PV)


def test_the_fast_and_the_careful_profile_readers_agree(tiny_case: Path) -> None:
    """A well-formed profiles.csv is read by pandas' C parser; anything unusual (here: one blank
    line) by the careful reader that can name every problem. Both give the same floats, to the bit."""
    rng = np.random.default_rng(7)
    steps = 500
    values = rng.random((steps, 3)) * 10.0 ** rng.integers(-6, 4, (steps, 3))
    cells = [[repr(float(v)), f"{v:.6g}", f"{v:.3e}"] for v in values[:, 0]]  # three spellings
    times = pd.date_range("2024-03-01", periods=steps, freq="h").strftime("%Y-%m-%dT%H:%M")
    body = [f"{t},{a},{b},{c}" for t, (a, b, c) in zip(times, cells, strict=True)]
    (tiny_case / "profiles.csv").write_text("time,load1,load2,pv\n" + "\n".join(body) + "\n")
    replace_in(tiny_case / "case.toml", "steps = 4", f"steps = {steps}")
    fast = load_case(tiny_case).profile_kw
    (tiny_case / "profiles.csv").write_text("time,load1,load2,pv\n\n" + "\n".join(body) + "\n")
    careful = load_case(tiny_case).profile_kw
    expected = np.array([[float(x) for x in row] for row in cells])
    assert np.array_equal(fast[:, :3], expected) and np.array_equal(careful, fast)


def test_dates_beyond_what_pandas_holds_are_refused(tiny_case: Path) -> None:
    replace_in(tiny_case / "case.toml", "steps = 4", "steps = 200000000")
    replace_in(tiny_case / "case.toml", "step_hours = 1.0", "step_hours = 8760")
    with pytest.raises(CaseError) as info:
        load_case(tiny_case)
    assert ("case.toml, [time].step_hours: 200000000 steps of 8760 h from [time].start = '2024-03-01T00:00' run"
            " past the dates pandas can hold") in [str(p) for p in info.value.problems]
