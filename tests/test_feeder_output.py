"""Feeders as they are published (issue 14): OpenDSS's own output (RegControl debug traces,
Export, monitors, Show) goes to the engine's private folder, never into the feeder's folder or
the working directory, and never breaks a second compile; desktop commands get a notice. Also:
creating thousands of batteries at buses is linear."""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from _network_fixtures import Section, write_feeder
from gridmarket.network import OpenDSSNetwork
from gridmarket.network.inspect import inspect_feeder

MASTER = """\
Clear
Set DefaultBaseFrequency=60
New Circuit.reg phases=3 basekV=12.47 pu=1.0 bus1=src
Redirect "sub/Lines.dss"
New Transformer.reg1 phases=1 windings=2 buses=[mid.1 reg.1] kVs=[7.2 7.2] kVAs=[5000 5000] XHL=0.01 %LoadLoss=0.0001
New RegControl.creg1 transformer=reg1 winding=2 vreg=122 band=2 ptratio=60 debugtrace=yes
New Line.l2 bus1=reg.1 bus2=end.1 phases=1 r1=0.1 x1=0.1 r0=0.1 x0=0.1 c1=0 c0=0 length=1 units=km
New Load.ld bus1=end.1 phases=1 kV=7.2 kW=500 kvar=100
New Monitor.m1 element=Line.l2 terminal=1 mode=0
New EnergyMeter.em element=Line.l1 terminal=1
Set VoltageBases=[12.47]
CalcVoltageBases
Solve
Export voltages
Export monitors m1
Show voltages
Plot profile
"""
LINES = "New Line.l1 bus1=src.1 bus2=mid.1 phases=1 r1=0.1 x1=0.1 r0=0.1 x0=0.1 c1=0 c0=0 length=1 units=km\n"


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path -> sha256 of its bytes), folders included."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = ""
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


@pytest.fixture()
def feeder(tmp_path: Path) -> Path:
    folder = tmp_path / "published feeder"
    (folder / "sub").mkdir(parents=True)
    (folder / "Master.dss").write_text(MASTER)
    (folder / "sub" / "Lines.dss").write_text(LINES)
    return folder / "Master.dss"


def _compile(master: Path) -> OpenDSSNetwork:
    with pytest.warns(UserWarning) as record:
        net = OpenDSSNetwork(master)
    notes = [str(w.message) for w in record]
    assert any(n.startswith("Master.dss:16: show voltages: needs OpenDSS's desktop") for n in notes), notes
    assert any(n.startswith("Master.dss:17: plot profile") for n in notes), notes
    return net


def test_the_feeder_folder_and_the_working_directory_stay_as_they_were(
        feeder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = _tree(feeder.parent)
    first = _compile(feeder)
    second = _compile(feeder)  # a second compile in one process (the error 303)
    assert first.output_dir != second.output_dir
    # OpenDSS did write its trace, exports and monitor, in the engine's private folder
    written = {p.name.lower() for p in first.output_dir.iterdir()}
    assert "reg_creg1.csv" in written and any("exp_voltages" in n for n in written), written
    for net in (first, second):
        es = net.resolve(["Load.ld"])
        res = net.run_series(es, np.array([[500.0], [800.0]]), controls=True)
        assert res.converged.all() and np.isfinite(res.v_pu).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        info = inspect_feeder(feeder)
    assert info.source_bus == "src" and len(info.loads) == 1
    assert Path.cwd() == work and _tree(work) == {}
    assert _tree(feeder.parent) == before  # byte for byte, no new file
    out = first.output_dir
    first.close()
    first.close()  # idempotent
    assert not out.exists()
    assert second.output_dir.exists()
    second.close()


def test_the_private_folder_goes_with_a_failed_compile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    master = tmp_path / "bad.dss"
    master.write_text("Clear\nNew Circuit.x basekV=0.4\nNew Lnie.l1 bus1=a bus2=b\n")
    # temporary folders of this test only (other processes' folders in /tmp cannot interfere)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    with pytest.raises(Exception, match="Lnie"):
        OpenDSSNetwork(master)
    assert list(tmp.glob("gridmarket-dss-*")) == []


def test_five_thousand_batteries_at_buses(tmp_path: Path) -> None:
    # creating an element checks its name with one look-up, not a listing of every element
    master = write_feeder(tmp_path / "f.dss", [Section(0.01, 0.005)] * 20, {k: (1.0, 0.0) for k in range(1, 21)})
    net = OpenDSSNetwork(master)
    n = 5000
    names = [net.add_battery(f"sbu_{k}", f"b{1 + k % 20}", kw_rated=2.56, kwh=10.24) for k in range(n)]
    assert len(set(names)) == n
    es = net.resolve(names)
    kw = np.zeros((2, n))
    kw[1, :] = 0.002  # every battery charges 2 W in step 1 (10 kW in all)
    res = net.run_series(es, kw)
    assert res.converged.all()
    assert net.element_powers_kw(es) == pytest.approx(np.full(n, 0.002), rel=1e-6)  # to the solve tolerance
    with pytest.raises(Exception, match="already exists"):
        net.add_battery("SBU_17", "b1", kw_rated=1.0, kwh=1.0)
