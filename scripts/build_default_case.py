"""Regenerate the shipped default case ``src/gridmarket/data/default_case`` from the shared data.

Usage::

    python scripts/build_default_case.py                 # rebuild in place
    python scripts/build_default_case.py --check         # rebuild to a temporary folder, compare
    python scripts/build_default_case.py --data-dir ../shared/data --out /tmp/default_case

The build is deterministic: running it twice gives byte-identical files. After building, it
runs one OpenDSS snapshot power flow per hour *without the market* (every load at its hourly
demand, every PV at its available power) and appends the voltages to ``PROVENANCE.md``, so
the documentation states how much overvoltage the case starts from.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from gridmarket.cases.ieee_eu_lv import build_case

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "src" / "gridmarket" / "data" / "default_case"


def power_flow_notes(case: Path, *, vmin_pu: float = 0.95, vmax_pu: float = 1.05) -> str:
    """Hourly snapshot power flows of ``case`` without the market, as a Markdown section.

    Loads are set to their profile kW at the agent's pf, PV systems to ``irradiance`` =
    ``pv_pu`` (so output = kWp × pv_pu [kW]). Voltages are over LV nodes (base below 1 kV).
    """
    import opendssdirect as dss  # only this script needs OpenDSS

    agents = pd.read_csv(case / "agents.csv")
    prof = pd.read_csv(case / "profiles.csv")
    cwd = os.getcwd()
    try:
        dss.Text.Command(f'compile "{(case / "network" / "Master.dss").resolve()}"')
    finally:
        os.chdir(cwd)
    rows = []
    for h in range(len(prof)):
        for a in agents.itertuples():
            cls, name = a.element.split(".", 1)
            value = float(prof.loc[h, a.profile])
            if cls.lower() == "load":
                dss.Loads.Name(name)
                kw = value * float(a.scale)
                dss.Loads.kW(kw)
                if pd.notna(a.pf):
                    dss.Loads.kvar(kw * float(np.tan(np.arccos(float(a.pf)))))
            else:
                dss.PVsystems.Name(name)
                dss.PVsystems.Irradiance(value)
        dss.Solution.Solve()
        if not dss.Solution.Converged():
            msg = f"power flow did not converge in hour {h}"
            raise RuntimeError(msg)
        bad: set[str] = set()
        vmin, vmax = np.inf, -np.inf
        for bus in dss.Circuit.AllBusNames():
            dss.Circuit.SetActiveBus(bus)
            if dss.Bus.kVBase() >= 1.0:
                continue
            v = np.asarray(dss.Bus.puVmagAngle()[0::2])
            vmin, vmax = min(vmin, v.min()), max(vmax, v.max())
            if (v > vmax_pu).any() or (v < vmin_pu).any():
                bad.add(bus)
        p_kw = -dss.Circuit.TotalPower()[0]  # power drawn from the source [kW]
        rows.append((h, p_kw, vmin, vmax, len(bad)))
    lines = [
        "## Power flow without the market (measured by scripts/build_default_case.py)",
        "Every load at its hourly demand (at its agents.csv pf), every PV at its available power;"
        " OpenDSS snapshot per hour",
        f"(opendssdirect.py {dss.__version__}). LV nodes only; a bus counts once if any phase is outside "
        f"[{vmin_pu}, {vmax_pu}] pu. Positive grid power = import.",
        "",
        "| hour | grid power kW | LV Vmin pu | LV Vmax pu | LV buses out of limits |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {h:02d} | {p:.1f} | {lo:.4f} | {hi:.4f} | {n} |" for h, p, lo, hi, n in rows]
    over = [r for r in rows if r[4]]
    lines += ["", f"Hours with out-of-limit buses: {len(over)}; "
              f"bus-hours out of limits: {sum(r[4] for r in rows)}; "
              f"highest voltage {max(r[3] for r in rows):.4f} pu."]
    return "\n".join(lines)


def build(out: Path, data_dir: Path | None) -> Path:
    """Build twice: once to measure the power flows, then the final folder with the figures."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = build_case(Path(tmp) / "probe", data_dir=data_dir)
        notes = power_flow_notes(probe)
    return build_case(out, data_dir=data_dir, notes=notes, overwrite=True)


def _same_tree(a: Path, b: Path) -> list[str]:
    files_a = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    diff = sorted(set(files_a) ^ set(files_b))
    diff += [f for f in files_a if f in files_b and not filecmp.cmp(a / f, b / f, shallow=False)]
    return diff


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=None, help="shared data folder (default: search)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"case folder (default: {DEFAULT_OUT})")
    ap.add_argument("--check", action="store_true", help="build to a temporary folder and compare with --out")
    args = ap.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = build(Path(tmp) / "case", args.data_dir)
            diff = _same_tree(fresh, args.out)
        if diff:
            print(f"{args.out} differs from a fresh build in: {', '.join(diff)}", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    out = build(args.out, args.data_dir)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
