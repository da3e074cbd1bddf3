"""The case loader: a valid case loads; each broken rule gives an error naming file, row/key and value."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from casefactory import LOAD1, LOAD2, PV, replace_in
from gridmarket.case import CaseWarning, load_case
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
    with pytest.raises(ValueError):
        case.profile_kw[0, 0] = 3.0  # immutable


def test_load_case_accepts_the_toml_file_itself(tiny_case: Path) -> None:
    assert load_case(tiny_case / "case.toml").name == "tiny"


def _err(case: Path) -> str:
    with pytest.raises(CaseError) as info:
        load_case(case)
    return str(info.value)


# (file, old text, new text, substrings the error must contain)
RULES = [
    ("case.toml", "steps = 4", "steps = 4\nstepz = 3",
     ["case.toml", "[time].stepz", "unknown key 'stepz'", "did you mean 'steps'"]),
    ("case.toml", "[network]", "[netwrok]\nfoo=1\n[network]", ["case.toml", "unknown section", "network"]),
    ("case.toml", 'name = "tiny"', 'name = "tiny', ["case.toml", "malformed TOML"]),
    ("case.toml", "steps = 4", 'steps = "four"', ["case.toml", "[time].steps", "'four'"]),
    ("case.toml", 'master = "network/Master.dss"\n', "", ["case.toml", "[network].master", "missing"]),
    ("case.toml", "network/Master.dss", "network/Nope.dss", ["case.toml", "[network].master", "Nope.dss"]),
    ("case.toml", "step_hours = 1.0", "step_hours = 0.0", ["[time].step_hours", "must be > 0", "got 0"]),
    ("case.toml", "import_price = 0.80", "import_price = 0.20",
     ["[grid].import_price", "0.2 is below export price 0.3"]),
    ("case.toml", "import_price = 0.80", 'import_price = "tarif"', ["[grid].import_price", "'tarif'"]),
    ("case.toml", "vmin_pu = 0.95", "vmin_pu = 1.06", ["[network].vmin_pu", "below vmax_pu", "1.06"]),
    ("case.toml", "[placement]", "[battery]\nsoc_min = 0.9\n[placement]", ["[battery].soc_min", "0.9"]),
    ("case.toml", "[placement]", "[battery]\nsoc_init = 0.1\n[placement]", ["[battery].soc_init", "0.1"]),
    ("case.toml", "[placement]", "[battery]\neff_charge = 1.2\n[placement]", ["[battery].eff_charge", "1.2"]),
    ("case.toml", "ladder = [1, 3, 5]", "ladder = []", ["[placement].ladder", "at least one"]),
    ("case.toml", "ladder = [1, 3, 5]", "ladder = [1, 5, 3]", ["[placement].ladder", "increasing", "[1, 5, 3]"]),
    ("case.toml", 'links = "all"', 'links = [["C1", "C9"]]', ["[communities].links[0]", "unknown community 'C9'"]),
    ("case.toml", "horizon = 1", "horizon = 0", ["[market].horizon", "0"]),
    ("agents.csv", "H2,consumer", "H1,consumer", ["agents.csv", "row 3 (H1)", "duplicate agent name 'H1'"]),
    ("agents.csv", "H2,consumer", "H2,consumr", ["agents.csv", "row 3 (H2)", "unknown kind 'consumr'",
                                                 "did you mean 'consumer'"]),
    ("agents.csv", "H2,consumer,C1", "H2,consumer,", ["agents.csv", "row 3 (H2)", "consumer has no community"]),
    ("agents.csv", "Load.H2", "Loadh2", ["agents.csv", "row 3 (H2)", "'Loadh2'", "Class.Name"]),
    ("agents.csv", "PVSystem.PV1", "Load.PV1", ["agents.csv", "row 4 (PV1)", "'Load.PV1'", "PVSystem"]),
    ("agents.csv", "load2,1,0.01", "load9,1,0.01", ["agents.csv", "row 3 (H2)", "'load9'", "not a column"]),
    ("agents.csv", "1,0.01,1.2,0,0.2", "1,-0.01,1.2,0,0.2", ["agents.csv", "row 3 (H2)", "'a'", "-0.01"]),
    ("agents.csv", "0.01,1.2,0,0.2", "0.01,1.2,0,1.5", ["agents.csv", "row 3 (H2)", "'flex'", "1.5"]),
    ("agents.csv", "0.01,1.2,0,0.2", "0.01,abc,0,0.2", ["agents.csv", "row 3 (H2)", "'b'", "'abc'"]),
    ("agents.csv", "name,kind", "nme,kind", ["agents.csv", "column 'nme'", "did you mean 'name'"]),
    ("agents.csv", "H3,passive,,", "H3,passive,C1,", ["agents.csv", "row 5 (H3)", "passive"]),
    ("agents.csv", "H3,passive,,Load.H3,load1,0.5,0,0,0,0,,",
     "B1,battery,C1,bus:b2,,1,0,0,0,0,0,", ["agents.csv", "row 5 (B1)", "'units'", "got 0"]),
    ("agents.csv", "H3,passive,,Load.H3,load1,0.5,0,0,0,0,,",
     "B1,battery,C1,Load.H3,,1,0,0,0,0,1,", ["agents.csv", "row 5 (B1)", "'Load.H3'", "Storage"]),
    ("profiles.csv", "2024-03-01T02:00,2.0", "2024-03-01T02:00,nan",
     ["profiles.csv", "row 4", "'load1'", "finite", "nan"]),
    ("profiles.csv", "2024-03-01T02:00,2.0", "2024-03-01T02:00,inf", ["profiles.csv", "row 4", "'load1'", "inf"]),
    ("profiles.csv", "2024-03-01T02:00,2.0", "2024-03-01T02:00,-2.0",
     ["profiles.csv", "row 4", "'load1'", "negative demand -2"]),
    ("profiles.csv", "2024-03-01T02:00,2.0", "2024-03-01T02:00,two", ["profiles.csv", "row 4", "'two'"]),
    ("profiles.csv", "2024-03-01T03:00,0.8,0.6,0.4\n", "", ["profiles.csv", "3 rows", "steps", "4"]),
    ("profiles.csv", "2024-03-01T02:00", "2024-03-01T01:00", ["profiles.csv", "row 4", "duplicated timestamp"]),
    ("profiles.csv", "2024-03-01T02:00", "2024-03-01T00:30", ["profiles.csv", "row 4", "not after"]),
    ("profiles.csv", "time,load1", "when,load1", ["profiles.csv", "column 'when'", "first column"]),
]


@pytest.mark.parametrize(("file", "old", "new", "expected"), RULES,
                         ids=[f"{r[0]}:{r[3][-1]}" for r in RULES])
def test_each_rule_names_file_place_and_value(tiny_case: Path, file: str, old: str, new: str,
                                             expected: list[str]) -> None:
    replace_in(tiny_case / file, old, new)
    msg = _err(tiny_case)
    for part in expected:
        assert part in msg, f"{part!r} not in error:\n{msg}"


def test_all_problems_are_reported_at_once(tiny_case: Path) -> None:
    replace_in(tiny_case / "agents.csv", "H2,consumer", "H1,consumer")
    replace_in(tiny_case / "profiles.csv", "2024-03-01T02:00,2.0", "2024-03-01T02:00,nan")
    replace_in(tiny_case / "case.toml", "vmin_pu = 0.95", "vmin_pu = 1.2")
    with pytest.raises(CaseError) as info:
        load_case(tiny_case)
    files = {p.file for p in info.value.problems}
    assert files == {"agents.csv", "profiles.csv", "case.toml"}


@pytest.mark.parametrize("name", ["agents.csv", "profiles.csv", "case.toml"])
def test_missing_file_is_named(tiny_case: Path, name: str) -> None:
    (tiny_case / name).unlink()
    msg = _err(tiny_case)
    assert name in msg and "file not found" in msg


def test_unused_profile_column_warns(tiny_case: Path) -> None:
    replace_in(tiny_case / "profiles.csv", "time,load1,load2,pv", "time,load1,load2,pv,spare")
    text = (tiny_case / "profiles.csv").read_text().splitlines()
    text = [text[0]] + [line + ",1.0" for line in text[1:]]
    (tiny_case / "profiles.csv").write_text("\n".join(text) + "\n")
    with pytest.warns(CaseWarning, match="'spare' used by no agent"):
        load_case(tiny_case)


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
