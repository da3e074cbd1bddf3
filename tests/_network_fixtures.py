"""Small OpenDSS circuits written into tmp_path, hand power-flow solutions, shared-data paths.

The hand solutions use numpy only (no OpenDSS), so the engine's numbers are checked against
an independent calculation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

V_LN = 230.0  #: source voltage of the single-phase test feeders [V]
#: Tight solver tolerance so OpenDSS and the hand solution agree to ~1e-9 pu.
_TOLERANCE = "Set tolerance=1e-10\nSet maxiterations=50"


def shared_data_dir() -> Path:
    """../shared/data beside the checkout (or $GRIDMARKET_SHARED_DATA)."""
    env = os.environ.get("GRIDMARKET_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_master(rel: str) -> Path:
    """Path of a master under ../shared/data, or skip the test with the reason."""
    path = shared_data_dir() / rel
    if not path.is_file():
        pytest.skip(f"{path} not found: the shared network data are not redistributable; "
                    "place ../shared/data beside the checkout or set GRIDMARKET_SHARED_DATA")
    return path


@dataclass(frozen=True)
class Section:
    """One single-phase line section of a radial test feeder."""

    r_ohm: float
    x_ohm: float
    norm_amps: float = 400.0


def write_feeder(path: Path, sections: Sequence[Section], loads: dict[int, tuple[float, float]],
                 *, extra: str = "") -> Path:
    """A single-phase 230 V radial feeder: src - b1 - b2 - ... with constant-PQ loads.

    ``loads`` maps the bus number (1-based, b1 is the end of the first section) to
    (P [kW], Q [kvar]). The source is stiff (1e-6 Ω). Loads are ``Load.ld<k>``.
    """
    lines = [
        "Clear",
        "Set DefaultBaseFrequency=50",
        f"New Circuit.feeder phases=1 basekV={V_LN / 1000} pu=1.0 angle=0 bus1=src "
        "R1=0 X1=0.000001 R0=0 X0=0.000001",
    ]
    prev = "src"
    for k, s in enumerate(sections, start=1):
        lines.append(f"New Line.l{k} phases=1 bus1={prev}.1 bus2=b{k}.1 rmatrix=[{s.r_ohm}] "
                     f"xmatrix=[{s.x_ohm}] cmatrix=[0] length=1 units=none normamps={s.norm_amps}")
        prev = f"b{k}"
    for k, (p, q) in sorted(loads.items()):
        lines.append(f"New Load.ld{k} phases=1 bus1=b{k}.1 kV={V_LN / 1000} kW={p} kvar={q} model=1")
    lines += [f"Set voltagebases=[{V_LN * np.sqrt(3) / 1000:.12g}]", "CalcVoltageBases"]
    lines += [_TOLERANCE, extra]
    path.write_text("\n".join(lines) + "\n")
    return path


def sweep(sections: Sequence[Section], loads: dict[int, tuple[float, float]],
          *, x_source: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Backward/forward sweep of the radial feeder of :func:`write_feeder` (numpy only).

    Returns
    -------
    v : numpy.ndarray
        Complex voltage of b1..bn [V].
    i : numpy.ndarray
        Complex current of sections 1..n [A].
    """
    n = len(sections)
    z = np.array([s.r_ohm + 1j * s.x_ohm for s in sections])
    s_va = np.zeros(n, dtype=complex)
    for k, (p, q) in loads.items():
        s_va[k - 1] = (p + 1j * q) * 1000.0
    v = np.full(n, V_LN + 0j)
    for _ in range(200):
        i_load = np.conj(s_va / v)
        i_sec = np.cumsum(i_load[::-1])[::-1]  # section k carries every load at or after bus k
        v_src = V_LN - 1j * x_source * i_sec[0]
        v_new = v_src - np.cumsum(z * i_sec)
        if np.max(np.abs(v_new - v)) < 1e-12:
            break
        v = v_new
    return v_new, i_sec


def closed_form_two_bus(p_w: float, q_var: float, r: float, x: float, v1: float = V_LN) -> float:
    """|V2| [V] at a constant-PQ load fed through R + jX from an ideal |V1|.

    The textbook quartic ``|V2|^4 + (2(PR+QX) - |V1|^2) |V2|^2 + |Z|^2 |S|^2 = 0``, high root.
    """
    a = v1**2 - 2 * (p_w * r + q_var * x)
    disc = a**2 - 4 * (r**2 + x**2) * (p_w**2 + q_var**2)
    return float(np.sqrt((a + np.sqrt(disc)) / 2))


THREE_PHASE_MASTER = """\
Clear
Set DefaultBaseFrequency=50
New Circuit.three basekV=0.4 pu=1.0 phases=3 bus1=src MVAsc3=1e6 MVAsc1=1e6
New Line.l1 bus1=src bus2=b2 phases=3 r1=0.05 x1=0.02 r0=0.05 x0=0.02 c1=0 c0=0 length=1 units=km
New Load.ld bus1=b2 phases=3 kV=0.4 kW=10 kvar=5 model=1
New Loadshape.sh npts=4 interval=1 mult=[0.1 0.2 0.3 0.4]
New Load.ld1 bus1=b2.1 phases=1 kV=0.23 kW=2 PF=0.95 model=1 yearly=sh daily=sh
New XYCurve.eff npts=4 xarray=[.1 .2 .4 1.0] yarray=[.86 .9 .93 .97]
New XYCurve.pt npts=4 xarray=[0 25 75 100] yarray=[1.2 1.0 0.8 0.6]
New PVSystem.pv phases=3 bus1=b2 kV=0.4 kVA=11 Pmpp=10 irradiance=1 effcurve=eff P-TCurve=pt
~ temperature=50 daily=sh yearly=sh
New Generator.g1 bus1=b2 phases=3 kV=0.4 kW=1 pf=0.9 model=1
New Storage.s1 bus1=b2 phases=3 kV=0.4 kWrated=5 kWhrated=20 %stored=50
Set voltagebases=[0.4]
Calcvoltagebases
"""
