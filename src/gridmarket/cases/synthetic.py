"""Synthetic radial MV/LV feeders of any size, reproducible by seed (for tests and scale benchmarks).

A feeder has an 11 kV source, radial MV cables, one 11/0.4 kV Dyn11 transformer per
:data:`HOUSEHOLDS_PER_TRANSFORMER` households, and from each transformer radial LV feeders of
3-phase 4-wire cable (sequence impedances, the neutral Kron-reduced as in the IEEE European
LV Test Feeder) along which poles stand every :data:`POLE_SPACING_M` m. Every household hangs
on a pole through a single-phase service cable, on phase a, b or c (rotating along the
feeder, so the phases are balanced to one household), and has rooftop PV on its own bus and
phase.

Names (what callers may rely on)
--------------------------------
* households ``k = 1..N``: ``Load.H<k>`` (``kW``/``PF``; constant power) on bus ``h<k>.<phase>``;
* their PV: ``PVSystem.PV<k>`` (``Pmpp`` 3, 4 or 5 kWp, ``kVA = 1.1 × Pmpp``, unity pf,
  ``%cutin = %cutout = 0``) on the same bus and phase;
* transformers ``Transformer.T<j>`` (``j = 1..ceil(N / households_per_transformer)``, default
  100 per transformer), LV busbar ``t<j>``;
* lines: ``Line.MV<f>_<i>`` (MV), ``Line.LV<j>_<f>_<i>`` (LV cable), ``Line.S<k>`` (service);
* with ``loadshapes=True``: ``Loadshape.H<k>`` (the household's demand [kW] per hour,
  ``yearly=``, ``Load.kW = 1``) and ``Loadshape.pv`` (kW per kWp), so that OpenDSS's own
  time loop (``Set mode=yearly``) runs the same profiles as a case.

Every random draw comes from ``numpy.random.default_rng`` streams spawned from ``seed``:
the layout does not depend on ``steps``, and the same arguments give byte-identical files.

Profiles (model-generated, not measured): a household's demand is a two-peak residential
day (morning and evening) scaled to a daily energy drawn from a log-normal around
:data:`MEAN_DAILY_KWH`, shifted by up to ±1 h per household and with ±25 % hourly noise;
from day to day the energy varies by ±15 %. PV is a clear-sky bell (06:00-18:00, peak
0.8 kW/kWp) times a per-day clearness in [0.55, 1] (day 0 clear).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gridmarket.cases.ieee_eu_lv import (  # the default case's economics: one home
    CONSUMER_A,
    CONSUMER_B,
    CONSUMER_FLEX,
    EXPORT_PRICE,
    IMPORT_PRICE,
    KVA_PER_KWP,
    PV_A,
    PV_B,
)
from gridmarket.cases.writer import Key, Section, render_toml, write_case
from gridmarket.errors import GridmarketError

__all__ = [
    "HOUSEHOLDS_PER_TRANSFORMER",
    "SyntheticFeeder",
    "Household",
    "layout",
    "household_profiles",
    "pv_profile",
    "feeder_files",
    "write_feeder",
    "build_case",
]

HOUSEHOLDS_PER_TRANSFORMER = 100  #: households per MV/LV transformer (the last one takes the rest)
HOUSEHOLDS_PER_FEEDER = 30  #: households per LV feeder
TRANSFORMERS_PER_MV_FEEDER = 10  #: transformers along one MV cable
POLE_SPACING_M = 35.0  #: [m] between poles of an LV feeder
MV_SPACING_M = 300.0  #: [m] between transformers along an MV cable
SOURCE_KV = 11.0  #: [kV] line-to-line
LV_KV = 0.4  #: [kV] line-to-line
SOURCE_PU = 1.02  #: [pu] source voltage: midday PV export lifts far LV buses just above 1.05 pu
MEAN_DAILY_KWH = 9.0  #: [kWh] median household demand per day
LOAD_PF = 0.95  #: lagging power factor of every household
PV_SIZES_KWP = (3.0, 4.0, 5.0)  #: [kWp] rooftop sizes, drawn per household
START = "2024-06-01T00:00"  #: nominal timestamp of step 0

# economics: those of the default case (R$), which live in gridmarket.cases.ieee_eu_lv

#: cable data: (R1, X1, R0, X0) [ohm/km], normal ampacity [A]
_LINECODES = {
    "mv240": ((0.125, 0.10, 0.50, 0.40), 400.0),  # 3-core 240 mm² Al, 11 kV
    "lv95": ((0.320, 0.075, 1.28, 0.30), 200.0),  # 4-core 95 mm² Al, 0.4 kV
    "svc25": ((1.454, 0.16, 1.454, 0.16), 100.0),  # 2-core 25 mm² Cu service (phase + neutral loop)
}
_STANDARD_KVA = (100, 160, 250, 400, 630, 800, 1000)
_KVA_PER_HOUSEHOLD = 3.5  #: transformer sizing rule: smallest standard size >= 3.5 kVA/household
_PHASES = (1, 2, 3)


@dataclass(frozen=True)
class Household:
    """One household of a synthetic feeder."""

    k: int  #: 1-based number: ``Load.H<k>``, ``PVSystem.PV<k>``
    transformer: int  #: 1-based transformer number
    bus: str  #: the household's own bus, e.g. ``h17``
    phase: int  #: 1, 2 or 3 (a, b, c)
    pv_kwp: float  #: [kWp], 0 when the household has no PV
    x: float  #: [m]
    y: float  #: [m]


@dataclass(frozen=True)
class SyntheticFeeder:
    """Layout of a synthetic feeder (see the module docstring for the names)."""

    n_households: int
    seed: int
    households: tuple[Household, ...]
    transformer_kva: tuple[int, ...]  #: rating of T1, T2, ... [kVA]
    lines: tuple[tuple[str, str, str, int, str, float], ...]  #: (name, bus1, bus2, phases, linecode, length [m])
    coords: tuple[tuple[str, float, float], ...]  #: (bus, x [m], y [m])
    transformer_buses: tuple[tuple[str, str], ...]  #: (MV bus, LV bus) per transformer

    @property
    def n_transformers(self) -> int:
        return len(self.transformer_kva)


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent generators for the layout, the demand and the PV (spawned from ``seed``)."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        msg = f"seed must be a non-negative integer, got {seed!r}"
        raise GridmarketError(msg)
    children = np.random.SeedSequence(int(seed)).spawn(3)
    return tuple(np.random.default_rng(c) for c in children)  # type: ignore[return-value]


def _check_n(n_households: int) -> None:
    if not isinstance(n_households, (int, np.integer)) or n_households < 1:
        msg = f"n_households must be a positive integer, got {n_households!r}"
        raise GridmarketError(msg)


def layout(n_households: int, *, seed: int = 0, pv_fraction: float = 1.0,
           households_per_transformer: int = HOUSEHOLDS_PER_TRANSFORMER) -> SyntheticFeeder:
    """The buses, lines, transformers and households of a synthetic feeder.

    Parameters
    ----------
    n_households : int
        Number of households N (>= 1).
    seed : int
        Seed of the layout's random draws (pole positions, laterals, phases, PV sizes).
    pv_fraction : float
        Share of households with rooftop PV, in [0, 1]; the first ``round(N · pv_fraction)``
        of a seeded permutation get one.
    households_per_transformer : int
        Households behind each MV/LV transformer (the last one takes the rest); default
        :data:`HOUSEHOLDS_PER_TRANSFORMER`. A utility's feeder of small pole-mounted
        transformers has about 5 (issue 14: ~4,000 households behind ~750 transformers).

    Returns
    -------
    SyntheticFeeder
    """
    _check_n(n_households)
    hpt = households_per_transformer
    if not isinstance(hpt, (int, np.integer)) or isinstance(hpt, bool) or hpt < 1:
        msg = f"households_per_transformer must be a positive integer, got {hpt!r}"
        raise GridmarketError(msg)
    if not 0.0 <= pv_fraction <= 1.0:
        msg = f"pv_fraction must be in [0, 1], got {pv_fraction!r}"
        raise GridmarketError(msg)
    rng, _, _ = _streams(seed)
    n = int(n_households)
    n_tx = math.ceil(n / hpt)
    with_pv = np.zeros(n, dtype=bool)
    with_pv[rng.permutation(n)[: round(n * pv_fraction)]] = True
    sizes = rng.choice(np.array(PV_SIZES_KWP), size=n)

    lines: list[tuple[str, str, str, int, str, float]] = []
    coords: list[tuple[str, float, float]] = [("sourcebus", 0.0, 0.0)]
    houses: list[Household] = []
    kva: list[int] = []
    tx_buses: list[tuple[str, str]] = []
    n_mv = math.ceil(n_tx / TRANSFORMERS_PER_MV_FEEDER)
    k = 0
    for j in range(1, n_tx + 1):
        f, i = divmod(j - 1, TRANSFORMERS_PER_MV_FEEDER)
        f += 1
        i += 1
        ang = 2 * math.pi * (f - 0.5) / n_mv
        ux, uy = math.cos(ang), math.sin(ang)
        mv_bus = f"mv{f}_{i}"
        prev = "sourcebus" if i == 1 else f"mv{f}_{i - 1}"
        lines.append((f"MV{f}_{i}", prev, mv_bus, 3, "mv240", MV_SPACING_M))
        tx_x, tx_y = i * MV_SPACING_M * ux, i * MV_SPACING_M * uy
        coords.append((mv_bus, tx_x, tx_y))
        lv = f"t{j}"
        coords.append((lv, tx_x + 5.0 * uy, tx_y - 5.0 * ux))
        tx_buses.append((mv_bus, lv))
        m = min(int(hpt), n - k)
        kva.append(next((s for s in _STANDARD_KVA if s >= _KVA_PER_HOUSEHOLD * m), _STANDARD_KVA[-1]))
        n_feeders = math.ceil(m / HOUSEHOLDS_PER_FEEDER)
        for g in range(1, n_feeders + 1):
            h = min(HOUSEHOLDS_PER_FEEDER, m - (g - 1) * HOUSEHOLDS_PER_FEEDER)
            poles = math.ceil(h / 3)
            # feeders fan out from the transformer, away from the MV cable
            fang = ang + math.pi / 2 + math.pi * (g - 0.5) / n_feeders
            pos: dict[int, tuple[float, float, float]] = {0: (tx_x + 5.0 * uy, tx_y - 5.0 * ux, fang)}
            phase0 = int(rng.integers(0, 3))
            for p in range(1, poles + 1):
                # mostly a straight run; sometimes a lateral from an earlier pole
                parent = p - 1 if p <= 2 or rng.random() < 0.75 else int(rng.integers(1, p - 1))
                px, py, pang = pos[parent]
                if parent != p - 1:
                    pang += rng.choice([-1.0, 1.0]) * math.pi / 3
                pang += rng.normal(0.0, 0.1)
                length = POLE_SPACING_M * float(rng.uniform(0.8, 1.2))
                x, y = px + length * math.cos(pang), py + length * math.sin(pang)
                pos[p] = (x, y, pang)
                pbus = f"p{j}_{g}_{p}"
                pb = lv if parent == 0 else f"p{j}_{g}_{parent}"
                lines.append((f"LV{j}_{g}_{p}", pb, pbus, 3, "lv95", length))
                coords.append((pbus, x, y))
                for s in range(min(3, h - 3 * (p - 1))):
                    k += 1
                    ph = _PHASES[(phase0 + 3 * (p - 1) + s) % 3]
                    svc = float(rng.uniform(10.0, 30.0))
                    side = 1.0 if s % 2 == 0 else -1.0
                    hx = x - side * svc * math.sin(pang) + (s // 2) * 6.0 * math.cos(pang)
                    hy = y + side * svc * math.cos(pang) + (s // 2) * 6.0 * math.sin(pang)
                    bus = f"h{k}"
                    lines.append((f"S{k}", f"{pbus}.{ph}", f"{bus}.{ph}", 1, "svc25", svc))
                    coords.append((bus, hx, hy))
                    houses.append(Household(k=k, transformer=j, bus=bus, phase=ph,
                                            pv_kwp=float(sizes[k - 1]) if with_pv[k - 1] else 0.0,
                                            x=hx, y=hy))
    assert k == n
    return SyntheticFeeder(n_households=n, seed=int(seed), households=tuple(houses), transformer_kva=tuple(kva),
                           lines=tuple(lines), coords=tuple(coords), transformer_buses=tuple(tx_buses))


# ---------------------------------------------------------------------------- profiles

def _day_shape() -> np.ndarray:
    """Typical residential day, 24 hourly values with mean 1 [-]."""
    h = np.arange(24) + 0.5
    shape = (0.35 + 0.55 * np.exp(-0.5 * ((h - 7.5) / 1.3) ** 2)
             + 1.10 * np.exp(-0.5 * ((h - 19.5) / 2.0) ** 2)
             + 0.20 * np.exp(-0.5 * ((h - 13.0) / 2.5) ** 2))
    return shape / shape.mean()


def household_profiles(n_households: int, steps: int, *, seed: int = 0) -> np.ndarray:
    """Hourly demand of every household [kW, mean over the hour], shape (steps, N).

    Day ``d`` of household ``k`` is the typical day shifted by the household's own offset
    (up to ±1 h), scaled to its daily energy (log-normal, median :data:`MEAN_DAILY_KWH`,
    σ = 0.35) times a day factor in [0.85, 1.15], with log-normal hourly noise (σ = 0.25).
    Household ``k``'s values do not depend on ``steps`` beyond the days it covers.
    """
    _check_n(n_households)
    if steps < 1:
        msg = f"steps must be >= 1, got {steps!r}"
        raise GridmarketError(msg)
    _, rng, _ = _streams(seed)
    n = int(n_households)
    days = math.ceil(steps / 24)
    energy = MEAN_DAILY_KWH * np.exp(0.35 * rng.standard_normal(n))
    shift = rng.uniform(-1.0, 1.0, size=n)
    base = _day_shape()
    hours = np.arange(24)
    # shape of each household: the typical day, circularly shifted by a fraction of an hour
    shaped = np.empty((n, 24))
    for col, s in enumerate(shift):
        shaped[col] = np.interp((hours - s) % 24, np.arange(25), np.append(base, base[0]))
    shaped /= shaped.mean(axis=1, keepdims=True)
    out = np.empty((days * 24, n))
    for d in range(days):
        factor = rng.uniform(0.85, 1.15, size=n)
        noise = np.exp(0.25 * rng.standard_normal((24, n)) - 0.5 * 0.25**2)
        out[24 * d: 24 * (d + 1)] = shaped.T * (energy * factor / 24.0) * noise
    return out[:steps]


def pv_profile(steps: int, *, seed: int = 0) -> np.ndarray:
    """Hourly PV output per kWp [kW/kWp], shape (steps,).

    A clear-sky bell ``0.8 · sin(π (h + 0.5 − 6) / 12)^1.2`` between 06:00 and 18:00, times a
    clearness per day drawn from [0.55, 1] (day 0 is clear, 1.0).
    """
    if steps < 1:
        msg = f"steps must be >= 1, got {steps!r}"
        raise GridmarketError(msg)
    _, _, rng = _streams(seed)
    days = math.ceil(steps / 24)
    h = np.arange(24) + 0.5
    bell = 0.8 * np.clip(np.sin(np.pi * (h - 6.0) / 12.0), 0.0, None) ** 1.2
    clear = rng.uniform(0.55, 1.0, size=days)
    clear[0] = 1.0
    return (clear[:, None] * bell[None, :]).reshape(-1)[:steps]


# ---------------------------------------------------------------------------- DSS text

def _num(x: float) -> str:
    return f"{x:.6g}"


def feeder_files(feeder: SyntheticFeeder, *, loadshapes: np.ndarray | None = None,
                 pv_shape: np.ndarray | None = None) -> dict[str, str]:
    """OpenDSS files of ``feeder``: file name -> text (``Master.dss`` redirects the others).

    Parameters
    ----------
    feeder : SyntheticFeeder
    loadshapes : numpy.ndarray, optional
        Shape (steps, N): each household's demand [kW]; writes ``Loadshape.H<k>`` with these
        hourly multipliers (``Load.kW = 1``, ``yearly=H<k>``). Without it, loads are
        ``kW = 1`` and have no shape.
    pv_shape : numpy.ndarray, optional
        Shape (steps,): PV output per kWp [kW/kWp]; writes ``Loadshape.pv`` (``yearly=pv``).
    """
    n = feeder.n_households
    codes = [f"New LineCode.{name} nphases=3 R1={r1} X1={x1} R0={r0} X0={x0} C1=0 C0=0 "
             f"units=km normamps={amps:g}"
             for name, ((r1, x1, r0, x0), amps) in _LINECODES.items()]
    lines = []
    for name, b1, b2, ph, code, length in feeder.lines:
        lines.append(f"New Line.{name} bus1={b1} bus2={b2} phases={ph} linecode={code} "
                     f"length={_num(length)} units=m")
    trafos = [f"New Transformer.T{j} phases=3 windings=2 buses=[{mv} {lv}] conns=[delta wye] "
              f"kVs=[{SOURCE_KV:g} {LV_KV:g}] kVAs=[{s} {s}] XHL=4 %loadloss=1"
              for j, ((mv, lv), s) in enumerate(zip(feeder.transformer_buses, feeder.transformer_kva,
                                                     strict=True), start=1)]
    kv_ln = LV_KV / math.sqrt(3)
    shapes: list[str] = []
    if loadshapes is not None:
        arr = np.asarray(loadshapes, dtype=float)
        if arr.ndim != 2 or arr.shape[1] != n:
            msg = f"loadshapes must have shape (steps, {n}), got {arr.shape}"
            raise GridmarketError(msg)
        for hh in feeder.households:
            vals = " ".join(_num(v) for v in arr[:, hh.k - 1])
            shapes.append(f"New Loadshape.H{hh.k} npts={arr.shape[0]} interval=1 mult=({vals})")
    if pv_shape is not None:
        pv = np.asarray(pv_shape, dtype=float).reshape(-1)
        shapes.append(f"New Loadshape.pv npts={pv.size} interval=1 mult=({' '.join(_num(v) for v in pv)})")
    loads, pvs = [], []
    for hh in feeder.households:
        yearly = f" yearly=H{hh.k}" if loadshapes is not None else ""
        loads.append(f"New Load.H{hh.k} phases=1 bus1={hh.bus}.{hh.phase} kV={_num(kv_ln)} kW=1 "
                     f"PF={LOAD_PF} model=1{yearly}")
        if hh.pv_kwp > 0:
            pyear = " yearly=pv" if pv_shape is not None else ""
            pvs.append(f"New PVSystem.PV{hh.k} phases=1 bus1={hh.bus}.{hh.phase} kV={_num(kv_ln)} "
                       f"kVA={_num(KVA_PER_KWP * hh.pv_kwp)} Pmpp={_num(hh.pv_kwp)} irradiance=1 pf=1 "
                       f"%cutin=0 %cutout=0{pyear}")
    coords = [f"{bus},{x:.2f},{y:.2f}" for bus, x, y in feeder.coords]
    master = [
        f"! gridmarket synthetic feeder: {n} households, {feeder.n_transformers} transformer(s), "
        f"seed {feeder.seed} (gridmarket.cases.synthetic)",
        "Clear",
        "Set DefaultBaseFrequency=50",
        f"New Circuit.synthetic basekV={SOURCE_KV:g} pu={SOURCE_PU} phases=3 bus1=sourcebus "
        "ISC3=10000 ISC1=10000",
        "Redirect LineCodes.dss",
        "Redirect Lines.dss",
        "Redirect Transformers.dss",
    ]
    files = {
        "LineCodes.dss": "\n".join(codes) + "\n",
        "Lines.dss": "\n".join(lines) + "\n",
        "Transformers.dss": "\n".join(trafos) + "\n",
        "Loads.dss": "\n".join(loads) + "\n",
        "BusCoords.csv": "\n".join(coords) + "\n",
    }
    if shapes:
        files["Loadshapes.dss"] = "\n".join(shapes) + "\n"
        master.append("Redirect Loadshapes.dss")
    master.append("Redirect Loads.dss")
    if pvs:
        files["PVSystems.dss"] = "\n".join(pvs) + "\n"
        master.append("Redirect PVSystems.dss")
    master += [f"Set VoltageBases=[{SOURCE_KV:g} {LV_KV:g}]", "CalcVoltageBases", "Buscoords BusCoords.csv"]
    files["Master.dss"] = "\n".join(master) + "\n"
    return files


def write_feeder(out_dir: Path, *, n_households: int, seed: int = 0, steps: int | None = None,
                 pv_fraction: float = 1.0, households_per_transformer: int = HOUSEHOLDS_PER_TRANSFORMER) -> Path:
    """Write the OpenDSS files of a synthetic feeder to ``out_dir`` and return its master.

    Parameters
    ----------
    out_dir : pathlib.Path
        Folder to write into (created; existing files of the same names are replaced).
    n_households : int
        N households ``Load.H1..H<N>`` (kW = 1, PF 0.95) with PV ``PVSystem.PV<k>``.
    seed : int
        Seed of the layout and profiles.
    steps : int, optional
        When given, also write hourly loadshapes of that many steps (``Loadshape.H<k>``
        [kW], ``Loadshape.pv`` [kW/kWp], ``yearly=``), the same profiles :func:`build_case`
        puts in ``profiles.csv``.
    pv_fraction : float
        Share of households with PV (default all).
    households_per_transformer : int
        Households per transformer (see :func:`layout`).

    Returns
    -------
    pathlib.Path
        ``out_dir / "Master.dss"``, absolute.
    """
    feeder = layout(n_households, seed=seed, pv_fraction=pv_fraction,
                    households_per_transformer=households_per_transformer)
    shapes = pv = None
    if steps is not None:
        shapes = household_profiles(n_households, steps, seed=seed)
        pv = pv_profile(steps, seed=seed)
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    for name, text in feeder_files(feeder, loadshapes=shapes, pv_shape=pv).items():
        with (out / name).open("w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    return out / "Master.dss"


# ---------------------------------------------------------------------------- case

def build_case(out_dir: Path, *, n_households: int, seed: int = 0, steps: int = 24,
               pv_fraction: float = 1.0, overwrite: bool = False,
               households_per_transformer: int = HOUSEHOLDS_PER_TRANSFORMER) -> Path:
    """Write a complete case folder (shared CASE_FORMAT.md) on a synthetic feeder.

    Agents: consumer ``H<k>`` (``Load.H<k>``, profile column ``H<k>`` [kW]) and producer
    ``PV<k>`` (``PVSystem.PV<k>``, profile ``pv_pu`` [kW/kWp] × its kWp) per household; one
    community per transformer (``C<j>``), all linked. Economics as the default case:
    tariff 0.80 R$/kWh, feed-in 0.30 R$/kWh, consumers a = 0.02 R$/kWh², b = 1.00 R$/kWh,
    flex 0.2, pf 0.95; PV a = 0.01 R$/kWh², b = 0.05 R$/kWh. Voltage limits 0.95-1.05 pu on
    the LV buses.

    Parameters
    ----------
    out_dir : pathlib.Path
        Case folder to create (atomically).
    n_households : int
        Households N (2N market agents with full PV).
    seed : int
        Seed of layout and profiles.
    steps : int
        Hourly steps of the case, from :data:`START`.
    pv_fraction : float
        Share of households with PV.
    overwrite : bool
        Replace an existing folder.
    households_per_transformer : int
        Households per transformer, hence per community (see :func:`layout`).

    Returns
    -------
    pathlib.Path
        The case folder, absolute.
    """
    feeder = layout(n_households, seed=seed, pv_fraction=pv_fraction,
                    households_per_transformer=households_per_transformer)
    demand = household_profiles(n_households, steps, seed=seed)
    pv = pv_profile(steps, seed=seed)
    agents: list[dict[str, str | float | None]] = []
    for hh in feeder.households:
        com = f"C{hh.transformer}"
        agents.append({"name": f"H{hh.k}", "kind": "consumer", "community": com, "element": f"Load.H{hh.k}",
                       "profile": f"H{hh.k}", "scale": 1.0, "a": CONSUMER_A, "b": CONSUMER_B, "c": 0.0,
                       "flex": CONSUMER_FLEX, "pf": LOAD_PF})
        if hh.pv_kwp > 0:
            agents.append({"name": f"PV{hh.k}", "kind": "producer", "community": com,
                           "element": f"PVSystem.PV{hh.k}", "profile": "pv_pu", "scale": hh.pv_kwp,
                           "a": PV_A, "b": PV_B, "c": 0.0, "flex": 0.0})
    times = pd.date_range(START, periods=steps, freq="h").strftime("%Y-%m-%dT%H:%M")
    header = ["time", *(f"H{hh.k}" for hh in feeder.households), "pv_pu"]
    rounded = np.round(demand, 6)
    pv_r = np.round(pv, 6)
    rows: list[Sequence[str | float]] = [[t, *rounded[s].tolist(), float(pv_r[s])] for s, t in enumerate(times)]
    toml = _case_toml(feeder, steps)
    return write_case(Path(out_dir), case_toml=toml, agents=agents, profiles_header=header, profiles_rows=rows,
                      network=feeder_files(feeder), overwrite=overwrite)


def _case_toml(feeder: SyntheticFeeder, steps: int) -> str:
    n_pv = sum(1 for h in feeder.households if h.pv_kwp > 0)
    sections = [
        Section("case", [Key("name", f"synthetic-{feeder.n_households}-s{feeder.seed}"), Key("currency", "R$")]),
        Section("network", [Key("master", "network/Master.dss"), Key("vmin_pu", 0.95), Key("vmax_pu", 1.05),
                            Key("monitored_buses", "lv", "the 0.4 kV network")],
                comment=(f"Synthetic radial feeder (gridmarket.cases.synthetic, seed {feeder.seed}): "
                         f"{feeder.n_households} households, {n_pv} with PV,\n{feeder.n_transformers} "
                         f"11/0.4 kV transformer(s) of {sorted(set(feeder.transformer_kva))} kVA.")),
        Section("time", [Key("start", START), Key("steps", int(steps)), Key("step_hours", 1.0)]),
        Section("market", [Key("horizon", 1), Key("battery_model", "physical"), Key("trade_fee", 0.001),
                           Key("tie_break", 1e-6)]),
        Section("grid", [Key("import_price", IMPORT_PRICE, "R$/kWh, tariff"),
                         Key("export_price", EXPORT_PRICE, "R$/kWh, feed-in price")],
                comment=(f"Economics as the default case: consumers a={CONSUMER_A} R$/kWh², b={CONSUMER_B} R$/kWh, "
                         f"flex={CONSUMER_FLEX};\nPV a={PV_A} R$/kWh², b={PV_B} R$/kWh.")),
        Section("communities", [Key("links", "all")],
                comment="One community per transformer: C<j> = the households of Transformer.T<j> and their PV."),
        Section("placement", [Key("ladder", [1, 3, 5]), Key("max_iterations", 10), Key("stop_when_worse", True)]),
    ]
    head = "Synthetic case written by gridmarket.cases.synthetic.build_case; profiles are model-generated."
    return render_toml(sections, header=head)
