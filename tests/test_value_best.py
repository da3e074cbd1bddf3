"""The best iteration of value placement is judged net of the units' annuity (issue 13).

Value placement puts a unit where the aware market's duals value its relief above its annuity;
the unit's realised gain can then fall short of that annuity. On Costa Rica case 2 at 800
R$/kWh the first unit gains 2.50 R$ for an annuity of 2.53 R$ over the day, with the same
violations: the study must not name that iteration the best (the welfare-only tie-break did).
Checked against the rule applied by hand to the iterations' own records.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from gridmarket.case import load_case
from gridmarket.cases.cr_mar import build_case
from gridmarket.enums import NetworkMode, PlacementRule
from gridmarket.study import run_study

pytestmark = pytest.mark.needs_shared


def test_a_unit_that_gains_less_than_its_annuity_is_not_the_best(cr_mar_dir: Path, tmp_path: Path) -> None:
    case = load_case(build_case(tmp_path / "case2", case=2, data_dir=cr_mar_dir.parent))
    case = replace(case, market=replace(case.market, network=NetworkMode.AWARE),
                   placement=replace(case.placement, rule=PlacementRule.VALUE),
                   battery=replace(case.battery, capex_per_kwh=800.0))
    res = run_study(case)
    its = res.iterations
    assert len(its) >= 2 and its[1].battery_units > 0, "value placement placed a unit"
    assert "below its annuity" in res.stop_reason
    # by hand: fewest violations, then the highest realised welfare net of the annuity, earliest on ties
    key = [(it.counts["violations"], -(it.welfare_realised - it.battery_annuity), it.index) for it in its]
    assert res.best == min(key)[2]
    # the case this test is for: the last unit gained less than it costs, at equal violations
    last = its[-1]
    assert last.counts["violations"] == its[0].counts["violations"]
    assert last.welfare_realised > its[0].welfare_realised
    assert last.welfare_realised - last.battery_annuity < its[0].welfare_realised
    assert res.best == 0
