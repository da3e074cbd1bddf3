"""Write small, valid case folders for tests, and mutate them one rule at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TINY_MASTER = """\
Clear
New Circuit.tiny basekV=0.4 pu=1.0 phases=3 bus1=src
New Line.L1 bus1=src bus2=b1 phases=3 r1=0.2 x1=0.08 r0=0.2 x0=0.08 c1=0 c0=0 units=km length=0.1 normamps=200
New Line.L2 bus1=b1 bus2=b2 phases=3 r1=0.2 x1=0.08 r0=0.2 x0=0.08 c1=0 c0=0 units=km length=0.1 normamps=200
New Load.H1 bus1=b1.1 phases=1 kV=0.23 kW=1 pf=0.95
New Load.H2 bus1=b2.2 phases=1 kV=0.23 kW=1 pf=0.95
New Load.H3 bus1=b2.3 phases=1 kV=0.23 kW=1 pf=0.95
New PVSystem.PV1 bus1=b2.2 phases=1 kV=0.23 kVA=5 Pmpp=4 irradiance=1 pf=1 %cutin=0 %cutout=0
Set VoltageBases=[0.4]
CalcVoltageBases
"""

TINY_TOML = """\
[case]
name = "tiny"
currency = "R$"

[network]
master = "network/Master.dss"
vmin_pu = 0.95
vmax_pu = 1.05

[time]
start = "2024-03-01T00:00"
steps = 4
step_hours = 1.0

[market]
horizon = 1

[grid]
import_price = 0.80
export_price = 0.30

[communities]
links = "all"

[placement]
ladder = [1, 3, 5]
"""

TINY_AGENTS = """\
name,kind,community,element,profile,scale,a,b,c,flex,units,pf
H1,consumer,C1,Load.H1,load1,1,0.01,1.2,0,0,,
H2,consumer,C1,Load.H2,load2,1,0.01,1.2,0,0.2,,
PV1,producer,C1,PVSystem.PV1,pv,1,0.01,0.05,0,0,,
H3,passive,,Load.H3,load1,0.5,0,0,0,0,,
"""

LOAD1 = np.array([1.0, 1.5, 2.0, 0.8])
LOAD2 = np.array([0.5, 0.7, 1.2, 0.6])
PV = np.array([0.0, 2.0, 3.5, 0.4])


def tiny_profiles() -> str:
    rows = ["time,load1,load2,pv"]
    for t in range(4):
        rows.append(f"2024-03-01T{t:02d}:00,{LOAD1[t]},{LOAD2[t]},{PV[t]}")
    return "\n".join(rows) + "\n"


def write_tiny_case(root: Path) -> Path:
    """Write the tiny 3-bus case to ``root`` and return it."""
    (root / "network").mkdir(parents=True, exist_ok=True)
    (root / "network" / "Master.dss").write_text(TINY_MASTER)
    (root / "case.toml").write_text(TINY_TOML)
    (root / "agents.csv").write_text(TINY_AGENTS)
    (root / "profiles.csv").write_text(tiny_profiles())
    return root


def replace_in(path: Path, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` in a file; fails loudly if ``old`` is absent (a broken test)."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def write_stressed_case(root: Path) -> Path:
    """The tiny case with consumer H1 scaled 30x (30-60 kW on the 0.4 kV feeder): its voltages
    leave the band, so the study loop places batteries and runs several iterations."""
    write_tiny_case(root)
    replace_in(root / "agents.csv", "H1,consumer,C1,Load.H1,load1,1,", "H1,consumer,C1,Load.H1,load1,30,")
    return root
