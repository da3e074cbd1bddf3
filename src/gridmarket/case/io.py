"""Read a case folder (shared CASE_FORMAT.md) into an immutable :class:`~gridmarket.case.model.Case`.

Validation collects **every** problem before raising one :class:`~gridmarket.errors.CaseError`;
each problem names the file, the row (the line a text editor or spreadsheet shows; the
header is row 1) or key, the offending value and the rule. Nothing is fixed silently: a
short row, a duplicated column, ``steps = true`` or ``vmin_pu = "0.95"`` are errors. The only
leniencies are harmless encodings of the same text: a UTF-8 byte-order mark, CRLF line
ends, blank lines, spaces around CSV fields and the case of ``kind``.

Checks that need the network (does ``Load.X`` exist?) are done by
:func:`gridmarket.study.check_network`, once the OpenDSS circuit is compiled.
"""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import io
import math
import re
import tomllib
import warnings
from collections.abc import Mapping, Sequence
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
from gridmarket.case.schema import EXPECTED, CaseToml
from gridmarket.enums import AgentKind, BatteryModel, NetworkMode, PlacementRule
from gridmarket.errors import CaseError, GridmarketWarning, Problem

__all__ = ["AGENT_COLUMNS", "CaseWarning", "load_case", "ELEMENT_CLASSES"]

CASE_TOML = "case.toml"
AGENTS_CSV = "agents.csv"
PROFILES_CSV = "profiles.csv"


class CaseWarning(GridmarketWarning):
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
_AGENTS_HEADER = ",".join(_COLUMN_NAMES)

#: OpenDSS element classes each agent kind may drive (lower case).
ELEMENT_CLASSES: Mapping[AgentKind, tuple[str, ...]] = {
    AgentKind.CONSUMER: ("load",),
    AgentKind.PRODUCER: ("pvsystem", "generator"),
    AgentKind.BATTERY: ("storage", "bus"),
    AgentKind.PASSIVE: ("load", "pvsystem", "generator"),
}
_CLASS_SPELLING = {"load": "Load", "pvsystem": "PVSystem", "generator": "Generator", "storage": "Storage",
                   "bus": "bus:NAME"}
#: largest power of one agent [kW] (1 GW): beyond it a profile or scale is surely a unit mistake
MAX_KW = 1e6
#: largest money coefficient or price in size [currency/kWh, currency/kWh², currency]
MAX_MONEY = 1e9
#: largest battery bank [SBU]
MAX_UNITS = 1e6
#: element names the tool creates (``bus:NAME`` batteries) must be valid OpenDSS names
_NEW_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


def _suggest(word: str, choices: Sequence[str]) -> str:
    lower = {c.lower(): c for c in choices}
    match = difflib.get_close_matches(word.lower(), list(lower), n=1, cutoff=0.6)
    return f" (did you mean {lower[match[0]]!r}?)" if match else ""


def _row(line: int, name: object = None) -> str:
    """``row N (name)``: N is the file's line, so the header is row 1, as a spreadsheet shows."""
    label = f"row {line}"
    return f"{label} ({name})" if isinstance(name, str) and name else label


def _show(value: object) -> str:
    """A value as the user wrote it in TOML (true/false, not True/False)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date):
        return value.isoformat()
    return repr(value)


# --------------------------------------------------------------------------- files


def _read_text(root: Path, name: str, problems: list[Problem]) -> str | None:
    """The text of ``root/name`` (UTF-8, a byte-order mark allowed), or None with a problem."""
    path = root / name
    if path.is_dir():
        problems.append(Problem(name, "", f"is a folder, not a file: {path}"))
        return None
    if not path.is_file():
        problems.append(Problem(name, "", f"file not found in {root}"))
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        problems.append(Problem(name, "", f"cannot be read: {exc.strerror or exc}"))
        return None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        problems.append(Problem(name, "", "is UTF-16 text; save it as UTF-8"))
        return None
    if b"\x00" in data:
        line = data[:data.index(b"\x00")].count(b"\n") + 1
        problems.append(Problem(name, f"line {line}", "is not a text file (it holds NUL bytes);"
                                " save it as UTF-8 text"))
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        problems.append(Problem(name, f"line {line}", f"is not UTF-8 text (byte 0x{data[exc.start]:02x} cannot be"
                                " decoded); save the file as UTF-8"))
        return None


@dataclass
class _Table:
    """A CSV file as text cells: the header, the rows, and each row's line in the file."""

    header: list[str]
    rows: list[list[str]]
    lines: list[int]


def _parse_csv(text: str, name: str, header_hint: str, problems: list[Problem]) -> _Table | None:
    """Split CSV text into cells; refuse other separators, unnamed or repeated columns and rows
    whose field count differs from the header's."""
    if not text.strip():
        problems.append(Problem(name, "", f"is empty; its first line must be the header, e.g. {header_hint}"))
        return None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[list[str]] = []
    lines: list[int] = []
    start = 1
    try:
        for rec in reader:
            if rec and (len(rec) > 1 or rec[0].strip()):  # blank lines are skipped
                records.append([cell.strip() for cell in rec])
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as exc:
        problems.append(Problem(name, f"line {reader.line_num}", f"cannot be read as CSV: {exc}"))
        return None
    header = records[0]
    if len(header) == 1:
        for sep in (";", "\t", "|"):
            if sep in header[0]:
                problems.append(Problem(name, f"line {lines[0]}", f"fields are separated by {sep!r}; gridmarket"
                                        " reads comma-separated files (in a spreadsheet: save as"
                                        " 'CSV UTF-8 (comma delimited)')"))
                return None
    ok = True
    for k, col in enumerate(header):
        if not col:
            problems.append(Problem(name, f"column {k + 1}", "has no name in the header"))
            ok = False
    for col in sorted({c for c in header if c and header.count(c) > 1}):
        problems.append(Problem(name, f"column {col!r}", f"appears {header.count(col)} times in the header"))
        ok = False
    if not ok:
        return None
    bad = [(line, len(rec)) for rec, line in zip(records[1:], lines[1:], strict=True) if len(rec) != len(header)]
    if bad:
        line, n = bad[0]
        more = f"; {len(bad)} rows like this" if len(bad) > 1 else ""
        problems.append(Problem(name, _row(line), f"has {n} fields, but the header has {len(header)}"
                                f" (a missing or extra comma?){more}"))
        return None
    return _Table(header=header, rows=records[1:], lines=lines[1:])


def _parse_float(text: str) -> float | None:
    """A finite float, or None (``_`` digit separators and hexadecimal are refused)."""
    if "_" in text:
        return None
    try:
        val = float(text)
    except ValueError:
        return None
    return val if math.isfinite(val) else None


# --------------------------------------------------------------------------- case.toml


def _read_toml(root: Path, problems: list[Problem]) -> tuple[CaseToml | None, dict[str, Any]]:
    text = _read_text(root, CASE_TOML, problems)
    if text is None:
        return None, {}
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        hint = next((h for start, h in _TOML_HINTS if str(exc).startswith(start)), "")
        problems.append(Problem(CASE_TOML, f"line {m.group(1)}" if m else "", f"malformed TOML: {exc}{hint}"))
        return None, {}
    try:
        return CaseToml.model_validate(raw), raw
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, raw))
        return None, raw


#: what usually causes tomllib's messages
_TOML_HINTS = (
    ("Illegal character '\\n'", "; a quote left open?"),
    ("Invalid value", "; text must be in quotes, e.g. name = \"tiny\""),
    ("Cannot overwrite a value", "; a key given twice?"),
    ("Cannot declare", "; a section given twice?"),
    ("Expected '=' after a key", "; write key = value"),
)


def _section_model(section: str) -> Any:
    field = CaseToml.model_fields.get(section)
    return None if field is None else field.annotation


def _bounds(section: str, key: str) -> str | None:
    """The allowed range of a numeric key in words, e.g. ``in (0, 1]`` or ``> 0``."""
    model = _section_model(section)
    field = getattr(model, "model_fields", {}).get(key)
    if field is None:
        return None
    lo = hi = None
    for m in field.metadata:
        for attr, kind in (("gt", "("), ("ge", "[")):
            if getattr(m, attr, None) is not None:
                lo = (kind, getattr(m, attr))
        for attr, kind in (("lt", ")"), ("le", "]")):
            if getattr(m, attr, None) is not None:
                hi = (kind, getattr(m, attr))
    if lo and hi:
        return f"in {lo[0]}{lo[1]:g}, {hi[1]:g}{hi[0]}"
    if lo:
        return f"{'>' if lo[0] == '(' else '>='} {lo[1]:g}"
    if hi:
        return f"{'<' if hi[0] == ')' else '<='} {hi[1]:g}"
    return None


_TYPE_WORDS = {
    "int_type": "a whole number", "int_parsing": "a whole number", "int_from_float": "a whole number",
    "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
    "string_type": "text in quotes", "bool_type": "true or false", "list_type": "a list",
}


def _pydantic_problems(exc: ValidationError, raw: dict[str, Any]) -> list[Problem]:
    """Turn pydantic's errors into one Problem per key, with the value, the rule and a suggestion."""
    out: dict[str, Problem] = {}
    sections = list(CaseToml.model_fields)
    errors = exc.errors()
    non_finite = {tuple(map(str, e["loc"][:2])) for e in errors if e["type"] == "finite_number"}
    for err in errors:
        loc = [str(x) for x in err["loc"]]
        kind = err["type"]
        if len(loc) == 1:  # a whole section
            sec = loc[0]
            if kind == "extra_forbidden":
                where, msg = "(top)", f"unknown section [{sec}]{_suggest(sec, sections)}; valid sections:" \
                                      f" {', '.join(f'[{s}]' for s in sections)}"
            elif kind == "missing":
                where, msg = f"[{sec}]", "required section is missing"
            else:
                where, msg = f"[{sec}]", f"must be a section (a [{sec}] table), got {_show(err.get('input'))}"
            out.setdefault(where, Problem(CASE_TOML, where, msg))
            continue
        sec, key = loc[0], loc[1]
        where = f"[{sec}].{key}"
        if where in out:
            continue
        model = _section_model(sec)
        fields = getattr(model, "model_fields", {})
        value = raw.get(sec, {}).get(key) if isinstance(raw.get(sec), dict) else err.get("input")
        if kind == "extra_forbidden":
            valid = list(fields)
            msg = f"unknown key {key!r}{_suggest(key, valid)}; valid keys: {', '.join(valid)}"
        elif kind == "missing":
            desc = fields[key].description if key in fields else None
            msg = "required key is missing" + (f" ({desc})" if desc else "")
        elif (sec, key) in non_finite:
            msg = f"must be a finite number, got {_show(value)}"
        elif (sec, key) in EXPECTED:
            expected = EXPECTED[(sec, key)]
            hint = _suggest(value, re.findall(r'"([^"]+)"', expected)) if isinstance(value, str) else ""
            msg = f"must be {expected}, got {_show(value)}{hint}"
        elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            msg = f"must be {_bounds(sec, key)}, got {_show(value)}"
        elif kind in _TYPE_WORDS:
            msg = f"must be {_TYPE_WORDS[kind]}, got {_show(value)}"
        else:  # pragma: no cover - a pydantic rule this module has no words for
            text = str(err["msg"])
            msg = f"{text[:1].lower()}{text[1:]}, got {_show(value)}"
        out[where] = Problem(CASE_TOML, where, msg)
    return list(out.values())


def _start_time(value: str | dt.date | None, problems: list[Problem]) -> pd.Timestamp | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return pd.Timestamp(value)
    if isinstance(value, dt.date):
        return pd.Timestamp(dt.datetime.combine(value, dt.time()))
    try:
        return pd.Timestamp(dt.datetime.fromisoformat(value.strip()))
    except ValueError:
        problems.append(Problem(CASE_TOML, "[time].start", f"must be {EXPECTED[('time', 'start')]},"
                                f" got {value!r}"))
        return None


# --------------------------------------------------------------------------- agents.csv


def _read_agents(table: _Table, problems: list[Problem]) -> tuple[list[Agent], dict[str, int]]:
    """The agents of agents.csv, and the line of each agent's row."""
    f = AGENTS_CSV
    cols = table.header
    for c in cols:
        if c not in _COLUMN_NAMES:
            problems.append(Problem(f, f"column {c!r}", f"unknown column{_suggest(c, _COLUMN_NAMES)};"
                                    f" valid columns: {', '.join(_COLUMN_NAMES)}"))
    missing = [c.name for c in AGENT_COLUMNS if c.required and c.name not in cols]
    for c in missing:
        problems.append(Problem(f, f"column {c!r}", "required column is missing"))
    if missing:
        return [], {}
    if not table.rows:
        problems.append(Problem(f, "", "has no agents (only a header)"))
        return [], {}

    agents: list[Agent] = []
    seen: dict[str, int] = {}
    used: dict[str, tuple[int, str]] = {}  # element (lower case) -> line and name of its agent
    for line, cells in zip(table.lines, table.rows, strict=True):
        row = dict(zip(cols, cells, strict=True))
        name = row["name"]
        where = _row(line, name)
        ok = True
        if not name:
            problems.append(Problem(f, _row(line), "name is empty"))
            ok = False
        elif name in seen:
            problems.append(Problem(f, where, f"duplicate agent name {name!r} (first on row {seen[name]})"))
            ok = False
        else:
            seen[name] = line
        try:
            kind = AgentKind(row["kind"].lower())
        except ValueError:
            valid = [k.value for k in AgentKind]
            problems.append(Problem(f, where, f"unknown kind {row['kind']!r}{_suggest(row['kind'], valid)};"
                                    f" valid kinds: {', '.join(valid)}"))
            continue
        community = row["community"] or None
        if kind is AgentKind.PASSIVE and community is not None:
            problems.append(Problem(f, where, f"passive agent has community {community!r}; passive agents"
                                    " take no part in the market: leave community empty or change kind"))
            ok = False
        if kind is not AgentKind.PASSIVE and community is None:
            problems.append(Problem(f, where, f"{kind.value} has no community; only passive agents may"
                                    " have an empty community"))
            ok = False
        element = row["element"]
        element_ok = _check_element(element, kind, name, where, problems)
        ok &= element_ok
        key = element.strip().lower()
        if element_ok and not key.startswith("bus:"):  # OpenDSS names are case-insensitive
            if key in used:
                first_line, first_name = used[key]
                problems.append(Problem(f, f"{where}, column 'element'", f"element {element!r} is already driven"
                                        f" by agent {first_name!r} (row {first_line}); one element belongs to one"
                                        " agent: give each agent its own Load/PVSystem/Storage"))
                ok = False
            else:
                used[key] = (line, name)
        profile = row.get("profile") or None
        if kind is AgentKind.BATTERY and profile is not None:
            problems.append(Problem(f, where, f"battery has profile {profile!r}; batteries take no profile"
                                    " (leave the cell empty)"))
            ok = False
        if kind is not AgentKind.BATTERY and profile is None:
            problems.append(Problem(f, where, f"{kind.value} needs a profile (a profiles.csv column)"))
            ok = False
        nums: dict[str, float] = {}
        for col in AGENT_COLUMNS:
            if col.dtype is not float:
                continue
            text = row.get(col.name, "")
            if text == "":
                nums[col.name] = col.default
                continue
            val = _parse_float(text)
            if val is None:
                problems.append(Problem(f, f"{where}, column {col.name!r}", f"must be a finite number, got {text!r}"))
                ok = False
                continue
            nums[col.name] = val
        ok &= _check_numbers(nums, kind, element, where, problems)
        if not ok:
            continue
        pf = nums["pf"]
        agents.append(Agent(
            name=name, kind=kind, community=community, element=element, profile=profile,
            scale=nums["scale"], a=nums["a"], b=nums["b"], c=nums["c"], flex=nums["flex"],
            units=int(nums["units"]), pf=None if math.isnan(pf) else pf,
        ))
    return agents, seen


def _check_element(element: str, kind: AgentKind, name: str, where: str, problems: list[Problem]) -> bool:
    f = AGENTS_CSV
    allowed = ELEMENT_CLASSES[kind]
    shown = ", ".join(_CLASS_SPELLING[c] for c in allowed)
    if element.lower().startswith("bus:"):
        if kind is not AgentKind.BATTERY:
            problems.append(Problem(f, where, f"element {element!r}: bus:NAME is only for batteries the tool"
                                    f" creates; a {kind.value} drives one of: {shown}"))
            return False
        if not element[4:].strip():
            problems.append(Problem(f, where, f"element {element!r} names no bus (write bus:NAME)"))
            return False
        if name and not _NEW_NAME_RE.match(name):
            problems.append(Problem(f, where, f"name {name!r} becomes the name of the battery gridmarket creates"
                                    " in OpenDSS: use only letters, digits, '_' and '-'"))
            return False
        return True
    cls, dot, elem = element.partition(".")
    if not dot or not cls or not elem:
        problems.append(Problem(f, where, f"element {element!r} is not of the form Class.Name"
                                " (e.g. Load.Load053) or bus:NAME"))
        return False
    if cls.lower() not in allowed:
        problems.append(Problem(f, where, f"element {element!r} is a {cls}, but a {kind.value} drives"
                                f" one of: {shown}"))
        return False
    return True


def _check_numbers(nums: dict[str, float], kind: AgentKind, element: str, where: str,
                   problems: list[Problem]) -> bool:
    f = AGENTS_CSV
    before = len(problems)
    if "a" in nums and nums["a"] < 0:
        problems.append(Problem(f, f"{where}, column 'a'", f"must be >= 0 (concave welfare), got {nums['a']:g}"))
    for col in ("a", "b", "c"):
        if col in nums and abs(nums[col]) > MAX_MONEY:
            problems.append(Problem(f, f"{where}, column {col!r}", f"must be at most {MAX_MONEY:g} in size (a unit"
                                    f" mistake?), got {nums[col]:g}"))
    if "scale" in nums and nums["scale"] < 0:
        problems.append(Problem(f, f"{where}, column 'scale'", f"must be >= 0, got {nums['scale']:g}"))
    if "flex" in nums:
        if not 0 <= nums["flex"] <= 1:
            problems.append(Problem(f, f"{where}, column 'flex'", f"must be in [0, 1], got {nums['flex']:g}"))
        elif nums["flex"] != 0 and kind is not AgentKind.CONSUMER:
            problems.append(Problem(f, f"{where}, column 'flex'", f"only consumers are flexible; a {kind.value}"
                                    f" must leave it empty or 0, got {nums['flex']:g}"))
    pf = nums.get("pf", math.nan)
    if not math.isnan(pf):
        cls = "bus" if element.lower().startswith("bus:") else element.partition(".")[0].lower()
        if not 0 < pf <= 1:
            problems.append(Problem(f, f"{where}, column 'pf'", f"must be in (0, 1], got {pf:g}"))
        elif kind is AgentKind.BATTERY or cls not in ("load", "generator"):
            problems.append(Problem(f, f"{where}, column 'pf'", f"a {kind.value} driving {element!r} runs at"
                                    f" unity power factor; pf applies only to Load and Generator elements:"
                                    f" leave it empty, got {pf:g}"))
    if kind is AgentKind.PASSIVE:
        for col in ("a", "b", "c"):
            if nums.get(col, 0.0) != 0:
                problems.append(Problem(f, f"{where}, column {col!r}", f"passive agents take no part in the"
                                        f" market: leave it empty or 0, got {nums[col]:g}"))
    if kind is AgentKind.BATTERY and nums.get("b", 0.0) != 0:
        problems.append(Problem(f, f"{where}, column 'b'", f"batteries value stored energy at [battery].value"
                                f" in case.toml: leave it empty or 0, got {nums['b']:g}"))
    units = nums.get("units", 0)
    if kind is AgentKind.BATTERY:
        if units < 1 or units != int(units):
            problems.append(Problem(f, f"{where}, column 'units'",
                                    f"a battery needs a whole number of SBUs >= 1, got {units:g}"))
        elif units > MAX_UNITS:
            problems.append(Problem(f, f"{where}, column 'units'", f"must be at most {MAX_UNITS:g} SBUs,"
                                    f" got {units:g}"))
    elif units not in (0, 0.0):
        problems.append(Problem(f, f"{where}, column 'units'", f"only batteries have units, got {units:g}"))
    return len(problems) == before


# --------------------------------------------------------------------------- profiles.csv


def _profiles_fast(text: str) -> tuple[list[str], list[str], np.ndarray] | None:
    """Header, first-column cells and values of a well-formed profiles.csv, read by pandas' C
    parser (a year of hourly steps in a fraction of a second); None if anything is unusual
    (blank lines, quoted line breaks, text or non-finite values, short rows): the careful
    reader then finds and names the problem."""
    try:
        head = next(csv.reader(io.StringIO(text[:text.find("\n") + 1 or None], newline="")))
    except (StopIteration, csv.Error):
        return None
    header = [h.strip() for h in head]
    if len(header) < 2 or "" in header or len(set(header)) != len(header):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)  # e.g. a short header: use the careful reader
            df = pd.read_csv(io.StringIO(text), header=0, index_col=False, dtype={head[0]: str},
                             na_filter=False, engine="c", skip_blank_lines=False)
    except (ValueError, pd.errors.ParserError, pd.errors.ParserWarning, pd.errors.EmptyDataError, csv.Error):
        return None
    if df.shape[1] != len(header) or len(df) != text.rstrip("\r\n").count("\n"):
        return None
    values = df.iloc[:, 1:]
    if not all(pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t) for t in values.dtypes):
        return None
    arr = values.to_numpy(dtype=float)
    if not np.isfinite(arr).all():
        return None
    first = [str(x).strip() for x in df.iloc[:, 0]]
    return header, first, arr


def _read_profiles(text: str, steps: int | None, step_hours: float | None, start: pd.Timestamp | None,
                   start_text: str | None, problems: list[Problem]) -> pd.DataFrame | None:
    f = PROFILES_CSV
    hint = "time,<profile>,<profile>,..."
    fast = _profiles_fast(text)
    table: _Table | None = None
    if fast is not None:
        header, first_cells, arr = fast
        lines = list(range(2, 2 + len(first_cells)))
        cols = header[1:]
    else:
        table = _parse_csv(text, f, hint, problems)
        if table is None:
            return None
        header, lines = table.header, table.lines
        first_cells = [r[0] for r in table.rows]
        cols = header[1:]
        arr = np.full((len(table.rows), len(cols)), np.nan)
    first = header[0]
    if first not in ("time", "step"):
        problems.append(Problem(f, f"column {first!r}", "the first column must be 'time' (ISO timestamps)"
                                f" or 'step' (0..steps-1){_suggest(first, ['time', 'step'])}"))
        return None
    if not cols:
        problems.append(Problem(f, "", f"has no profile columns after {first!r}; e.g. {hint}"))
        return None
    n = len(first_cells)
    if n == 0:
        problems.append(Problem(f, "", "has only a header, no rows of values"))
        return None
    if steps is not None and n != steps:
        problems.append(Problem(f, "", f"has {n} rows of values, but [time].steps in case.toml is {steps}"))
    ok = _check_first_column(first, first_cells, lines, step_hours, start, start_text, problems)
    if table is not None:
        for k, c in enumerate(cols):
            vals = [_parse_float(r[k + 1]) for r in table.rows]
            bad = [i for i, v in enumerate(vals) if v is None]
            if bad:
                i = bad[0]
                cell = table.rows[i][k + 1]
                more = f" ({len(bad)} such values in the column)" if len(bad) > 1 else ""
                what = " (an empty cell)" if cell == "" else ""
                problems.append(Problem(f, f"{_row(lines[i])}, column {c!r}",
                                        f"must be a finite number, got {cell!r}{what}{more}"))
                ok = False
            else:
                arr[:, k] = vals
    if not ok:
        return None
    return pd.DataFrame(arr, columns=cols, index=pd.Index(lines, name="row"))


def _offset_text(offset: dt.timedelta | None) -> str:
    """A UTC offset as written in a timestamp: ``-05:00``, ``+01:00``, ``+05:30``."""
    if offset is None:
        return "none"
    minutes = round(offset.total_seconds() / 60)
    sign = "-" if minutes < 0 else "+"
    h, m = divmod(abs(minutes), 60)
    return f"{sign}{h:02d}:{m:02d}"


def _check_first_column(first: str, cells: list[str], lines: list[int], step_hours: float | None,
                        start: pd.Timestamp | None, start_text: str | None, problems: list[Problem]) -> bool:
    f = PROFILES_CSV
    if first == "step":
        for k, (cell, line) in enumerate(zip(cells, lines, strict=True)):
            if cell != str(k):
                problems.append(Problem(f, f"{_row(line)}, column 'step'", f"steps must count 0, 1, 2, ... one per"
                                        f" row: expected {k}, got {cell!r}"))
                return False
        return True
    times: list[dt.datetime] = []
    for cell, line in zip(cells, lines, strict=True):
        try:
            times.append(dt.datetime.fromisoformat(cell))
        except ValueError:
            what = "an empty cell" if cell == "" else repr(cell)
            problems.append(Problem(f, f"{_row(line)}, column 'time'", f"must be an ISO 8601 timestamp such as"
                                    f" '2024-03-01T00:00', got {what}"))
            return False
    if not times:
        return True
    zone = times[0].utcoffset()
    for k, (t, cell, line) in enumerate(zip(times, cells, lines, strict=True)):
        if t.utcoffset() != zone:
            here = t.utcoffset()
            if zone is not None and here is not None:
                before = times[k - 1].utcoffset()
                change = f"{_offset_text(before)} to {_offset_text(here)}"
                problems.append(Problem(f, f"{_row(line)}, column 'time'", f"the UTC offset changes from {change}"
                                        f" at {cell!r} (a daylight-saving change?); the steps must be equally"
                                        " spaced: write every time with one offset (e.g. standard time or UTC)"))
            else:
                first_zone = "no time zone" if zone is None else f"UTC offset {_offset_text(zone)}"
                problems.append(Problem(f, f"{_row(line)}, column 'time'", f"time zone of {cell!r} differs from"
                                        f" the first row's ({first_zone}); write every time in the same zone"))
            return False
    idx = pd.DatetimeIndex([pd.Timestamp(t) for t in times])
    seen: dict[pd.Timestamp, int] = {}
    for t, cell, line in zip(idx, cells, lines, strict=True):
        if t in seen:
            problems.append(Problem(f, _row(line), f"duplicated timestamp {cell!r} (first on row {seen[t]})"))
            return False
        seen[t] = line
    diffs = idx[1:] - idx[:-1]
    back = np.flatnonzero(diffs <= pd.Timedelta(0))
    if len(back):
        i = int(back[0]) + 1
        problems.append(Problem(f, _row(lines[i]), f"timestamp {cells[i]!r} is not after the one before"
                                f" ({cells[i - 1]!r}): times must increase"))
        return False
    if step_hours is not None and len(diffs):
        gaps = np.asarray(diffs / pd.Timedelta(hours=1), dtype=float)  # [h]
        off = np.flatnonzero(np.abs(gaps - step_hours) > 1e-9 * max(1.0, step_hours))
        if len(off):
            i = int(off[0]) + 1
            gap = gaps[i - 1]
            more = f" ({len(off)} gaps like this)" if len(off) > 1 else ""
            problems.append(Problem(f, _row(lines[i]), f"timestamp {cells[i]!r} is {gap:g} h after the one before"
                                    f" ({cells[i - 1]!r}), but [time].step_hours = {step_hours:g} h{more}"))
            return False
    if start is not None:
        t0 = idx[0]
        if (t0.tzinfo is None) != (start.tzinfo is None) or t0 != start:
            note = " (one has a time zone, the other not)" if (t0.tzinfo is None) != (start.tzinfo is None) else ""
            problems.append(Problem(f, _row(lines[0]), f"first time {cells[0]!r} differs from [time].start ="
                                    f" {start_text}{note}"))
            return False
    return True


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

    Warns
    -----
    CaseWarning
        A profiles.csv column no agent and no price uses.
    """
    root = Path(path).expanduser().resolve()
    if root.is_file() and root.name == CASE_TOML:
        root = root.parent
    if not root.is_dir():
        what = "is a file, not a case folder" if root.exists() else "case folder not found"
        raise CaseError(Problem(str(path), "", what))
    problems: list[Problem] = []
    cfg, raw = _read_toml(root, problems)
    agents_text = _read_text(root, AGENTS_CSV, problems)
    profiles_text = _read_text(root, PROFILES_CSV, problems)

    steps = cfg.time.steps if cfg else None
    step_hours = cfg.time.step_hours if cfg else None
    start = None
    start_text = None
    if cfg is not None:
        start_text = _show(raw.get("time", {}).get("start"))
        start = _start_time(cfg.time.start, problems)
        if start is not None:
            try:  # the timestamps of the steps must be representable by pandas
                last = start + pd.Timedelta(hours=cfg.time.step_hours * (cfg.time.steps - 1))
                pd.Timestamp(last)
            except (OverflowError, ValueError, pd.errors.OutOfBoundsDatetime, pd.errors.OutOfBoundsTimedelta):
                problems.append(Problem(CASE_TOML, "[time].step_hours", f"{cfg.time.steps} steps of"
                                        f" {cfg.time.step_hours:g} h from [time].start = {start_text} run past"
                                        " the dates pandas can hold"))
                start = None
                step_hours = None
        master = (root / cfg.network.master)
        if not master.is_file():
            problems.append(Problem(CASE_TOML, "[network].master", f"file not found: {master}"))
        if cfg.network.vmin_pu >= cfg.network.vmax_pu:
            problems.append(Problem(CASE_TOML, "[network].vmin_pu", f"must be below vmax_pu ="
                                    f" {cfg.network.vmax_pu:g}, got {cfg.network.vmin_pu:g}"))
        mb = cfg.network.monitored_buses
        if isinstance(mb, list):
            if not mb:
                problems.append(Problem(CASE_TOML, "[network].monitored_buses", 'must name at least one bus,'
                                        ' or be "all" or "lv"'))
            for bus in sorted({x for x in mb if mb.count(x) > 1}):
                problems.append(Problem(CASE_TOML, "[network].monitored_buses", f"bus {bus!r} is listed twice"))
        b = cfg.battery
        if isinstance(b.value, float) and abs(b.value) > MAX_MONEY:
            problems.append(Problem(CASE_TOML, "[battery].value", f"must be at most {MAX_MONEY:g} currency/kWh in"
                                    f" size (a unit mistake?), got {b.value:g}"))
        if b.soc_min >= b.soc_max:
            problems.append(Problem(CASE_TOML, "[battery].soc_min", f"must be below soc_max = {b.soc_max:g},"
                                    f" got {b.soc_min:g}"))
        elif not b.soc_min <= b.soc_init <= b.soc_max:
            problems.append(Problem(CASE_TOML, "[battery].soc_init", f"must be within [soc_min, soc_max] ="
                                    f" [{b.soc_min:g}, {b.soc_max:g}], got {b.soc_init:g}"))
        lad = cfg.placement.ladder
        if not lad:
            problems.append(Problem(CASE_TOML, "[placement].ladder", "must list at least one bank size,"
                                    " e.g. [1, 3, 5]"))
        elif (any(x < 1 or x > MAX_UNITS for x in lad)
              or any(y <= x for x, y in zip(lad, lad[1:], strict=False))):
            problems.append(Problem(CASE_TOML, "[placement].ladder", f"must be increasing whole numbers of"
                                    f" SBUs from 1 to {MAX_UNITS:g}, got {lad}"))
        if cfg.market.horizon > cfg.time.steps:
            problems.append(Problem(CASE_TOML, "[market].horizon", f"must be <= [time].steps ="
                                    f" {cfg.time.steps}, got {cfg.market.horizon}"))

    agents: list[Agent] = []
    agent_line: dict[str, int] = {}
    if agents_text is not None:
        table = _parse_csv(agents_text, AGENTS_CSV, _AGENTS_HEADER, problems)
        if table is not None:
            agents, agent_line = _read_agents(table, problems)
    profiles = (_read_profiles(profiles_text, steps, step_hours, start, start_text, problems)
                if profiles_text is not None else None)

    # cross-file rules
    profile_kw = None
    extra: tuple[str, ...] = ()
    import_price = export_price = None
    if profiles is not None:
        names = list(profiles.columns)
        used: set[str] = set()
        users: dict[str, list[Agent]] = {}
        for ag in agents:
            if ag.profile is None:
                continue
            if ag.profile not in profiles.columns:
                problems.append(Problem(AGENTS_CSV, _row(agent_line.get(ag.name, 0), ag.name),
                                        f"profile {ag.profile!r} is not a column of profiles.csv"
                                        f"{_suggest(ag.profile, names)}"))
                continue
            users.setdefault(ag.profile, []).append(ag)
        for name, group in users.items():  # each column checked once, naming every agent using it
            used.add(name)
            col = profiles[name].to_numpy()
            what = "demand" if group[0].kind in (AgentKind.CONSUMER, AgentKind.PASSIVE) else "available power"
            who = ("agent " if len(group) == 1 else "agents ") + ", ".join(repr(a.name) for a in group)
            if (col < 0).any():
                j = int(np.flatnonzero(col < 0)[0])
                problems.append(Problem(PROFILES_CSV, f"{_row(int(profiles.index[j]))}, column {name!r}",
                                        f"negative {what} {col[j]:g} kW for {who}; profiles are"
                                        " magnitudes (the sign comes from the agent's kind)"))
                continue
            if (col > MAX_KW).any():
                j = int(np.flatnonzero(col > MAX_KW)[0])
                problems.append(Problem(PROFILES_CSV, f"{_row(int(profiles.index[j]))}, column {name!r}",
                                        f"{what} {col[j]:g} kW for {who} is above {MAX_KW:g} kW"
                                        " (1 GW): a unit mistake (W for kW?)"))
                continue
            for ag in group:
                with np.errstate(over="ignore", invalid="ignore"):
                    peak = float(np.max(col * ag.scale)) if len(col) else 0.0
                if not peak <= MAX_KW:
                    problems.append(Problem(AGENTS_CSV, f"{_row(agent_line.get(ag.name, 0), ag.name)}, column"
                                            f" 'scale'", f"scale {ag.scale:g} times profile {name!r} reaches"
                                            f" {peak:g} kW, above {MAX_KW:g} kW (1 GW): a unit mistake?"))
        if cfg is not None:
            import_price = _price(cfg.grid.import_price, "import_price", profiles, problems, used)
            export_price = _price(cfg.grid.export_price, "export_price", profiles, problems, used)
            if import_price is not None and export_price is not None:
                below = np.flatnonzero(import_price < export_price)
                if len(below):
                    j = int(below[0])
                    problems.append(Problem(CASE_TOML, "[grid].import_price",
                                            f"import price {import_price[j]:g} is below export price"
                                            f" {export_price[j]:g} at step {j} ({len(below)} step(s)); the grid"
                                            " would be an arbitrage: import_price must be >= export_price"))
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
    links = _links(cfg, communities, problems) if cfg is not None and agents else []

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
                                                else tuple(b.lower() for b in cfg.network.monitored_buses)),
                               source_pu=cfg.network.source_pu),
        time=TimeOptions(steps=cfg.time.steps, step_hours=cfg.time.step_hours, start=start),
        market=MarketOptions(horizon=cfg.market.horizon, battery_model=BatteryModel(cfg.market.battery_model),
                             trade_fee=cfg.market.trade_fee, tie_break=cfg.market.tie_break,
                             network=NetworkMode(cfg.market.network),
                             network_margin_pu=cfg.market.network_margin_pu,
                             network_penalty=cfg.market.network_penalty,
                             network_iterations=cfg.market.network_iterations),
        grid=GridPrices(import_price=import_price, export_price=export_price),
        battery=BatterySpec(**cfg.battery.model_dump()),
        placement=PlacementOptions(ladder=tuple(cfg.placement.ladder),
                                   max_iterations=cfg.placement.max_iterations,
                                   stop_when_worse=cfg.placement.stop_when_worse,
                                   rule=PlacementRule(cfg.placement.rule)),
        agents=tuple(agents),
        communities=tuple(communities),
        links=tuple(links),
        profile_kw=profile_kw,
        extra_profiles=extra,
    )


def _links(cfg: CaseToml, communities: list[str], problems: list[Problem]) -> list[tuple[str, str]]:
    """``[communities].links`` as unordered pairs (in agents.csv order).

    The upstream grid is always a trade partner (shared MODEL.md, *Sets*), so no community
    is ever isolated: ``"none"`` is valid (every community trades with the grid only). A pair
    must name two different communities that have agents, and each pair is listed once.
    """
    if cfg.communities.links == "all":
        return [(c, d) for k, c in enumerate(communities) for d in communities[k + 1:]]
    if cfg.communities.links == "none":
        return []
    links: list[tuple[str, str]] = []
    first: dict[tuple[str, str], int] = {}
    for k, pair in enumerate(cfg.communities.links):
        where = f"[communities].links[{k}]"
        if len(pair) != 2:
            problems.append(Problem(CASE_TOML, where, f"must be a pair of two community names, got {pair}"))
            continue
        c, d = pair
        bad = False
        for x in dict.fromkeys((c, d)):
            if x not in communities:
                problems.append(Problem(CASE_TOML, where, f"unknown community {x!r}{_suggest(x, communities)};"
                                        f" communities in agents.csv: {', '.join(communities)}"))
                bad = True
        if bad:
            continue
        if c == d:
            problems.append(Problem(CASE_TOML, where, f"a community cannot link to itself ({c!r})"))
            continue
        key = (c, d) if communities.index(c) < communities.index(d) else (d, c)
        if key in first:
            problems.append(Problem(CASE_TOML, where, f"the pair {c!r}-{d!r} is already listed at"
                                    f" [communities].links[{first[key]}] (pairs are unordered)"))
            continue
        first[key] = k
        links.append(key)
    return links


def _price(value: float | str, key: str, profiles: pd.DataFrame, problems: list[Problem],
           used: set[str]) -> np.ndarray | None:
    """A grid price per step [currency/kWh]: the number, or the named profiles.csv column."""
    if isinstance(value, str):
        if value not in profiles.columns:
            problems.append(Problem(CASE_TOML, f"[grid].{key}", f"{value!r} is neither a number nor a column of"
                                    f" profiles.csv{_suggest(value, list(profiles.columns))}"))
            return None
        used.add(value)
        arr = profiles[value].to_numpy(dtype=float).copy()
    else:
        arr = np.full(len(profiles), float(value))
    big = np.flatnonzero(np.abs(arr) > MAX_MONEY)
    if len(big):
        problems.append(Problem(CASE_TOML, f"[grid].{key}", f"must be at most {MAX_MONEY:g} currency/kWh in size"
                                f" (a unit mistake?), got {arr[big[0]]:g} at step {int(big[0])}"))
        return None
    return arr
