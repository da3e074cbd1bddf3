"""Names of the results' network elements, and the one violation count of the report.

The results name elements as OpenDSS does, in any case: a voltage violation's element is
``bus.phase`` (``"b5.1"``), a current violation's ``line.name.phase`` (``"line.l45.1"``), a
transformer's ``transformer.name``; ``network_lines.csv`` names its elements ``line.l45``
(column ``element``; ``line`` in folders older than the contract). Everything here maps them
to one key per element (:func:`gridmarket.contract.violation_owner`) so that a violation, a
line of the map and a row of a table meet.

**One violation count everywhere** (shared CASE_FORMAT.md): a violation is one (bus, line or
transformer, step) pair out of limits; the phases of a bus or line in the same step count once.
``violations.parquet`` lists each phase; the report shows that per-phase detail only where it
is labelled so.
"""

from __future__ import annotations

import pandas as pd

from gridmarket import contract

__all__ = [
    "bus_names",
    "element_key",
    "line_table",
    "violated_elements",
    "violation_pairs",
]


def bus_names(values: pd.Series) -> pd.Series:
    """Bus names as written in the results: lower case, without the ``.phase`` suffix."""
    return values.astype(str).str.strip().str.lower().str.split(".").str[0]


def element_key(kind: str, element: str) -> str:
    """The element a violation row belongs to, without its phase
    (:func:`gridmarket.contract.violation_owner`, the one naming rule).

    ``("voltage", "B5.1")`` -> ``"b5"``; ``("current", "line.l45.1")`` -> ``"line.l45"``;
    ``("transformer", "Transformer.TX1")`` -> ``"transformer.tx1"``; anything else
    (``nonconvergence``: ``"circuit"``) lower-cased.
    """
    return str(contract.violation_owner([str(kind).strip().lower()], [str(element).strip()])[0])


def line_table(lines: pd.DataFrame) -> pd.DataFrame:
    """``network_lines.csv`` with uniform columns.

    Returns
    -------
    DataFrame
        ``key`` (``"line.l45"``, ``"transformer.tx1"``), ``name`` (as written), ``bus1``,
        ``bus2`` (bus names, no phases), ``downstream`` (the ``downstream_bus`` column when the
        folder has it, else ``bus2``) and ``kind`` (``line`` or ``transformer``).
    """
    col = "element" if "element" in lines.columns else "line"
    names = lines[col].astype(str).str.strip()
    kind = (lines["kind"].astype(str).str.strip().str.lower() if "kind" in lines.columns
            else pd.Series("line", index=lines.index))
    key = names.str.lower()
    if col == "line":  # folders older than the contract wrote "l45" for line.l45
        key = key.where(key.str.contains(".", regex=False), "line." + key)
    bus2 = bus_names(lines["bus2"])
    down = (bus_names(lines["downstream_bus"]) if "downstream_bus" in lines.columns else bus2)
    down = down.where(down.ne("") & down.ne("nan"), bus2)
    return pd.DataFrame({"key": key.to_numpy(), "name": names.to_numpy(),
                         "bus1": bus_names(lines["bus1"]).to_numpy(), "bus2": bus2.to_numpy(),
                         "downstream": down.to_numpy(), "kind": kind.to_numpy()})


def violation_pairs(violations: pd.DataFrame) -> pd.DataFrame:
    """The violations as counted everywhere in the report: one row per (element, step).

    Parameters
    ----------
    violations : DataFrame
        ``violations.parquet``: ``iteration, step, kind, element, value, limit`` (a row per
        phase).

    Returns
    -------
    DataFrame
        ``iteration, step, kind, key, phases`` (how many per-phase rows the pair stands for),
        ``worst_value`` (the phase farthest from its limit) and ``limit``.
    """
    cols = ["iteration", "step", "kind", "key", "phases", "worst_value", "limit"]
    if violations.empty:
        return pd.DataFrame(columns=cols)
    v = violations[["iteration", "step", "kind", "element", "value", "limit"]].copy()
    v["kind"] = v["kind"].astype(str).str.strip().str.lower()
    v["key"] = contract.violation_owner(v["kind"].to_numpy(), v["element"].astype(str).str.strip().to_numpy())
    v["_excess"] = (v["value"].astype(float) - v["limit"].astype(float)).abs()
    v = v.sort_values(["iteration", "step", "kind", "key", "_excess"],
                      ascending=[True, True, True, True, False], kind="stable")
    groups = v.groupby(["iteration", "step", "kind", "key"], sort=False)
    first = groups.head(1).set_index(["iteration", "step", "kind", "key"])
    out = pd.DataFrame({"phases": groups.size()})
    out["worst_value"] = first["value"].astype(float)
    out["limit"] = first["limit"].astype(float)
    return out.reset_index()[cols]


def violated_elements(violations: pd.DataFrame | None, lines: pd.DataFrame | None = None, *,
                      iteration: int) -> tuple[list[str], list[str]]:
    """Buses and lines/transformers with at least one violation in ``iteration``.

    A voltage violation marks its bus; a current or transformer violation marks its element
    (key as :func:`element_key`) and, as in placement (shared MODEL.md), counts for the
    element's downstream bus when ``lines`` is given.

    Returns
    -------
    (buses, elements) : sorted lists of lower-case names (buses plain, elements as keys)
    """
    if violations is None or violations.empty:
        return [], []
    pairs = violation_pairs(violations[violations["iteration"] == iteration])
    buses = set(pairs.loc[pairs["kind"] == "voltage", "key"])
    elements = set(pairs.loc[pairs["kind"].isin(["current", "transformer"]), "key"])
    if lines is not None and elements and len(lines):
        table = line_table(lines)
        down = dict(zip(table["key"], table["downstream"], strict=True))
        buses.update(down[k] for k in elements if k in down)
    return sorted(buses), sorted(elements)
