"""Exception hierarchy: every error a user can cause is a :class:`GridmarketError`.

The CLI prints a ``GridmarketError`` as a few readable lines and exits with status 2;
anything else is a bug (status 1).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "GridmarketError",
    "GridmarketWarning",
    "CaseError",
    "Problem",
    "NetworkError",
    "PowerFlowError",
    "MarketError",
    "ResultsError",
    "in_iteration",
]


class GridmarketError(Exception):
    """Base class of all errors caused by the input or the environment of a run."""


class GridmarketWarning(UserWarning):
    """Base class of the warnings gridmarket gives a user (the CLI shows only these: the
    warnings of numpy, matplotlib and the other libraries stay hidden unless ``--debug``)."""


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
        n = len(self.problems)
        count = f"{n} problem" if n == 1 else f"{n} problems"
        head = f"case {case!r} has {count}" if case else f"the case has {count}"
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


def in_iteration(exc: GridmarketError, iteration: int) -> GridmarketError:
    """A copy of ``exc`` whose message names the iteration of the study loop it happened in.

    ``"step 3: market infeasible ..."`` becomes ``"iteration 1, step 3: market infeasible ..."``;
    a message that names its step elsewhere gets ``"iteration 1: "`` in front, and one that
    names no step but whose error knows it gets ``"iteration 1, step 3: "``. The copy keeps the
    type and the ``step``/``group`` attributes and gains ``iteration``; its cause is ``exc``.
    """
    text = str(exc)
    step = getattr(exc, "step", None)
    if text.startswith("step "):
        msg = f"iteration {iteration}, {text}"
    elif step is not None and f"step {step}" not in text:
        msg = f"iteration {iteration}, step {step}: {text}"
    else:
        msg = f"iteration {iteration}: {text}"
    new: GridmarketError
    if isinstance(exc, MarketError):
        new = type(exc)(msg, step=exc.step, group=exc.group)
    elif isinstance(exc, PowerFlowError):
        new = type(exc)(msg, step=exc.step)
    elif isinstance(exc, CaseError):
        new = CaseError(exc.problems, case=exc.case)  # names its file and row already
    else:
        try:
            new = type(exc)(msg)
        except TypeError:  # pragma: no cover - a subclass with another signature
            new = GridmarketError(msg)
    new.iteration = iteration  # type: ignore[attr-defined]
    new.__cause__ = exc
    return new
