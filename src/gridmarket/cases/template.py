"""case.toml of a generated case: defaults < template TOML < dotted settings < arguments, validated
against the schema and rendered with every key explicit.

The template holds any case.toml section except ``[network].master`` plus ``[consumers]`` (``a``,
``b``, ``flex``, ``pf``) and ``[producers]`` (``a``, ``b``, ``kva_ratio``); an agent coefficient
may be a number or a ``[lo, hi]`` range spread over the households by the golden-ratio sequence of
their position (:func:`gridmarket.cases.profiles.spread`, see :func:`coefficient`).
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gridmarket.case.schema import CaseToml
from gridmarket.cases.ieee_eu_lv import CONSUMER_A, CONSUMER_B, CONSUMER_FLEX, KVA_PER_KWP, PV_A, PV_B
from gridmarket.cases.profiles import spread
from gridmarket.cases.writer import Key, Section, render_toml
from gridmarket.errors import GridmarketError

__all__ = ["AGENT_DEFAULTS", "AGENT_KEYS", "case_toml_text", "coefficient", "merge", "read_template",
           "settings_tree", "case_settings"]

#: Default agent coefficients (as the shipped default case): consumers a [currency/kWh²],
#: b [currency/kWh], flex [-]; producers a, b, and the inverter kVA per kWp.
AGENT_DEFAULTS: dict[str, dict[str, float]] = {
    "consumers": {"a": CONSUMER_A, "b": CONSUMER_B, "flex": CONSUMER_FLEX},
    "producers": {"a": PV_A, "b": PV_B, "kva_ratio": KVA_PER_KWP},
}
AGENT_KEYS = {"consumers": ("a", "b", "flex", "pf"), "producers": ("a", "b", "kva_ratio")}
_CASE_SECTIONS = tuple(CaseToml.model_fields)


def merge(dst: dict[str, Any], section: str, values: Mapping[str, Any]) -> None:
    dst.setdefault(section, {}).update(values)


def settings_tree(settings: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"grid.import_price": 0.7}`` -> ``{"grid": {"import_price": 0.7}}``, keys checked."""
    out: dict[str, dict[str, Any]] = {}
    valid = [*(s for s in _CASE_SECTIONS), *AGENT_KEYS]
    for key, value in settings.items():
        sec, dot, name = key.partition(".")
        if not dot or sec not in valid:
            hint = difflib.get_close_matches(sec, valid, n=1)
            msg = (f"setting {key!r} must be 'section.key' with a section of {', '.join(valid)}"
                   + (f" (did you mean {hint[0]!r}?)" if hint else ""))
            raise GridmarketError(msg)
        out.setdefault(sec, {})[name] = value
    return out


def read_template(path: Path) -> dict[str, dict[str, Any]]:
    p = Path(path).expanduser()
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        msg = f"cannot read template {p}: {exc}"
        raise GridmarketError(msg) from exc
    out: dict[str, dict[str, Any]] = {}
    valid = [*_CASE_SECTIONS, *AGENT_KEYS]
    for sec, values in data.items():
        if sec not in valid or not isinstance(values, dict):
            hint = difflib.get_close_matches(sec, valid, n=1)
            msg = (f"template {p}: unknown section [{sec}]" + (f" (did you mean [{hint[0]}]?)" if hint else "")
                   + f"; valid sections: {', '.join(valid)}")
            raise GridmarketError(msg)
        out[sec] = dict(values)
    return out


def case_toml_text(data: Mapping[str, Mapping[str, Any]], *, header: str = "",
                   comments: Mapping[str, str] | None = None, where: str = "case.toml") -> str:
    """Validate ``data`` against the case.toml schema and render it, every key explicit.

    Parameters
    ----------
    data : mapping
        Section -> key -> value (missing keys take the schema's defaults).
    header, comments : str, mapping
        Comment lines at the top, and per section.
    where : str
        Named in the error message.

    Raises
    ------
    GridmarketError
        Naming each key that breaks the schema.
    """
    try:
        model = CaseToml.model_validate({k: dict(v) for k, v in data.items()})
    except ValidationError as exc:
        problems = "; ".join(f"[{'.'.join(str(x) for x in e['loc'][:2])}]: {e['msg']} (got {e.get('input')!r})"
                             for e in exc.errors())
        msg = f"{where}: {problems}"
        raise GridmarketError(msg) from exc
    dumped = model.model_dump()
    sections = []
    for sec in _CASE_SECTIONS:
        keys = [Key(k, list(v) if isinstance(v, tuple) else v) for k, v in dumped[sec].items() if v is not None]
        if sec == "communities" and isinstance(dumped[sec]["links"], list):
            keys = [Key("links", [list(p) for p in dumped[sec]["links"]])]
        sections.append(Section(sec, keys, comment=(comments or {}).get(sec, "")))
    return render_toml(sections, header=header)


def coefficient(value: Any, k: int, offset: float, what: str) -> float:
    """A coefficient: a number, or a [lo, hi] range spread over households (k = 1, 2, ...)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(x, (int, float)) for x in value):
        return spread(k, float(value[0]), float(value[1]), offset=offset)
    msg = f"{what} must be a number or a [lo, hi] range, got {value!r}"
    raise GridmarketError(msg)


def case_settings(master: Path, *, template: Path | str | None, settings: Mapping[str, Any] | None,
                  import_price: float | None, export_price: float | None, steps: int | None,
                  step_hours: float | None, start: str | None, name: str | None, source_pu: float | None = None
                  ) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """case.toml sections, consumer and producer coefficients: defaults < template < settings <
    arguments."""
    tree: dict[str, dict[str, Any]] = {s: dict(v) for s, v in AGENT_DEFAULTS.items()}
    if template is not None:
        for sec, values in read_template(Path(template)).items():
            merge(tree, sec, values)
    for sec, values in settings_tree(settings or {}).items():
        merge(tree, sec, values)
    for sec in AGENT_KEYS:
        bad = [k for k in tree.get(sec, {}) if k not in AGENT_KEYS[sec]]
        if bad:
            msg = f"[{sec}] has unknown key(s) {bad}; valid keys: {', '.join(AGENT_KEYS[sec])}"
            raise GridmarketError(msg)
    if tree.get("network", {}).get("master") is not None:
        msg = "[network].master is set by new_case (the feeder is redirected); remove it from the template"
        raise GridmarketError(msg)
    if import_price is not None:
        merge(tree, "grid", {"import_price": float(import_price)})
    if export_price is not None:
        merge(tree, "grid", {"export_price": float(export_price)})
    time_sec = tree.setdefault("time", {})
    for key, value in (("steps", steps), ("step_hours", step_hours), ("start", start)):
        if value is not None:
            time_sec[key] = value
    time_sec.setdefault("steps", 24)
    time_sec.setdefault("step_hours", 1.0)
    try:
        n_steps, dt = int(time_sec["steps"]), float(time_sec["step_hours"])
    except (TypeError, ValueError):
        n_steps, dt = 0, 0.0
    if n_steps < 1 or not dt > 0:
        msg = f"steps must be >= 1 and step_hours > 0, got {time_sec['steps']!r} and {time_sec['step_hours']!r}"
        raise GridmarketError(msg)
    net = tree.setdefault("network", {})
    net["master"] = "network/Master.dss"
    net.setdefault("monitored_buses", "customers")
    if source_pu is not None:
        net["source_pu"] = float(source_pu)
    case_sec = tree.setdefault("case", {})
    case_sec.setdefault("name", master.parent.name if master.stem.lower() == "master" else master.stem)
    if name is not None:
        case_sec["name"] = name
    return tree, tree.pop("consumers"), tree.pop("producers")
