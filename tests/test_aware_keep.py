"""Steps already within their limits keep their rows in the aware market's outer loop (issue 13).

On two days of Costa Rica case 2 (the outer loop clears three times) a step whose AC power flow
meets its limits after the second clearing is not linearised and solved again: the third
clearing repeats its solution. Checked against the loop that re-linearises every step: the same
limits are met (the same residual violations, all unmet rows), fewer linearisations, and a
welfare within the margin's worth of the other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gridmarket.case import load_case
from gridmarket.cases.cr_mar import build_case
from gridmarket.network import OpenDSSNetwork
from gridmarket.study.aware import clear_aware
from gridmarket.study.loop import attach_agents

pytestmark = pytest.mark.needs_shared


def test_steps_within_their_limits_keep_their_rows(cr_mar_dir: Path, tmp_path: Path) -> None:
    case = load_case(build_case(tmp_path / "two_days", case=2, days=2, data_dir=cr_mar_dir.parent))
    pf = np.array([a.pf if a.pf is not None else np.nan for a in case.agents])
    out = {}
    for keep in (True, False):
        net = OpenDSSNetwork(case.network.master)
        es = net.resolve(attach_agents(case, net))
        out[keep] = clear_aware(case, net, es, pf=pf, keep_converged=keep)
    kept, every = out[True], out[False]
    assert every.outer_iterations >= 3, "the case needs a third clearing for steps to keep their rows"
    assert kept.step_iterations.sum() < every.step_iterations.sum()
    # the same limits are met: what is left is the same set of unmet rows, each with a slack
    key = ["step", "kind", "element"]
    assert kept.residual[key].sort_values(key).values.tolist() == every.residual[key].sort_values(key).values.tolist()
    assert kept.residual["cause"].str.startswith("slack > 0").all()
    # a kept step's linearisation error stays within half the margin δ
    assert kept.linearisation_error_pu <= 0.5 * case.market.network_margin_pu
    w_kept, w_every = float(kept.market.welfare.sum()), float(every.market.welfare.sum())
    assert abs(w_kept - w_every) <= 1e-4 * abs(w_every)
