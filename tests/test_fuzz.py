"""Fuzzing: random mutations of the tiny valid case (values, rows, columns and keys of
case.toml, agents.csv and profiles.csv, and raw bytes) either run (load, network check,
market and power flow of the study loop) or raise a GridmarketError, never anything else.

Deterministic (``derandomize``) so that the suite cannot flake; set GRIDMARKET_FUZZ_EXAMPLES
(e.g. 2000) and GRIDMARKET_FUZZ_RANDOM=1 to search longer and with fresh examples.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import os
import tempfile
import tomllib
import warnings
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from casefactory import write_tiny_case
from gridmarket.case import CaseWarning, load_case
from gridmarket.cli import check_case_network
from gridmarket.errors import GridmarketError
from gridmarket.study import run_study

EXAMPLES = int(os.environ.get("GRIDMARKET_FUZZ_EXAMPLES", "100"))
RANDOM = os.environ.get("GRIDMARKET_FUZZ_RANDOM", "") == "1"

# ---------------------------------------------------------------------- value pools

NUMBERS = [0, 1, -1, 2, 4, 5, 0.5, 0.2, 0.8, 0.96, 1.2, -0.5, 1e-9, 1e9, 1e300, math.nan, math.inf, -math.inf,
           3, 10, 100]
TEXTS = ["", "x", "all", "none", "lv", "physical", "paper", "mean-price", "load1", "pv", "C1", "C2",
         "network/Master.dss", "2024-03-01T00:00", "b1", "b2", "nope"]
TOML_VALUES = st.one_of(
    st.sampled_from(NUMBERS), st.sampled_from(TEXTS), st.booleans(),
    st.lists(st.sampled_from([1, 3, 5, 0, 2.5, "b1", "C1", "C2"]), max_size=3),
    st.lists(st.lists(st.sampled_from(["C1", "C2", "C3"]), min_size=1, max_size=3), max_size=2),
    st.just(dt.datetime(2024, 3, 1)), st.integers(-10, 10**6),
    st.floats(0, 2), st.floats(0, 2),  # plausible values
    st.floats(allow_nan=True, allow_infinity=True, width=64),
)
KEYS = {
    "case": ["name", "currency"],
    "network": ["master", "vmin_pu", "vmax_pu", "monitored_buses"],
    "time": ["start", "steps", "step_hours"],
    "market": ["horizon", "battery_model", "trade_fee", "tie_break"],
    "grid": ["import_price", "export_price"],
    "communities": ["links"],
    "battery": ["unit_kw", "unit_kwh", "soc_min", "soc_max", "soc_init", "eff_charge", "eff_discharge",
                "rate_charge", "rate_discharge", "self_discharge", "value", "degradation_cost", "a"],
    "placement": ["ladder", "max_iterations", "stop_when_worse"],
    "bogus": ["key"],
}
CELLS = st.one_of(
    st.sampled_from(["", "x", "-1", "0", "1", "2", "0.5", "1.5", "1e308", "1e400", "nan", "inf", "-0.0",
                     "consumer", "producer", "battery", "passive", "Consumer", "C1", "C2",
                     "Load.H1", "Load.H3", "Load.H9", "PVSystem.PV1", "Storage.S1", "bus:b2", "bus:b1.1",
                     "bus:zz", "bus:b2.7", "load1", "load2", "pv", "H1", "PV1",
                     "2024-03-01T00:00", "2024-03-01T05:00", '"a,b"', "  3  "]),
    st.floats(0, 50).map(lambda x: f"{x:.4g}"),  # plausible values: the case still runs, with other numbers
    st.floats(0, 50).map(lambda x: f"{x:.4g}"),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=6),
)


# ---------------------------------------------------------------------- writers


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dt.datetime):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)  # pragma: no cover


def _toml(doc: dict[str, Any]) -> str:
    lines = [f"{k} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for sec, body in doc.items():
        if isinstance(body, dict):
            lines.append(f"[{sec}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def _csv(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


# ---------------------------------------------------------------------- mutations


@st.composite
def toml_mutation(draw: st.DrawFn) -> tuple[str, Any]:
    op = draw(st.sampled_from(["set", "set", "set", "delete", "drop_section"]))
    sec = draw(st.sampled_from(sorted(KEYS)))
    key = draw(st.sampled_from(KEYS[sec]))
    return ("toml", (op, sec, key, draw(TOML_VALUES)))


@st.composite
def csv_mutation(draw: st.DrawFn, file: str) -> tuple[str, Any]:
    op = draw(st.sampled_from(["cell", "cell", "cell", "cell", "drop_row", "dup_row", "drop_col", "add_col",
                               "swap_rows", "truncate_row"]))
    return (file, (op, draw(st.integers(0, 6)), draw(st.integers(0, 12)), draw(CELLS)))


@st.composite
def bytes_mutation(draw: st.DrawFn) -> tuple[str, Any]:
    file = draw(st.sampled_from(["case.toml", "agents.csv", "profiles.csv"]))
    return ("bytes", (file, draw(st.integers(0, 400)), draw(st.binary(min_size=0, max_size=3)),
                      draw(st.integers(0, 3))))


MUTATIONS = st.lists(st.one_of(toml_mutation(), csv_mutation("agents.csv"), csv_mutation("profiles.csv"),
                               bytes_mutation()), min_size=1, max_size=3)


def _apply(root: Path, mutation: tuple[str, Any]) -> None:
    kind, args = mutation
    if kind == "toml":
        op, sec, key, value = args
        try:
            doc = tomllib.loads((root / "case.toml").read_text(encoding="utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError):
            return  # broken by an earlier bytes mutation: keep it broken
        if op == "set":
            doc.setdefault(sec, {})[key] = value
        elif op == "delete":
            doc.get(sec, {}).pop(key, None)
        else:
            doc.pop(sec, None)
        (root / "case.toml").write_text(_toml(doc))
    elif kind == "bytes":
        file, pos, data, cut = args
        raw = (root / file).read_bytes()
        pos = min(pos, len(raw))
        (root / file).write_bytes(raw[:pos] + data + raw[pos + cut:])
    else:
        op, r, c, cell = args
        try:
            rows = _rows((root / kind).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, csv.Error):
            return
        if not rows or not rows[0]:
            return
        r %= len(rows)
        if op == "cell":
            if rows[r]:
                rows[r][c % len(rows[r])] = cell
            else:
                rows[r] = [cell]
        elif op == "drop_row":
            del rows[r]
        elif op == "dup_row":
            rows.insert(r, list(rows[r]))
        elif op == "drop_col":
            c %= len(rows[0])
            for row in rows:
                if row:
                    del row[c % len(row)]
        elif op == "add_col":
            for k, row in enumerate(rows):
                row.append(cell if k else (cell or "extra"))
        elif op == "swap_rows":
            r2 = c % len(rows)
            rows[r], rows[r2] = rows[r2], rows[r]
        else:
            rows[r] = rows[r][: c % (len(rows[r]) + 1)]
        (root / kind).write_text(_csv(rows))


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None,
          phases=[Phase.explicit, Phase.generate, Phase.shrink], suppress_health_check=[HealthCheck.too_slow])
@given(MUTATIONS)
def test_mutated_case_runs_or_raises_a_gridmarket_error(mutations: list[tuple[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = write_tiny_case(Path(tmp) / "case")
        for m in mutations:
            _apply(root, m)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CaseWarning)  # an unused profile column is allowed
            try:
                case = load_case(root)
                check_case_network(case)
                run_study(case, max_iterations=2)
            except GridmarketError as exc:
                assert str(exc).strip(), "an error must say what is wrong"
