"""Stage VI rules on their own: which buses get batteries, how banks grow, which community."""

from __future__ import annotations

import pandas as pd

from gridmarket.study.placement import battery_community, next_banks, violated_buses


def _viol(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame({"kind": [k for k, _ in rows], "element": [e for _, e in rows]})


def test_voltage_violation_names_its_bus_and_current_its_downstream_bus() -> None:
    v = _viol([("voltage", "b7.1"), ("voltage", "b7.2"), ("voltage", "x.y.3"), ("current", "line.l4.2")])
    assert violated_buses(v, {"line.l4": "b9"}.__getitem__) == {"b7", "x.y", "b9"}


def test_new_buses_start_at_the_bottom_and_persisting_ones_climb_the_ladder() -> None:
    ladder = (1, 3, 5)
    banks = next_banks({}, ["a", "b"], ladder)
    assert banks == {"a": 1, "b": 1}
    banks = next_banks(banks, ["b", "c"], ladder)
    assert banks == {"a": 1, "b": 3, "c": 1}  # a no longer violated: kept, not shrunk
    banks = next_banks(banks, ["b"], ladder)
    assert banks == {"a": 1, "b": 5, "c": 1}
    assert next_banks(banks, ["b"], ladder) == banks  # ladder exhausted: nothing changes


def test_battery_joins_community_at_its_bus_else_nearest() -> None:
    comms = {"b1": ["C1", "C2", "C2"], "b3": ["C3"], "b5": ["C1"]}
    dist = {"b2": {"b2": 0, "b1": 2, "b3": 1, "b5": 1}}
    assert battery_community("b1", comms, dist.__getitem__) == "C2"
    # b3 and b5 are both one line away: the tie goes to the bus name order (b3)
    assert battery_community("b2", comms, dist.__getitem__) == "C3"
    assert battery_community("b2", {}, dist.__getitem__) is None
