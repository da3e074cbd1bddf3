"""Both Costa Rica case studies run end to end on the real feeder (skipped without ../shared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gridmarket.case import load_case
from gridmarket.cases.cr_mar import build_case
from gridmarket.enums import AgentKind
from gridmarket.study import run_study


@pytest.mark.parametrize("number", [1, 2])
def test_case_runs_end_to_end(cr_mar_dir: Path, tmp_path: Path, number: int) -> None:
    folder = build_case(tmp_path / f"case{number}", case=number, data_dir=cr_mar_dir.parent)
    case = load_case(folder)
    assert len(case.communities) == (1 if number == 1 else 5)
    study = run_study(case)
    table = study.iteration_table()
    # the feeder with 3 kWp on every community roof has midday overvoltage in the base iteration
    assert table["violations"].iloc[0] > 0
    assert len(table) >= 2, "at least one battery iteration"
    base, last = study.iterations[0], study.iterations[-1]
    assert last.case.agents_of(AgentKind.BATTERY), "batteries were placed"
    # every agent's balance (2) in every iteration's market
    for it in (base, last):
        m = it.market.market
        traded = m[m["kind"] != "passive"]
        resid = traded["P_kw"] + traded["S_kw"] + traded["phi_kw"] - traded["alpha_kw"] + traded["beta_kw"]
        assert np.abs(resid).max() < 1e-6
    # batteries that join the market can only add welfare (they may always stay idle)
    assert last.welfare >= base.welfare - 1e-6
