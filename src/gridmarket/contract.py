"""The results contract as data: every file of a results folder, its columns, their types,
units and meaning (shared CASE_FORMAT.md, *Results*), and the one way to write and read them.

The study (:mod:`gridmarket.study`), the results writer (:mod:`gridmarket.results`), the long
run and the report's loader all go through this module, so the folder has one schema.

Rules kept here
---------------
* **Per-step tables are Parquet** (``market``, ``communities``, ``violations``, ``voltages``,
  ``steps``), typed: names are strings (dictionary-encoded), times are timestamps (NaT when the
  case has no start time), numbers are floats or integers. Per-iteration and descriptive
  tables are CSV with floats written as ``%.10g``.
* **Names are strings**, always: an agent, bus, community or element called ``502``, ``502.1``,
  ``NA``, ``None``, ``null`` or ``nan`` reads back as that text (CSV is read with
  ``dtype=str`` and ``keep_default_na=False`` on the text columns; only numeric columns know
  missing values, written as an empty cell).
* **One naming rule for network elements**: an element is ``"<class>.<name>"`` in lower case
  (``"line.l45"``, ``"transformer.tx1"``); a conductor of it ``"<element>.<phase>"``
  (``"line.l45.1"``); a node ``"<bus>.<phase>"`` (``"b5.1"``). ``network_lines.csv`` lists the
  elements by that name, ``violations.parquet`` names conductors and nodes, and
  :func:`violation_owner` maps each violation to its bus or element.

Units are in the column name (``_kw``, ``_kwh``, ``_pu``, ``_km``) or given by :attr:`Column.unit`.
Signs (shared MODEL.md): load reference, consumption positive, battery ``S > 0`` charging.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gridmarket.errors import ResultsError

__all__ = [
    "FLOAT_FORMAT",
    "SUMMARY_KEYS",
    "TABLES",
    "Column",
    "ParquetStream",
    "Table",
    "conductor_name",
    "conform",
    "element_name",
    "node_name",
    "read_table",
    "table",
    "to_arrow",
    "to_frame",
    "violation_owner",
    "write_table",
]

#: every float in a results CSV is written with this format (reproducible bytes)
FLOAT_FORMAT = "%.10g"

#: the types a column may have: pandas dtype after reading, Arrow type in Parquet
_DTYPES: dict[str, tuple[str, pa.DataType]] = {
    "str": ("object", pa.dictionary(pa.int32(), pa.string())),
    "int16": ("int16", pa.int16()),
    "int32": ("int32", pa.int32()),
    "int64": ("int64", pa.int64()),
    "float": ("float64", pa.float64()),
    "time": ("datetime64[ns]", pa.timestamp("ns")),
    "bool": ("bool", pa.bool_()),
}


@dataclass(frozen=True)
class Column:
    """One column of a results table.

    Attributes
    ----------
    name : str
    dtype : str
        ``"str"``, ``"int16"``, ``"int32"``, ``"int64"``, ``"float"``, ``"time"`` or ``"bool"``.
    unit : str
        Unit of the values (``"kW"``, ``"currency"``...), ``""`` for names and counts.
    meaning : str
    optional : bool
        Columns added by a later version of the format: a folder written without them still
        reads (the column is filled with its missing value: NaN, 0 or ``""``).
    """

    name: str
    dtype: str
    unit: str
    meaning: str
    optional: bool = False

    @property
    def arrow_type(self) -> pa.DataType:
        return _DTYPES[self.dtype][1]

    @property
    def pandas_dtype(self) -> str:
        return _DTYPES[self.dtype][0]


@dataclass(frozen=True)
class Table:
    """One file of a results folder: its rows and columns (in file order)."""

    file: str
    rows: str
    meaning: str
    columns: tuple[Column, ...]
    required: bool = True  #: a results folder without it is refused by the report

    @property
    def names(self) -> tuple[str, ...]:
        """Column names in file order."""
        return tuple(c.name for c in self.columns)

    @property
    def parquet(self) -> bool:
        return self.file.endswith(".parquet")

    @property
    def text_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.dtype == "str")

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        msg = f"{self.file} has no column {name!r}"
        raise KeyError(msg)

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema of the Parquet file (text columns dictionary-encoded)."""
        return pa.schema([(c.name, c.arrow_type) for c in self.columns])


def _c(name: str, dtype: str, unit: str, meaning: str, *, optional: bool = False) -> Column:
    return Column(name, dtype, unit, meaning, optional)


_IT = _c("iteration", "int32", "", "iteration of the placement loop (0: no placed batteries)")
_STEP = _c("step", "int64", "", "step of the case horizon, from 0")
_TIME = _c("time", "time", "", "start of the step (NaT when the case has no start time)")
_NEW = {"optional": True}  # columns added this round: older folders lack them

TABLES: dict[str, Table] = {t.file: t for t in (
    Table("iterations.csv", "one per iteration", "what each iteration of the loop gave", (
        _IT,
        _c("welfare", "float", "currency", "market objective as the study reports it (includes v·ΔE of batteries)"),
        _c("welfare_realised", "float", "currency", "welfare without the batteries' v·ΔE terms", **_NEW),
        _c("stored_energy_value", "float", "currency", "Σ v_end·(E_end − E_start) over the batteries", **_NEW),
        _c("battery_annuity", "float", "currency", "annuity of the iteration's battery units prorated to the run"
           " (0: not costed)", **_NEW),
        _c("net_benefit", "float", "currency", "(welfare_realised − that of iteration 0) − battery_annuity", **_NEW),
        _c("violations", "int64", "", "(bus, step) + (line, step) + (transformer, step) pairs out of limits"),
        _c("voltage_violations", "int64", "", "(bus, step) pairs out of the voltage limits"),
        _c("current_violations", "int64", "", "(line, step) pairs above the line's normal ampacity"),
        _c("transformer_violations", "int64", "", "(transformer, step) pairs above the rated kVA", **_NEW),
        _c("nonconverged_steps", "int64", "", "steps whose power flow did not converge", **_NEW),
        _c("buses_violated", "int64", "", "distinct buses with a voltage violation"),
        _c("lines_violated", "int64", "", "distinct lines with a current violation"),
        _c("battery_units", "int64", "SBU", "battery units in the case's agents this iteration"),
    )),
    Table("welfare_breakdown.csv", "iteration × part", "realised welfare by part; parts sum to welfare_realised", (
        _IT,
        _c("part", "str", "", "consumers, producers, batteries_trading, batteries_degradation, grid_import_cost,"
           " grid_export_revenue, fees, or a named residual"),
        _c("value", "float", "currency", "the part's welfare over the run"),
    ), required=False),
    Table("market.parquet", "iteration × step × agent", "the cleared market per agent", (
        _IT, _STEP, _TIME,
        _c("agent", "str", "", "agent name"),
        _c("kind", "str", "", "consumer, producer, battery or passive"),
        _c("community", "str", "", "community ('' for passive agents)"),
        _c("bus", "str", "", "bus of the agent's element (lower case, no nodes)", **_NEW),
        _c("P_kw", "float", "kW", "consumption (> 0) or production (< 0), mean over the step"),
        _c("S_kw", "float", "kW", "battery power, > 0 charging"),
        _c("phi_kw", "float", "kW", "sold into the community (> 0) or bought (< 0)"),
        _c("alpha_kw", "float", "kW", "share of the community's import"),
        _c("beta_kw", "float", "kW", "share of the community's export"),
        _c("soc", "float", "fraction", "battery state of charge at the end of the step (NaN otherwise)"),
        _c("price", "float", "currency/kWh", "the agent's marginal price of consumption"),
        _c("price_energy", "float", "currency/kWh", "community (energy) component of price", **_NEW),
        _c("price_voltage", "float", "currency/kWh", "voltage component of price (aware market)", **_NEW),
        _c("price_congestion", "float", "currency/kWh", "line and transformer component of price", **_NEW),
        _c("payment", "float", "currency", "paid by the agent in the step (> 0 pays)"),
    )),
    Table("communities.parquet", "iteration × step × community", "the cleared market per community", (
        _IT, _STEP, _c("time", "time", "", _TIME.meaning, optional=True),
        _c("community", "str", "", "community name"),
        _c("price", "float", "currency/kWh", "λ_c, the community's clearing price"),
        _c("import_kwh", "float", "kWh", "imported in the step"),
        _c("export_kwh", "float", "kWh", "exported in the step"),
        _c("welfare", "float", "currency", "the community's reported welfare in the step"),
    )),
    Table("violations.parquet", "one per bus-phase, line-phase or transformer out of limits in a step",
          "every limit violation", (
              _IT, _STEP, _TIME,
              _c("kind", "str", "", "voltage, current, transformer or nonconvergence"),
              _c("element", "str", "", "node 'bus.phase', conductor 'line.name.phase', 'transformer.name'"
                 " or 'circuit'"),
              _c("value", "float", "pu | A | fraction", "the value out of limits (voltage pu, current A, loading)"),
              _c("limit", "float", "pu | A | fraction", "the limit it broke, same unit"),
          )),
    Table("voltages.parquet", "iteration × step × monitored bus-phase", "node voltages", (
        _IT, _c("step", "int32", "", _STEP.meaning), _c("time", "time", "", _TIME.meaning, optional=True),
        _c("bus", "str", "", "bus name (lower case)"),
        _c("phase", "int16", "", "node number"),
        _c("v_pu", "float", "pu", "voltage magnitude (NaN: not energised or not converged)"),
    )),
    Table("steps.parquet", "iteration × step", "per-step extremes (for year-long figures)", (
        _IT, _STEP, _TIME,
        _c("welfare", "float", "currency", "reported welfare of the step"),
        _c("v_min_pu", "float", "pu", "lowest monitored node voltage"),
        _c("v_max_pu", "float", "pu", "highest monitored node voltage"),
        _c("loading_max", "float", "fraction", "largest line current / normal ampacity"),
        _c("violations", "int32", "", "buses + lines + transformers out of limits in the step"),
    ), required=False),
    Table("batteries.csv", "iteration × battery", "the battery banks of each iteration", (
        _IT,
        _c("agent", "str", "", "battery agent"),
        _c("bus", "str", "", "its bus"),
        _c("community", "str", "", "its community", **_NEW),
        _c("units", "int64", "SBU", "bank size"),
        _c("kw", "float", "kW", "rated power"),
        _c("kwh", "float", "kWh", "capacity"),
    )),
    Table("agents.csv", "one per agent (of the last iteration)", "the agents and where they connect", (
        _c("agent", "str", "", "agent name"),
        _c("kind", "str", "", "consumer, producer, battery or passive"),
        _c("community", "str", "", "community ('' for passive agents)"),
        _c("element", "str", "", "the OpenDSS element it drives"),
        _c("bus", "str", "", "bus of the element"),
    ), required=False),
    Table("network_buses.csv", "one per bus", "the network's buses", (
        _c("bus", "str", "", "bus name (lower case)"),
        _c("x", "float", "", "coordinate as in the network's bus coordinates (NaN: none)"),
        _c("y", "float", "", "coordinate"),
        _c("kv_base", "float", "kV", "line-to-neutral base voltage"),
        _c("distance_km", "float", "km", "distance from the source along the feeder", **_NEW),
        _c("customers", "int64", "", "agents connected at the bus", **_NEW),
    ), required=False),
    Table("network_lines.csv", "one per line or transformer", "the network's series elements", (
        _c("element", "str", "", "'line.name' or 'transformer.name' (lower case)"),
        _c("bus1", "str", "", "bus of terminal 1"),
        _c("bus2", "str", "", "bus of terminal 2"),
        _c("downstream_bus", "str", "", "the terminal's bus farther from the source", **_NEW),
        _c("kind", "str", "", "line or transformer", **_NEW),
    ), required=False),
    Table("network_residual.csv", "one per limit the aware market left violated (element, step)",
          "what the network-aware market could not fix, and why (shared MODEL.md, *Network-aware market*)", (
        _IT, _STEP, _TIME,
        _c("kind", "str", "", "voltage, current, transformer or nonconvergence"),
        _c("element", "str", "", "node (bus.phase), conductor (line.name.phase) or transformer.name"),
        _c("value", "float", "", "the AC power flow's value (pu, A or fraction of the rated kVA)"),
        _c("limit", "float", "", "the limit it violates, same unit"),
        _c("cause", "str", "", "why the market could not reach it (no agent influences it, slack > 0, ...)"),
    ), required=False),
    Table("comparison.csv", "one per scenario", "the DSO comparison (run --compare): the same case blind and"
          " aware, without and with placed batteries", (
        _c("scenario", "str", "", "blind, blind+placement, aware, aware+value"),
        _c("violations", "int64", "", "(element, step) pairs out of limits in the AC power flow"),
        _c("welfare_realised", "float", "currency", "realised welfare over the run"),
        _c("net_benefit", "float", "currency", "realised welfare gain over 'blind' minus the batteries' annuity"),
        _c("curtailed_kwh", "float", "kWh", "available PV energy not dispatched"),
        _c("price_spread", "float", "currency/kWh", "highest minus lowest agent price over the run, without the"
           " components of unmet rows (priced at the slack penalty)"),
        _c("battery_units", "int64", "SBU", "battery units placed", **_NEW),
        _c("linearisation_error_pu", "float", "pu", "largest absolute V_AC − V_linear at the aware market's final point"
           " (NaN for blind scenarios)", **_NEW),
        _c("unmet_rows", "int64", "", "network rows the aware market's final clearing left with a slack > 0"
           " (0 for blind scenarios)", **_NEW),
        _c("runtime_s", "float", "s", "wall time of the scenario", **_NEW),
    ), required=False),
)}

#: keys of summary.json -> meaning
SUMMARY_KEYS: dict[str, str] = {
    "case": "case name", "version": "tool version", "currency": "currency of welfare and prices",
    "battery_model": "physical or paper", "horizon": "steps per QP", "network_mode": "blind or aware",
    "terminal_soc": "cyclic or free", "solver": "solver of the whole run", "solver_used": "solver per iteration",
    "steps": "steps of the horizon", "step_hours": "hours per step", "vmin_pu": "voltage limit",
    "vmax_pu": "voltage limit",
    "iterations": "iterations run",
    "best_iteration": "fewest violations, ties by higher realised welfare (value placement: net of the units' annuity)",
    "stop_reason": "why the loop stopped", "welfare": "welfare per iteration", "violations": "violations per iteration",
    "battery_costed": "whether a battery cost was given", "break_even_capex_per_kwh": "capex per kWh at which the"
    " best iteration's net benefit is 0", "runtime_s": "loop wall time", "command_runtime_s": "whole command wall time",
}


def table(file: str) -> Table:
    """The contract of one results file (``"market.parquet"``...)."""
    try:
        return TABLES[file]
    except KeyError:
        msg = f"{file!r} is not a results table; known: {', '.join(TABLES)}"
        raise KeyError(msg) from None


# ---------------------------------------------------------------------------- names

def element_name(cls: str, name: str) -> str:
    """``element_name("Line", "L45") == "line.l45"``: the one spelling of a network element."""
    return f"{cls.lower()}.{name.lower()}"


def conductor_name(element: str, phase: int | str) -> str:
    """``"line.l45"`` and phase 1 -> ``"line.l45.1"``."""
    return f"{element.lower()}.{phase}"


def node_name(bus: str, phase: int | str) -> str:
    """``"b5"`` and phase 1 -> ``"b5.1"``."""
    return f"{bus.lower()}.{phase}"


def violation_owner(kind: Sequence[str] | pd.Series | np.ndarray,
                    element: Sequence[str] | pd.Series | np.ndarray) -> np.ndarray:
    """What each violation row belongs to: the bus of a voltage violation (``"b5.1"`` -> ``"b5"``),
    the element of a current or transformer violation (``"line.l45.1"`` -> ``"line.l45"``,
    ``"transformer.tx1"`` -> itself), ``element`` as is otherwise (``"circuit"``). Lower case."""
    kinds, kind_words = pd.factorize(pd.Series(np.asarray(kind, dtype=object)).astype(str), sort=False)
    codes, words = pd.factorize(pd.Series(np.asarray(element, dtype=object)).astype(str), sort=False)
    if codes.size == 0:
        return np.array([], dtype=object)
    parts = [str(w).lower().split(".") for w in words]
    node_owner = np.array([".".join(p[:-1]) if len(p) > 1 else p[0] for p in parts], dtype=object)
    elem_owner = np.array([".".join(p[:2]) for p in parts], dtype=object)
    as_is = np.array([".".join(p) for p in parts], dtype=object)
    kw = [str(k) for k in kind_words]
    is_v = np.isin(kinds, [i for i, k in enumerate(kw) if k == "voltage"])
    is_e = np.isin(kinds, [i for i, k in enumerate(kw) if k in ("current", "transformer")])
    return np.where(is_v, node_owner[codes], np.where(is_e, elem_owner[codes], as_is[codes]))


# ---------------------------------------------------------------------------- conform

def _as_time(values: Any) -> pd.Series:
    s = pd.Series(values)
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        return s.astype("datetime64[ns]")
    if pd.api.types.is_numeric_dtype(s.dtype):  # step numbers of a case without a start
        return pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns]")
    text = s.astype(object).where(s.notna(), "")
    return pd.to_datetime(text.astype(str).replace("", None), errors="coerce").astype("datetime64[ns]")


def _as_text(values: Any) -> pd.Series:
    s = pd.Series(values)
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype(object)
    codes, words = pd.factorize(s.astype(object), use_na_sentinel=True)  # few distinct names: map those
    text = np.array([str(w) for w in words] + [""], dtype=object)
    return pd.Series(text[codes], index=s.index, dtype=object)


def _missing_value(col: Column) -> Any:
    return {"str": "", "float": np.nan, "time": pd.NaT, "bool": False}.get(col.dtype, 0)


def conform(frame: pd.DataFrame | Mapping[str, Any], file: str) -> pd.DataFrame:
    """``frame`` with exactly the contract's columns of ``file``, in order, with their types.

    Missing optional columns are filled with their missing value; a missing required column
    or an extra column is a ``ValueError`` (a writer bug, not a user error).
    """
    spec = table(file)
    df = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(dict(frame))
    extra = [c for c in df.columns if c not in spec.names]
    missing = [c.name for c in spec.columns if c.name not in df.columns and not c.optional]
    if extra or missing:
        msg = f"{file}: columns do not follow the contract (missing {missing}, extra {extra})"
        raise ValueError(msg)
    out = {}
    n = len(df)
    for col in spec.columns:
        values = df[col.name] if col.name in df.columns else pd.Series([_missing_value(col)] * n, index=df.index)
        if col.dtype == "str":
            out[col.name] = _as_text(values)
        elif col.dtype == "time":
            out[col.name] = _as_time(values)
        elif col.dtype == "float":
            out[col.name] = pd.to_numeric(pd.Series(values), errors="raise").astype("float64")
        else:
            out[col.name] = pd.Series(values).astype(col.pandas_dtype)
    return pd.DataFrame(out, index=df.index).reset_index(drop=True)


def to_arrow(frame: pd.DataFrame | Mapping[str, Any], file: str) -> pa.Table:
    """The Arrow table of ``file``'s contract from a frame or a mapping of columns (numpy arrays,
    Series, lists, or Arrow arrays: a dictionary-encoded text array passes through untouched)."""
    spec = table(file)
    cols: dict[str, Any] = ({c: frame[c] for c in frame.columns} if isinstance(frame, pd.DataFrame)
                            else dict(frame))
    extra = [c for c in cols if c not in spec.names]
    missing = [c.name for c in spec.columns if c.name not in cols and not c.optional]
    if extra or missing:
        msg = f"{file}: columns do not follow the contract (missing {missing}, extra {extra})"
        raise ValueError(msg)
    n = len(next(iter(cols.values()))) if cols else 0
    return pa.Table.from_arrays([_arrow_column(c, cols.get(c.name), n) for c in spec.columns], schema=spec.schema)


def _arrow_column(col: Column, values: Any, n: int) -> pa.Array:
    if values is None:
        values = pd.Series([_missing_value(col)] * n)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        if values.type == col.arrow_type:
            return values
        if col.dtype == "str":
            return values.cast(pa.string()).dictionary_encode()
        return values.cast(col.arrow_type)
    if col.dtype == "str":
        return pa.array(_as_text(values).to_numpy(dtype=object), type=pa.string()).dictionary_encode()
    if col.dtype == "time":
        return pa.array(_as_time(values).to_numpy(), type=col.arrow_type)
    if col.dtype == "float":
        return pa.array(np.asarray(values, dtype=np.float64), type=col.arrow_type)
    return pa.array(np.asarray(values).astype(col.pandas_dtype), type=col.arrow_type)


# ---------------------------------------------------------------------------- write

def write_table(frame: pd.DataFrame | Mapping[str, Any], folder: Path | str, file: str) -> Path:
    """Write ``frame`` as the results file ``folder/file`` per the contract; return the path.

    Parquet (snappy, dictionary pages for text and integers) for ``*.parquet``; CSV with floats
    as :data:`FLOAT_FORMAT`, missing numbers as empty cells, ``\\n`` line ends otherwise.
    """
    spec = table(file)
    path = Path(folder) / file
    if spec.parquet:
        pq.write_table(to_arrow(frame, file), path, compression="snappy", use_dictionary=_dict_columns(spec))
    else:
        conform(frame, file).to_csv(path, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
    return path


def _dict_columns(spec: Table) -> list[str]:
    return [c.name for c in spec.columns if c.dtype in ("str", "int16", "int32", "int64")]


class ParquetStream:
    """Append chunks to one Parquet results file (a year in slices, flat memory).

    ``with ParquetStream(folder, "voltages.parquet") as w: w.write(columns)``; the file holds
    every chunk in order, and exists (with no rows) even when nothing was written.
    """

    def __init__(self, folder: Path | str, file: str) -> None:
        self.spec = table(file)
        if not self.spec.parquet:
            msg = f"{file} is not a Parquet table"
            raise ValueError(msg)
        self.path = Path(folder) / file
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, chunk: pd.DataFrame | Mapping[str, Any]) -> None:
        t = to_arrow(chunk, self.spec.file)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, self.spec.schema, compression="snappy",
                                            use_dictionary=_dict_columns(self.spec))
        self._writer.write_table(t)
        self.rows += t.num_rows

    def close(self) -> None:
        if self._writer is None:
            pq.write_table(self.spec.schema.empty_table(), self.path)
        else:
            self._writer.close()
        self._writer = None

    def __enter__(self) -> ParquetStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- read

def read_table(path: Path | str, file: str | None = None, *, columns: Iterable[str] | None = None,
               text: str = "str") -> pd.DataFrame:
    """Read a results file with the contract's types.

    Parameters
    ----------
    path : path
        The file, or the results folder when ``file`` is given.
    file : str, optional
        The contract's file name (default: the path's name).
    columns : iterable of str, optional
        Read only these.
    text : {"str", "category"}
        Text columns as Python strings (default) or as pandas categories (less memory for a
        year of results).

    Returns
    -------
    DataFrame
        The contract's columns in order (optional ones filled when absent; unknown extra
        columns are kept at the end). Names are ``str`` (``"502"``, ``"NA"`` stay text),
        times ``datetime64[ns]``.

    Raises
    ------
    ResultsError
        The file is missing, unreadable, or lacks a required column (the message names the
        file and the columns).
    """
    p = Path(path)
    name = file or p.name
    if file is not None:
        p = p / file
    spec = table(name)
    wanted = None if columns is None else list(columns)
    try:
        if spec.parquet:
            frame = pd.read_parquet(p, columns=None if wanted is None else
                                    [c for c in wanted if c in pq.read_schema(p).names])
        else:
            head = pd.read_csv(p, nrows=0).columns
            text_cols = [c for c in head if c in spec.text_columns]
            num_cols = [c for c in head if c not in text_cols]
            frame = pd.read_csv(p, dtype={c: str for c in text_cols}, keep_default_na=False,
                                na_values={c: ["", "nan", "NaN"] for c in num_cols}, usecols=wanted)
    except FileNotFoundError:
        msg = f"{name}: the file is missing ({p})"
        raise ResultsError(msg) from None
    except pd.errors.EmptyDataError:
        msg = f"{name}: the file is empty (it needs at least a header row: {', '.join(spec.names)})"
        raise ResultsError(msg) from None
    except (OSError, ValueError, pa.ArrowException) as exc:
        msg = f"{name}: cannot be read: {exc}"
        raise ResultsError(msg) from exc
    cols = spec.columns if wanted is None else tuple(c for c in spec.columns if c.name in wanted)
    missing = [c.name for c in cols if c.name not in frame.columns and not c.optional]
    if missing:
        msg = (f"{name}: missing column(s) {', '.join(repr(c) for c in missing)}; "
               f"found {', '.join(repr(c) for c in frame.columns) or 'none'}")
        raise ResultsError(msg)
    result = _typed(frame, name, cols, text)
    for extra in frame.columns:
        if extra not in result.columns and (wanted is None or extra in wanted):
            result[extra] = frame[extra].reset_index(drop=True)
    return result


def to_frame(data: pa.Table | pd.DataFrame, file: str, *, text: str = "str") -> pd.DataFrame:
    """A frame of ``file``'s contract from an Arrow table or a frame (types as :func:`read_table`)."""
    frame = data.to_pandas() if isinstance(data, pa.Table) else data
    return _typed(frame, file, table(file).columns, text)


def _typed(frame: pd.DataFrame, name: str, cols: tuple[Column, ...], text: str) -> pd.DataFrame:
    out: dict[str, Any] = {}
    n = len(frame)
    for col in cols:
        values = (frame[col.name].reset_index(drop=True) if col.name in frame.columns
                  else pd.Series([_missing_value(col)] * n))
        try:
            if col.dtype == "str":
                if text == "category":
                    out[col.name] = (values if isinstance(values.dtype, pd.CategoricalDtype)
                                     else _as_text(values).astype("category"))
                else:
                    out[col.name] = _as_text(values)
            elif col.dtype == "time":
                out[col.name] = _as_time(values)
            elif col.dtype == "float":
                out[col.name] = (values if values.dtype == np.float64
                                 else pd.to_numeric(values, errors="raise").astype("float64"))
            else:
                out[col.name] = values.astype(col.pandas_dtype)
        except (TypeError, ValueError) as exc:
            msg = f"{name}: column {col.name!r} is not {col.dtype}: {exc}"
            raise ResultsError(msg) from exc
    return pd.DataFrame(out, copy=False)
