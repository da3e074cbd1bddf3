"""Locate the shared data folder (``shared/data``) that the case builders read.

The data are not shipped with gridmarket (the Costa Rica feeder has no reuse licence). They
are looked for, in order:

1. the ``data_dir`` argument, when given;
2. the environment variable ``GRIDMARKET_SHARED_DATA``;
3. ``../shared/data`` and ``./shared/data`` relative to the working directory;
4. ``shared/data`` beside the source checkout (``<repo>/../shared/data``, editable installs).
"""

from __future__ import annotations

import os
from pathlib import Path

from gridmarket.errors import GridmarketError

__all__ = ["ENV_VAR", "find_shared_data"]

ENV_VAR = "GRIDMARKET_SHARED_DATA"


def _candidates() -> list[Path]:
    cwd = Path.cwd()
    repo = Path(__file__).resolve().parents[3]  # src/gridmarket/cases/shared.py -> repo root
    out = [cwd.parent / "shared" / "data", cwd / "shared" / "data", repo.parent / "shared" / "data"]
    seen: list[Path] = []
    for p in out:
        if p not in seen:
            seen.append(p)
    return seen


def find_shared_data(data_dir: Path | str | None = None, *, need: str = "") -> Path:
    """Return the shared data folder, checking that ``need`` (a sub-path) exists in it.

    Parameters
    ----------
    data_dir : path, optional
        Explicit folder; when given, no other place is searched.
    need : str
        A file or folder that must exist inside, e.g. ``"cr_mar/DSS/Master_MAR.dss"``.

    Returns
    -------
    pathlib.Path
        The folder, absolute.

    Raises
    ------
    GridmarketError
        When no candidate holds ``need``; the message lists every place looked at.
    """
    if data_dir is not None:
        places = [Path(data_dir)]
    elif os.environ.get(ENV_VAR):
        places = [Path(os.environ[ENV_VAR])]
    else:
        places = _candidates()
    for p in places:
        if (p / need).exists() if need else p.is_dir():
            return p.resolve()
    where = ", ".join(str(p / need) if need else str(p) for p in places)
    how = "" if data_dir is not None else (
        f" Pass data_dir=..., or set {ENV_VAR} to the folder that holds cr_mar/, ieee_eu_lv/ and profiles/.")
    msg = f"shared data not found: looked for {where}.{how}"
    raise GridmarketError(msg)
