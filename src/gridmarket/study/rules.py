"""Stop rules and the best-iteration rule of the placement loop (shared MODEL.md, *Battery
placement*), as pure functions on the numbers of each iteration: no market, no OpenDSS.

* **Best iteration**: fewest violations; ties broken by the higher realised welfare (the
  study's welfare when realised welfare is unknown); further ties by the earlier iteration.
* **Stop** after an iteration when, in this order: it has no violations; its violations rose
  above the best iteration's (with ``stop_when_worse``); placement changes nothing (the ladder
  is exhausted at every violated bus); the iteration limit is reached.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Score", "best_iteration", "better", "net_score", "stop_reason",
           "NO_VIOLATIONS", "LADDER_EXHAUSTED", "rose_above", "max_iterations_reached"]

NO_VIOLATIONS = "no violations"
LADDER_EXHAUSTED = "ladder exhausted at every violated bus"


def rose_above(best_violations: int) -> str:
    """Stop reason when the violations rose above the best iteration's."""
    return f"violations rose above the best iteration's ({best_violations})"


def max_iterations_reached(limit: int) -> str:
    """Stop reason when ``limit`` iterations ran."""
    return f"reached max_iterations = {limit}"


@dataclass(frozen=True)
class Score:
    """What the rules compare of an iteration.

    Attributes
    ----------
    violations : int
        Violation count (MODEL.md: (bus, step), (line, step), (transformer, step) pairs and
        non-converged steps).
    welfare : float
        Realised welfare [currency] (NaN: unknown, then ``welfare_reported`` is compared).
    welfare_reported : float
        The study's welfare [currency], the fallback of the tie-break.
    """

    violations: int
    welfare: float = math.nan
    welfare_reported: float = math.nan

    @property
    def tie_welfare(self) -> float:
        w = self.welfare if not math.isnan(self.welfare) else self.welfare_reported
        return -math.inf if math.isnan(w) else w


def better(a: Score, b: Score) -> bool:
    """True when ``a`` beats ``b``: fewer violations, or as many and strictly higher welfare."""
    if a.violations != b.violations:
        return a.violations < b.violations
    return a.tie_welfare > b.tie_welfare


def net_score(score: Score, annuity: float) -> Score:
    """``score`` with its welfare net of the placed units' annuity over the run [currency]: the
    best iteration of value placement (shared MODEL.md, *Network-aware market*: units go where
    their value exceeds their annuity), where a unit that gained less than it costs loses the tie."""
    return Score(score.violations, score.welfare - annuity, score.welfare_reported - annuity)


def best_iteration(scores: Sequence[Score]) -> int:
    """Index of the best of ``scores`` (the earliest among equals); 0 for an empty sequence."""
    best = 0
    for k in range(1, len(scores)):
        if better(scores[k], scores[best]):
            best = k
    return best


def stop_reason(scores: Sequence[Score], *, placement_changes: bool, limit: int,
                stop_when_worse: bool = True) -> str | None:
    """Why the loop stops after the last of ``scores``, or None to go on.

    Parameters
    ----------
    scores : sequence of Score
        Every iteration so far, the last one just finished.
    placement_changes : bool
        Whether placement after the last iteration adds or grows a bank.
    limit : int
        ``max_iterations``.
    stop_when_worse : bool
        ``[placement].stop_when_worse``.
    """
    if not scores:
        return None
    last = scores[-1]
    if last.violations == 0:
        return NO_VIOLATIONS
    best = scores[best_iteration(scores)]
    if stop_when_worse and last.violations > best.violations:
        return rose_above(best.violations)
    if not placement_changes:
        return LADDER_EXHAUSTED
    if len(scores) >= limit:
        return max_iterations_reached(limit)
    return None


def scores_of(rows: Sequence[Mapping[str, float]]) -> list[Score]:
    """Scores from iteration-table rows (keys ``violations``, ``welfare_realised``, ``welfare``)."""
    return [Score(int(r["violations"]), float(r.get("welfare_realised", math.nan)),
                  float(r.get("welfare", math.nan))) for r in rows]
