"""Builder of a small, synthetic but self-consistent results folder (shared CASE_FORMAT.md).

Circuit sketch (5 buses, a radial feeder; coordinates in metres)::

    b1 ──l12── b2 ──l23── b3 ──l34── b4 ──l45── b5
  source    Load_a,PV_a  Load_p     Load_b      PV_b
            (C1)         (passive)  (C2)        (C2)

``build_results(network="two_areas")`` writes the same circuit split over two LV areas
fed by an MV line instead (coordinates in metres; the MV buses t1/t2 are the transformers'
primaries, drawn where their LV buses are, as GIS exports do)::

    m0 ──lmv1── t1 ─────────────lmv2───────────── t2          MV, 19.92 kV
   (-300, 600)  ║ (0, 0)                          ║ (2000, 800)
                b1 ──l12── b2 ──l23── b3           b4 ──l45── b5   LV, 0.12 kV
                   area A (x 0..80)                area B (x 2000..2030)

Three iterations of the placement loop, four hourly steps (10:00-13:00):

* iteration 0: no batteries; PV raises the voltage at b4/b5 (step 2), the evening-like
  load of step 0 lowers it at b5; line l45 overloads at step 2 (counts for bus b5);
* iteration 1: ``Bat_b5`` (1 SBU at b5);
* iteration 2: ``Bat_b5`` grown to 3 SBU and ``Bat_b4`` (1 SBU at b4): the best iteration.

Consistency kept by construction: every market agent balances
``P + S + phi - alpha + beta = 0``, each community's ``phi`` sums to zero per step,
``communities.parquet`` imports/exports are the sums of the agents' alpha/beta, violations are
exactly the out-of-limit voltages (plus the one current violation), and the counts of
``iterations.csv`` and ``summary.json`` are computed from them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from gridmarket import contract

STEPS = 4
TIMES = [f"2024-03-01T{10 + t:02d}:00" for t in range(STEPS)]
WELFARE = [83.3, 109.2, 119.2]  # the study's Case 1 welfare per iteration
VMIN, VMAX = 0.95, 1.05

BUSES = pd.DataFrame({
    "bus": ["b1", "b2", "b3", "b4", "b5"],
    "x": [0.0, 40.0, 80.0, 120.0, 150.0],
    "y": [0.0, 10.0, 0.0, 20.0, 45.0],
    "kv_base": [0.22] * 5,
})
#: lines by their element name (gridmarket.contract's one naming rule: what the study writes)
LINES = pd.DataFrame({"element": ["line.l12", "line.l23", "line.l34", "line.l45"],
                      "bus1": ["b1", "b2", "b3", "b4"], "bus2": ["b2", "b3", "b4", "b5"],
                      "downstream_bus": ["b2", "b3", "b4", "b5"], "kind": "line"})
#: the two-area network: LV area A = b1-b3 (its transformer at t1), area B = b4-b5 (at t2)
TWO_AREA_BUSES = pd.DataFrame({
    "bus": ["m0", "t1", "t2", "b1", "b2", "b3", "b4", "b5"],
    "x": [-300.0, 0.0, 2000.0, 0.0, 40.0, 80.0, 2000.0, 2030.0],
    "y": [600.0, 0.0, 800.0, 0.0, 10.0, 0.0, 800.0, 845.0],
    "kv_base": [19.92, 19.92, 19.92, 0.12, 0.12, 0.12, 0.12, 0.12],
})
TWO_AREA_LINES = pd.DataFrame({"element": ["line.lmv1", "line.lmv2", "line.l12", "line.l23", "line.l45"],
                               "bus1": ["m0", "t1", "b1", "b2", "b4"],
                               "bus2": ["t1", "t2", "b2", "b3", "b5"],
                               "downstream_bus": ["t1", "t2", "b2", "b3", "b5"], "kind": "line"})
PHASES = {"b1": [1, 2, 3], "b2": [1, 2, 3], "b3": [1, 2, 3], "b4": [1], "b5": [1]}

AGENTS = pd.DataFrame({
    "agent": ["Load_a", "PV_a", "Load_p", "Load_b", "PV_b"],
    "kind": ["consumer", "producer", "passive", "consumer", "producer"],
    "community": ["C1", "C1", "", "C2", "C2"],
    "element": ["Load.load_a", "PVSystem.pv_a", "Load.load_p", "Load.load_b", "PVSystem.pv_b"],
    "bus": ["b2", "b2", "b3", "b4", "b5"],
})
PROFILE_KW = {  # load reference: consumption positive
    "Load_a": [2.0, 3.0, 4.0, 3.0],
    "PV_a": [-1.0, -4.0, -6.0, -2.0],
    "Load_p": [1.5, 1.0, 1.2, 1.8],
    "Load_b": [3.0, 2.0, 5.0, 4.0],
    "PV_b": [-2.0, -6.0, -8.0, -3.0],
}
#: iteration -> battery agent -> (bus, community, units, S_kw per step; > 0 charging)
BATTERIES = {
    0: {},
    1: {"Bat_b5": ("b5", "C2", 1, [0.0, 2.0, 2.56, -2.0])},
    2: {"Bat_b5": ("b5", "C2", 3, [0.0, 4.0, 7.68, -6.0]),
        "Bat_b4": ("b4", "C2", 1, [0.0, 1.0, 2.56, -1.5])},
}
UNIT_KW, UNIT_KWH = 2.56, 10.24

#: per-bus voltage rise with PV and drop with load [pu], per step shapes, per iteration damping
_RISE = {"b1": 0.0, "b2": 0.015, "b3": 0.03, "b4": 0.04, "b5": 0.05}
_DROP = {"b1": 0.0, "b2": 0.02, "b3": 0.04, "b4": 0.06, "b5": 0.12}
_PV_SHAPE = [0.2, 1.0, 1.5, 0.5]
_LOAD_SHAPE = [0.6, 0.0, 0.0, 0.3]
_DAMP = [1.0, 0.8, 0.6]
#: the one current violation: iteration 0, step 2, line l45 phase 1 [A]
CURRENT_VIOLATION = {"iteration": 0, "step": 2, "element": "line.l45.1", "value": 142.0,
                     "limit": 120.0}


def price(community: str, step: int) -> float:
    """Community clearing price [currency/kWh]."""
    return round(0.55 + 0.05 * step - (0.1 if community == "C2" else 0.0), 4)


def _market(iteration: int) -> pd.DataFrame:
    rows = []
    batts = BATTERIES[iteration]
    soc = dict.fromkeys(batts, 0.5)
    for step in range(STEPS):
        members: dict[str, list[dict]] = {"C1": [], "C2": []}
        for agent, kind, comm in zip(AGENTS["agent"], AGENTS["kind"], AGENTS["community"],
                                     strict=True):
            row = {"agent": agent, "kind": kind, "community": comm,
                   "P_kw": PROFILE_KW[agent][step], "S_kw": 0.0, "soc": np.nan}
            if kind == "passive":
                row.update(phi_kw=0.0, alpha_kw=0.0, beta_kw=0.0, price=np.nan, payment=np.nan)
                rows.append(row)
            else:
                members[comm].append(row)
        for agent, (_bus, comm, units, s) in batts.items():
            cap = UNIT_KWH * units
            soc[agent] = soc[agent] + s[step] / cap
            members[comm].append({"agent": agent, "kind": "battery", "community": comm,
                                  "P_kw": 0.0, "S_kw": s[step], "soc": round(soc[agent], 6)})
        for comm, group in members.items():
            net = sum(r["P_kw"] + r["S_kw"] for r in group)
            for r in group:
                r["alpha_kw"] = 0.0
                r["beta_kw"] = 0.0
            # the community's consumer imports a deficit, its producer exports a surplus
            next(r for r in group if r["kind"] == "consumer")["alpha_kw"] = max(net, 0.0)
            next(r for r in group if r["kind"] == "producer")["beta_kw"] = max(-net, 0.0)
            for r in group:
                r["phi_kw"] = -(r["P_kw"] + r["S_kw"]) + r["alpha_kw"] - r["beta_kw"]
                r["price"] = price(comm, step)
                r["payment"] = r["price"] * r["phi_kw"]
            rows.extend(group)
        for r in rows:
            r.setdefault("step", step)
    frame = pd.DataFrame(rows)
    frame["iteration"] = iteration
    frame["time"] = [TIMES[s] for s in frame["step"]]
    cols = ["iteration", "step", "time", "agent", "kind", "community", "P_kw", "S_kw",
            "phi_kw", "alpha_kw", "beta_kw", "soc", "price", "payment"]
    return frame[cols]


def _voltages(iteration: int) -> pd.DataFrame:
    rows = []
    for step in range(STEPS):
        for bus, phases in PHASES.items():
            for ph in phases:
                v = (1.0 + _DAMP[iteration] * (_RISE[bus] * _PV_SHAPE[step]
                                               - _DROP[bus] * _LOAD_SHAPE[step])
                     + 0.002 * (ph - 1))
                rows.append({"iteration": iteration, "step": step, "bus": bus, "phase": ph,
                             "v_pu": round(v, 6)})
    return pd.DataFrame(rows)


def build_results(root: Path, *, iterations: int = 3, coordinates: bool = True,
                  network: str = "lv") -> Path:
    """Write the results folder into ``root`` (created) and return it.

    Parameters
    ----------
    iterations : int
        1 to 3.
    coordinates : bool
        False writes NaN coordinates (the network map must be skipped).
    network : {"lv", "two_areas"}
        The network files: one LV feeder (``BUSES``/``LINES``) or two LV areas behind an MV
        line (``TWO_AREA_BUSES``/``TWO_AREA_LINES``); the other files are the same.
    """
    net_buses, net_lines = {"lv": (BUSES, LINES),
                            "two_areas": (TWO_AREA_BUSES, TWO_AREA_LINES)}[network]
    root.mkdir(parents=True, exist_ok=True)
    its = list(range(iterations))
    market = pd.concat([_market(i) for i in its], ignore_index=True)
    voltages = pd.concat([_voltages(i) for i in its], ignore_index=True)

    bad = voltages[(voltages["v_pu"] < VMIN) | (voltages["v_pu"] > VMAX)]
    viol = pd.DataFrame({
        "iteration": bad["iteration"], "step": bad["step"],
        "time": [TIMES[s] for s in bad["step"]], "kind": "voltage",
        "element": bad["bus"] + "." + bad["phase"].astype(str), "value": bad["v_pu"],
        "limit": np.where(bad["v_pu"] > VMAX, VMAX, VMIN)})
    if 0 in its:
        cv = dict(CURRENT_VIOLATION, time=TIMES[CURRENT_VIOLATION["step"]], kind="current")
        viol = pd.concat([viol, pd.DataFrame([cv])], ignore_index=True)
    viol = viol.sort_values(["iteration", "step", "kind", "element"]).reset_index(drop=True)

    batteries = pd.DataFrame(
        [{"iteration": i, "agent": a, "bus": bus, "units": u, "kw": UNIT_KW * u,
          "kwh": UNIT_KWH * u} for i in its for a, (bus, _c, u, _s) in BATTERIES[i].items()],
        columns=["iteration", "agent", "bus", "units", "kw", "kwh"])

    comm_rows = []
    for i in its:
        m = market[(market["iteration"] == i) & (market["kind"] != "passive")]
        g = m.groupby(["step", "community"])
        for (step, comm), grp in g:
            comm_rows.append({"iteration": i, "step": step, "community": comm,
                              "price": price(comm, step),
                              "import_kwh": grp["alpha_kw"].sum(),
                              "export_kwh": grp["beta_kw"].sum(),
                              "welfare": WELFARE[i] / (2 * STEPS)})
    communities = pd.DataFrame(comm_rows)

    it_rows = []
    for i in its:
        v = viol[viol["iteration"] == i]
        volt = v[v["kind"] == "voltage"]
        cur = v[v["kind"] == "current"]
        buses = set(volt["element"].str.split(".").str[0])
        lines = set(cur["element"].str.rsplit(".", n=1).str[0])
        buses |= set(LINES.set_index("element").loc[sorted(lines), "downstream_bus"])
        it_rows.append({"iteration": i, "welfare": WELFARE[i], "violations": len(v),
                        "voltage_violations": len(volt), "current_violations": len(cur),
                        "buses_violated": len(buses), "lines_violated": len(lines),
                        "battery_units": int(batteries.loc[batteries["iteration"] == i,
                                                           "units"].sum())})
    iteration_frame = pd.DataFrame(it_rows)
    best = int(iteration_frame.sort_values(["violations", "welfare"],
                                           ascending=[True, False])["iteration"].iloc[0])

    summary = {"case": "fixture-two-communities", "version": "0.1.0",
               "battery_model": "physical", "horizon": 1, "solver": "clarabel",
               "iterations": iterations, "best_iteration": best,
               "welfare": WELFARE[:iterations],
               "violations": [int(x) for x in iteration_frame["violations"]],
               "runtime_s": 1.25, "currency": "R$", "vmin_pu": VMIN, "vmax_pu": VMAX,
               "step_hours": 1.0}
    (root / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    buses = net_buses.copy()
    if not coordinates:
        buses["x"] = np.nan
        buses["y"] = np.nan
    for name, frame in (("iterations.csv", iteration_frame), ("market.parquet", market),
                        ("communities.parquet", communities), ("violations.parquet", viol),
                        ("voltages.parquet", voltages), ("batteries.csv", batteries),
                        ("agents.csv", AGENTS), ("network_buses.csv", buses),
                        ("network_lines.csv", net_lines)):
        contract.write_table(frame, root, name)
    return root
