"""Case folders for the network-aware market's tests (tests/test_aware*.py): one writer of
case.toml, agents.csv and profiles.csv around a small OpenDSS master written by the test."""

from __future__ import annotations

from pathlib import Path

#: case.toml of an aware case; ``extra`` appends sections (e.g. [battery], [placement])
TOML = """\
[case]
name = "{name}"
currency = "R$"

[network]
master = "network/Master.dss"
vmin_pu = 0.95
vmax_pu = 1.05
monitored_buses = {monitored}

[time]
start = "2024-03-01T00:00"
steps = {steps}
step_hours = 1.0

[market]
horizon = 1
tie_break = 1e-9
network = "aware"
network_margin_pu = 0.002
network_iterations = {network_iterations}

[grid]
import_price = 0.80
export_price = {export}

[communities]
links = "all"
{extra}"""

AGENTS_HEADER = "name,kind,community,element,profile,scale,a,b,c,flex,units,pf\n"


def write_aware_case(root: Path, *, name: str, master: str, agents: str, profiles: dict[str, list[float]],
                     monitored: str, network_iterations: int = 8, export: float = 0.30, extra: str = "") -> Path:
    """Write the case folder ``root``: ``master`` as network/Master.dss, ``agents`` rows under
    the agents.csv header, ``profiles`` [kW] one hourly column each from 2024-03-01T00:00."""
    (root / "network").mkdir(parents=True, exist_ok=True)
    (root / "network" / "Master.dss").write_text(master)
    steps = len(next(iter(profiles.values())))
    (root / "case.toml").write_text(TOML.format(name=name, monitored=monitored, steps=steps,
                                                network_iterations=network_iterations, export=export,
                                                extra=extra))
    (root / "agents.csv").write_text(AGENTS_HEADER + agents)
    cols = list(profiles)
    rows = ["time," + ",".join(cols)]
    rows += [f"2024-03-01T{t:02d}:00," + ",".join(str(profiles[c][t]) for c in cols) for t in range(steps)]
    (root / "profiles.csv").write_text("\n".join(rows) + "\n")
    return root
