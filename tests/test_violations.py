"""Limit checks and violation counting on hand-made power-flow results (no OpenDSS)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gridmarket.errors import NetworkError
from gridmarket.network import (
    COUNT_COLUMNS,
    VIOLATION_COLUMNS,
    PowerFlowResult,
    check_limits,
    count_violations,
    element_of,
    monitored_mask,
)

NODES = ["mv.1", "mv.2", "mv.3", "a.1", "a.2", "b.1", "b.2", "c.1"]
LINES = ["line.l1.1", "line.l1.2", "line.l1.3", "line.l2.1", "line.l2.2"]
BUSES = pd.DataFrame({"kv_base": [19.92, 0.12, 0.12, 0.23], "x": np.nan, "y": np.nan,
                      "n_nodes": [3, 2, 2, 1]}, index=pd.Index(["mv", "a", "b", "c"], name="bus"))


def _result(v: list[list[float]], i: list[list[float]],
            norm: list[float] | None = None) -> PowerFlowResult:
    return PowerFlowResult(v_pu=np.array(v, dtype=float), node_names=list(NODES),
                           i_amps=np.array(i, dtype=float), line_phase_names=list(LINES),
                           norm_amps=np.array(norm or [100, 100, 100, 50, 50], dtype=float))


@pytest.fixture
def result() -> PowerFlowResult:
    ok_i = [10, 10, 10, 10, 10]
    return _result(
        v=[[1.0, 1.0, 1.0, 1.00, 1.00, 1.00, 1.00, 1.00],     # step 0: all fine
           [1.0, 1.0, 1.0, 0.93, 0.94, 1.00, 1.06, 1.05],     # 1: a twice low, b.2 high, c on limit
           [1.0, 1.0, 1.0, 0.94, 1.00, 1.07, 1.00, np.nan]],  # 2: a.1 low, b.1 high, c dead
        i=[ok_i,
           [120, 130, 10, 50, 10],                             # l1 two phases over; l2 at limit
           [10, 10, 10, 60, 70]])                              # l2 two phases over


def test_rows_values_and_limits(result: PowerFlowResult) -> None:
    viol = check_limits(result, vmin_pu=0.95, vmax_pu=1.05)
    assert list(viol.columns) == VIOLATION_COLUMNS
    got = viol[["step", "kind", "element", "value", "limit"]].values.tolist()
    assert got == [
        [1, "voltage", "a.1", 0.93, 0.95],
        [1, "voltage", "a.2", 0.94, 0.95],
        [1, "voltage", "b.2", 1.06, 1.05],
        [1, "current", "line.l1.1", 120.0, 100.0],
        [1, "current", "line.l1.2", 130.0, 100.0],
        [2, "voltage", "a.1", 0.94, 0.95],
        [2, "voltage", "b.1", 1.07, 1.05],
        [2, "current", "line.l2.1", 60.0, 50.0],
        [2, "current", "line.l2.2", 70.0, 50.0],
    ]
    assert viol["time"].tolist() == viol["step"].tolist()
    assert viol["step"].dtype == np.int64 and viol["value"].dtype == float


def test_count_is_per_bus_or_line_and_step(result: PowerFlowResult) -> None:
    counts = count_violations(check_limits(result, vmin_pu=0.95, vmax_pu=1.05))
    assert list(counts.table.columns) == COUNT_COLUMNS and list(counts.table.index) == ["all"]
    assert list(counts) == COUNT_COLUMNS and counts.communities == []
    row = dict(counts)  # the totals read like a dict
    assert isinstance(row["violations"], int) and isinstance(row["v_min_pu"], float)
    # voltage pairs: (a,1) (b,1) (a,2) (b,2); current pairs: (l1,1) (l2,2)
    assert (row["voltage_violations"], row["current_violations"], row["violations"]) == (4, 2, 6)
    assert (row["buses_violated"], row["lines_violated"], row["steps_violated"]) == (2, 2, 2)
    assert row["v_min_pu"] == 0.93 and row["v_max_pu"] == 1.07
    assert row["loading_max_percent"] == pytest.approx(140.0)


def test_community_counts_use_community_buses_and_downstream_bus_of_lines(
        result: PowerFlowResult) -> None:
    viol = check_limits(result, vmin_pu=0.95, vmax_pu=1.05)
    counts = count_violations(viol, bus_community={"A": "C1", "c": "C1", "b": "C2", "mv": "C3"},
                              line_bus={"line.l1": "a", "line.l2": "x"})
    assert list(counts.table.index) == ["all", "C1", "C2", "C3"]
    assert counts.communities == ["C1", "C2", "C3"]
    table = counts.table
    assert table.loc["C1", ["voltage_violations", "current_violations"]].tolist() == [2, 1]
    assert table.loc["C2", ["voltage_violations", "current_violations"]].tolist() == [2, 0]
    c3 = counts.community("C3")
    assert c3["violations"] == 0 and np.isnan(c3["v_min_pu"])
    assert counts.community("C1")["loading_max_percent"] == pytest.approx(130.0)
    assert counts["violations"] == 6
    no_lines = count_violations(viol, bus_community={"a": "C1"})
    assert no_lines.community("C1")["current_violations"] == 0


def test_monitored_nodes_and_times(result: PowerFlowResult) -> None:
    mask = monitored_mask(result.node_names, BUSES, ("B",))
    assert mask.tolist() == [False] * 5 + [True, True, False]
    times = pd.date_range("2024-01-01", periods=3, freq="h")
    viol = check_limits(result, vmin_pu=0.95, vmax_pu=1.05, monitored_nodes=mask, times=times)
    volt = viol[viol["kind"] == "voltage"]
    assert volt["element"].tolist() == ["b.2", "b.1"]
    assert volt["time"].tolist() == [times[1], times[2]]
    assert (viol["kind"] == "current").sum() == 4  # currents are always checked


def test_monitored_mask_all_lv_and_unknown_buses() -> None:
    assert monitored_mask(NODES, BUSES, "all").all()
    assert monitored_mask(NODES, BUSES, "LV").tolist() == [False] * 3 + [True] * 5
    with pytest.raises(NetworkError, match=r"2 monitored bus.*nope, zz"):
        monitored_mask(NODES, BUSES, ["a", "zz", "nope.1"])


def test_no_violation_gives_typed_empty_table() -> None:
    res = _result(v=[[1.0] * 8], i=[[1.0] * 5])
    viol = check_limits(res, vmin_pu=0.95, vmax_pu=1.05)
    assert viol.empty and list(viol.columns) == VIOLATION_COLUMNS
    counts = count_violations(viol, bus_community={"a": "C1"})
    assert counts.table["violations"].tolist() == [0, 0]
    assert counts.table["violations"].dtype == np.int64
    assert counts["violations"] == 0 and np.isnan(counts["v_max_pu"])


def test_unrated_lines_and_bad_arguments() -> None:
    res = _result(v=[[1.0] * 8], i=[[1e4] * 5], norm=[np.inf] * 5)
    assert check_limits(res, vmin_pu=0.9, vmax_pu=1.1).empty
    with pytest.raises(ValueError, match="vmin_pu must be below vmax_pu"):
        check_limits(res, vmin_pu=1.1, vmax_pu=0.9)
    with pytest.raises(ValueError, match="monitored_nodes must have shape"):
        check_limits(res, vmin_pu=0.9, vmax_pu=1.1, monitored_nodes=np.ones(3, bool))
    with pytest.raises(ValueError, match="one label per step"):
        check_limits(res, vmin_pu=0.9, vmax_pu=1.1, times=[1, 2])
    with pytest.raises(ValueError, match="lacks column"):
        count_violations(pd.DataFrame({"step": [0]}))


def test_element_of_strips_the_phase() -> None:
    assert element_of(["a.1", "line.l1.3", "x.y.2"]).tolist() == ["a", "line.l1", "x.y"]
