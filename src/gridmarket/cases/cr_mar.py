"""Build the Costa Rica "MAR" study cases 1 and 2 from the shared data, at run time.

The MAR feeder (``shared/data/cr_mar``, from github.com/MarioPeraltaA/AMI) has no reuse
licence, so these cases are never shipped or committed: :func:`build_case` writes a case
folder whose ``network/Master.dss`` redirects the feeder's ``DSS/Master_MAR.dss`` by absolute
path and adds one PV system per load bus.

Rules (deterministic; repeated in the case's ``case.toml`` comments and ``PROVENANCE.md``):

- **Agents.** Load ``n_1FMAR<k>`` is agent ``Load<kk>`` (``kk`` = k, two digits) driving
  ``Load.n_1FMAR<k>``; its PV is agent ``PV<kk>`` driving ``PVSystem.PV<kk>`` (single-phase
  240 V on the load's ``bus.1.2``, ``pv_kwp`` kWp, ``kVA = 1.1 × kWp``).
- **Load profiles.** Each load's own ``daily=`` loadshape (MAR_LoadsLV.dss → MAR_Loadshapes.dss
  → ``profiles/<sector>/<curve>.csv``, column 1 = P [kW], column 2 = Q [kvar], 96 × 15 min),
  P averaged to 24 hourly means [kW]. Loads with an all-zero curve (``curve0_00R/C``) are kept
  with zero demand. ``pf`` per agent = P̄ / √(P̄² + Q̄²) of the day's mean P and Q; for
  zero-energy loads the feeder's aggregate pf.
- **PV profile.** pvlib clear-sky output for San José (``profiles/pvlib_costa_rica``, hourly,
  kW per kWp) on :data:`PV_DATE` (mid dry season).
- **Longer runs** (``days > 1``, e.g. a year of 365 days from :data:`PV_DATE`): day 0 is the
  measured day above; on day ``d`` every load takes the hourly *shape* of the load ``d`` places
  further along among the loads of its sector (R or C) with non-zero energy, scaled to its own
  mean power and capped at its own measured peak (:func:`gridmarket.cases.profiles.rotate_days`),
  so each customer keeps its energy per day and its peak while the timing varies; PV is the pvlib day of the same date, wrapping within the
  2023 file (:func:`gridmarket.cases.profiles.pvlib_hourly_days`).
- **Case 1.** One dispersed community ``C1``: loads ``n_1FMAR37`` … ``n_1FMAR92`` (56 of 92,
  61 %, spread over transformers MAR1P_2 and MAR1P_3) and their PV. Loads 1–36 are
  ``passive`` (they follow their profile) and have no PV in the network.
- **Case 2.** Five communities over all loads and PV: ``C5`` dispersed = every 5th load
  (k = 5, 10, …, 90: 18 loads on all three transformers); the rest by transformer group
  (``!Group=`` / ``GROUP_LV``), where the group with the most remaining loads is split in two at
  the median of its wider coordinate (X or Y of LoadsLVList.csv): ``C1``/``C2`` the two halves
  (lower coordinate first), then the other groups in group order ``C3``, ``C4``.
- **Economics** (R$, after Hug et al. 2015): tariff 0.80 R$/kWh, feed-in 0.30 R$/kWh. Consumers
  a ∈ [0.001, 0.01] R$/kWh², b ∈ [0.90, 1.30] R$/kWh (above the tariff), flex 0.1; producers
  a ∈ [0.001, 0.05] R$/kWh², b ∈ [0.05, 0.50] R$/kWh. Values are spread over the ranges by the
  golden-ratio sequence of the load number (:func:`gridmarket.cases.profiles.spread`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gridmarket.cases.profiles import consecutive_runs, pvlib_hourly_days, read_pq_csv, rotate_days, spread, to_hourly
from gridmarket.cases.shared import find_shared_data
from gridmarket.cases.writer import Key, Section, render_toml, write_case
from gridmarket.errors import GridmarketError

__all__ = [
    "MarLoad",
    "read_mar_loads",
    "communities",
    "build_case",
    "measured_voltages",
    "PV_DATE",
]

MASTER_REL = "cr_mar/DSS/Master_MAR.dss"
METERS_REL = "cr_mar/DSS/profiles/edemand.json"  #: one measured day of V/P/Q per meter (96 x 15 min)
METER_V_BASE = 240.0  #: [V] the meters read the 120/240 V service across both legs
MEASURED_CSV = "measured_voltages.csv"  #: written into a calibrated case folder
PVLIB_REL = "profiles/pvlib_costa_rica/pvlib_clearsky_sanjose_cr_2023_hourly.csv"
PV_DATE = "2023-03-15"  #: mid dry season (Dec-Apr), clear sky is the typical day then
CASE1_FIRST = 37  #: case 1: loads n_1FMAR37..92 are in the community
DISPERSED_EVERY = 5  #: case 2: every 5th load forms the dispersed community

IMPORT_PRICE = 0.80  #: [R$/kWh]
EXPORT_PRICE = 0.30  #: [R$/kWh]
CONSUMER_A = (0.001, 0.01)  #: [R$/kWh²]
CONSUMER_B = (0.90, 1.30)  #: [R$/kWh]
CONSUMER_FLEX = 0.1
PV_A = (0.001, 0.05)  #: [R$/kWh²]
PV_B = (0.05, 0.50)  #: [R$/kWh]


@dataclass(frozen=True)
class MarLoad:
    """One load of the MAR feeder with its data (units in the field comments)."""

    number: int  #: k of n_1FMAR<k>
    element: str  #: OpenDSS name, ``n_1FMAR<k>``
    bus: str  #: bus without phases, e.g. ``BUSLVMAR158``
    bus1: str  #: as in the DSS file, e.g. ``BUSLVMAR158.1.2``
    shape: str  #: daily loadshape name
    sector: str  #: ``R`` or ``C``
    group: int  #: transformer group 1..3
    x: float  #: [m], projected
    y: float  #: [m]
    p_kw: np.ndarray  #: hourly mean P, shape (24,) [kW]
    p_mean_kw: float  #: mean P over the day [kW]
    q_mean_kvar: float  #: mean Q over the day [kvar]

    @property
    def agent(self) -> str:
        return f"Load{self.number:02d}"

    @property
    def pv(self) -> str:
        return f"PV{self.number:02d}"


_RE_LOAD = re.compile(r"^\s*new\s+Load\.(\S+)\s.*?\bbus1=(\S+).*?\bdaily=(\S+)", re.IGNORECASE)
_RE_GROUP = re.compile(r"!Group=(\d+)", re.IGNORECASE)
_RE_SHAPE = re.compile(r"^\s*New\s+Loadshape\.(\S+)\s.*?\bPmult=\(file=([^,)]+)", re.IGNORECASE)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        msg = f"cannot read {path}: {exc}"
        raise GridmarketError(msg) from exc


def read_mar_loads(dss_dir: Path) -> list[MarLoad]:
    """Read the 92 MAR loads, their buses, groups, coordinates and hourly profiles.

    Parameters
    ----------
    dss_dir : pathlib.Path
        ``cr_mar/DSS``.

    Returns
    -------
    list of MarLoad
        Sorted by load number.
    """
    shapes: dict[str, Path] = {}
    for line in _read(dss_dir / "MAR_Loadshapes.dss").splitlines():
        m = _RE_SHAPE.match(line)
        if m:
            shapes[m.group(1).lower()] = dss_dir / m.group(2).strip().replace("\\", "/")
    table = pd.read_csv(dss_dir / "LoadsLVList.csv", index_col=0)
    table = table.set_index(table["DSS_NAME"].str.lower())
    out = []
    for line in _read(dss_dir / "MAR_LoadsLV.dss").splitlines():
        m = _RE_LOAD.match(line)
        if not m:
            continue
        name, bus1, shape = m.group(1), m.group(2), m.group(3)
        g = _RE_GROUP.search(line)
        num = re.search(r"(\d+)$", name)
        if num is None or g is None:
            msg = f"{dss_dir / 'MAR_LoadsLV.dss'}: cannot read load number or !Group= of {name!r}"
            raise GridmarketError(msg)
        if shape.lower() not in shapes:
            msg = f"load {name} uses daily={shape}, which MAR_Loadshapes.dss does not define"
            raise GridmarketError(msg)
        if name.lower() not in table.index:
            msg = f"load {name} is missing from {dss_dir / 'LoadsLVList.csv'}"
            raise GridmarketError(msg)
        row = table.loc[name.lower()]
        bus = bus1.split(".")[0]
        if str(row["BUS_BT"]).lower() != bus.lower() or int(row["GROUP_LV"]) != int(g.group(1)):
            msg = (f"load {name}: MAR_LoadsLV.dss says bus {bus} group {g.group(1)}, LoadsLVList.csv says "
                   f"bus {row['BUS_BT']} group {row['GROUP_LV']}")
            raise GridmarketError(msg)
        p, q = read_pq_csv(shapes[shape.lower()])
        out.append(MarLoad(
            number=int(num.group(1)), element=name, bus=bus, bus1=bus1, shape=shape,
            sector=str(row["SECTOR"]), group=int(g.group(1)), x=float(row["X"]), y=float(row["Y"]),
            p_kw=to_hourly(p, minutes=15), p_mean_kw=float(p.mean()), q_mean_kvar=float(q.mean()),
        ))
    if not out:
        msg = f"no loads found in {dss_dir / 'MAR_LoadsLV.dss'}"
        raise GridmarketError(msg)
    return sorted(out, key=lambda ld: ld.number)


def _pf(p: float, q: float) -> float:
    return round(abs(p) / float(np.hypot(p, q)), 4)


def communities(loads: Sequence[MarLoad], case: int) -> dict[int, str | None]:
    """Community of every load (by number) for case 1 or 2; ``None`` = passive (case 1).

    See the module docstring for the rules.
    """
    if case == 1:
        return {ld.number: ("C1" if ld.number >= CASE1_FIRST else None) for ld in loads}
    if case != 2:
        msg = f"case must be 1 or 2, got {case!r}"
        raise GridmarketError(msg)
    out: dict[int, str | None] = {}
    rest: dict[int, list[MarLoad]] = {}
    for ld in loads:
        if ld.number % DISPERSED_EVERY == 0:
            out[ld.number] = "C5"
        else:
            rest.setdefault(ld.group, []).append(ld)
    groups = sorted(rest)
    if len(groups) != 3:
        msg = f"case 2 expects 3 transformer groups, found {len(groups)}: {groups}"
        raise GridmarketError(msg)
    biggest = min(groups, key=lambda g: (-len(rest[g]), g))
    members = rest[biggest]
    xs = np.array([ld.x for ld in members])
    ys = np.array([ld.y for ld in members])
    coord = xs if np.ptp(xs) >= np.ptp(ys) else ys
    order = sorted(range(len(members)), key=lambda i: (coord[i], members[i].number))
    half = len(members) // 2
    for rank, i in enumerate(order):
        out[members[i].number] = "C1" if rank < half else "C2"
    names = iter(["C3", "C4"])
    for g in groups:
        if g == biggest:
            continue
        name = next(names)
        for ld in rest[g]:
            out[ld.number] = name
    return out


def build_case(
    out: Path,
    *,
    case: int,
    data_dir: Path | str | None = None,
    pv_kwp: float = 3.0,
    overwrite: bool = False,
    days: int = 1,
    calibrated: bool = False,
) -> Path:
    """Write Costa Rica MAR case 1 or 2 to ``out`` (atomically).

    Parameters
    ----------
    out : pathlib.Path
        Case folder to create.
    case : int
        1 (one dispersed community of 56 loads, the rest passive) or 2 (five communities).
    data_dir : path, optional
        The shared data folder (holding ``cr_mar/`` and ``profiles/``); default: searched, see
        :func:`gridmarket.cases.shared.find_shared_data`.
    pv_kwp : float
        PV size at every community load bus [kWp]; inverter kVA = 1.1 × kWp.
    overwrite : bool
        Replace an existing folder.
    days : int
        Length of the case in days of 24 hourly steps from :data:`PV_DATE` (default 1: the
        measured day). Longer cases rotate the measured load shapes from day to day (module
        docstring); ``days=365`` is a year of 8,760 steps.
    calibrated : bool
        Fit ``[network] source_pu`` to the meters' measured voltages
        (:func:`measured_voltages`, written to ``measured_voltages.csv`` in the case folder) with
        :func:`gridmarket.calibrate.calibrate` (producers off: the measured feeder had no PV) and
        write it; ``PROVENANCE.md`` gets the bias and RMSE before and after.

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    GridmarketError
        When the shared data are missing (the message says where it looked) or malformed.
    """
    if case not in (1, 2):
        msg = f"case must be 1 or 2, got {case!r}"
        raise GridmarketError(msg)
    if not pv_kwp > 0:
        msg = f"pv_kwp must be positive, got {pv_kwp!r}"
        raise GridmarketError(msg)
    if not isinstance(days, int) or days < 1:
        msg = f"days must be a positive integer, got {days!r}"
        raise GridmarketError(msg)
    data = find_shared_data(data_dir, need=MASTER_REL)
    master = (data / MASTER_REL).resolve()
    loads = read_mar_loads(master.parent)
    com = communities(loads, case)
    pv_all = pvlib_hourly_days(data / PVLIB_REL, PV_DATE, days)
    pv_pu = pv_all[:24]
    load_all_kw = rotate_days(np.array([ld.p_kw for ld in loads]), np.array([ld.sector for ld in loads]), days)

    total_p = sum(ld.p_mean_kw for ld in loads)
    total_q = sum(ld.q_mean_kvar for ld in loads)
    pf_feeder = _pf(total_p, total_q)

    agents = []
    pv_lines = [
        f"! PV added by gridmarket (case {case}): {pv_kwp:g} kWp single-phase 240 V at every "
        + ("load bus." if case == 2 else "community load bus."),
        "! Unity pf, no cut-in/cut-out: gridmarket sets each system's output per step.",
    ]
    for ld in loads:
        c = com[ld.number]
        pf = _pf(ld.p_mean_kw, ld.q_mean_kvar) if ld.p_mean_kw > 0 else pf_feeder
        if c is None:
            agents.append({"name": ld.agent, "kind": "passive", "community": None,
                           "element": f"Load.{ld.element}", "profile": ld.agent, "scale": 1.0,
                           "a": 0.0, "b": 0.0, "c": 0.0, "flex": 0.0, "pf": pf})
            continue
        agents.append({"name": ld.agent, "kind": "consumer", "community": c, "element": f"Load.{ld.element}",
                       "profile": ld.agent, "scale": 1.0,
                       "a": spread(ld.number, *CONSUMER_A, offset=0.1),
                       "b": spread(ld.number, *CONSUMER_B, offset=0.3), "c": 0.0, "flex": CONSUMER_FLEX,
                       "pf": pf})
        agents.append({"name": ld.pv, "kind": "producer", "community": c, "element": f"PVSystem.{ld.pv}",
                       "profile": "pv_pu", "scale": float(pv_kwp),
                       "a": spread(ld.number, *PV_A, offset=0.5),
                       "b": spread(ld.number, *PV_B, offset=0.7), "c": 0.0, "flex": 0.0})
        pv_lines.append(f"New PVSystem.{ld.pv} phases=1 bus1={ld.bus}.1.2 kV=0.24 kVA={1.1 * pv_kwp:.6g} "
                        f"Pmpp={pv_kwp:g} irradiance=1 pf=1 %cutin=0 %cutout=0")

    # rows by community (C1, C2, ...; passive last), then load number, consumer before its PV:
    # the loader orders communities by first appearance, so they come out as C1, C2, ...
    number = {ld.agent: ld.number for ld in loads} | {ld.pv: ld.number for ld in loads}
    agents.sort(key=lambda a: (a["community"] is None, a["community"] or "", number[str(a["name"])],
                               a["kind"] == "producer"))

    steps = 24 * days
    stamps = pd.date_range(PV_DATE, periods=steps, freq="h").strftime("%Y-%m-%dT%H:%M")
    header = ["time", *(ld.agent for ld in loads), "pv_pu"]
    load_r = np.round(load_all_kw, 6)
    pv_r = np.round(pv_all, 6)
    rows = [[t, *load_r[h].tolist(), float(pv_r[h])] for h, t in enumerate(stamps)]

    master_text = (
        f"! gridmarket Costa Rica MAR case {case}: the feeder is redirected from the shared data\n"
        "! (not redistributable, so not copied); PVSystems.dss adds the PV. See ../PROVENANCE.md.\n"
        f'Redirect "{master.as_posix()}"\n'
        "Redirect PVSystems.dss\n"
        "! bus coordinates (for the network map) from the feeder's own bus lists\n"
        f'Buscoords "{(master.parent / "MAR_BusListMV.csv").as_posix()}"\n'
        f'Buscoords "{(master.parent / "MAR_BusListLV.csv").as_posix()}"\n'
    )
    network = {"Master.dss": master_text, "PVSystems.dss": "\n".join(pv_lines) + "\n"}

    members: dict[str, list[int]] = {}
    for ld in loads:
        c = com[ld.number]
        if c is not None:
            members.setdefault(c, []).append(ld.number)
    in_com = [ld for ld in loads if com[ld.number] is not None]
    load_c = np.sum([ld.p_kw for ld in in_com], axis=0)
    load_all = np.sum([ld.p_kw for ld in loads], axis=0)
    pv_kw = len(in_com) * pv_kwp * pv_pu
    f = {
        "case": case, "pv_kwp": pv_kwp, "n_loads": len(loads), "members": dict(sorted(members.items())),
        "load_all_kwh": float(load_all.sum()), "load_com_kwh": float(load_c.sum()),
        "pv_kwh": float(pv_kw.sum()), "n_pv": len(in_com), "pf_feeder": pf_feeder,
        "export_hours": [h for h in range(24) if pv_kw[h] > load_c[h]],
        "zero": [ld.number for ld in loads if ld.p_mean_kw == 0],
        "peak_all_kw": float(load_all.max()), "peak_all_hour": int(load_all.argmax()),
        "master": master.as_posix(), "days": days,
    }
    extra = {"PROVENANCE.md": _provenance(f)}
    if calibrated:
        extra[MEASURED_CSV] = measured_voltages(data).to_csv(index=False, lineterminator="\n")
    path = write_case(out, case_toml=_case_toml(f), agents=agents, profiles_header=header,
                      profiles_rows=rows, network=network, extra=extra, overwrite=overwrite)
    if calibrated:
        _calibrate(path)
    return path


def measured_voltages(data_dir: Path | str | None = None) -> pd.DataFrame:
    """The meters' measured day as calibration input (:mod:`gridmarket.calibrate`).

    ``edemand.json`` holds 96 readings (15 min from 00:00) of voltage [V, across both legs of
    the 120/240 V service], P and Q per meter ``ME...``; a meter is the load whose ``daily=``
    loadshape is the meter's ``CurveName`` (case-insensitive). Meters whose curve several loads
    share (the all-zero ``curve0_00R``/``curve0_00C``) cannot be placed and are left out.

    Returns
    -------
    pandas.DataFrame
        Columns ``meter`` (agent name ``Load<kk>``), ``time`` (ISO, on :data:`PV_DATE`, the
        case's day), ``volts`` [V] and ``v_base`` (240 V); zero readings are kept (the
        calibration drops them as meter gaps).
    """
    import json

    data = find_shared_data(data_dir, need=METERS_REL)
    try:
        meters = json.loads((data / METERS_REL).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        msg = f"cannot read {data / METERS_REL}: {exc}"
        raise GridmarketError(msg) from exc
    loads = read_mar_loads((data / MASTER_REL).parent)
    by_shape: dict[str, list[MarLoad]] = {}
    for ld in loads:
        by_shape.setdefault(ld.shape.lower(), []).append(ld)
    rows = []
    for meter_id, m in meters.items():
        owners = by_shape.get(str(m.get("CurveName", "")).lower(), [])
        volts = m.get("Voltage") or []
        if len(owners) != 1 or not volts:
            continue
        times = pd.date_range(PV_DATE, periods=len(volts), freq=pd.Timedelta(days=1) / len(volts))
        for t, v in zip(times, volts, strict=True):
            rows.append((owners[0].agent, t.strftime("%Y-%m-%dT%H:%M"), float(v), METER_V_BASE, meter_id))
    if not rows:
        msg = f"{data / METERS_REL}: no meter matches a load's loadshape"
        raise GridmarketError(msg)
    return pd.DataFrame(rows, columns=["meter", "time", "volts", "v_base", "meter_id"])


def _calibrate(path: Path) -> None:
    """Fit and write [network] source_pu of the case at ``path``; note the figures in PROVENANCE.md."""
    import warnings

    from gridmarket.calibrate import calibrate, write_source_pu
    from gridmarket.case import CaseWarning, load_case

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CaseWarning)
        case = load_case(path)
    res = calibrate(case, path / MEASURED_CSV, producers=False)
    write_source_pu(path, round(res.source_pu, 4))
    note = f"""
## Calibration (source voltage)
`[network] source_pu` = {round(res.source_pu, 4):.4f} pu was fitted (least squares, `gridmarket calibrate`) to the
measured voltages of {res.per_meter.shape[0]} meters (`{MEASURED_CSV}`, from `profiles/edemand.json`; {res.points}
meter-hours, {res.dropped} zero readings dropped) on real OpenDSS solves of the case's loads without PV. Error
(simulated − measured): bias {res.bias_before:+.4f} → {res.bias_after:+.4f} pu
({res.bias_before * METER_V_BASE:+.2f} → {res.bias_after * METER_V_BASE:+.2f} V on 240 V),
RMSE {res.rmse_before:.4f} → {res.rmse_after:.4f} pu; the feeder's own source is {res.source_pu_before:.4f} pu.
"""
    prov = path / "PROVENANCE.md"
    prov.write_text(prov.read_text(encoding="utf-8") + note, encoding="utf-8")


def _ranges(nums: Sequence[int]) -> str:
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in consecutive_runs(nums))


def _hours(hours: Sequence[int]) -> str:
    if not hours:
        return "none"
    return ", ".join(f"{h:02d}" for h in hours)


def _community_text(f: dict) -> str:
    if f["case"] == 1:
        return (f"Case 1: one dispersed community C1 = loads n_1FMAR{CASE1_FIRST}..92 "
                f"({len(f['members']['C1'])} of {f['n_loads']}) with their PV;\n"
                f"loads 1..{CASE1_FIRST - 1} are passive (their profile, no market) and have no PV.")
    lines = [f"Case 2: five communities over all {f['n_loads']} loads and their PV:"]
    what = {"C1": "transformer group with most loads, lower half along its wider axis",
            "C2": "same group, upper half", "C3": "next transformer group", "C4": "last transformer group",
            "C5": f"dispersed: every {DISPERSED_EVERY}th load"}
    for c, nums in f["members"].items():
        lines.append(f"  {c} ({len(nums)}): {what[c]}; loads {_ranges(nums)}")
    return "\n".join(lines)


def _days_text(f: dict) -> str:
    if f["days"] == 1:
        return ""
    return (f"## Length\n{f['days']} days ({24 * f['days']} hourly steps) from {PV_DATE}. Day 0 is the measured day; "
            "on day d each load takes the hourly shape of the load d places further along among the loads of its "
            "sector with non-zero energy, scaled to its own mean power and capped at its own measured peak "
            "(`gridmarket.cases.profiles.rotate_days`). "
            "PV: the pvlib 2023 day of the same date, wrapping from 31 December to 1 January. The figures below "
            "are those of day 0.\n\n")


def _case_toml(f: dict) -> str:
    sections = [
        Section("case", [Key("name", f"cr-mar-case{f['case']}"), Key("currency", "R$")]),
        Section("network", [
            Key("master", "network/Master.dss"), Key("vmin_pu", 0.95), Key("vmax_pu", 1.05),
            Key("monitored_buses", "lv", "the 120/240 V split-phase network"),
        ], comment=("Costa Rica MAR feeder (UCR/EPERLab, github.com/MarioPeraltaA/AMI; no reuse licence:\n"
                    "this folder is generated at run time and must not be committed).")),
        Section("time", [Key("start", f"{PV_DATE}T00:00", "date of the pvlib PV day; the AMI day is undated"),
                         Key("steps", 24 * f["days"]), Key("step_hours", 1.0)]),
        Section("market", [Key("horizon", 1), Key("battery_model", "physical"),
                           Key("trade_fee", 0.001), Key("tie_break", 1e-6)]),
        Section("grid", [
            Key("import_price", IMPORT_PRICE, "R$/kWh, tariff"),
            Key("export_price", EXPORT_PRICE, "R$/kWh, feed-in price, below the tariff"),
        ], comment=(
            "Economics after Hug et al. (2015), spread deterministically over the ranges per load:\n"
            f"consumers a in [{CONSUMER_A[0]}, {CONSUMER_A[1]}] R$/kWh², b in [{CONSUMER_B[0]:.2f}, "
            f"{CONSUMER_B[1]:.2f}] R$/kWh (above the tariff), flex {CONSUMER_FLEX};\n"
            f"PV a in [{PV_A[0]}, {PV_A[1]}] R$/kWh², b in [{PV_B[0]:.2f}, {PV_B[1]:.2f}] R$/kWh "
            "(cheap PV exports its surplus, dearer PV sells only locally).")),
        Section("communities", [Key("links", "all")], comment=_community_text(f)),
        Section("placement", [Key("ladder", [1, 3, 5]), Key("max_iterations", 10),
                              Key("stop_when_worse", True)]),
    ]
    head = (f"Costa Rica MAR feeder, study case {f['case']}; written by gridmarket.cases.cr_mar.build_case.\n"
            "Rules and figures: PROVENANCE.md.")
    return render_toml(sections, header=head)


def _provenance(f: dict) -> str:
    com_lines = "\n".join(f"  - `{c}` ({len(n)} loads): n_1FMAR {_ranges(n)}" for c, n in f["members"].items())
    return f"""\
# Costa Rica MAR case {f['case']} — provenance

Generated by `gridmarket.cases.cr_mar.build_case(case={f['case']}, pv_kwp={f['pv_kwp']:g})`. **Do not commit or
redistribute:** the feeder and its AMI profiles come from github.com/MarioPeraltaA/AMI, which has no licence file
(see `shared/data/cr_mar/PROVENANCE.md`).

## Network
`network/Master.dss` redirects `{f['master']}` (the feeder with its gridmarket wrapper `Master_MAR.dss`: loads at
kW=1 kvar=1, voltage bases set), then `network/PVSystems.dss` adds {f['n_pv']} PV systems: {f['pv_kwp']:g} kWp,
kVA = {1.1 * f['pv_kwp']:.3g}, single-phase 240 V across `bus.1.2` of the load's bus, unity pf, `%cutin=0 %cutout=0`.

## Agents and profiles
- `Load<kk>` drives `Load.n_1FMAR<k>`; its profile column `Load<kk>` is the hourly mean of the load's own
  15-minute `daily=` loadshape P column [kW] (MAR_LoadsLV.dss → MAR_Loadshapes.dss → profiles/*/curve*.csv).
  Loads with an all-zero curve keep zero demand: n_1FMAR {_ranges(f['zero']) or 'none'}.
- `pf` = P̄/√(P̄²+Q̄²) from the day's mean P and Q of the load's curve; zero-energy loads get the feeder's
  aggregate pf {f['pf_feeder']}. (The network's own loads are kW=1 kvar=1, pf 0.707.)
- `PV<kk>` drives `PVSystem.PV<kk>` with profile `pv_pu` (kW per kWp) × scale {f['pv_kwp']:g}: pvlib clear-sky
  output for San José, Costa Rica on {PV_DATE} (hourly means; model-generated, not measured).

## Communities
{com_lines}

## Economics (R$)
Grid tariff {IMPORT_PRICE} R$/kWh, feed-in {EXPORT_PRICE} R$/kWh. After Hug et al. (2015): consumers
a ∈ [{CONSUMER_A[0]}, {CONSUMER_A[1]}] R$/kWh², b ∈ [{CONSUMER_B[0]:.2f}, {CONSUMER_B[1]:.2f}] R$/kWh, flex
{CONSUMER_FLEX}; producers a ∈ [{PV_A[0]}, {PV_A[1]}] R$/kWh², b ∈ [{PV_B[0]:.2f}, {PV_B[1]:.2f}] R$/kWh. Each value is
`lo + (hi − lo)·frac(offset + k·0.618…)` for load number k (golden-ratio sequence; deterministic, evenly spread).

{_days_text(f)}## Figures of the day
| quantity | value |
|---|---|
| demand, all {f['n_loads']} loads | {f['load_all_kwh']:.1f} kWh (peak {f['peak_all_kw']:.1f} kW at {f['peak_all_hour']:02d}:00) |
| demand, community loads | {f['load_com_kwh']:.1f} kWh |
| PV available, {f['n_pv']} × {f['pv_kwp']:g} kWp | {f['pv_kwh']:.1f} kWh |
| hours with community PV above community demand | {len(f['export_hours'])}: {_hours(f['export_hours'])} |
"""
