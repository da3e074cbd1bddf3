"""Redirect/Compile cycles refused before OpenDSS sees them (issue 15), a quote in the case
path, and the source voltage set after compiling (issue 16)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from _network_fixtures import V_LN, Section, closed_form_two_bus, write_feeder
from gridmarket.errors import NetworkError
from gridmarket.network import OpenDSSNetwork
from gridmarket.network.inspect import inspect_feeder
from gridmarket.network.scripts import dss_quote, scan_scripts

CIRCUIT = "Clear\nNew Circuit.c phases=1 basekV=0.23 bus1=src\n"


def test_a_master_that_redirects_itself(tmp_path: Path) -> None:
    master = tmp_path / "Master.dss"
    master.write_text(CIRCUIT + "Redirect Master.dss\n")
    cycle = r"Master\.dss -> .*Master\.dss \(Master\.dss, line 3: redirect Master\.dss\)"
    with pytest.raises(NetworkError, match=cycle):
        OpenDSSNetwork(master)
    with pytest.raises(NetworkError, match="cycle"):
        inspect_feeder(master)


def test_a_to_b_to_a_through_folders_quotes_and_a_missing_extension(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    a = tmp_path / "A.dss"
    b = tmp_path / "lib" / "B.dss"
    a.write_text(CIRCUIT + "! Redirect A.dss  (a comment is not a command)\nREDIRECT 'lib/B'\n")
    b.write_text("New Line.l1 bus1=src bus2=x phases=1\ncompile (../A.dss)  ! back to the master\n")
    with pytest.raises(NetworkError) as err:
        OpenDSSNetwork(a)
    text = str(err.value)
    assert f"{a} -> {b} -> {a}" in text, text
    assert "B.dss, line 2: compile (../A.dss)" in text, text


def test_a_library_read_twice_is_not_a_cycle(tmp_path: Path) -> None:
    (tmp_path / "codes.dss").write_text("New Linecode.lc nphases=1 r1=0.1 x1=0.1 units=km\n")
    master = tmp_path / "Master.dss"
    master.write_text(CIRCUIT + "Redirect codes.dss\nRedirect codes.dss\n/* Redirect Master.dss\n"
                      "still a comment */\nNew Line.l1 bus1=src bus2=x phases=1 linecode=lc\n")
    scan = scan_scripts(master)
    assert [p.name for p in scan.files] == ["Master.dss", "codes.dss"] and scan.desktop == []
    net = OpenDSSNetwork(master)
    assert "line.l1" in net.lines.index


def test_a_redirect_to_a_device_or_to_binary_bytes(tmp_path: Path) -> None:
    master = tmp_path / "Master.dss"
    master.write_text(CIRCUIT + "Redirect /dev/zero\n")  # OpenDSS would read it forever
    device = r"^Master\.dss, line 3: redirect /dev/zero: /dev/zero is not a regular file"
    with pytest.raises(NetworkError, match=device):
        OpenDSSNetwork(master)
    (tmp_path / "blob.dss").write_bytes(b"\x8f\x9a\xff\xfe junk\n")  # OpenDSS quotes them in its message
    master.write_text(CIRCUIT + "Redirect blob.dss\n")
    with pytest.raises(NetworkError, match=r"bytes that are not text in one of its scripts \(Master\.dss, blob\.dss\)"):
        OpenDSSNetwork(master)


def test_a_quote_in_the_case_path(tmp_path: Path) -> None:
    folder = tmp_path / 'my "best" feeder'
    folder.mkdir()
    master = write_feeder(folder / "Master.dss", [Section(0.4, 0.2)], {1: (5.0, 1.0)})
    net = OpenDSSNetwork(master)
    res = net.run_series(net.resolve(["Load.ld1"]), np.array([[5.0]]), kvar=np.array([[1.0]]))
    assert res.v_pu[0, 1] == pytest.approx(closed_form_two_bus(5e3, 1e3, 0.4, 0.2 + 1e-6) / V_LN, abs=1e-6)
    assert dss_quote('a"b') == "'a\"b'"
    assert dss_quote("a\"b'c") == "(a\"b'c)"
    with pytest.raises(NetworkError, match="quote"):
        dss_quote("\"')]}")


def test_set_source_pu(tmp_path: Path) -> None:
    master = write_feeder(tmp_path / "f.dss", [Section(0.4, 0.2)], {1: (5.0, 1.0)})
    net = OpenDSSNetwork(master, tolerance=None)
    es = net.resolve(["Load.ld1"])
    assert net.source_pu == pytest.approx(1.0)
    net.set_source_pu(0.98)
    assert net.source_pu == pytest.approx(0.98)
    res = net.run_series(es, np.array([[5.0], [8.0]]), kvar=np.array([[1.0], [2.0]]))
    for t, (p, q) in enumerate([(5e3, 1e3), (8e3, 2e3)]):
        v2 = closed_form_two_bus(p, q, 0.4, 0.2 + 1e-6, v1=0.98 * V_LN)
        assert res.v_pu[t, 1] == pytest.approx(v2 / V_LN, abs=1e-8)
        assert res.v_pu[t, 0] == pytest.approx(0.98, abs=1e-6)
    with pytest.raises(ValueError, match="source_pu"):
        net.set_source_pu(float("nan"))
    with pytest.raises(ValueError, match="source_pu"):
        net.set_source_pu(2.0)
