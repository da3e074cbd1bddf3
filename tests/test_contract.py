"""The results contract (gridmarket.contract): names survive a round trip through CSV and
Parquet as text, types are the documented ones, and violation owners follow the one naming
rule that network_lines.csv uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from gridmarket import contract
from gridmarket.errors import ResultsError

NASTY = ["502.1", "NA", "None", "null", "nan", "502", "", "N/A", "#N/A", "true", "1e3"]


def test_every_table_has_unique_columns_and_known_types() -> None:
    for spec in contract.TABLES.values():
        assert len(set(spec.names)) == len(spec.names), spec.file
        assert spec.file.endswith((".csv", ".parquet"))
        for col in spec.columns:
            assert col.dtype in ("str", "int16", "int32", "int64", "float", "time", "bool")
            assert col.meaning


@pytest.mark.parametrize("file", ["batteries.csv", "market.parquet"])
def test_names_survive_a_round_trip(tmp_path: Path, file: str) -> None:
    n = len(NASTY)
    spec = contract.table(file)
    frame = {}
    for col in spec.columns:
        if col.dtype == "str":
            frame[col.name] = NASTY
        elif col.dtype == "time":
            frame[col.name] = ["2024-03-01T10:00"] * (n - 1) + [""]
        elif col.dtype == "float":
            frame[col.name] = np.r_[np.arange(n - 1) / 3.0, np.nan]
        else:
            frame[col.name] = np.arange(n)
    contract.write_table(frame, tmp_path, file)
    back = contract.read_table(tmp_path, file)
    assert list(back.columns) == list(spec.names)
    for col in spec.columns:
        if col.dtype == "str":
            assert back[col.name].tolist() == NASTY, col.name
            assert all(isinstance(v, str) for v in back[col.name])
        elif col.dtype == "float":
            np.testing.assert_allclose(back[col.name].to_numpy()[:-1], np.arange(n - 1) / 3.0, rtol=1e-9)
            assert np.isnan(back[col.name].iloc[-1])
        elif col.dtype == "time":
            assert back[col.name].iloc[0] == pd.Timestamp("2024-03-01 10:00")
            assert pd.isna(back[col.name].iloc[-1])
        else:
            assert back[col.name].tolist() == list(range(n))
    # also as documented for a reader without this module
    if file.endswith(".parquet"):
        raw = pd.read_parquet(tmp_path / file)
        assert raw["agent"].astype(str).tolist() == NASTY
        assert pq.read_schema(tmp_path / file).field("time").type.unit == "ns"
    else:
        raw = pd.read_csv(tmp_path / file, dtype={c: str for c in spec.text_columns}, keep_default_na=False)
        assert raw["bus"].tolist() == NASTY


def test_bus_merge_works_after_reading(tmp_path: Path) -> None:
    """``batteries.merge(voltages, on="bus")``: bus "502" is text in both files."""
    contract.write_table({"iteration": [0], "agent": ["SBU_502"], "bus": ["502"], "community": ["1"],
                          "units": [1], "kw": [2.56], "kwh": [10.24]}, tmp_path, "batteries.csv")
    contract.write_table({"iteration": [0, 0], "step": [0, 0], "time": ["", ""], "bus": ["502", "503"],
                          "phase": [1, 1], "v_pu": [0.94, 1.0]}, tmp_path, "voltages.parquet")
    b = contract.read_table(tmp_path, "batteries.csv")
    v = contract.read_table(tmp_path, "voltages.parquet")
    m = b.merge(v, on=["iteration", "bus"])
    assert m["v_pu"].tolist() == [0.94]


def test_missing_required_column_is_named(tmp_path: Path) -> None:
    pd.DataFrame({"iteration": [0], "agent": ["a"]}).to_csv(tmp_path / "batteries.csv", index=False)
    with pytest.raises(ResultsError, match="batteries.csv: missing column.*'bus'"):
        contract.read_table(tmp_path / "batteries.csv")


def test_optional_columns_are_filled(tmp_path: Path) -> None:
    pd.DataFrame({"iteration": [0], "welfare": [1.5], "violations": [3], "voltage_violations": [3],
                  "current_violations": [0], "buses_violated": [1], "lines_violated": [0],
                  "battery_units": [0]}).to_csv(tmp_path / "iterations.csv", index=False)
    it = contract.read_table(tmp_path / "iterations.csv")
    assert it["transformer_violations"].tolist() == [0] and np.isnan(it["welfare_realised"].iloc[0])


def test_writer_refuses_columns_outside_the_contract(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="extra"):
        contract.write_table({"iteration": [0], "part": ["x"], "value": [1.0], "oops": [1]}, tmp_path,
                             "welfare_breakdown.csv")


def test_stream_appends_chunks_and_writes_empty_files(tmp_path: Path) -> None:
    with contract.ParquetStream(tmp_path, "steps.parquet") as w:
        for s0 in (0, 2):
            w.write({"iteration": [0, 0], "step": [s0, s0 + 1], "time": ["", ""], "welfare": [1.0, 2.0],
                     "v_min_pu": [1.0, 1.0], "v_max_pu": [1.0, 1.0], "loading_max": [0.5, 0.5],
                     "violations": [0, 1]})
    assert contract.read_table(tmp_path / "steps.parquet")["step"].tolist() == [0, 1, 2, 3]
    with contract.ParquetStream(tmp_path, "violations.parquet"):
        pass
    empty = contract.read_table(tmp_path / "violations.parquet")
    assert len(empty) == 0 and list(empty.columns) == list(contract.table("violations.parquet").names)


def test_one_naming_rule_for_elements() -> None:
    line = contract.element_name("Line", "L45")
    assert line == "line.l45"
    assert contract.conductor_name(line, 2) == "line.l45.2"
    owners = contract.violation_owner(
        ["voltage", "current", "transformer", "nonconvergence", "voltage"],
        ["502.1", "line.L45.2", "transformer.tx1", "circuit", contract.node_name("B5", 3)])
    assert owners.tolist() == ["502", "line.l45", "transformer.tx1", "circuit", "b5"]


def test_report_finds_an_overloaded_line_under_the_name_the_study_writes(tmp_path: Path) -> None:
    """The fixture writes network_lines.csv as the study does (element ``line.l45``) and the
    violation as ``line.l45.1``: the report's loader maps one onto the other."""
    from _results_fixture import build_results
    from gridmarket.report import load_results
    from gridmarket.report._load import violated_buses

    data = load_results(build_results(tmp_path / "r"))
    assert data.lines is not None
    buses, lines = violated_buses(data.violations, data.lines, iteration=0)
    assert lines == ["line.l45"] and set(lines) <= set(data.lines["element"])
    assert "b5" in buses
