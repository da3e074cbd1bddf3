"""Stop rules and the best-iteration rule of the placement loop (gridmarket.study.rules), on
hand-made sequences of iterations."""

from __future__ import annotations

import math

from gridmarket.study import rules
from gridmarket.study.rules import Score, best_iteration, stop_reason


def test_no_violations_stops_first() -> None:
    s = [Score(5, 10.0), Score(0, 9.0)]
    assert stop_reason(s, placement_changes=True, limit=10) == rules.NO_VIOLATIONS
    # even when placement could not change anything and the limit is reached
    assert stop_reason(s, placement_changes=False, limit=2) == rules.NO_VIOLATIONS


def test_violations_rising_above_the_best_stop_the_loop() -> None:
    s = [Score(10, 1.0), Score(4, 2.0), Score(6, 3.0)]
    assert stop_reason(s, placement_changes=True, limit=10) == "violations rose above the best iteration's (4)"
    assert stop_reason(s, placement_changes=True, limit=10, stop_when_worse=False) is None
    # equal to the best is not a rise
    assert stop_reason([Score(4, 1.0), Score(4, 0.5)], placement_changes=True, limit=10) is None


def test_ladder_exhausted_and_max_iterations() -> None:
    s = [Score(10, 1.0), Score(8, 2.0)]
    assert stop_reason(s, placement_changes=False, limit=10) == rules.LADDER_EXHAUSTED
    assert stop_reason(s, placement_changes=True, limit=2) == "reached max_iterations = 2"
    assert stop_reason(s, placement_changes=True, limit=3) is None
    assert stop_reason([], placement_changes=True, limit=1) is None


def test_best_is_fewest_violations_ties_by_higher_realised_welfare() -> None:
    s = [Score(7, 100.0, 100.0), Score(3, 90.0, 130.0), Score(3, 95.0, 120.0), Score(3, 95.0, 999.0)]
    # 1, 2, 3 tie on violations; 2 and 3 tie on realised welfare: the earlier one (2) wins,
    # although 3's reported (stored-energy) welfare is higher
    assert best_iteration(s) == 2
    assert best_iteration([Score(3, math.nan, 5.0), Score(3, math.nan, 6.0)]) == 1  # reported as fallback
    assert best_iteration([]) == 0
    assert best_iteration([Score(2, 1.0)]) == 0


def test_scores_of_iteration_rows() -> None:
    rows = [{"violations": 4, "welfare": 10.0, "welfare_realised": 8.0}, {"violations": 4, "welfare": 12.0}]
    s = rules.scores_of(rows)
    assert s[0] == Score(4, 8.0, 10.0) and math.isnan(s[1].welfare) and s[1].tie_welfare == 12.0
