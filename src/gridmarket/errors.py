"""Exception hierarchy: every error a user can cause is a :class:`GridmarketError`.

The CLI prints a ``GridmarketError`` as a few readable lines and exits with status 2;
anything else is a bug (status 1).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "GridmarketError",
    "CaseError",
    "Problem",
    "NetworkError",
    "PowerFlowError",
    "MarketError",
    "ResultsError",
]


class GridmarketError(Exception):
    """Base class of all errors caused by the input or the environment of a run."""


@dataclass(frozen=True)
class Problem:
    """One broken rule in a case folder.

    Attributes
    ----------
    file : str
        File inside the case folder (``case.toml``, ``agents.csv``, ``profiles.csv``, ...).
    where : str
        Row, key or column, e.g. ``"row 3 (Load053)"``, ``"[grid].import_price"``.
    message : str
        What is wrong, with the offending value and the rule, e.g. ``"a must be >= 0, got -2"``.
    """

    file: str
    where: str
    message: str

    def __str__(self) -> str:
        loc = f"{self.file}, {self.where}" if self.where else self.file
        return f"{loc}: {self.message}"


class CaseError(GridmarketError):
    """A case folder breaks one or more rules; all of them are listed in ``problems``."""

    def __init__(self, problems: list[Problem] | Problem, *, case: str = "") -> None:
        if isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        self.case = case
        head = f"case {case!r} has {len(self.problems)} problem(s)" if case else (
            f"{len(self.problems)} problem(s) in the case")
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in self.problems))


class NetworkError(GridmarketError):
    """The OpenDSS network cannot be compiled, or an element is missing or of the wrong type."""


class PowerFlowError(NetworkError):
    """A power flow did not converge; names the step (and iteration of the study loop)."""

    def __init__(self, message: str, *, step: int | None = None) -> None:
        self.step = step
        super().__init__(message)


class MarketError(GridmarketError):
    """The market QP is infeasible, unbounded or the solver failed; names step and group."""

    def __init__(self, message: str, *, step: int | None = None, group: str | None = None) -> None:
        self.step = step
        self.group = group
        super().__init__(message)


class ResultsError(GridmarketError):
    """The results folder cannot be written (exists without ``--overwrite``, not writable)."""
