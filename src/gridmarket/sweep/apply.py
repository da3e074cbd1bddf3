"""Write the case folder of one scenario: the base case with the scenario's parameters applied.

The scenario's folder is a complete case (shared CASE_FORMAT.md) that ``gridmarket run`` can
run on its own: ``case.toml`` with the changed keys, ``agents.csv`` and ``profiles.csv``
(copied, or changed by ``pv_scale``, ``communities`` and ``steps``), and ``network/Master.dss``,
which redirects the base case's master by absolute path and, for ``pv_scale``, re-rates the
producers' PVSystems with ``Edit`` lines. The base case is never modified.
"""

from __future__ import annotations

import csv
import functools
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gridmarket.case.model import BatterySpec
from gridmarket.cases.communities import assign_communities, nearest_household
from gridmarket.cases.template import case_toml_text
from gridmarket.cases.writer import fmt, write_case
from gridmarket.errors import GridmarketError
from gridmarket.network.inspect import FeederInfo, inspect_feeder

__all__ = ["base_master", "write_scenario_case"]

_CLASSES = {"load": "Load", "pvsystem": "PVSystem", "generator": "Generator", "storage": "Storage"}


def base_master(case_dir: Path) -> Path:
    """Absolute path of the OpenDSS master of the case in ``case_dir``."""
    data = _read_toml(Path(case_dir))
    master = data.get("network", {}).get("master")
    if not isinstance(master, str):
        msg = f"{case_dir / 'case.toml'}: [network].master is missing"
        raise GridmarketError(msg)
    return (Path(case_dir) / master).resolve()


def _read_toml(case_dir: Path) -> dict[str, Any]:
    path = case_dir / "case.toml"
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        msg = f"cannot read {path}: {exc}"
        raise GridmarketError(msg) from exc


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        msg = f"cannot read {path}: {exc}"
        raise GridmarketError(msg) from exc
    if not rows:
        msg = f"{path} is empty"
        raise GridmarketError(msg)
    return [c.strip() for c in rows[0]], rows[1:]


@functools.lru_cache(maxsize=4)
def _feeder(master: Path, mtime_ns: int) -> FeederInfo:
    """The inspected network of a case, once per worker process and file version."""
    del mtime_ns  # part of the cache key only
    return inspect_feeder(master)


def _element_key(element: str) -> str:
    cls, _, name = element.strip().partition(".")
    return f"{_CLASSES.get(cls.lower(), cls)}.{name.lower()}"


def write_scenario_case(case_dir: str | Path, params: Mapping[str, Any], out: str | Path, *,
                        name: str = "") -> Path:
    """Write the base case with ``params`` applied to ``out`` (atomically, replacing it).

    Parameters
    ----------
    case_dir : path
        The base case folder.
    params : mapping
        Canonical parameter -> value (:mod:`gridmarket.sweep.spec`): ``pv_scale`` [-],
        ``sbu_scale`` [-], ``communities`` (rule), ``steps`` [-], or a case.toml ``section.key``.
    out : path
        The scenario's case folder.
    name : str
        Appended to ``[case].name`` (``"<case>/<name>"``).

    Returns
    -------
    pathlib.Path
        ``out``, absolute.

    Raises
    ------
    GridmarketError
        A parameter value that cannot be applied (e.g. ``steps`` above the case's). Values of
        case.toml keys are checked against the schema here; the rest by
        :func:`gridmarket.case.load_case` when the scenario is loaded.
    """
    case_dir = Path(case_dir).expanduser().resolve()
    tree = {k: dict(v) if isinstance(v, dict) else v for k, v in _read_toml(case_dir).items()}
    master = base_master(case_dir)
    header, agents = _read_rows(case_dir / "agents.csv")
    p_header, p_rows = _read_rows(case_dir / "profiles.csv")
    col = {c: i for i, c in enumerate(header)}
    for needed in ("name", "kind", "community", "element"):
        if needed not in col:
            msg = f"{case_dir / 'agents.csv'} has no {needed!r} column"
            raise GridmarketError(msg)
    if "scale" not in col:
        header.append("scale")
        col["scale"] = len(header) - 1
        agents = [[*r, "1"] for r in agents]
    agents = [r + [""] * (len(header) - len(r)) for r in agents]
    edits: list[str] = []

    for key, value in params.items():
        if key == "pv_scale":
            edits += _scale_pv(agents, col, _number(value, "pv_scale"), master)
        elif key == "sbu_scale":
            f = _positive(value, "sbu_scale")
            bat = tree.setdefault("battery", {})
            sbu = BatterySpec()  # the schema's defaults, when the case leaves them out
            bat["unit_kw"] = float(bat.get("unit_kw", sbu.unit_kw)) * f
            bat["unit_kwh"] = float(bat.get("unit_kwh", sbu.unit_kwh)) * f
        elif key == "communities":
            _reassign(agents, col, value, master)
            links = tree.setdefault("communities", {})
            if "communities.links" not in params:
                links["links"] = "all"
        elif key == "steps":
            n = int(value)
            if n != value or not 1 <= n <= len(p_rows):
                msg = f"steps must be a whole number in [1, {len(p_rows)}] (the case's steps), got {value!r}"
                raise GridmarketError(msg)
            tree.setdefault("time", {})["steps"] = n
            p_rows = p_rows[:n]
        else:
            sec, _, sub = key.partition(".")
            tree.setdefault(sec, {})[sub] = value
    tree.setdefault("network", {})["master"] = "network/Master.dss"
    case_sec = tree.setdefault("case", {})
    if name:
        case_sec["name"] = f"{case_sec.get('name', 'case')}/{name}"
    toml = case_toml_text(tree, header=f"Scenario {name!r} of a gridmarket sweep over {case_dir}.",
                          where=f"scenario {name!r}")
    master_text = (f"! scenario {name!r}: the base case's network, redirected by absolute path\n"
                   f'Redirect "{master.as_posix()}"\n' + "".join(f"{e}\n" for e in edits))
    rows = [dict(zip(header, r, strict=True)) for r in agents]
    return _write(Path(out), toml, header, rows, p_header, p_rows, master_text)


def _write(out: Path, toml: str, header: list[str], rows: list[dict[str, str]], p_header: list[str],
           p_rows: list[list[str]], master_text: str) -> Path:
    return write_case(out, case_toml=toml, agents=rows, profiles_header=p_header, profiles_rows=p_rows,
                      network={"Master.dss": master_text}, overwrite=True)


def _number(value: Any, what: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        msg = f"{what} must be a number, got {value!r}"
        raise GridmarketError(msg) from None


def _positive(value: Any, what: str) -> float:
    f = _number(value, what)
    if not (math.isfinite(f) and f > 0):
        msg = f"{what} must be a number > 0, got {value!r}"
        raise GridmarketError(msg)
    return f


def _scale_pv(agents: list[list[str]], col: Mapping[str, int], f: float, master: Path) -> list[str]:
    """Scale producers' ``scale`` by ``f`` and return ``Edit`` lines re-rating their PVSystems."""
    if not (math.isfinite(f) and f >= 0):
        msg = f"pv_scale must be a number >= 0, got {f!r}"
        raise GridmarketError(msg)
    info = _feeder(master, master.stat().st_mtime_ns)
    pvs = {pv.name: pv for pv in info.pvsystems}
    edits = []
    for r in agents:
        if r[col["kind"]].strip().lower() != "producer":
            continue
        text = r[col["scale"]].strip()
        r[col["scale"]] = fmt(float(text or 1.0) * f)
        key = _element_key(r[col["element"]])
        if key.startswith("PVSystem.") and f > 0:
            pv = pvs.get(key.split(".", 1)[1])
            if pv is None:
                msg = f"producer {r[col['name']]!r}: {r[col['element']]} is not an enabled PVSystem of {master.name}"
                raise GridmarketError(msg)
            edits.append(f"Edit PVSystem.{pv.name} Pmpp={pv.pmpp_kw * f:.9g} kVA={pv.kva * f:.9g}")
    return edits


def _reassign(agents: list[list[str]], col: Mapping[str, int], rule: Any, master: Path) -> None:
    """New communities for the market agents by ``rule`` (consumers first, the rest follow)."""
    info = _feeder(master, master.stat().st_mtime_ns)
    kinds = [r[col["kind"]].strip().lower() for r in agents]
    homes: dict[str, str] = {}
    for r, kind in zip(agents, kinds, strict=True):
        if kind == "consumer":
            bus = info.element_bus.get(_element_key(r[col["element"]]))
            if bus is None:
                msg = f"consumer {r[col['name']]!r}: {r[col['element']]} is not in {master.name}"
                raise GridmarketError(msg)
            homes[r[col["name"]].strip()] = bus
    if not homes:
        msg = "the case has no consumer agent to group into communities"
        raise GridmarketError(msg)
    com = assign_communities(info, homes, rule if isinstance(rule, str) else str(rule))
    active = {n: b for n, b in homes.items() if com[n] is not None}
    for r, kind in zip(agents, kinds, strict=True):
        name = r[col["name"]].strip()
        if kind == "consumer":
            c = com[name]
            if c is None:
                r[col["kind"]] = "passive"
            r[col["community"]] = c or ""
            continue
        if kind not in ("producer", "battery"):
            continue
        element = r[col["element"]].strip()
        bus = (element[4:].split(".")[0].lower() if element.lower().startswith("bus:")
               else info.element_bus.get(_element_key(element)))
        if bus is None:
            msg = f"{kind} {name!r}: {element} is not in {master.name}"
            raise GridmarketError(msg)
        owner = nearest_household(info, bus, homes if kind == "producer" else active)
        if owner is not None and com[owner] is None and kind == "producer":
            r[col["kind"]] = "passive"
            r[col["community"]] = ""
            continue
        if owner is None or com[owner] is None:
            owner = nearest_household(info, bus, active)
        if owner is None:
            msg = f"{kind} {name!r} at bus {bus!r}: no household with a community is connected to it"
            raise GridmarketError(msg)
        r[col["community"]] = str(com[owner])
