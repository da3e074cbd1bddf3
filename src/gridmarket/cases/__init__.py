"""Case builders: the shipped default case and the Costa Rica study cases.

- :func:`default_case_path`: the IEEE European LV Test Feeder case shipped inside the package
  (built by ``scripts/build_default_case.py`` with :func:`gridmarket.cases.ieee_eu_lv.build_case`).
- :func:`gridmarket.cases.cr_mar.build_case`: Costa Rica "MAR" feeder cases 1 and 2, written at
  run time from the shared data folder (the feeder data may not be redistributed).
- :func:`gridmarket.cases.generic.new_case`: a case from any OpenDSS feeder (its loads become
  households with PV, grouped into communities by a rule).
- :func:`write_case_source`: write one of those by name, or from a feeder's ``.dss`` master
  (``gridmarket new-case``).
- :func:`write_case`: write any case folder atomically (shared CASE_FORMAT.md).

Parts of the generic builder: :mod:`~gridmarket.cases.communities` (community rules, public),
:mod:`~gridmarket.cases.feeder_profiles` (a feeder's loadshapes as step means),
:mod:`~gridmarket.cases.template` (case.toml from defaults, a template and settings).
:mod:`~gridmarket.cases.sanity` checks a case's base case (no-load and peak-load power flows)
and says what is worth a warning; :mod:`gridmarket.calibrate` fits the source voltage to meters.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from gridmarket.cases.shared import find_shared_data
from gridmarket.cases.writer import write_case
from gridmarket.errors import GridmarketError

__all__ = ["FEEDER", "SOURCES", "default_case_path", "find_shared_data", "source_kind", "write_case",
           "write_case_source"]

#: Case sources known to :func:`write_case_source`.
SOURCES: dict[str, str] = {
    "default": "copy of the shipped default case (IEEE European LV Test Feeder with PV)",
    "ieee_eu_lv": "the default case rebuilt from the shared data (same files)",
    "cr_mar": "Costa Rica MAR feeder, study case 1 or 2, built from the shared data",
    "<feeder>.dss": "any OpenDSS feeder's master file (gridmarket.cases.generic.new_case)",
}

_DEFAULT = "default_case"


def default_case_path() -> Path:
    """Folder of the default case shipped with gridmarket (``gridmarket/data/default_case``).

    Returns
    -------
    pathlib.Path
        A real folder on disk (the package must be installed unzipped, as pip does).

    Raises
    ------
    GridmarketError
        When the folder is missing from the installation.
    """
    root = resources.files("gridmarket").joinpath("data", _DEFAULT)
    path = Path(str(root))
    if not (path / "case.toml").is_file():
        msg = (f"the default case is missing from the installation (looked in {path}); "
               "reinstall gridmarket or rebuild it with scripts/build_default_case.py")
        raise GridmarketError(msg)
    return path


#: what :func:`source_kind` calls the path of an OpenDSS master
FEEDER = "feeder"


def source_kind(source: str | Path) -> str:
    """What :func:`write_case_source` makes of ``source``: a key of :data:`SOURCES` (spelled
    in any case, ``-`` for ``_``), :data:`FEEDER` for an OpenDSS master (a ``.dss`` path or any
    existing file), or ``""`` for neither."""
    text = str(source).strip()
    key = text.lower().replace("-", "_")
    if key in SOURCES:
        return key
    if text.lower().endswith(".dss") or Path(text).expanduser().is_file():
        return FEEDER
    return ""


def write_case_source(
    source: str | Path,
    out: Path,
    *,
    study_case: int = 1,
    data_dir: Path | str | None = None,
    overwrite: bool = False,
    options: Mapping[str, Any] | None = None,
) -> Path:
    """Write a case folder from a known source (see :data:`SOURCES`) to ``out``.

    Parameters
    ----------
    source : str or pathlib.Path
        ``"default"`` (copy the shipped default case), ``"ieee_eu_lv"`` (rebuild it from the
        shared data), ``"cr_mar"`` (Costa Rica case ``study_case``), or the path of an
        OpenDSS master (a ``.dss`` file, or any existing file) for
        :func:`gridmarket.cases.generic.new_case`.
    out : pathlib.Path
        Folder to create (atomically).
    study_case : int
        ``cr_mar`` only: 1 or 2.
    data_dir : path, optional
        Shared data folder (default: searched, see :func:`find_shared_data`).
    overwrite : bool
        Replace an existing non-empty folder.
    options : mapping, optional
        Keyword arguments of :func:`~gridmarket.cases.generic.new_case` (feeder sources only),
        e.g. ``{"pv_kwp": 4, "communities": "knn:6"}``.

    Returns
    -------
    pathlib.Path
        ``out``, absolute.
    """
    key = source_kind(source)
    if key == FEEDER:
        from gridmarket.cases.generic import new_case

        return new_case(Path(str(source).strip()), Path(out), overwrite=overwrite, **dict(options or {}))
    if options:
        msg = f"options {sorted(options)} apply only to a feeder (.dss) source, not to {source!r}"
        raise GridmarketError(msg)
    if key == "cr_mar":
        from gridmarket.cases.cr_mar import build_case as build_cr

        return build_cr(Path(out), case=study_case, data_dir=data_dir, overwrite=overwrite)
    if key == "ieee_eu_lv":
        from gridmarket.cases.ieee_eu_lv import build_case as build_ieee

        return build_ieee(Path(out), data_dir=data_dir, overwrite=overwrite)
    if key == "default":
        return _copy_tree(default_case_path(), Path(out), overwrite=overwrite)
    msg = f"unknown case source {source!r}; choose one of: " + ", ".join(
        f"{k} ({v})" for k, v in SOURCES.items())
    raise GridmarketError(msg)


def _copy_tree(src: Path, out: Path, *, overwrite: bool) -> Path:
    """Copy the folder ``src`` to ``out`` via a temporary sibling and one rename."""
    out = out.absolute()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        msg = f"cannot write case to {out}: it exists and is not an empty folder (use overwrite)"
        raise GridmarketError(msg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        shutil.copytree(src, tmp / "case")
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            old.rmdir()
            out.rename(old)
            (tmp / "case").rename(out)
            shutil.rmtree(old)
        else:
            (tmp / "case").rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
