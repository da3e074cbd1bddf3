"""SWEEP.toml: the scenarios of a sweep (format in ``docs/sweep.md``).

A sweep file has an optional ``[sweep]`` table (``name``, ``report``), an optional ``[base]``
table of parameters applied to every scenario, a ``[parameters]`` table whose keys each list
the values to sweep (their cartesian product, the last key varying fastest) and/or an array of
``[[scenarios]]`` tables (one scenario each, optionally ``name = "..."``). Scenario parameters
are :data:`PARAMETERS` or any ``section.key`` of case.toml (shared CASE_FORMAT.md).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gridmarket.case.schema import CaseToml
from gridmarket.errors import GridmarketError

__all__ = ["ALIASES", "PARAMETERS", "Scenario", "SweepSpec", "canonical", "parse_sweep", "read_sweep"]

#: Parameters with a meaning of their own (the rest are case.toml keys), and what they do.
PARAMETERS: dict[str, str] = {
    "pv_scale": "multiplier [-] on every producer's scale AND on its PVSystem's Pmpp and kVA",
    "sbu_scale": "multiplier [-] on the Standard Battery Unit: [battery].unit_kw and unit_kwh",
    "communities": "community rule: 'transformer', 'branch', 'knn:<k>' or a CSV path (links become 'all')",
    "steps": "number of steps [-]: [time].steps, profiles.csv cut to its first rows",
}

#: Short names of case.toml keys.
ALIASES: dict[str, str] = {
    "import_price": "grid.import_price",
    "export_price": "grid.export_price",
    "ladder": "placement.ladder",
    "max_iterations": "placement.max_iterations",
    "battery_model": "market.battery_model",
    "horizon": "market.horizon",
    "trade_fee": "market.trade_fee",
    "unit_kw": "battery.unit_kw",
    "unit_kwh": "battery.unit_kwh",
    "vmin_pu": "network.vmin_pu",
    "vmax_pu": "network.vmax_pu",
    "source_pu": "network.source_pu",
    "monitored_buses": "network.monitored_buses",
}

#: Parameters whose single value is a list (always, or it may be).
_LIST_ONLY = {"placement.ladder"}
_MAY_BE_LIST = {"placement.ladder", "communities.links", "network.monitored_buses"}
_FORBIDDEN = {"network.master", "case.name"}
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_ID = 80


@dataclass(frozen=True)
class Scenario:
    """One scenario: a stable id (its folder name) and its parameters (aliases resolved)."""

    id: str
    index: int  #: position in the sweep file's order
    params: dict[str, Any] = field(default_factory=dict)  #: canonical name -> value

    def key(self) -> str:
        """JSON of the parameters, sorted: identifies the scenario's inputs."""
        return json.dumps(self.params, sort_keys=True, default=str)


@dataclass(frozen=True)
class SweepSpec:
    """A parsed SWEEP.toml."""

    name: str
    scenarios: tuple[Scenario, ...]
    swept: tuple[str, ...]  #: parameters that differ between scenarios, in file order
    report: bool = False  #: write report.html in every scenario's results folder
    source: str = ""  #: the file's text


def canonical(name: str) -> str:
    """The canonical name of a parameter (alias resolved), or raise naming the valid ones."""
    key = ALIASES.get(name, name)
    if key in PARAMETERS:
        return key
    sec, dot, sub = key.partition(".")
    if dot and sec in CaseToml.model_fields and key not in _FORBIDDEN:
        fields = getattr(CaseToml.model_fields[sec].annotation, "model_fields", {})
        if sub in fields:
            return key
        hint = difflib.get_close_matches(sub, list(fields), n=1)
        msg = (f"unknown sweep parameter {name!r}: [{sec}] has no key {sub!r}"
               + (f" (did you mean '{sec}.{hint[0]}'?)" if hint else "") + f"; keys: {', '.join(fields)}")
        raise GridmarketError(msg)
    if key in _FORBIDDEN:
        msg = f"sweep parameter {name!r} cannot be swept (it is set for each scenario)"
        raise GridmarketError(msg)
    valid = [*PARAMETERS, *ALIASES]
    hint = difflib.get_close_matches(name, valid, n=1)
    msg = (f"unknown sweep parameter {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
           + f"; use one of {', '.join(valid)} or a case.toml key 'section.key'")
    raise GridmarketError(msg)


def _value_text(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ".".join(_value_text(x) for x in v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _auto_id(params: Mapping[str, Any]) -> str:
    parts = [f"{k.rsplit('.', 1)[-1]}-{_value_text(v)}" for k, v in params.items()]
    return _SLUG.sub("_", "__".join(parts) or "base").strip("_") or "base"


def _bound(text: str, key: str) -> str:
    if len(text) <= _MAX_ID:
        return text
    digest = hashlib.sha1(key.encode()).hexdigest()[:8]
    return f"{text[:_MAX_ID - 9]}-{digest}"


def _check_value(name: str, value: Any, where: str) -> None:
    if name in _LIST_ONLY and not isinstance(value, list):
        msg = f"{where}: {name} takes a list, got {value!r}"
        raise GridmarketError(msg)
    if isinstance(value, dict) or (isinstance(value, list) and name not in _MAY_BE_LIST):
        msg = f"{where}: {name} takes one value, got {value!r}"
        raise GridmarketError(msg)


def _params(table: Mapping[str, Any], where: str, *, many: bool = False) -> dict[str, Any]:
    """Canonical names; ``many``: each entry is a list of values (``[parameters]``)."""
    out: dict[str, Any] = {}
    for raw, value in table.items():
        name = canonical(raw)
        if name in out:
            msg = f"{where}: parameter {raw!r} is given twice (as {name!r})"
            raise GridmarketError(msg)
        if many:
            if not isinstance(value, list) or not value:
                msg = f"{where}.{raw}: give a non-empty list of values, e.g. {raw} = [1.0, 2.0]"
                raise GridmarketError(msg)
            if name in _LIST_ONLY and not all(isinstance(v, list) for v in value):
                msg = f"{where}.{raw}: each value is a list; write e.g. {raw} = [[1, 3, 5], [2, 4]]"
                raise GridmarketError(msg)
            for v in value:
                _check_value(name, v, where)
        else:
            _check_value(name, value, where)
        out[name] = value
    return out


def _absolute_csv(params: dict[str, Any], base_dir: str | Path | None) -> dict[str, Any]:
    """A ``communities`` value naming a CSV file, made absolute against ``base_dir``."""
    rule = params.get("communities")
    if not isinstance(rule, str) or rule.strip().lower() in ("transformer", "branch") \
            or rule.strip().lower().startswith("knn:"):
        return params
    path = Path(rule).expanduser()
    if not path.is_absolute():
        path = Path(base_dir or Path.cwd()) / path
    return {**params, "communities": str(path.resolve())}


def parse_sweep(text: str, *, default_name: str = "sweep", base_dir: str | Path | None = None) -> SweepSpec:
    """Parse SWEEP.toml text (see the module docstring and ``docs/sweep.md``).

    ``base_dir``: folder that a relative community CSV path is relative to (the sweep file's
    folder; default the working directory). Such paths are made absolute, because the
    scenarios run in other processes.

    Raises
    ------
    GridmarketError
        Malformed TOML, unknown tables or parameters, no scenario, duplicate scenarios.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = f"SWEEP.toml is not valid TOML: {exc}"
        raise GridmarketError(msg) from exc
    unknown = [k for k in data if k not in ("sweep", "base", "parameters", "scenarios")]
    if unknown:
        msg = f"SWEEP.toml: unknown table(s) {unknown}; valid: [sweep], [base], [parameters], [[scenarios]]"
        raise GridmarketError(msg)
    head = data.get("sweep", {})
    bad = [k for k in head if k not in ("name", "report")]
    if bad:
        msg = f"SWEEP.toml [sweep]: unknown key(s) {bad}; valid: name, report"
        raise GridmarketError(msg)
    base = _params(data.get("base", {}), "[base]")
    axes = list(_params(data.get("parameters", {}), "[parameters]", many=True).items())
    raw_scenarios: list[tuple[str | None, dict[str, Any]]] = []
    if axes:
        for combo in itertools.product(*(v for _, v in axes)):
            raw_scenarios.append((None, {**base, **dict(zip((k for k, _ in axes), combo, strict=True))}))
    listed = data.get("scenarios", [])
    if not isinstance(listed, list):
        msg = "SWEEP.toml: scenarios must be an array of tables: [[scenarios]]"
        raise GridmarketError(msg)
    for i, tab in enumerate(listed):
        where = f"[[scenarios]] #{i + 1}"
        name = tab.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            msg = f"{where}: name must be a non-empty string, got {name!r}"
            raise GridmarketError(msg)
        own = _params({k: v for k, v in tab.items() if k != "name"}, where)
        raw_scenarios.append((name, {**base, **own}))
    if not raw_scenarios:
        msg = "SWEEP.toml defines no scenario: add a [parameters] table or [[scenarios]]"
        raise GridmarketError(msg)

    names: list[str] = []
    for _, params in raw_scenarios:
        for k in params:
            if k not in names:
                names.append(k)
    swept = tuple(k for k in names
                  if len({json.dumps(p.get(k), sort_keys=True, default=str) for _, p in raw_scenarios}) > 1)
    scenarios: list[Scenario] = []
    seen_ids: dict[str, int] = {}
    seen_keys: dict[str, int] = {}
    for i, (name, params) in enumerate(raw_scenarios):
        key = json.dumps(params, sort_keys=True, default=str)
        if key in seen_keys and name is None:
            msg = f"scenario #{i + 1} repeats scenario #{seen_keys[key] + 1} ({params})"
            raise GridmarketError(msg)
        seen_keys.setdefault(key, i)
        own = {k: params[k] for k in swept if k in params}
        slug = _SLUG.sub("_", name).strip("_") if name else ""
        sid = _bound(slug or _auto_id(own), key)
        if sid in seen_ids:
            if name is not None:
                msg = f"scenario name {name!r} is used twice (#{seen_ids[sid] + 1} and #{i + 1})"
                raise GridmarketError(msg)
            sid = _bound(f"{sid}-{hashlib.sha1(key.encode()).hexdigest()[:8]}", key)
        seen_ids[sid] = i
        scenarios.append(Scenario(id=sid, index=i, params=_absolute_csv(params, base_dir)))
    report = head.get("report", False)
    if not isinstance(report, bool):
        msg = f"[sweep].report must be true or false, got {report!r}"
        raise GridmarketError(msg)
    return SweepSpec(name=str(head.get("name", default_name)), scenarios=tuple(scenarios), swept=swept,
                     report=report, source=text)


def read_sweep(path: str | Path) -> SweepSpec:
    """Read and parse a SWEEP.toml file (see :func:`parse_sweep`)."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read sweep file {p}: {exc}"
        raise GridmarketError(msg) from exc
    try:
        return parse_sweep(text, default_name=p.stem, base_dir=p.resolve().parent)
    except GridmarketError as exc:
        msg = f"{p}: {exc}"
        raise GridmarketError(msg) from exc
