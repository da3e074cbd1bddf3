"""Read a case folder (shared CASE_FORMAT.md) into an immutable :class:`~gridmarket.case.model.Case`.

Validation collects **every** problem before raising one :class:`~gridmarket.errors.CaseError`;
each problem names the file, the row or key, the value and the rule. Nothing is fixed
silently. Checks that need the network (does ``Load.X`` exist?) are done by
:func:`gridmarket.case.check.check_network`, once the OpenDSS circuit is compiled.
"""

from __future__ import annotations

import difflib
import math
import tomllib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from gridmarket.case.model import (
    Agent,
    BatterySpec,
    Case,
    GridPrices,
    MarketOptions,
    NetworkOptions,
    PlacementOptions,
    TimeOptions,
)
from gridmarket.case.schema import CaseToml
from gridmarket.enums import AgentKind, BatteryModel
from gridmarket.errors import CaseError, Problem

__all__ = ["AGENT_COLUMNS", "CaseWarning", "load_case", "ELEMENT_CLASSES"]

CASE_TOML = "case.toml"
AGENTS_CSV = "agents.csv"
PROFILES_CSV = "profiles.csv"


class CaseWarning(UserWarning):
    """Something in a case is suspicious but not wrong (e.g. an unused profile column)."""


@dataclass(frozen=True)
class _Column:
    """One column of ``agents.csv``: the schema as data (name, type, default, unit, meaning)."""

    name: str
    dtype: type
    required: bool
    default: Any
    unit: str
    description: str


#: The columns of agents.csv, in order. Validation and docs both read this table.
AGENT_COLUMNS: tuple[_Column, ...] = (
    _Column("name", str, True, None, "", "unique agent name"),
    _Column("kind", str, True, None, "", "consumer | producer | battery | passive"),
    _Column("community", str, True, "", "", "community name; empty only for passive agents"),
    _Column("element", str, True, None, "", "OpenDSS element (Class.Name) or bus:NAME for a new battery"),
    _Column("profile", str, False, "", "kW", "profiles.csv column: demand or available power"),
    _Column("scale", float, False, 1.0, "-", "multiplier on the profile"),
    _Column("a", float, False, 0.0, "currency/kWh²", "quadratic welfare coefficient, >= 0"),
    _Column("b", float, False, 0.0, "currency/kWh", "linear welfare coefficient"),
    _Column("c", float, False, 0.0, "currency", "constant welfare term (reported apart)"),
    _Column("flex", float, False, 0.0, "-", "consumer flexibility in [0, 1]"),
    _Column("units", float, False, 0, "SBU", "battery bank size in SBUs (battery rows)"),
    _Column("pf", float, False, math.nan, "-", "power factor when dispatched (lagging), (0, 1]"),
)
_COLUMN_NAMES = [c.name for c in AGENT_COLUMNS]

#: OpenDSS element classes each agent kind may drive (lower case).
ELEMENT_CLASSES: Mapping[AgentKind, tuple[str, ...]] = {
    AgentKind.CONSUMER: ("load",),
    AgentKind.PRODUCER: ("pvsystem", "generator"),
    AgentKind.BATTERY: ("storage", "bus"),
    AgentKind.PASSIVE: ("load", "pvsystem", "generator"),
}


def _suggest(word: str, choices: list[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _row(i: int, name: object = None) -> str:
    # Row numbers count the header as row 1, as a spreadsheet shows them.
    label = f"row {i + 2}"
    return f"{label} ({name})" if isinstance(name, str) and name else label


# --------------------------------------------------------------------------- case.toml


def _read_toml(root: Path, problems: list[Problem]) -> CaseToml | None:
    path = root / CASE_TOML
    if not path.is_file():
        problems.append(Problem(CASE_TOML, "", f"file not found in {root}"))
        return None
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        problems.append(Problem(CASE_TOML, "", f"malformed TOML: {exc}"))
        return None
    except UnicodeDecodeError as exc:
        problems.append(Problem(CASE_TOML, "", f"not UTF-8 text: {exc}"))
        return None
    try:
        return CaseToml.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, raw))
        return None


def _pydantic_problems(exc: ValidationError, raw: dict[str, Any]) -> list[Problem]:
    """Turn pydantic's errors into one Problem per key, with the value and a suggestion."""
    out: dict[str, Problem] = {}
    for err in exc.errors():
        loc = [str(x) for x in err["loc"]]
        # unions report one error per member type: keep the first per key
        loc = [x for x in loc if not (x in {"str", "float", "int", "list[tuple[str,str]]", "list[str]"}
                                      or x.startswith(("literal[", "list[", "tuple[", "function-")))]
        key = f"[{loc[0]}]" + "".join(f".{x}" for x in loc[1:2]) if loc else "(top)"
        if len(loc) > 2:
            key += "".join(f"[{x}]" for x in loc[2:])
        if key in out:
            continue
        kind = err["type"]
        if kind == "extra_forbidden":
            section = loc[0] if len(loc) > 1 else None
            if section is None:
                valid = list(CaseToml.model_fields)
                what = f"[{loc[0]}]"
                msg = f"unknown section {what}{_suggest(loc[0], valid)}"
                key = "(top)"
            else:
                sub = CaseToml.model_fields[section].annotation
                valid = list(getattr(sub, "model_fields", {}))
                msg = f"unknown key {loc[-1]!r}{_suggest(loc[-1], valid)}; valid keys: {', '.join(valid)}"
        elif kind == "missing":
            msg = "required key is missing"
        else:
            msg = f"{err['msg'].lower()}, got {err.get('input')!r}"
        out[key] = Problem(CASE_TOML, key, msg)
    return list(out.values())


# --------------------------------------------------------------------------- agents.csv


def _read_csv(root: Path, name: str, problems: list[Problem]) -> pd.DataFrame | None:
    path = root / name
    if not path.is_file():
        problems.append(Problem(name, "", f"file not found in {root}"))
        return None
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        problems.append(Problem(name, "", f"cannot be read as CSV: {str(exc).strip()}"))
        return None
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _parse_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _read_agents(df: pd.DataFrame, problems: list[Problem]) -> list[Agent]:
    f = AGENTS_CSV
    cols = list(df.columns)
    for c in cols:
        if c not in _COLUMN_NAMES:
            problems.append(Problem(f, f"column {c!r}", f"unknown column{_suggest(c, _COLUMN_NAMES)};"
                                    f" valid columns: {', '.join(_COLUMN_NAMES)}"))
    dup_cols = {c for c in cols if cols.count(c) > 1}
    for c in sorted(dup_cols):
        problems.append(Problem(f, f"column {c!r}", "column appears more than once"))
    missing = [c.name for c in AGENT_COLUMNS if c.required and c.name not in cols]
    for c in missing:
        problems.append(Problem(f, f"column {c!r}", "required column is missing"))
    if missing or dup_cols:
        return []
    if df.empty:
        problems.append(Problem(f, "", "has no agents"))
        return []

    agents: list[Agent] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(df.to_dict("records")):
        name = row["name"].strip()
        where = _row(i, name)
        ok = True
        if not name:
            problems.append(Problem(f, _row(i), "name is empty"))
            ok = False
        elif name in seen:
            problems.append(Problem(f, where, f"duplicate agent name {name!r} (first on {_row(seen[name])})"))
            ok = False
        else:
            seen[name] = i
        kind_text = row["kind"].strip().lower()
        try:
            kind = AgentKind(kind_text)
        except ValueError:
            valid = [k.value for k in AgentKind]
            problems.append(Problem(f, where, f"unknown kind {row['kind']!r}{_suggest(kind_text, valid)};"
                                    f" valid kinds: {', '.join(valid)}"))
            continue
        community = row["community"].strip() or None
        if kind is AgentKind.PASSIVE and community is not None:
            problems.append(Problem(f, where, f"passive agent has community {community!r}; passive agents"
                                    " take no part in the market: leave community empty or change kind"))
            ok = False
        if kind is not AgentKind.PASSIVE and community is None:
            problems.append(Problem(f, where, f"{kind.value} has no community; only passive agents may"
                                    " have an empty community"))
            ok = False
        element = row["element"].strip()
        ok &= _check_element(element, kind, where, problems)
        profile = row.get("profile", "").strip() or None
        if kind is AgentKind.BATTERY and profile is not None:
            problems.append(Problem(f, where, f"battery has profile {profile!r}; batteries take no profile"))
            ok = False
        if kind is not AgentKind.BATTERY and profile is None:
            problems.append(Problem(f, where, f"{kind.value} needs a profile (a profiles.csv column)"))
            ok = False
        nums: dict[str, float] = {}
        for col in AGENT_COLUMNS:
            if col.dtype is not float:
                continue
            text = row.get(col.name, "").strip()
            if text == "":
                nums[col.name] = col.default
                continue
            val = _parse_float(text)
            if val is None or (not math.isfinite(val)):
                problems.append(Problem(f, f"{where}, column {col.name!r}", f"must be a finite number, got {text!r}"))
                ok = False
                continue
            nums[col.name] = val
        ok &= _check_numbers(nums, kind, f"{where}", problems)
        if not ok:
            continue
        pf = nums["pf"]
        agents.append(Agent(
            name=name, kind=kind, community=community, element=element, profile=profile,
            scale=nums["scale"], a=nums["a"], b=nums["b"], c=nums["c"], flex=nums["flex"],
            units=int(nums["units"]), pf=None if math.isnan(pf) else pf,
        ))
    return agents


def _check_element(element: str, kind: AgentKind, where: str, problems: list[Problem]) -> bool:
    f = AGENTS_CSV
    allowed = ELEMENT_CLASSES[kind]
    if element.lower().startswith("bus:"):
        if kind is not AgentKind.BATTERY:
            problems.append(Problem(f, where, f"element {element!r}: bus:NAME is only for batteries the tool"
                                    f" creates; a {kind.value} needs one of {', '.join(allowed)}"))
            return False
        if not element[4:].strip():
            problems.append(Problem(f, where, f"element {element!r} names no bus"))
            return False
        return True
    cls, dot, name = element.partition(".")
    if not dot or not cls or not name:
        problems.append(Problem(f, where, f"element {element!r} is not of the form Class.Name"
                                " (e.g. Load.Load053) or bus:NAME"))
        return False
    if cls.lower() not in allowed:
        shown = ", ".join(c if c == "bus" else c.capitalize() if c != "pvsystem" else "PVSystem" for c in allowed)
        problems.append(Problem(f, where, f"element {element!r} is a {cls}, but a {kind.value} drives"
                                f" one of: {shown}"))
        return False
    return True


def _check_numbers(nums: dict[str, float], kind: AgentKind, where: str, problems: list[Problem]) -> bool:
    f = AGENTS_CSV
    before = len(problems)
    if "a" in nums and nums["a"] < 0:
        problems.append(Problem(f, f"{where}, column 'a'", f"must be >= 0 (concave welfare), got {nums['a']:g}"))
    if "scale" in nums and nums["scale"] < 0:
        problems.append(Problem(f, f"{where}, column 'scale'", f"must be >= 0, got {nums['scale']:g}"))
    if "flex" in nums and not 0 <= nums["flex"] <= 1:
        problems.append(Problem(f, f"{where}, column 'flex'", f"must be in [0, 1], got {nums['flex']:g}"))
    pf = nums.get("pf", math.nan)
    if not math.isnan(pf) and not 0 < pf <= 1:
        problems.append(Problem(f, f"{where}, column 'pf'", f"must be in (0, 1], got {pf:g}"))
    units = nums.get("units", 0)
    if kind is AgentKind.BATTERY:
        if units < 1 or units != int(units):
            problems.append(Problem(f, f"{where}, column 'units'",
                                    f"a battery needs a whole number of SBUs >= 1, got {units:g}"))
    elif units not in (0, 0.0):
        problems.append(Problem(f, f"{where}, column 'units'", f"only batteries have units, got {units:g}"))
    return len(problems) == before


# --------------------------------------------------------------------------- profiles.csv


def _read_profiles(df: pd.DataFrame, steps: int | None, step_hours: float | None,
                   start: pd.Timestamp | None, problems: list[Problem]) -> pd.DataFrame | None:
    f = PROFILES_CSV
    if df.shape[1] == 0:
        problems.append(Problem(f, "", "has no columns"))
        return None
    first = df.columns[0]
    if first not in ("time", "step"):
        problems.append(Problem(f, f"column {first!r}", "the first column must be 'time' (ISO timestamps)"
                                " or 'step' (0..steps-1)"))
        return None
    cols = list(df.columns[1:])
    for c in sorted({c for c in cols if cols.count(c) > 1}):
        problems.append(Problem(f, f"column {c!r}", "column appears more than once"))
    if steps is not None and len(df) != steps:
        problems.append(Problem(f, "", f"has {len(df)} rows, but [time].steps in case.toml is {steps}"))
    ok = True
    if first == "time":
        try:
            times = pd.to_datetime(df["time"], format="ISO8601")
        except (ValueError, TypeError) as exc:
            problems.append(Problem(f, "column 'time'", f"not ISO timestamps: {exc}"))
            ok = False
        else:
            dups = times[times.duplicated()]
            if len(dups):
                i = int(dups.index[0])
                problems.append(Problem(f, _row(i), f"duplicated timestamp {df['time'].iloc[i]!r}"))
                ok = False
            diffs = times.diff().iloc[1:]
            bad = diffs[diffs <= pd.Timedelta(0)]
            if len(bad) and not len(dups):
                i = int(bad.index[0])
                problems.append(Problem(f, _row(i), f"timestamp {df['time'].iloc[i]!r} is not after the"
                                        f" one before ({df['time'].iloc[i - 1]!r}): times must increase"))
                ok = False
            elif step_hours is not None and len(diffs) and ok:
                want = pd.Timedelta(hours=step_hours)
                off = diffs[diffs != want]
                if len(off):
                    i = int(off.index[0])
                    problems.append(Problem(f, _row(i), f"timestamp {df['time'].iloc[i]!r} is"
                                            f" {diffs.loc[i]} after the one before; [time].step_hours"
                                            f" = {step_hours:g} h"))
                    ok = False
            if start is not None and len(times) and times.iloc[0] != start:
                problems.append(Problem(f, _row(0), f"first time {df['time'].iloc[0]!r} differs from"
                                        f" [time].start = {start.isoformat()}"))
                ok = False
    else:
        try:
            step = pd.to_numeric(df["step"])
        except (ValueError, TypeError):
            step = None
        if step is None or not np.array_equal(step.to_numpy(), np.arange(len(df))):
            problems.append(Problem(f, "column 'step'", "must count 0, 1, 2, ... one per row"))
            ok = False
    values = {}
    for c in cols:
        num = pd.to_numeric(df[c].str.strip(), errors="coerce")
        bad = num.isna() | ~np.isfinite(num.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            n = int(bad.sum())
            problems.append(Problem(f, f"{_row(i)}, column {c!r}",
                                    f"must be a finite number, got {df[c].iloc[i]!r}"
                                    + (f" ({n} such values in the column)" if n > 1 else "")))
            ok = False
        values[c] = num.to_numpy(dtype=float)
    if not ok:
        return None
    return pd.DataFrame(values)


# --------------------------------------------------------------------------- the case


def load_case(path: str | Path) -> Case:
    """Read and validate a case folder.

    Parameters
    ----------
    path : str or Path
        The case folder (holding ``case.toml``, ``agents.csv``, ``profiles.csv``), or the
        ``case.toml`` file itself.

    Returns
    -------
    Case
        The validated, immutable case.

    Raises
    ------
    CaseError
        With every problem found, each naming the file, row or key, the value and the rule.
    """
    root = Path(path).expanduser().resolve()
    if root.is_file() and root.name == CASE_TOML:
        root = root.parent
    if not root.is_dir():
        raise CaseError(Problem(str(path), "", "case folder not found"))
    problems: list[Problem] = []
    cfg = _read_toml(root, problems)
    agents_df = _read_csv(root, AGENTS_CSV, problems)
    profiles_df = _read_csv(root, PROFILES_CSV, problems)

    steps = cfg.time.steps if cfg else None
    step_hours = cfg.time.step_hours if cfg else None
    start = None
    if cfg is not None:
        if cfg.time.step_hours <= 0:
            problems.append(Problem(CASE_TOML, "[time].step_hours", f"must be > 0 h, got {cfg.time.step_hours:g}"))
            step_hours = None
        if cfg.time.start is not None:
            try:
                start = pd.Timestamp(cfg.time.start)
            except ValueError:
                problems.append(Problem(CASE_TOML, "[time].start", f"not an ISO timestamp, got {cfg.time.start!r}"))
        master = (root / cfg.network.master)
        if not master.is_file():
            problems.append(Problem(CASE_TOML, "[network].master", f"file not found: {master}"))
        if cfg.network.vmin_pu >= cfg.network.vmax_pu:
            problems.append(Problem(CASE_TOML, "[network].vmin_pu", f"must be below vmax_pu ="
                                    f" {cfg.network.vmax_pu:g}, got {cfg.network.vmin_pu:g}"))
        if cfg.network.vmin_pu <= 0:
            problems.append(Problem(CASE_TOML, "[network].vmin_pu", f"must be > 0 pu, got {cfg.network.vmin_pu:g}"))
        b = cfg.battery
        if b.soc_min >= b.soc_max:
            problems.append(Problem(CASE_TOML, "[battery].soc_min", f"must be below soc_max = {b.soc_max:g},"
                                    f" got {b.soc_min:g}"))
        elif not b.soc_min <= b.soc_init <= b.soc_max:
            problems.append(Problem(CASE_TOML, "[battery].soc_init", f"must be within [soc_min, soc_max] ="
                                    f" [{b.soc_min:g}, {b.soc_max:g}], got {b.soc_init:g}"))
        lad = cfg.placement.ladder
        if not lad:
            problems.append(Problem(CASE_TOML, "[placement].ladder", "must list at least one bank size"))
        elif any(x < 1 for x in lad) or any(y <= x for x, y in zip(lad, lad[1:], strict=False)):
            problems.append(Problem(CASE_TOML, "[placement].ladder", f"must be increasing whole numbers of"
                                    f" SBUs >= 1, got {lad}"))
        if cfg.market.horizon > cfg.time.steps:
            problems.append(Problem(CASE_TOML, "[market].horizon", f"must be <= [time].steps ="
                                    f" {cfg.time.steps}, got {cfg.market.horizon}"))

    agents = _read_agents(agents_df, problems) if agents_df is not None else []
    profiles = (_read_profiles(profiles_df, steps, step_hours, start, problems)
                if profiles_df is not None else None)

    # cross-file rules
    profile_kw = None
    extra: tuple[str, ...] = ()
    import_price = export_price = None
    if profiles is not None:
        names = list(profiles.columns)
        used: set[str] = set()
        for i, ag in enumerate(agents):
            if ag.profile is None:
                continue
            if ag.profile not in profiles.columns:
                problems.append(Problem(AGENTS_CSV, _row(_index_of(agents_df, ag.name), ag.name),
                                        f"profile {ag.profile!r} is not a column of profiles.csv"
                                        f"{_suggest(ag.profile, names)}"))
                continue
            used.add(ag.profile)
            col = profiles[ag.profile].to_numpy()
            if (col < 0).any():
                j = int(np.flatnonzero(col < 0)[0])
                what = "demand" if ag.kind in (AgentKind.CONSUMER, AgentKind.PASSIVE) else "available power"
                problems.append(Problem(PROFILES_CSV, f"{_row(j)}, column {ag.profile!r}",
                                        f"negative {what} {col[j]:g} kW for agent {ag.name!r}; profiles are"
                                        " magnitudes (the sign comes from the agent's kind)"))
        if cfg is not None:
            import_price = _price(cfg.grid.import_price, "import_price", profiles, steps, problems, used)
            export_price = _price(cfg.grid.export_price, "export_price", profiles, steps, problems, used)
            if import_price is not None and export_price is not None:
                below = np.flatnonzero(import_price < export_price)
                if len(below):
                    j = int(below[0])
                    problems.append(Problem(CASE_TOML, "[grid].import_price",
                                            f"import price {import_price[j]:g} is below export price"
                                            f" {export_price[j]:g} at step {j} ({len(below)} step(s)); the grid"
                                            " would be an arbitrage"))
        extra = tuple(c for c in names if c not in used)
        if not problems:
            cols = [profiles[a.profile].to_numpy() * a.scale if a.profile else np.zeros(len(profiles))
                    for a in agents]
            profile_kw = np.column_stack(cols) if cols else np.zeros((len(profiles), 0))
            profile_kw.setflags(write=False)

    communities: list[str] = []
    for a in agents:
        if a.community is not None and a.community not in communities:
            communities.append(a.community)
    links: list[tuple[str, str]] = []
    if cfg is not None:
        if cfg.communities.links == "all":
            links = [(c, d) for k, c in enumerate(communities) for d in communities[k + 1:]]
        elif cfg.communities.links == "none":
            links = []
        else:
            for k, (c, d) in enumerate(cfg.communities.links):
                for x in (c, d):
                    if x not in communities:
                        problems.append(Problem(CASE_TOML, f"[communities].links[{k}]",
                                                f"unknown community {x!r}{_suggest(x, communities)};"
                                                f" communities in agents.csv: {', '.join(communities)}"))
                if c == d:
                    problems.append(Problem(CASE_TOML, f"[communities].links[{k}]",
                                            f"a community cannot link to itself ({c!r})"))
                if c not in communities or d not in communities or c == d:
                    continue
                pair = (c, d) if communities.index(c) < communities.index(d) else (d, c)
                if pair not in links:
                    links.append(pair)

    if problems:
        raise CaseError(problems, case=cfg.case.name if cfg else root.name)
    assert cfg is not None and profile_kw is not None and import_price is not None and export_price is not None
    if extra:
        warnings.warn(f"{PROFILES_CSV}: column(s) {', '.join(map(repr, extra))} used by no agent",
                      CaseWarning, stacklevel=2)
    import_price.setflags(write=False)
    export_price.setflags(write=False)
    return Case(
        name=cfg.case.name,
        currency=cfg.case.currency,
        root=root,
        network=NetworkOptions(master=(root / cfg.network.master).resolve(), vmin_pu=cfg.network.vmin_pu,
                               vmax_pu=cfg.network.vmax_pu,
                               monitored_buses=(cfg.network.monitored_buses
                                                if isinstance(cfg.network.monitored_buses, str)
                                                else tuple(b.lower() for b in cfg.network.monitored_buses))),
        time=TimeOptions(steps=cfg.time.steps, step_hours=cfg.time.step_hours, start=start),
        market=MarketOptions(horizon=cfg.market.horizon, battery_model=BatteryModel(cfg.market.battery_model),
                             trade_fee=cfg.market.trade_fee, tie_break=cfg.market.tie_break),
        grid=GridPrices(import_price=import_price, export_price=export_price),
        battery=BatterySpec(**cfg.battery.model_dump()),
        placement=PlacementOptions(ladder=tuple(cfg.placement.ladder),
                                   max_iterations=cfg.placement.max_iterations,
                                   stop_when_worse=cfg.placement.stop_when_worse),
        agents=tuple(agents),
        communities=tuple(communities),
        links=tuple(links),
        profile_kw=profile_kw,
        extra_profiles=extra,
    )


def _index_of(df: pd.DataFrame | None, name: str) -> int:
    if df is None:
        return 0
    hits = np.flatnonzero(df["name"].str.strip().to_numpy() == name)
    return int(hits[0]) if len(hits) else 0


def _price(value: float | str, key: str, profiles: pd.DataFrame, steps: int | None,
           problems: list[Problem], used: set[str]) -> np.ndarray | None:
    n = len(profiles)
    if isinstance(value, str):
        if value not in profiles.columns:
            problems.append(Problem(CASE_TOML, f"[grid].{key}", f"{value!r} is neither a number nor a column of"
                                    f" profiles.csv{_suggest(value, list(profiles.columns))}"))
            return None
        used.add(value)
        arr = profiles[value].to_numpy(dtype=float).copy()
    else:
        arr = np.full(n if steps is None else steps, float(value))
    if not np.isfinite(arr).all():
        problems.append(Problem(CASE_TOML, f"[grid].{key}", f"must be finite, got {value!r}"))
        return None
    return arr
