"""Turn any OpenDSS feeder into a case folder: ``gridmarket new-case FEEDER.dss OUT``.

:func:`new_case` reads the feeder through OpenDSS (:func:`gridmarket.network.inspect.inspect_feeder`)
and writes a case folder (shared CASE_FORMAT.md) whose ``network/Master.dss`` redirects the
feeder's own master **by absolute path** (the feeder is never copied) and adds PV systems in
``network/PVSystems.dss``. The parts live in :mod:`gridmarket.cases.feeder_profiles` (profiles),
:mod:`gridmarket.cases.communities` (community rules) and :mod:`gridmarket.cases.template`
(case.toml); this module assembles the case.

Rules (deterministic; each case's ``PROVENANCE.md`` repeats the ones it used)
------------------------------------------------------------------------------
**Consumers.** Every enabled Load becomes a consumer agent of the same (lower-case) name, driving
``Load.<name>``. Its profile column [kW, mean over the step] comes from the load's own loadshape,
chosen by ``loadshape`` (``"auto"``: ``daily``, else ``yearly``, else ``duty``; OpenDSS itself
fills ``yearly`` from ``daily``): ``mult``/``Pmult`` × the load's kW, or the multipliers
themselves with ``useactual=yes``. Sample ``i`` of a shape with interval Δ covers hours
``[iΔ, (i+1)Δ)`` (what OpenDSS's time loop uses when it steps from hour 0) and the shape repeats
after ``npts·Δ`` h; shapes given by an ``hour`` array are interpolated linearly, as OpenDSS does.
Step ``s`` covers hours ``[start_hour + s·Δt, start_hour + (s+1)·Δt)`` of the shapes' clock and
its value is the exact mean over that interval. A load with ``status=fixed`` keeps its kW; a
load without a loadshape follows :data:`DEFAULT_RESIDENTIAL_SHAPE` × its kW (the kW is the peak).
When the shape has ``Qmult``, the agent's ``pf`` is P̄/√(P̄²+Q̄²) over the case's steps; otherwise
``pf`` is left empty (the element's own kvar/kW ratio applies).

**PV.** With ``pv_kwp`` (kWp per household) or ``pv_percent_of_peak`` (kWp = % of the load's peak
step-mean demand over the case's steps), every market load at LV (rated below 1 kV) gets a
``PVSystem.pv_<load>`` on exactly the load's connection — its ``bus1`` nodes, phases, kV and
connection — so a 230 V phase-neutral load gets a 230 V single-phase PV, a 120/240 V split-phase
load on ``bus.1.2`` at 0.24 kV a PV across both legs, a three-phase four-wire load a three-phase
PV; a 120 V load on one leg of a split-phase bus gets its PV across both legs (240 V), as rooftop
PV is connected there. ``kVA = kva_ratio × kWp``, unity pf, no cut-in/cut-out. Every PVSystem the
feeder already had is switched off (``enabled=no``), so the penetration is the one asked for.
Without either argument, the feeder's own PVSystems become the producers (each in the community
of the household at its bus, else the electrically nearest one), following their own loadshape ×
irradiance, or :func:`default_pv_shape`. Producer profiles are kW per kWp (column ``pv_pu``) with
``scale`` = kWp.

**Communities** (``communities=``): ``"transformer"`` — by the first transformer upstream of the
load (its distribution transformer); ``"branch"`` — by feeder branch (the rule of
:func:`gridmarket.cases.ieee_eu_lv.feeder_branches`, from the source bus, 20 % share);
``"knn:<k>"`` — groups of ``k`` households: the unassigned load farthest from the source starts
a group with its ``k − 1`` nearest unassigned loads (Euclidean on bus coordinates; electrical hops
when any load bus has no coordinates), and a remainder of fewer than ``k`` joins the groups of its
nearest grouped households (no group is smaller than ``k``); a CSV path — columns ``load`` (or
``agent``/``name``) and ``community``, an empty community making the load a passive agent (no
market, no PV). Communities are named ``C1``, ``C2``, ... in the order of their first load in the
feeder (rules and details: :mod:`gridmarket.cases.communities`). A rule that yields a single
community (``"transformer"`` on a feeder with one transformer) is a :class:`CaseWarning`.

**Network.** ``[network] monitored_buses = "customers"`` (the voltage limits apply where agents
connect, and placement only considers those buses) unless the template says otherwise;
``source_pu`` sets ``[network] source_pu`` (the source voltage applied after the feeder is
compiled [pu]). :func:`gridmarket.cases.sanity.case_sanity` checks the written case (no-load and
peak-load power flows) and ``gridmarket new-case`` prints its warnings.

**Time.** ``start`` (ISO) labels step 0 and ``start_hour`` is the hour of the loadshapes' clock at
which step 0 begins; they must agree: a date-only ``start`` gets the time of day
``start_hour mod 24``, a ``start`` without ``start_hour`` sets ``start_hour`` to its time of day,
and a ``start`` whose time of day differs from ``start_hour mod 24`` is an error.

**Economics** come from the arguments, then a template TOML, then the defaults below. The template
holds any case.toml section except ``[network].master`` (``[case]``, ``[network]``, ``[time]``,
``[market]``, ``[grid]``, ``[communities]``, ``[battery]``, ``[placement]``) plus ``[consumers]``
(``a``, ``b``, ``flex``, ``pf``) and ``[producers]`` (``a``, ``b``, ``kva_ratio``); an agent
coefficient may be a number or a ``[lo, hi]`` range spread over the loads by the golden-ratio
sequence of their position (:func:`gridmarket.cases.profiles.spread`).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gridmarket.case import CaseWarning
from gridmarket.cases.communities import (
    CommunityRule,
    assign_communities,
    communities_and_labels,
    nearest_household,
    parse_rule,
)
from gridmarket.cases.feeder_profiles import (
    DEFAULT_RESIDENTIAL_SHAPE,
    LoadProfile,
    default_pv_shape,
    load_profiles,
    shape_of,
    shape_step_means,
    step_means_of,
)
from gridmarket.cases.template import AGENT_DEFAULTS, case_settings, case_toml_text, coefficient
from gridmarket.cases.writer import write_case
from gridmarket.errors import GridmarketError
from gridmarket.network.inspect import FeederInfo, LoadInfo, inspect_feeder

__all__ = [
    "AGENT_DEFAULTS",
    "DEFAULT_RESIDENTIAL_SHAPE",
    "CommunityRule",
    "assign_communities",
    "case_toml_text",
    "default_pv_shape",
    "load_profiles",
    "new_case",
    "parse_rule",
    "reconcile_start",
    "shape_step_means",
]

_LV_KV = 1.0  #: loads rated below this [kV] are low voltage and get PV
_MIN_KWP = 1e-3  #: [kWp] smaller PV systems are not written


# ---------------------------------------------------------------------------- the builder

def _pv_connection(ld: LoadInfo, info: FeederInfo) -> tuple[str, int, float, str]:
    """bus1, phases, kV [kV] and conn of the PV of household ``ld`` (see the module docstring)."""
    bus = info.buses.get(ld.bus)
    nodes = ld.nodes
    if bus is not None and bus.split_phase and ld.phases == 1 and len(nodes) == 1 and nodes[0] in (1, 2):
        return f"{ld.bus}.1.2", 1, 2.0 * bus.kv_base, "wye"
    return ld.bus1, ld.phases, ld.kv, "delta" if ld.delta else "wye"


def _num(x: float) -> str:
    return f"{x:.6g}"


def _unique_name(base: str, taken: set[str]) -> str:
    name = base
    k = 2
    while name in taken:
        name = f"{base}_{k}"
        k += 1
    taken.add(name)
    return name


def reconcile_start(start: object, start_hour: float | None) -> tuple[str | None, float]:
    """``[time].start`` and the loadshapes' start hour [h] of a new case, made to agree.

    Parameters
    ----------
    start : str, datetime, date or None
        The timestamp of step 0 (only labels the steps).
    start_hour : float or None
        Hour of the loadshapes' clock at which step 0 begins [h].

    Returns
    -------
    tuple
        ``(start, start_hour)``: ``start`` as ``YYYY-MM-DDTHH:MM`` (seconds when needed) whose
        time of day is ``start_hour mod 24``, or None without a start.

    Raises
    ------
    GridmarketError
        ``start`` is not a timestamp, or its time of day is not ``start_hour mod 24``.
    """
    if start_hour is not None and not math.isfinite(float(start_hour)):
        msg = f"start_hour must be a finite number of hours, got {start_hour!r}"
        raise GridmarketError(msg)
    if start is None or (isinstance(start, str) and not start.strip()):
        return None, float(start_hour or 0.0)
    text = start.isoformat() if hasattr(start, "isoformat") else str(start)
    try:
        ts = pd.Timestamp(text)
    except ValueError as exc:
        msg = f"start must be an ISO timestamp, got {text!r}"
        raise GridmarketError(msg) from exc
    has_time = re.search(r"[T ]\d", text.strip()) is not None
    tod = (ts - ts.normalize()) / pd.Timedelta(hours=1)
    if start_hour is None:
        hour = float(tod)
    elif not has_time:
        hour = float(start_hour)
        ts = ts.normalize() + pd.Timedelta(hours=hour % 24.0)
    else:
        hour = float(start_hour)
        gap = (hour - tod) % 24.0
        if min(gap, 24.0 - gap) > 1e-9:
            msg = (f"start {text!r} puts step 0 at {ts:%H:%M} but start_hour {hour:g} starts the loadshapes at"
                   f" {int(hour % 24):02d}:{round((hour % 1) * 60):02d}; give a start at that time of day, or a"
                   " date only")
            raise GridmarketError(msg)
    fmt = "%Y-%m-%dT%H:%M" if ts.second == 0 and ts.microsecond == 0 else "%Y-%m-%dT%H:%M:%S"
    return ts.strftime(fmt), hour


def new_case(
    feeder_master: Path | str,
    out: Path | str,
    *,
    pv_kwp: float | None = None,
    pv_percent_of_peak: float | None = None,
    communities: str | Path | CommunityRule = "transformer",
    template: Path | str | None = None,
    settings: Mapping[str, Any] | None = None,
    import_price: float | None = None,
    export_price: float | None = None,
    steps: int | None = None,
    step_hours: float | None = None,
    start: str | None = None,
    start_hour: float | None = None,
    loadshape: str = "auto",
    pv_shape: Sequence[float] | None = None,
    name: str | None = None,
    overwrite: bool = False,
    source_pu: float | None = None,
) -> Path:
    """Write a case folder for any OpenDSS feeder (rules in the module docstring).

    Parameters
    ----------
    feeder_master : path
        The feeder's OpenDSS master script; redirected by absolute path, never copied.
    out : path
        Case folder to create (atomically).
    pv_kwp : float, optional
        PV per household [kWp], >= 0. Exclusive with ``pv_percent_of_peak``.
    pv_percent_of_peak : float, optional
        PV per household as a percentage of its peak step-mean demand [%], >= 0.
    communities : str, Path or CommunityRule
        ``"transformer"`` (default), ``"branch"``, ``"knn:<k>"`` or a CSV path.
    template : path, optional
        TOML with case.toml sections and ``[consumers]`` / ``[producers]`` coefficients.
    settings : mapping, optional
        Dotted overrides applied over the template, e.g. ``{"grid.import_price": 0.7,
        "consumers.b": [0.9, 1.3]}``.
    import_price, export_price : float, optional
        Grid tariff and feed-in price [currency/kWh] (override template and settings).
    steps, step_hours : int, float, optional
        Number of steps and their length [h] (default: the template's, else 24 and 1).
    start : str, optional
        ISO timestamp of step 0 (only labels the steps); without it steps are numbered.
    start_hour : float, optional
        Hour of the feeder's loadshapes (and of the PV day clock, modulo 24) at which step 0
        begins [h].
    loadshape : str
        Which of a load's shapes to use: ``"auto"`` (daily, yearly, duty), ``"daily"``,
        ``"yearly"`` or ``"duty"``.
    pv_shape : sequence of float, optional
        PV output per kWp for each step [kW/kWp], in [0, 1]; default :func:`default_pv_shape`.
    name : str, optional
        ``[case].name`` (default: the master's file name without suffix, or its folder's name
        when the file is called ``Master``).
    overwrite : bool
        Replace an existing case folder.

    Returns
    -------
    pathlib.Path
        The case folder, absolute.

    Raises
    ------
    GridmarketError
        Bad arguments, a feeder that cannot be read, or a rule that does not apply.
    """
    # absolute, as given: a symlinked data folder stays the path the user named
    master = Path(os.path.abspath(Path(feeder_master).expanduser()))
    if pv_kwp is not None and pv_percent_of_peak is not None:
        msg = "give pv_kwp or pv_percent_of_peak, not both"
        raise GridmarketError(msg)
    for label, v in (("pv_kwp", pv_kwp), ("pv_percent_of_peak", pv_percent_of_peak)):
        if v is not None and not (math.isfinite(v) and v >= 0):
            msg = f"{label} must be a finite number >= 0, got {v!r}"
            raise GridmarketError(msg)
    rule = parse_rule(communities)
    tree, cons, prod = case_settings(master, template=template, settings=settings, import_price=import_price,
                                     export_price=export_price, steps=steps, step_hours=step_hours, start=start,
                                     name=name, source_pu=source_pu)
    n_steps, dt = int(tree["time"]["steps"]), float(tree["time"]["step_hours"])
    tree["time"]["start"], start_hour = reconcile_start(tree["time"].get("start"), start_hour)
    if tree["time"]["start"] is None:
        del tree["time"]["start"]
    kva_ratio = float(prod.get("kva_ratio", 1.1))
    if not kva_ratio >= 1:
        msg = f"[producers].kva_ratio must be >= 1 (inverter kVA per kWp), got {kva_ratio}"
        raise GridmarketError(msg)
    if pv_shape is None:
        pv_pu = default_pv_shape(n_steps, step_hours=dt, start_hour=start_hour)
    else:
        pv_pu = np.asarray(pv_shape, dtype=float).reshape(-1)
        if pv_pu.size != n_steps or not np.all(np.isfinite(pv_pu)) or pv_pu.min() < 0 or pv_pu.max() > 1:
            msg = f"pv_shape must hold {n_steps} values in [0, 1] kW/kWp, got {pv_pu.size} values"
            raise GridmarketError(msg)

    info = inspect_feeder(master)
    if not info.loads:
        msg = f"{master} defines no enabled Load: there are no households to build a case from"
        raise GridmarketError(msg)
    profiles = load_profiles(info, steps=n_steps, step_hours=dt, start_hour=start_hour, loadshape=loadshape)
    households = {ld.name: ld.bus for ld in info.loads}
    com, labels = communities_and_labels(info, households, rule)
    if all(c is None for c in com.values()):
        msg = "every load is passive (empty community in the CSV): a case needs at least one community"
        raise GridmarketError(msg)
    n_com = len({c for c in com.values() if c is not None})
    if n_com == 1 and rule.kind in ("transformer", "branch"):
        warnings.warn(CaseWarning(
            f"community rule {str(rule)!r} gives one community for all {len(com)} households of"
            f" {master.name} ({next(iter(labels.values()), '')}); use 'knn:<k>' or a CSV for several"), stacklevel=2)

    b = _Build(info=info, com=com, cons=cons, prod=prod, kva_ratio=kva_ratio,
               position={ld.name: k for k, ld in enumerate(info.loads, start=1)})
    b.add_households(profiles, pv_kwp=pv_kwp, pv_percent=pv_percent_of_peak)
    new_pv = pv_kwp is not None or pv_percent_of_peak is not None
    disabled = [pv.name for pv in info.pvsystems] if new_pv else []
    if not new_pv:
        b.adopt_feeder_pv(households, pv_pu, steps=n_steps, step_hours=dt, start_hour=start_hour,
                          loadshape=loadshape)
    if any(a["profile"] == "pv_pu" for a in b.agents):
        b.columns["pv_pu"] = np.round(pv_pu, 6)
    # rows by community (C1, C2, ...; passive last), feeder order within, consumer before its PV
    order = {a["name"]: i for i, a in enumerate(b.agents)}
    b.agents.sort(key=lambda a: (a["community"] is None, _community_key(a["community"]), order[a["name"]]))

    # --- files -----------------------------------------------------------------------------
    header, rows = _profile_rows(b.columns, tree["time"].get("start"), n_steps, dt)
    pv_text = [f"! PV written by gridmarket.cases.generic.new_case for {master.as_posix()}"]
    if new_pv:
        what = (f"{pv_kwp:g} kWp per household" if pv_kwp is not None
                else f"{pv_percent_of_peak:g} % of each household's peak step-mean demand")
        pv_text.append(f"! {what}; kVA = {kva_ratio:g} x kWp, unity pf, on each LV load's own connection.")
    if disabled:
        pv_text.append("! the feeder's own PV systems are switched off (the penetration is the one asked for):")
        pv_text += [f"Edit PVSystem.{n} enabled=no" for n in disabled]
    pv_text += b.pv_lines
    master_text = (
        "! gridmarket generic case: the feeder is redirected by absolute path (not copied);\n"
        "! PVSystems.dss adds the PV. Rules and figures: ../PROVENANCE.md.\n"
        f'Redirect "{master.as_posix()}"\n'
        "Redirect PVSystems.dss\n"
    )
    network = {"Master.dss": master_text, "PVSystems.dss": "\n".join(pv_text) + "\n"}

    members: dict[str, list[str]] = {}
    for a in b.agents:
        if a["kind"] == "consumer":
            members.setdefault(str(a["community"]), []).append(str(a["name"]))
    demand = np.sum([b.columns[ld.name] for ld in info.loads], axis=0)
    facts = {
        "master": master.as_posix(), "n_loads": len(info.loads), "rule": str(rule), "members": members,
        "labels": labels, "sources": b.sources, "loadshape": loadshape, "start_hour": start_hour,
        "n_pv": b.n_pv, "pv_kwp_total": b.pv_kwp, "disabled": disabled,
        "pv_rule": (f"{pv_kwp:g} kWp per household" if pv_kwp is not None else
                    f"{pv_percent_of_peak:g} % of peak" if pv_percent_of_peak is not None else
                    "the feeder's own PV systems"),
        "passive": [a["name"] for a in b.agents if a["kind"] == "passive" and a["element"].startswith("Load.")],
        "demand_kwh": float(demand.sum() * dt), "peak_kw": float(demand.max()),
        "pv_kwh": float(sum(float(np.sum(b.columns[a["profile"]]) * a["scale"] * dt) for a in b.agents
                            if a["kind"] == "producer")),
        "steps": n_steps, "dt": dt, "cons": cons, "prod": prod, "kva_ratio": kva_ratio,
    }
    comments = {
        "network": f"Feeder {master.as_posix()} (redirected, not copied) + gridmarket PV (network/PVSystems.dss).",
        "communities": _community_comment(facts),
    }
    head = ("Written by gridmarket.cases.generic.new_case (gridmarket new-case FEEDER.dss).\n"
            "Rules and figures: PROVENANCE.md.")
    toml = case_toml_text(tree, header=head, comments=comments, where="new_case settings")
    return write_case(Path(out), case_toml=toml, agents=b.agents, profiles_header=header,
                      profiles_rows=rows, network=network, extra={"PROVENANCE.md": _provenance(facts)},
                      overwrite=overwrite)


@dataclass
class _Build:
    """Agents, profile columns and PV lines of a case being built."""

    info: FeederInfo
    com: Mapping[str, str | None]
    cons: Mapping[str, Any]
    prod: Mapping[str, Any]
    kva_ratio: float
    position: Mapping[str, int]  #: load name -> 1-based position in the feeder
    agents: list[dict[str, Any]] = field(default_factory=list)
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    pv_lines: list[str] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=dict)
    n_pv: int = 0
    pv_kwp: float = 0.0

    def _producer(self, row: dict[str, Any], k: int, community: str) -> dict[str, Any]:
        return {**row, "kind": "producer", "community": community,
                "a": coefficient(self.prod.get("a"), k, 0.5, "[producers].a"),
                "b": coefficient(self.prod.get("b"), k, 0.7, "[producers].b"), "c": 0.0}

    def add_households(self, profiles: Mapping[str, LoadProfile], *, pv_kwp: float | None,
                       pv_percent: float | None) -> None:
        """A consumer (or passive load) per load and, with a penetration, its PV."""
        taken = {pv.name for pv in self.info.pvsystems}
        for ld in self.info.loads:
            prof = profiles[ld.name]
            src = "loadshape" if prof.source.startswith("loadshape") else prof.source
            self.sources[src] = self.sources.get(src, 0) + 1
            self.columns[ld.name] = np.round(np.maximum(prof.p_kw, 0.0), 6)
            k, c = self.position[ld.name], self.com[ld.name]
            pf: float | None = None
            if "pf" in self.cons:
                pf = float(self.cons["pf"])
            elif prof.q_kvar is not None:
                p_mean, q_mean = float(prof.p_kw.mean()), float(prof.q_kvar.mean())
                if p_mean > 0:
                    pf = round(p_mean / math.hypot(p_mean, q_mean), 4)
            row = {"name": ld.name, "element": f"Load.{ld.name}", "profile": ld.name, "scale": 1.0, "pf": pf}
            if c is None:
                self.agents.append({**row, "kind": "passive", "community": None})
                continue
            self.agents.append({**row, "kind": "consumer", "community": c,
                                "a": coefficient(self.cons.get("a"), k, 0.1, "[consumers].a"),
                                "b": coefficient(self.cons.get("b"), k, 0.3, "[consumers].b"), "c": 0.0,
                                "flex": coefficient(self.cons.get("flex"), k, 0.5, "[consumers].flex")})
            if (pv_kwp is None and pv_percent is None) or ld.kv >= _LV_KV:
                continue
            kwp = pv_kwp if pv_kwp is not None else (pv_percent or 0.0) / 100.0 * float(self.columns[ld.name].max())
            kwp = round(float(kwp), 3)
            if kwp < _MIN_KWP:
                continue
            pv_name = _unique_name(f"pv_{ld.name}", taken)
            bus1, phases, kv, conn = _pv_connection(ld, self.info)
            self.pv_lines.append(
                f"New PVSystem.{pv_name} phases={phases} bus1={bus1} kV={_num(kv)} conn={conn} "
                f"kVA={_num(self.kva_ratio * kwp)} Pmpp={_num(kwp)} irradiance=1 pf=1 %cutin=0 %cutout=0")
            self.agents.append(self._producer({"name": pv_name, "element": f"PVSystem.{pv_name}",
                                               "profile": "pv_pu", "scale": kwp}, k, c))
            self.pv_kwp += kwp
            self.n_pv += 1

    def adopt_feeder_pv(self, households: Mapping[str, str], pv_pu: np.ndarray, *, steps: int,
                        step_hours: float, start_hour: float, loadshape: str) -> None:
        """The feeder's own PVSystems as producers of the household at (or nearest) their bus."""
        for pv in self.info.pvsystems:
            owner = nearest_household(self.info, pv.bus, households)
            cap = min(pv.pmpp_kw, pv.kva) / pv.pmpp_kw if pv.pmpp_kw > 0 else 0.0
            if owner is None or cap <= 0:
                continue
            shape_name = shape_of(pv, loadshape)
            shape = self.info.loadshapes.get(shape_name) if shape_name else None
            if shape is None:
                per_kwp, col = pv_pu, "pv_pu"
            else:
                per_kwp = step_means_of(shape, shape.p_mult, steps, step_hours, start_hour) * pv.irradiance
                col = f"pv_{shape.name}"
            if per_kwp.max() > cap + 1e-12:  # never ask for more than the inverter gives
                per_kwp, col = np.minimum(per_kwp, cap), f"pv_{pv.name}"
            self.columns.setdefault(col, np.round(np.maximum(per_kwp, 0.0), 6))
            row = {"name": _unique_name(pv.name, {a["name"] for a in self.agents}),
                   "element": f"PVSystem.{pv.name}", "profile": col, "scale": round(pv.pmpp_kw, 6)}
            c = self.com[owner]
            if c is None:
                self.agents.append({**row, "kind": "passive", "community": None})
                continue
            self.agents.append(self._producer(row, self.position[owner], c))
            self.pv_kwp += pv.pmpp_kw
            self.n_pv += 1


def _profile_rows(columns: Mapping[str, np.ndarray], start: str | None, steps: int, step_hours: float
                  ) -> tuple[list[str], list[list[Any]]]:
    """profiles.csv header and rows: ``time`` from ``start`` (ISO), else ``step``."""
    if start:
        try:
            times = pd.date_range(pd.Timestamp(start), periods=steps, freq=pd.Timedelta(hours=step_hours))
        except ValueError as exc:
            msg = f"start must be an ISO timestamp, got {start!r}"
            raise GridmarketError(msg) from exc
        fmt = "%Y-%m-%dT%H:%M" if (step_hours * 60).is_integer() else "%Y-%m-%dT%H:%M:%S"
        index: list[Any] = [t.strftime(fmt) for t in times]
    else:
        index = list(range(steps))
    names = list(columns)
    rows = [[index[s], *(float(columns[n][s]) for n in names)] for s in range(steps)]
    return ["time" if start else "step", *names], rows


def _community_key(c: object) -> tuple[int, str]:
    s = str(c or "")
    if s.startswith("C") and s[1:].isdigit():
        return (int(s[1:]), "")
    return (1 << 30, s)


def _community_comment(f: Mapping[str, Any]) -> str:
    lines = [f"Communities by rule {f['rule']!r}:"]
    for c, names in f["members"].items():
        label = f["labels"].get(c)
        lines.append(f"  {c} ({len(names)} households)" + (f": {label}" if label else ""))
    return "\n".join(lines)


def _provenance(f: Mapping[str, Any]) -> str:
    com = "\n".join(
        f"- `{c}` ({len(n)} households{', ' + f['labels'][c] if c in f['labels'] else ''}): "
        + ", ".join(n[:12]) + (" ..." if len(n) > 12 else "")
        for c, n in f["members"].items())
    src = ", ".join(f"{k}: {v}" for k, v in sorted(f["sources"].items()))
    disabled = (f"\nThe feeder's own PV systems were switched off: {', '.join(f['disabled'])}."
                if f["disabled"] else "")
    passive = (f"\nPassive loads (no market, no PV): {', '.join(f['passive'])}." if f["passive"] else "")
    return f"""\
# Generic case — provenance

Written by `gridmarket.cases.generic.new_case` from the OpenDSS feeder `{f['master']}`, which
`network/Master.dss` redirects by absolute path (it is not copied: the case needs the feeder in
place). The rules are in the docstring of `gridmarket/cases/generic.py`.

## Households and profiles
- {f['n_loads']} enabled loads, each a consumer agent of the same name driving `Load.<name>`.
- Profile sources ({f['loadshape']!r} shape choice): {src}.
- {f['steps']} steps of {f['dt']:g} h from hour {f['start_hour']:g} of the loadshapes' clock; each value is
  the mean demand over the step [kW].{passive}

## PV
- Rule: {f['pv_rule']}; {f['n_pv']} systems, {f['pv_kwp_total']:.3f} kWp in total; inverter kVA =
  {f['kva_ratio']:g} × kWp, unity pf, on each LV load's own connection (split-phase legs: across both legs).{disabled}
- Producers follow `pv_pu` [kW/kWp] × their kWp (`scale`).

## Communities (rule `{f['rule']}`)
{com}

## Economics
Consumers: {dict(f['cons'])}; producers: {dict(f['prod'])} (a number, or a [lo, hi] range spread over the
households by the golden-ratio sequence of their position in the feeder). Grid prices and every other
setting: `case.toml`.

## Figures
| quantity | value |
|---|---|
| demand, all loads | {f['demand_kwh']:.1f} kWh (peak {f['peak_kw']:.1f} kW) |
| PV available | {f['pv_kwh']:.1f} kWh |
"""
