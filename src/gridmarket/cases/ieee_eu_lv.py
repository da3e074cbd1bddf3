"""Build the default case: the IEEE European LV Test Feeder with rooftop PV at every house.

Sources (read from the shared data folder, see :mod:`gridmarket.cases.shared`):

- ``ieee_eu_lv/``: the feeder (BSD-style licence, EPRI / DSS-Extensions) and its 1-minute
  household load profiles ``Daily_1min_100profiles/load_profile_<k>.txt`` [kW];
- ``profiles/ausnet_pv/Residential PV data 30-min resolution.npy``: measured, normalised
  residential PV output (BSD 3-Clause, Team Nando / AusNet Services).

Rules (all deterministic; they are repeated in the case's ``PROVENANCE.md``):

- **Communities by feeder branch.** The feeder is a tree rooted at the transformer's LV bus.
  From there, follow the child subtree that holds the most loads until a bus has at least
  two child subtrees that each hold at least ``min_share`` (20 %) of all loads. Each of
  those subtrees is a community; every other load (on the trunk upstream of that junction
  and its short laterals) forms the trunk community ``C1``; the branches are ``C2``, ``C3``,
  ... in the order of their lowest-numbered load.
- **PV sizing.** House ``k`` gets ``3 + (k - 1) mod 3`` kWp (3, 4, 5, 3, ...; mean 4 kWp),
  inverter ``kVA = 1.1 × kWp``, on the load's bus and phase.
- **Profiles.** Loads: the hourly mean of the 60 one-minute values of ``load_profile_k``.
  PV: the AusNet day with the smoothest (clearest) output (:func:`~gridmarket.cases.profiles.clearest_day`),
  30-minute values averaged to hours, taken as kW per kWp.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gridmarket.case.model import BatterySpec
from gridmarket.cases._licences import EPRI_DSS_EXTENSIONS_BSD, TEAM_NANDO_BSD3
from gridmarket.cases.profiles import ausnet_days, clearest_day, consecutive_runs, read_column_file, to_hourly
from gridmarket.cases.shared import find_shared_data
from gridmarket.cases.writer import Cell, Key, Section, render_toml, write_case
from gridmarket.errors import GridmarketError
from gridmarket.topology import Topology, bus_name

__all__ = [
    "IeeeLoad",
    "FeederSplit",
    "read_loads",
    "read_lines",
    "lv_bus",
    "feeder_branches",
    "pv_kwp",
    "build_case",
    "SOURCE_COMMIT",
]

SOURCE_COMMIT = "3b208397160213cae4a9e2d0a7d1aa3528ce26e1"
SOURCE_REPO = "https://github.com/dss-extensions/electricdss-tst"
SOURCE_PATH = "Version8/Distrib/IEEETestCases/LVTestCase"
AUSNET_FILE = "Residential PV data 30-min resolution.npy"
AUSNET_COMMIT = "a73bfebf91661b77e386ee2d7ea159bcdc003796"
#: network files copied byte for byte
COPIED = ("LineCode.txt", "Lines.txt", "Transformers.txt", "Buscoords.txt")

# --- economics (R$; see the [grid] and agent comments in case.toml) -----------------------
IMPORT_PRICE = 0.80  #: grid tariff π_imp [R$/kWh]
EXPORT_PRICE = 0.30  #: feed-in price π_exp [R$/kWh]
CONSUMER_A = 0.02  #: [R$/kWh²]
CONSUMER_B = 1.00  #: [R$/kWh], above the tariff
CONSUMER_FLEX = 0.2
LOAD_PF = 0.95  #: the feeder's own load power factor (Loads.txt PF=0.95)
PV_A = 0.01  #: [R$/kWh²]
PV_B = 0.05  #: [R$/kWh]
KVA_PER_KWP = 1.1  #: PV inverter kVA per kWp
MIN_SHARE = 0.2
#: Source voltage [pu]. Upstream is 1.05 pu, which keeps the whole LV network at 1.046-1.050 pu
#: with no PV: any net export then lifts every LV bus above 1.05 pu. At 1.00 pu the midday
#: export gives overvoltage on the far parts of the feeder only (PROVENANCE.md, figures).
SOURCE_PU = 1.00


@dataclass(frozen=True)
class IeeeLoad:
    """One load of ``Loads.txt``: ``LOAD<number>`` on ``bus.phase``."""

    name: str  #: e.g. ``LOAD1``
    number: int  #: k in LOADk and in load_profile_k / Shape_k
    bus: str  #: bus name without phase, e.g. ``34``
    bus1: str  #: as written, e.g. ``34.1``


@dataclass(frozen=True)
class FeederSplit:
    """Result of :func:`feeder_branches`."""

    junction: str  #: the bus where the branches leave the trunk
    group: dict[str, int]  #: load name -> 0 (trunk) or 1, 2, ... (branch)


_RE_LOAD = re.compile(r"^\s*New\s+Load\.(\S+)\s.*?\bBus1=(\S+)", re.IGNORECASE)
_RE_LINE = re.compile(r"^\s*New\s+Line\.\S+\s.*?\bBus1=(\S+)\s+Bus2=(\S+)", re.IGNORECASE)
_RE_TR = re.compile(r"Buses=\[\s*(\S+)\s+(\S+?)\s*\]", re.IGNORECASE)
_RE_YEARLY = re.compile(r"\s+Yearly=\S+", re.IGNORECASE)


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="ascii").splitlines()
    except OSError as exc:
        msg = f"cannot read {path}: {exc}"
        raise GridmarketError(msg) from exc


def read_loads(folder: Path) -> list[IeeeLoad]:
    """Loads of ``folder/Loads.txt`` in file order."""
    out = []
    for line in _lines(folder / "Loads.txt"):
        m = _RE_LOAD.match(line)
        if m:
            name, bus1 = m.group(1), m.group(2)
            num = re.search(r"(\d+)$", name)
            if num is None:
                msg = f"{folder / 'Loads.txt'}: load name {name!r} does not end in a number"
                raise GridmarketError(msg)
            out.append(IeeeLoad(name=name, number=int(num.group(1)), bus=bus1.split(".")[0].lower(), bus1=bus1))
    if not out:
        msg = f"no loads found in {folder / 'Loads.txt'}"
        raise GridmarketError(msg)
    return out


def read_lines(folder: Path) -> list[tuple[str, str]]:
    """(bus1, bus2) of every line in ``folder/Lines.txt``, phases stripped, lower case."""
    edges = []
    for line in _lines(folder / "Lines.txt"):
        m = _RE_LINE.match(line)
        if m:
            edges.append((m.group(1).split(".")[0].lower(), m.group(2).split(".")[0].lower()))
    return edges


def lv_bus(folder: Path) -> str:
    """The transformer's LV (second winding) bus from ``Transformers.txt``."""
    for line in _lines(folder / "Transformers.txt"):
        m = _RE_TR.search(line)
        if m:
            return m.group(2).split(".")[0].lower()
    msg = f"no 'Buses=[HV LV]' transformer found in {folder / 'Transformers.txt'}"
    raise GridmarketError(msg)


def feeder_branches(
    edges: Sequence[tuple[str, str]],
    root: str,
    load_bus: Mapping[str, str],
    *,
    min_share: float = MIN_SHARE,
) -> FeederSplit:
    """Group loads by feeder branch (the rule in the module docstring).

    Parameters
    ----------
    edges : sequence of (str, str)
        Lines as bus pairs; must form a tree (radial feeder) containing ``root``.
    root : str
        The transformer's LV bus.
    load_bus : mapping
        Load name → bus name.
    min_share : float
        A child subtree is a branch when it holds at least this share of all loads.

    Returns
    -------
    FeederSplit
        The junction bus and, per load, its group index: 0 for the trunk, 1, 2, ... for the
        branches, ordered by the position of their first load in ``load_bus``.
    """
    try:
        tree = Topology.from_pairs(edges, root)
    except ValueError as exc:
        msg = f"the feeder's lines do not reach its root bus {root!r}: {exc}"
        raise GridmarketError(msg) from exc
    hops = tree.hops()  # the feeder is radial: one path, so one parent, per bus
    parent: dict[str, str | None] = {b: (None if up is None else up[0]) for b, up in tree.parents().items()}
    order = sorted(parent, key=lambda b: (hops[b], b))
    root = tree.source
    load_bus = {name: bus_name(b) for name, b in load_bus.items()}
    missing = sorted({b for b in load_bus.values() if b not in parent})
    if missing:
        msg = f"load buses not connected to {root!r}: {missing[:5]}"
        raise GridmarketError(msg)
    children: dict[str, list[str]] = defaultdict(list)
    for v in order[1:]:
        p = parent[v]
        assert p is not None
        children[p].append(v)
    here: dict[str, int] = defaultdict(int)
    for b in load_bus.values():
        here[b] += 1
    count: dict[str, int] = {}
    for u in reversed(order):
        count[u] = here[u] + sum(count[c] for c in children[u])
    total = count[root]
    threshold = min_share * total

    u = root
    while True:
        large = [c for c in children[u] if count[c] >= threshold]
        if len(large) >= 2:
            break
        if not large:
            msg = (f"no junction splits the feeder into branches of at least {min_share:.0%} of the "
                   f"{total} loads (stopped at bus {u!r})")
            raise GridmarketError(msg)
        u = large[0]

    def top(b: str) -> str | None:
        while b is not None and b not in large:
            b = parent[b]  # type: ignore[assignment]
        return b

    branch_of = {name: top(b) for name, b in load_bus.items()}
    first: list[str] = []
    for name in load_bus:
        t = branch_of[name]
        if t is not None and t not in first:
            first.append(t)
    group = {name: (0 if branch_of[name] is None else first.index(branch_of[name]) + 1)  # type: ignore[arg-type]
             for name in load_bus}
    return FeederSplit(junction=u, group=group)


def pv_kwp(number: int) -> float:
    """PV size of house ``number`` [kWp]: 3, 4, 5 kWp cycling with the load number."""
    return float(3 + (number - 1) % 3)


def _pv_dss(loads: Sequence[IeeeLoad]) -> str:
    lines = ["! Rooftop PV added by gridmarket (one per household, on the load's bus and phase).",
             "! Size: 3 + (k-1) mod 3 kWp; kVA = 1.1 x kWp; unity pf; no cut-in/cut-out so that",
             "! any dispatched kW is produced. gridmarket sets each system's output per step."]
    for ld in loads:
        kwp = pv_kwp(ld.number)
        lines.append(f"New PVSystem.PV{ld.number} phases=1 bus1={ld.bus1} kV=0.23 kVA={KVA_PER_KWP * kwp:.3g} "
                     f"Pmpp={kwp:g} irradiance=1 pf=1 %cutin=0 %cutout=0")
    return "\n".join(lines) + "\n"


def _loads_dss(src: Path) -> bytes:
    """``Loads.txt`` with every ``Yearly=Shape_k`` removed (line endings kept)."""
    raw = src.read_bytes().decode("ascii")
    return _RE_YEARLY.sub("", raw).encode("ascii")


MASTER = """\
! gridmarket default case: IEEE European LV Test Feeder with rooftop PV (see ../PROVENANCE.md).
! Upstream Master.dss without LoadShapes (gridmarket sets each load's kW per step),
! without Monitors and without the solve command; PVSystems.dss is new.
! Source voltage: upstream pu=1.05; here pu={source_pu:.2f} (see ../PROVENANCE.md).
Clear
Set DefaultBaseFrequency=50
New Circuit.LVTest
Edit Vsource.Source BasekV=11 pu={source_pu:.4g} ISC3=3000 ISC1=5
Redirect LineCode.txt
Redirect Lines.txt
Redirect Transformers.txt
Redirect Loads.txt
Redirect PVSystems.dss
New EnergyMeter.m1 Line.LINE1 1
Set VoltageBases=[11 .416]
CalcVoltageBases
Buscoords Buscoords.txt
"""


def build_case(
    out: Path,
    *,
    data_dir: Path | str | None = None,
    source_pu: float = SOURCE_PU,
    notes: str = "",
    overwrite: bool = False,
) -> Path:
    """Write the default case folder (IEEE EU LV feeder, 55 houses with PV, 3 communities).

    Parameters
    ----------
    out : pathlib.Path
        Case folder to write (atomically; see :func:`gridmarket.cases.writer.write_case`).
    data_dir : path, optional
        The shared data folder holding ``ieee_eu_lv/`` and ``profiles/ausnet_pv/``.
    source_pu : float
        Voltage of the 11 kV source [pu]; upstream uses 1.05 (see :data:`SOURCE_PU`).
    notes : str
        Markdown appended to ``PROVENANCE.md`` (the build script adds power-flow figures).
    overwrite : bool
        Replace an existing folder.

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    data = find_shared_data(data_dir, need="ieee_eu_lv/Master.dss")
    feeder = data / "ieee_eu_lv"
    ausnet = data / "profiles" / "ausnet_pv" / AUSNET_FILE

    loads = sorted(read_loads(feeder), key=lambda ld: ld.number)
    split = feeder_branches(read_lines(feeder), lv_bus(feeder), {ld.name: ld.bus for ld in loads})
    groups = split.group
    n_groups = max(groups.values()) + 1

    # --- profiles ------------------------------------------------------------------------
    load_kw = {}
    for ld in loads:
        minute = read_column_file(feeder / "Daily_1min_100profiles" / f"load_profile_{ld.number}.txt")
        load_kw[ld.name] = to_hourly(minute, minutes=1)
    days = ausnet_days(ausnet)
    day = clearest_day(days)
    pv_pu = to_hourly(days[day], minutes=30)
    start = pd.Timestamp(2023, 1, 1) + pd.Timedelta(days=day)  # nominal date: day-of-year day+1, 2023
    times = pd.date_range(start, periods=24, freq="h")
    header = ["time", *load_kw, "pv_pu"]
    rows = [[t.strftime("%Y-%m-%dT%H:%M"), *(round(float(load_kw[n][h]), 6) for n in load_kw),
             round(float(pv_pu[h]), 6)] for h, t in enumerate(times)]

    # --- agents --------------------------------------------------------------------------
    agents: list[dict[str, Cell]] = []
    for ld in loads:
        com = f"C{groups[ld.name] + 1}"
        agents.append({"name": ld.name, "kind": "consumer", "community": com, "element": f"Load.{ld.name}",
                       "profile": ld.name, "scale": 1.0, "a": CONSUMER_A, "b": CONSUMER_B, "c": 0.0,
                       "flex": CONSUMER_FLEX, "pf": LOAD_PF})
        agents.append({"name": f"PV{ld.number}", "kind": "producer", "community": com,
                       "element": f"PVSystem.PV{ld.number}", "profile": "pv_pu", "scale": pv_kwp(ld.number),
                       "a": PV_A, "b": PV_B, "c": 0.0, "flex": 0.0})

    # rows by community, then load number, consumer before its PV (communities appear as C1, C2, ...)
    number = {ld.name: ld.number for ld in loads} | {f"PV{ld.number}": ld.number for ld in loads}
    agents.sort(key=lambda a: (str(a["community"]), number[str(a["name"])], a["kind"] == "producer"))

    # --- figures for the documentation ---------------------------------------------------
    load_sum = np.sum([load_kw[n] for n in load_kw], axis=0)  # kW per hour
    kwp = np.array([pv_kwp(ld.number) for ld in loads])
    pv_sum = kwp.sum() * pv_pu
    export_hours = [h for h in range(24) if pv_sum[h] > load_sum[h]]
    members = {f"C{g + 1}": [ld.name for ld in loads if groups[ld.name] == g] for g in range(n_groups)}
    figures = {
        "day": day, "date": start.strftime("%Y-%m-%d"), "pv_yield": float(pv_pu.sum()),
        "load_kwh": float(load_sum.sum()), "pv_kwp": float(kwp.sum()), "pv_kwh": float(pv_sum.sum()),
        "export_hours": export_hours, "peak_load_kw": float(load_sum.max()),
        "peak_load_hour": int(load_sum.argmax()), "peak_pv_kw": float(pv_sum.max()),
        "members": members, "junction": split.junction, "root": lv_bus(feeder),
        "n_loads": len(loads), "source_pu": source_pu,
        "load_buses": sorted({ld.bus for ld in loads}, key=lambda b: (len(b), b)),
    }

    network: dict[str, str | bytes] = {name: (feeder / name).read_bytes() for name in COPIED}
    network["Loads.txt"] = _loads_dss(feeder / "Loads.txt")
    network["PVSystems.dss"] = _pv_dss(loads)
    network["Master.dss"] = MASTER.format(source_pu=source_pu)
    provenance = _provenance(figures) + (f"\n{notes.strip()}\n" if notes.strip() else "")
    extra = {"PROVENANCE.md": provenance, "LICENSE": _licence()}
    return write_case(out, case_toml=_case_toml(figures), agents=agents, profiles_header=header,
                      profiles_rows=rows, network=network, extra=extra, overwrite=overwrite)


def _hours(hours: Sequence[int]) -> str:
    """Compact list of hour ranges, e.g. ``07:00-16:00`` for hours 7..15."""
    runs = consecutive_runs(hours)
    return ", ".join(f"{a:02d}:00-{b + 1:02d}:00" for a, b in runs) if runs else "none"


#: [battery] keys written to the default case; their values are the schema's defaults (BatterySpec())
_SBU_KEYS = ("unit_kw", "unit_kwh", "soc_min", "soc_max", "soc_init", "eff_charge", "eff_discharge", "rate_charge",
             "rate_discharge", "self_discharge", "value", "degradation_cost", "a")


def _case_toml(f: dict) -> str:
    sizes = ", ".join(f"{c} {len(m)}" for c, m in f["members"].items())
    sbu = BatterySpec()  # the study's SBU: defaults live once, in gridmarket.case.schema
    sections = [
        Section("case", [Key("name", "ieee-eu-lv-pv"), Key("currency", "R$")]),
        Section("network", [
            Key("master", "network/Master.dss"),
            Key("vmin_pu", 0.95), Key("vmax_pu", 1.05),
            Key("monitored_buses", f["load_buses"],
                "the households' connection points: a DSO checks voltage where customers connect,"
                " and batteries go where customers are (the feeder's 800+ other buses are cable"
                " joints metres apart)"),
        ], comment=(f"IEEE European LV Test Feeder (11 kV source at {f['source_pu']:.2f} pu, upstream 1.05; "
                   f"800 kVA 11/0.416 kV) + {f['n_loads']} rooftop PV.")),
        Section("time", [
            Key("start", f"{f['date']}T00:00", f"nominal date: AusNet PV day-of-year {f['day'] + 1}"),
            Key("steps", 24), Key("step_hours", 1.0),
        ]),
        Section("market", [Key("horizon", 1), Key("battery_model", "physical"),
                           Key("trade_fee", 0.001), Key("tie_break", 1e-6)]),
        Section("grid", [
            Key("import_price", IMPORT_PRICE, "R$/kWh, tariff paid for grid imports"),
            Key("export_price", EXPORT_PRICE, "R$/kWh, feed-in price for exports"),
        ], comment=(
            "Prices are chosen so that the day has both directions: at night and in the evening the\n"
            "communities import at 0.80; around midday PV (marginal cost <= 0.15) covers local demand\n"
            f"and the surplus is exported at 0.30 (PV above load in hours {_hours(f['export_hours'])}).\n"
            f"Agents (agents.csv): consumers a={CONSUMER_A} R$/kWh², b={CONSUMER_B:.2f} R$/kWh, flex={CONSUMER_FLEX}:\n"
            "marginal utility b - 2aP stays above the tariff up to 5 kW, so flexibility only binds\n"
            f"above that. PV a={PV_A} R$/kWh², b={PV_B} R$/kWh: marginal cost b + 2aq <= 0.15 < 0.30\n"
            "at 5 kWp, so PV is never curtailed for price reasons.")),
        Section("communities", [Key("links", "all")], comment=(
            f"Three communities by feeder branch ({sizes} houses; C1 = trunk near the transformer,\n"
            "C2 and C3 = the two large branches); each house's PV is in its load's community.")),
        Section("battery", [Key(k, getattr(sbu, k)) for k in _SBU_KEYS],
                comment="The study's Standard Battery Unit (Table III)."),
        Section("placement", [Key("ladder", [1, 3, 5]), Key("max_iterations", 10), Key("stop_when_worse", True)]),
    ]
    head = ("gridmarket default case, written by scripts/build_default_case.py (gridmarket.cases.ieee_eu_lv);\n"
            "do not edit by hand. Sources, licences and rules: PROVENANCE.md and LICENSE.")
    return render_toml(sections, header=head)


def _licence() -> str:
    return (
        "This case folder redistributes data under two BSD-style licences.\n\n"
        "1. network/ (LineCode.txt, Lines.txt, Transformers.txt, Buscoords.txt unchanged; Loads.txt\n"
        "   modified) and the household load profiles in profiles.csv (derived) come from the IEEE\n"
        "   European LV Test Feeder as distributed in github.com/dss-extensions/electricdss-tst,\n"
        "   whose License.txt reads:\n\n"
        + EPRI_DSS_EXTENSIONS_BSD
        + "\n2. The pv_pu column of profiles.csv is derived from residential PV data (AusNet Services)\n"
        "   published in github.com/Team-Nando/Tutorial-DERHostingCapacity-2-TimeSeries_LV under:\n\n"
        + TEAM_NANDO_BSD3
    )


def _provenance(f: dict) -> str:
    members = "\n".join(
        f"  - `{c}` ({len(m)} houses): {', '.join(m)}" for c, m in f["members"].items())
    return f"""\
# Default case — provenance

Written by `scripts/build_default_case.py` (`gridmarket.cases.ieee_eu_lv.build_case`) from the
project's shared data folder; the build is deterministic. Licences: `LICENSE`.

## Sources
- **Network and load profiles:** IEEE PES European Low Voltage Test Feeder, OpenDSS version, from
  {SOURCE_REPO} at commit {SOURCE_COMMIT}, path `{SOURCE_PATH}`
  (BSD-style 3-clause licence of EPRI / DSS-Extensions, reproduced in `LICENSE`).
- **PV shape:** `{AUSNET_FILE}` (measured residential PV, AusNet Services, normalised to a maximum of 1)
  from github.com/Team-Nando/Tutorial-DERHostingCapacity-2-TimeSeries_LV at commit {AUSNET_COMMIT}
  (BSD 3-Clause, reproduced in `LICENSE`).

## What changed in the network (`network/`)
- `LineCode.txt`, `Lines.txt`, `Transformers.txt`, `Buscoords.txt`: copied byte for byte.
- `Loads.txt`: the `Yearly=Shape_k` of every load is removed; nothing else changes (`kW=1 PF=0.95`).
  gridmarket sets each load's kW in every step, so the yearly loadshapes are not needed, and the 100
  one-minute profile files are not shipped (`LoadShapes.txt` and its `Redirect` are dropped).
- `Master.dss`: the upstream master without `Redirect LoadShapes.txt`, `batchedit loadshape..*`,
  `Redirect Monitors.txt`, the `solve` line and the commented-out time-series block; it adds
  `Redirect PVSystems.dss`. Transformer, energy meter, voltage bases and bus coordinates are as upstream.
- **Source voltage: {f['source_pu']:.2f} pu instead of the upstream 1.05 pu.** At 1.05 pu the LV network sits at
  1.046–1.050 pu without PV (measured, all loads at their hourly demand), so any net export puts all
  906 LV buses above 1.05 pu at once (measured with this PV and the method of the last section:
  757–906 buses in every hour 07–18, 10 712 bus-hours, up to 1.115 pu), which leaves battery placement
  nothing local to resolve. At 1.00 pu the midday export gives overvoltage only on
  the far parts of the feeder (see the figures below). `build_case(..., source_pu=1.05)` restores upstream.
- `PVSystems.dss` (new): one single-phase PV system `PV<k>` at every load `LOAD<k>`, on the load's bus and
  phase, `kV=0.23 kVA=1.1×kWp Pmpp=kWp irradiance=1 pf=1 %cutin=0 %cutout=0`.
- `Generators.txt` (unused upstream) is not shipped.

## Rules
- **PV size:** house k has `3 + (k−1) mod 3` kWp (3, 4, 5, 3, 4, 5, ...): {f['pv_kwp']:g} kWp in total
  (about 4 kWp per house) against a mean household demand of {f['load_kwh'] / f['n_loads']:.2f} kWh/day, so the
  feeder exports from morning to late afternoon and its far-end voltages rise above 1.05 pu around noon.
- **Communities by feeder branch:** the feeder is a tree rooted at the transformer's LV bus `{f['root']}`. Follow the
  child subtree with the most loads until a bus has at least two child subtrees that each hold at least
  {MIN_SHARE:.0%} of the {f['n_loads']} loads (here bus `{f['junction']}`). Each of those subtrees is a community; all other loads (on the trunk
  upstream of that junction and its short laterals) form the trunk community `C1`; the branches are `C2`,
  `C3` in the order of their lowest-numbered load. Each house's PV is in its load's community.
{members}
- **Load profiles:** the column `LOAD<k>` is the hourly mean of `Daily_1min_100profiles/load_profile_<k>.txt`
  (1440 one-minute values in kW; hour h = minutes 60h … 60h+59), rounded to 6 decimals.
- **PV profile:** `pv_pu` [kW per kWp]: the clearest day of the AusNet year, i.e. the day with the least
  roughness (sum of absolute second differences) per unit of daily energy: day index {f['day']}
  (day-of-year {f['day'] + 1}; southern-hemisphere summer), its 30-minute values averaged in pairs to hours
  (hour h = the h:00 and h:30 samples, taken as interval-beginning). The normalised maximum 1.0 is taken as
  1 kW per kWp. Each PV agent uses `pv_pu` with `scale` = its kWp.
- **Time:** `[time].start = {f['date']}T00:00` is nominal: the AusNet year is not stated; the date is
  day-of-year {f['day'] + 1} of 2023. The load profiles' date is not known.
- **Prices (R$):** grid import 0.80 R$/kWh, export 0.30 R$/kWh (constants). Consumers:
  a = {CONSUMER_A} R$/kWh², b = {CONSUMER_B:.2f} R$/kWh, flex = {CONSUMER_FLEX}, pf = {LOAD_PF} (the feeder's own);
  their marginal utility b − 2aP stays above the tariff up to 5 kW, so they buy their whole demand unless
  it exceeds 5 kW in an hour. PV: a = {PV_A} R$/kWh², b = {PV_B} R$/kWh; marginal cost at 5 kW is 0.15 R$/kWh,
  below the export price, so PV sells locally first and exports the surplus instead of curtailing.

## Figures of the day
| quantity | value |
|---|---|
| household demand, 55 houses | {f['load_kwh']:.1f} kWh (peak {f['peak_load_kw']:.1f} kW at {f['peak_load_hour']:02d}:00) |
| PV yield per kWp | {f['pv_yield']:.3f} kWh/kWp |
| PV available, {f['pv_kwp']:g} kWp | {f['pv_kwh']:.1f} kWh (peak {f['peak_pv_kw']:.1f} kW) |
| hours with PV above demand (net export) | {len(f['export_hours'])}: {_hours(f['export_hours'])} |
"""
