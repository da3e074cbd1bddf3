"""The comparison a DSO asks for (issue 13): on the same case,

1. ``blind``: the study's market, no batteries placed;
2. ``blind+placement``: the study's market and the study's placement rule (the best iteration
   with placed units, even when the study's best is iteration 0: the question is what its
   placement does);
3. ``aware``: the network-aware market, no batteries placed (what respecting the grid costs);
4. ``aware+value``: the aware market and value placement (``[placement] rule = "value"``; its
   iteration with the fewest violations and, among those, the highest net benefit).

Scenarios 1 and 3 are iteration 0 of the runs of 2 and 4 (the same clearing and power flow,
not run twice). :func:`compare` returns one row per scenario with :data:`COLUMNS`;
:func:`write_comparison` writes it as ``comparison.csv`` into a results folder.

Columns (money in the case currency, over the run):

* ``violations``: the AC power flow's violations (counting rule of MODEL.md);
* ``welfare_realised``: realised welfare (without the batteries' value of stored energy);
* ``net_benefit``: realised welfare minus scenario 1's, minus the annuity of the placed units
  prorated to the run (scenario 3's is the welfare cost of respecting the grid);
* ``curtailed_kwh``: available PV energy minus the PV energy dispatched [kWh];
* ``price_spread``: max − min over agents and steps of the agents' marginal price
  (``price``: community price plus voltage and congestion components) [currency/kWh], without
  the components of unmet rows (their dual is the slack penalty, a modelling device, not a
  price: :func:`market_price_spread`);
* ``unmet_rows``: network rows whose slack stays > 0 in the aware market's final clearing
  (limits no market action could meet; 0 for the blind market);
* ``battery_units``: units placed; ``linearisation_error_pu``: the aware market's largest
  max |V_AC − V_linear| [pu] (NaN for the blind market); ``runtime_s``: wall time of the
  scenario (of iteration 0 for scenarios 1 and 3, of the whole run for 2 and 4) [s].
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from gridmarket import contract
from gridmarket.case.model import Case
from gridmarket.enums import AgentKind, NetworkMode, PlacementRule
from gridmarket.market import MarketResult
from gridmarket.market.network import price_components
from gridmarket.study import rules
from gridmarket.study.loop import Iteration, StudyResult, run_study

__all__ = ["COLUMNS", "COMPARISON_FILE", "SCENARIOS", "compare", "market_price_spread", "unmet_rows",
           "write_comparison"]

COMPARISON_FILE = "comparison.csv"
SCENARIOS = ("blind", "blind+placement", "aware", "aware+value")
COLUMNS = ("scenario", "violations", "welfare_realised", "net_benefit", "curtailed_kwh", "price_spread",
           "battery_units", "linearisation_error_pu", "unmet_rows", "runtime_s")
#: a row whose slack exceeds this is unmet [row units]
UNMET_TOL = 1e-9


def _scenario_case(case: Case, network: NetworkMode, rule: PlacementRule) -> Case:
    return replace(case, market=replace(case.market, network=network), placement=replace(case.placement, rule=rule))


def curtailed_kwh(it: Iteration) -> float:
    """Available PV energy minus the PV energy the market dispatched over the run [kWh] (NaN
    when the iteration kept no market result)."""
    if it.market is None:
        return math.nan
    case = it.case
    prod = np.array([a.kind is AgentKind.PRODUCER for a in case.agents])
    if not prod.any():
        return 0.0
    available = float(np.asarray(case.profile_kw, dtype=float)[:, prod].sum()) * case.time.step_hours
    produced = float(-np.asarray(it.market.p_kwh, dtype=float)[:, prod].sum())
    return available - produced


def market_price_spread(market: MarketResult, step_hours: float, *, tol: float = UNMET_TOL) -> float:
    """max − min over the market agents and steps of ``price_energy + price_voltage +
    price_congestion`` [currency/kWh], leaving out the components of the rows whose slack exceeds
    ``tol``: an unmet row is priced at the slack penalty (``[market] network_penalty``), which
    would otherwise set the spread (NaN: no market agent)."""
    energy = np.asarray(market.price_energy, dtype=float)
    price = energy + np.asarray(market.price_voltage, dtype=float) + np.asarray(market.price_congestion, dtype=float)
    nc = market.network_rows
    if nc is not None:
        unmet = np.asarray(market.network_slack, dtype=float) > tol
        if unmet.any():
            volt, cong = price_components(nc, np.where(unmet, market.network_duals, 0.0), energy.shape[0], step_hours)
            price = price - volt - cong
    price = price[np.isfinite(price)]
    return float(price.max() - price.min()) if price.size else math.nan


def unmet_rows(market: MarketResult, *, tol: float = UNMET_TOL) -> int:
    """Network rows of ``market`` whose slack exceeds ``tol`` (0 without rows)."""
    return int(np.count_nonzero(np.asarray(market.network_slack, dtype=float) > tol))


def price_spread(it: Iteration) -> float:
    """:func:`market_price_spread` of the iteration's market (NaN: none kept)."""
    if it.market is None:
        return math.nan
    return market_price_spread(it.market, it.case.time.step_hours)


def _row(name: str, it: Iteration, base_realised: float, runtime: float) -> dict[str, object]:
    lin = math.nan if it.aware is None else float(it.aware.linearisation_error_pu)
    return {"scenario": name, "violations": int(it.counts["violations"]), "welfare_realised": it.welfare_realised,
            "net_benefit": (it.welfare_realised - base_realised) - it.battery_annuity,
            "curtailed_kwh": curtailed_kwh(it), "price_spread": price_spread(it), "battery_units": it.battery_units,
            "linearisation_error_pu": lin,
            "unmet_rows": 0 if it.market is None else unmet_rows(it.market), "runtime_s": runtime}


def _placed(res: StudyResult) -> Iteration:
    """The study's placement: its best iteration among those with placed units (by the study's
    own rule, :func:`gridmarket.study.rules.best_iteration`); iteration 0 when it placed none."""
    if len(res.iterations) == 1:
        return res.iterations[0]
    later = res.iterations[1:]
    return later[rules.best_iteration([it.score for it in later])]


def _valued(res: StudyResult) -> Iteration:
    """The value rule's result: the iteration with the fewest violations and, among those, the
    highest net benefit (realised welfare minus the placed units' annuity); the earliest on ties."""
    return res.iterations[rules.best_iteration([rules.net_score(it.score, it.battery_annuity)
                                                for it in res.iterations])]


def compare(case: Case, *, max_iterations: int | None = None) -> pd.DataFrame:
    """The four scenarios of the module docstring on ``case`` (its own ``[market].network`` and
    ``[placement].rule`` are overridden; every other key is kept), columns :data:`COLUMNS`.

    ``max_iterations`` overrides ``[placement].max_iterations`` of the placement runs.
    Runs in memory (a horizon longer than :data:`~gridmarket.study.loop.STREAM_STEPS` keeps no
    market results, so its curtailment and price spread would be NaN).
    """
    runs: dict[str, tuple[StudyResult, float]] = {}
    for key, network, rule in (("blind", NetworkMode.BLIND, PlacementRule.VIOLATIONS),
                               ("aware", NetworkMode.AWARE, PlacementRule.VALUE)):
        t0 = time.perf_counter()
        res = run_study(_scenario_case(case, network, rule), max_iterations=max_iterations, stream=False)
        runs[key] = (res, time.perf_counter() - t0)
    blind, t_blind = runs["blind"]
    aware, t_aware = runs["aware"]
    base = blind.iterations[0].welfare_realised
    rows = [
        _row(SCENARIOS[0], blind.iterations[0], base, blind.iterations[0].runtime_s),
        _row(SCENARIOS[1], _placed(blind), base, t_blind),
        _row(SCENARIOS[2], aware.iterations[0], base, aware.iterations[0].runtime_s),
        _row(SCENARIOS[3], _valued(aware), base, t_aware),
    ]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def write_comparison(case: Case, folder: Path | str, *, max_iterations: int | None = None) -> Path:
    """Run :func:`compare` and write ``comparison.csv`` into ``folder`` (a results folder)."""
    return contract.write_table(compare(case, max_iterations=max_iterations), folder, COMPARISON_FILE)
