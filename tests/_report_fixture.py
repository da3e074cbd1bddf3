"""Results folders for the report's tests, beyond tests/_results_fixture.py.

``build_contract_results`` takes the synthetic folder of ``_results_fixture.build_results``
and adds what the results contract of this round adds (shared CASE_FORMAT.md; BRIEF interface
4): the economics columns of ``iterations.csv``, ``welfare_breakdown.csv``, ``distance_km`` of
the buses, the new ``summary.json`` keys, and optionally ``comparison.csv``. Every number is written here by hand
(the comments say how they hang together), so the tests compare the page with these files.

``build_long_results`` writes a small but long run (10 days of hourly steps).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from _results_fixture import WELFARE, build_results
from gridmarket import contract

#: per iteration [currency]: the value of the energy left stored (the fixture's batteries end
#: fuller than they start), the annuity of the iteration's banks (1 and 4 SBU at 3 R$/SBU)
STORED = [0.0, 5.0, 12.5]
ANNUITY = [0.0, 3.0, 12.0]
#: realised welfare = the study's welfare minus the stored-energy value: 83.3, 104.2, 106.7
REALISED = [round(w - s, 10) for w, s in zip(WELFARE, STORED, strict=True)]
#: net benefit = (realised − realised of iteration 0) − annuity: 0, 17.9, 11.4
NET = [round(r - REALISED[0] - a, 10) for r, a in zip(REALISED, ANNUITY, strict=True)]
BREAK_EVEN = 123.45  #: [R$/kWh], as summary.json states it
STOP_REASON = "ladder exhausted at every violated bus"
#: distance from the source along the feeder [km] (the fixture's coordinates are metres)
DISTANCE_KM = {"b1": 0.0, "b2": 0.0412, "b3": 0.0825, "b4": 0.1272, "b5": 0.1663}
COMPARISON = pd.DataFrame({
    "scenario": ["blind, no batteries", "blind + batteries", "aware, no batteries", "aware + batteries"],
    "violations": [4, 1, 0, 0],
    "welfare_realised": [83.3, 106.7, 80.15, 101.25],
    "net_benefit": [0.0, 11.4, -3.15, 5.95],
    "curtailed_kwh": [0.0, 0.0, 6.5, 1.25],
    "price_spread": [0.15, 0.15, 0.4125, 0.2],
})


def breakdown_parts(realised: float) -> dict[str, float]:
    """Parts of one iteration's realised welfare; ``batteries_trading`` closes the sum."""
    parts = {"consumers": 60.0, "producers": 40.0, "grid_import_cost": -30.0, "grid_export_revenue": 10.0,
             "fees": -2.0}
    parts["batteries_trading"] = round(realised - sum(parts.values()), 10)
    return parts


def build_contract_results(root: Path, *, costed: bool = True, comparison: bool = False,
                           iterations: int = 3) -> Path:
    """The fixture folder with this round's contract additions (see the module docstring)."""
    build_results(root, iterations=iterations)
    its = pd.read_csv(root / "iterations.csv")
    n = len(its)
    its["welfare_realised"] = REALISED[:n]
    its["stored_energy_value"] = STORED[:n]
    its["battery_annuity"] = ANNUITY[:n] if costed else [0.0] * n
    its["net_benefit"] = NET[:n] if costed else [round(r - REALISED[0], 10) for r in REALISED[:n]]
    its["transformer_violations"] = 0
    its["nonconverged_steps"] = 0
    contract.write_table(its, root, "iterations.csv")
    rows = [{"iteration": i, "part": p, "value": v} for i in range(n) for p, v in breakdown_parts(REALISED[i]).items()]
    contract.write_table(pd.DataFrame(rows), root, "welfare_breakdown.csv")
    buses = contract.read_table(root / "network_buses.csv")
    buses["distance_km"] = buses["bus"].map(DISTANCE_KM)
    contract.write_table(buses, root, "network_buses.csv")
    summary = json.loads((root / "summary.json").read_text(encoding="utf-8"))
    summary.update(stop_reason=STOP_REASON, battery_costed=costed,
                   break_even_capex_per_kwh=BREAK_EVEN if costed else None,
                   network_mode="blind", terminal_soc="cyclic", solver_used=["fast"] * n)
    (root / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    if comparison:
        COMPARISON.to_csv(root / "comparison.csv", index=False)
    return root


def build_long_results(root: Path, *, days: int = 10) -> Path:
    """A two-iteration run of ``days`` × 24 hourly steps on the fixture's 5-bus feeder.

    Iteration 0 has an undervoltage at b5 every day at 19:00 and 20:00 (phases 1 and 2 both out:
    one pair per step) and an overvoltage at b4 at 12:00 on even days; iteration 1 (one battery
    at b5) keeps only the overvoltage. Market: one consumer and one producer in C1.
    """
    build_contract_results(root)
    steps = days * 24
    times = pd.date_range("2024-01-25", periods=steps, freq="h")  # crosses into February
    hour = times.hour.to_numpy()
    day = np.arange(steps) // 24
    rows = []
    for it in (0, 1):
        for b, phases in (("b1", 3), ("b4", 1), ("b5", 2)):
            for ph in range(1, phases + 1):
                v = np.full(steps, 1.0)
                if b == "b5":
                    v = np.where(np.isin(hour, [19, 20]) & (it == 0), 0.93, 0.97)
                if b == "b4":
                    v = np.where((hour == 12) & (day % 2 == 0), 1.06, 1.02)
                rows.append(pd.DataFrame({"iteration": it, "step": np.arange(steps), "bus": b, "phase": ph,
                                          "v_pu": v}))
    volt = pd.concat(rows, ignore_index=True)
    contract.write_table(volt, root, "voltages.parquet")
    bad = volt[(volt["v_pu"] < 0.95) | (volt["v_pu"] > 1.05)]
    viol = pd.DataFrame({"iteration": bad["iteration"], "step": bad["step"],
                         "time": times[bad["step"].to_numpy()].strftime("%Y-%m-%dT%H:%M"), "kind": "voltage",
                         "element": bad["bus"] + "." + bad["phase"].astype(str), "value": bad["v_pu"],
                         "limit": np.where(bad["v_pu"] > 1.05, 1.05, 0.95)})
    contract.write_table(viol, root, "violations.parquet")
    m = []
    for it in (0, 1):
        load = 2.0 + np.isin(hour, [19, 20]).astype(float)
        pv = -np.clip(np.sin((hour - 6) / 12 * np.pi), 0, None) * 3.0
        for agent, kind, p in (("Load_a", "consumer", load), ("PV_a", "producer", pv)):
            net = load + pv
            m.append(pd.DataFrame({
                "iteration": it, "step": np.arange(steps), "time": times.strftime("%Y-%m-%dT%H:%M"), "agent": agent,
                "kind": kind, "community": "C1", "P_kw": p, "S_kw": 0.0,
                "phi_kw": -p + (np.clip(net, 0, None) if kind == "consumer" else 0.0)
                - (np.clip(-net, 0, None) if kind == "producer" else 0.0),
                "alpha_kw": np.clip(net, 0, None) if kind == "consumer" else 0.0,
                "beta_kw": np.clip(-net, 0, None) if kind == "producer" else 0.0,
                "soc": np.nan, "price": 0.5, "payment": 0.0}))
    contract.write_table(pd.concat(m, ignore_index=True), root, "market.parquet")
    comm = pd.DataFrame({"iteration": np.repeat([0, 1], steps), "step": np.tile(np.arange(steps), 2),
                         "time": np.tile(times.strftime("%Y-%m-%dT%H:%M"), 2), "community": "C1", "price": 0.5,
                         "import_kwh": 1.0, "export_kwh": 0.0, "welfare": 0.1})
    contract.write_table(comm, root, "communities.parquet")
    bats = pd.DataFrame({"iteration": [1], "agent": ["Bat_b5"], "bus": ["b5"], "units": [1], "kw": [2.56],
                         "kwh": [10.24]})
    contract.write_table(bats, root, "batteries.csv")
    its = pd.read_csv(root / "iterations.csv").head(2).copy()
    volt_pairs = bad.groupby(["iteration"])[["bus", "step"]].apply(lambda g: len(g.drop_duplicates()))
    its["violations"] = its["voltage_violations"] = [int(volt_pairs.get(0, 0)), int(volt_pairs.get(1, 0))]
    its["current_violations"] = 0
    its["battery_units"] = [0, 1]
    contract.write_table(its, root, "iterations.csv")
    summary = json.loads((root / "summary.json").read_text(encoding="utf-8"))
    summary.update(iterations=2, best_iteration=1, steps=steps, welfare=summary["welfare"][:2],
                   violations=[int(x) for x in its["violations"]], solver_used=["fast", "fast"])
    (root / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    bd = pd.read_csv(root / "welfare_breakdown.csv")
    contract.write_table(bd[bd["iteration"] < 2], root, "welfare_breakdown.csv")
    return root
