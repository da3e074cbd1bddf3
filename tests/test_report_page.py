"""The report page answers the question: its numbers are the results files' numbers (parsed
back from the HTML), it is offline, it marks an overloaded line of a real run, it counts
violations one way, and it fits long runs."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from _report_fixture import (
    BREAK_EVEN,
    COMPARISON,
    NET,
    REALISED,
    STOP_REASON,
    build_contract_results,
    build_long_results,
)
from casefactory import replace_in, write_tiny_case
from gridmarket.report import build_report, load_results, style
from gridmarket.report.elements import element_key, violated_elements, violation_pairs
from gridmarket.report.format import parse_number
from gridmarket.report.interactive_map import MAP_TRACES_PER_ITERATION, map_figure
from gridmarket.report.tables import MAX_LISTED


# ----------------------------------------------------------------------------- HTML parsing
class _Tables(HTMLParser):
    """Every <table> of a page as rows of cell texts, plus every data-key cell."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict[str, object]] = []
        self.keys: dict[str, str] = {}
        self._stack: list[dict[str, object]] = []
        self._cell: list[str] | None = None
        self._key: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._stack.append({"id": a.get("id"), "class": a.get("class"), "rows": []})
        elif tag == "tr" and self._stack:
            self._stack[-1]["rows"].append([])  # type: ignore[union-attr]
        elif tag in ("td", "th"):
            self._cell = []
            self._key = a.get("data-key")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell).strip()
            if self._stack:
                self._stack[-1]["rows"][-1].append(text)  # type: ignore[index]
            if self._key:
                self.keys[self._key] = text
            self._cell, self._key = None, None
        elif tag == "table" and self._stack:
            self.tables.append(self._stack.pop())

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _parse(page: str) -> _Tables:
    p = _Tables()
    p.feed(page)
    return p


def _table(parsed: _Tables, *, first_header: str | None = None, table_id: str | None = None) -> pd.DataFrame:
    for t in parsed.tables:
        rows = t["rows"]
        if (table_id and t["id"] == table_id) or (first_header and rows and rows[0] and rows[0][0] == first_header):
            return pd.DataFrame(rows[1:], columns=rows[0]) if first_header else pd.DataFrame(rows)
    raise AssertionError(f"no table {first_header or table_id!r}")


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = build_contract_results(tmp_path_factory.mktemp("contract") / "run", comparison=True)
    return root, build_report(root).read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- the answer
def test_headline_equals_the_results_files(page: tuple[Path, str]) -> None:
    root, text = page
    its = pd.read_csv(root / "iterations.csv").set_index("iteration")
    summary = json.loads((root / "summary.json").read_text(encoding="utf-8"))
    base, best = 0, summary["best_iteration"]
    assert best == 2
    keys = _parse(text).keys
    assert parse_number(keys["violations_base"]) == its.at[base, "violations"] == 4
    assert parse_number(keys["violations_best"]) == its.at[best, "violations"]
    assert parse_number(keys["welfare_base"]) == pytest.approx(REALISED[0], abs=5e-3)
    assert parse_number(keys["welfare_best"]) == pytest.approx(REALISED[2], abs=5e-3)
    assert parse_number(keys["welfare_change"]) == pytest.approx(REALISED[2] - REALISED[0], abs=5e-3)
    assert parse_number(keys["net_benefit_best"]) == pytest.approx(NET[2], abs=5e-3)
    assert parse_number(keys["battery_units_best"]) == its.at[best, "battery_units"] == 4
    assert parse_number(keys["break_even_capex_per_kwh"]) == pytest.approx(BREAK_EVEN, abs=5e-3)
    assert keys["stop_reason"] == STOP_REASON
    assert "R$" in keys["welfare_best"] and "R$" in keys["net_benefit_best"]
    assert 'id="not-costed"' not in text


def test_not_costed_says_how_to_cost(tmp_path: Path) -> None:
    root = build_contract_results(tmp_path / "run", costed=False)
    text = build_report(root, interactive=False).read_text(encoding="utf-8")
    assert 'id="not-costed"' in text and "capex_per_kwh" in text and "[battery]" in text
    assert _parse(text).keys["break_even_capex_per_kwh"] == "—"


def test_iteration_table_equals_iterations_csv(page: tuple[Path, str]) -> None:
    root, text = page
    its = pd.read_csv(root / "iterations.csv")
    table = _table(_parse(text), first_header="Iteration")
    assert len(table) == len(its)
    assert [int(s.rstrip(" *")) for s in table["Iteration"]] == its["iteration"].tolist()
    for head, col in (("Welfare [R$]", "welfare"), ("Realised welfare [R$]", "welfare_realised"),
                      ("Net benefit [R$]", "net_benefit"), ("Battery annuity [R$]", "battery_annuity"),
                      ("Violations [pairs]", "violations"), ("Voltage", "voltage_violations"),
                      ("Current", "current_violations"), ("Battery units [SBU]", "battery_units")):
        got = [parse_number(s) for s in table[head]]
        assert got == pytest.approx(its[col].astype(float).tolist(), abs=5e-3), head


def test_comparison_table_equals_comparison_csv(page: tuple[Path, str]) -> None:
    _, text = page
    table = _table(_parse(text), first_header="Scenario")
    assert table["Scenario"].tolist() == COMPARISON["scenario"].tolist()
    for head, col in (("Violations [pairs]", "violations"), ("Realised welfare [R$]", "welfare_realised"),
                      ("Net benefit [R$]", "net_benefit"), ("Curtailed [kWh]", "curtailed_kwh"),
                      ("Price spread [R$/kWh]", "price_spread")):
        assert [parse_number(s) for s in table[head]] == pytest.approx(COMPARISON[col].tolist(), abs=1e-4), head
    assert 'id="ifig-comparison"' in text


def test_violation_table_counts_pairs_and_labels_phase_rows(page: tuple[Path, str]) -> None:
    root, text = page
    its = pd.read_csv(root / "iterations.csv").set_index("iteration")
    parsed = _parse(text)
    table = next(pd.DataFrame(t["rows"][1:], columns=t["rows"][0]) for t in parsed.tables
                 if t["rows"] and "Per-phase rows" in t["rows"][0])
    for it, g in table.groupby("Iteration"):
        assert sum(parse_number(s) for s in g["Violations [pairs]"]) == its.at[int(it), "violations"]


def test_run_parameters_and_breakdown_shown(page: tuple[Path, str]) -> None:
    _, text = page
    params = dict(_table(_parse(text), table_id="parameters").itertuples(index=False, name=None))
    assert params["Market network mode"] == "blind" and params["Battery terminal SoC"] == "cyclic"
    # agents.csv of the fixture: 2 consumers, 2 producers, 1 passive in C1 and C2
    assert params["agents (agents.csv)"] == "2 consumer, 1 passive, 2 producer"
    assert params["communities (agents.csv)"] == "2: C1, C2"
    assert 'id="ifig-breakdown"' in text and 'id="ifig-profile"' in text and 'id="ifig-batteries"' in text
    assert "Bat_b5 @ b5" in text  # a bank named by its bus


# ----------------------------------------------------------------------------- offline
def test_page_is_offline_with_plotly_inlined_once(page: tuple[Path, str]) -> None:
    _, text = page
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, re.I), "a script loaded from elsewhere"
    assert text.count("* plotly.js v") == 1, "plotly.js must be inlined exactly once"
    # outside the inlined library (whose code names its own web links), no URL at all
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", text, re.S)
    library = [s for s in scripts if "* plotly.js v" in s]
    assert len(library) == 1
    rest = text.replace(library[0], "")
    assert not re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}/", rest, re.I), "an external URL in the page"
    assert not re.search(r"<link\b|@import|<iframe", rest, re.I)
    assert text.count("Plotly.newPlot(") >= 4  # map, heat map, profile, breakdown, batteries, comparison


def test_light_page_has_no_script_and_no_url(tmp_path: Path) -> None:
    root = build_contract_results(tmp_path / "run")
    text = build_report(root, interactive=False).read_text(encoding="utf-8")
    assert "<script" not in text and "http" not in text


def test_progress_reports_every_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(style, "figure_png", lambda fig: b"\x89PNG-stub")
    root = build_contract_results(tmp_path / "run")
    calls: list[tuple[str, int, int]] = []
    build_report(root, progress=lambda label, done, total: calls.append((label, done, total)))
    total = calls[0][2]
    assert [c[1] for c in calls] == list(range(1, total + 1))
    assert all(c[2] == total for c in calls)
    labels = [c[0] for c in calls]
    assert "network_map.png" in labels and "interactive map" in labels


# ----------------------------------------------------------------------------- one count
def test_violation_pairs_count_each_element_step_once() -> None:
    v = pd.DataFrame({
        "iteration": [0] * 7,
        "step": [3, 3, 3, 3, 3, 4, 4],
        "kind": ["voltage", "voltage", "voltage", "current", "current", "voltage", "transformer"],
        "element": ["B5.1", "b5.2", "b5.3", "line.L45.1", "line.l45.2", "b5.1", "Transformer.TX1"],
        "value": [0.93, 0.92, 0.94, 130.0, 150.0, 0.94, 1.3],
        "limit": [0.95, 0.95, 0.95, 120.0, 120.0, 0.95, 1.0],
    })
    pairs = violation_pairs(v)
    # by hand: (b5, 3), (line.l45, 3), (b5, 4), (transformer.tx1, 4)
    assert len(pairs) == 4
    got = {(r.key, r.step): (r.phases, r.worst_value) for r in pairs.itertuples()}
    assert got == {("b5", 3): (3, 0.92), ("line.l45", 3): (2, 150.0), ("b5", 4): (1, 0.94),
                   ("transformer.tx1", 4): (1, 1.3)}
    assert element_key("current", "LINE.L45.3") == "line.l45"
    assert element_key("voltage", "502.1") == "502"  # a numeric bus name stays text


def test_line_written_downstream_first_marks_the_same_bus() -> None:
    v = pd.DataFrame({"iteration": [0], "step": [0], "kind": ["current"], "element": ["line.l45.1"],
                      "value": [150.0], "limit": [120.0]})
    forward = pd.DataFrame({"element": ["line.l45"], "bus1": ["b4"], "bus2": ["b5"], "downstream_bus": ["b5"],
                            "kind": ["line"]})
    backward = pd.DataFrame({"element": ["line.l45"], "bus1": ["b5"], "bus2": ["b4"], "downstream_bus": ["b5"],
                             "kind": ["line"]})
    assert violated_elements(v, forward, iteration=0) == violated_elements(v, backward, iteration=0) \
        == (["b5"], ["line.l45"])


# ----------------------------------------------------------------------------- real run
def _overloaded_case(root: Path) -> Path:
    """The tiny 3-bus case with line L2 (b1 -> b2) rated 4 A: the households at b2 (1-2 kW
    single-phase at 230 V, i.e. 4-9 A) overload it; L1 (200 A) never is."""
    case = write_tiny_case(root)
    master = case / "network" / "Master.dss"
    replace_in(master, "length=0.1 normamps=200\nNew Load", "length=0.1 normamps=4\nNew Load")
    replace_in(master, "CalcVoltageBases", "CalcVoltageBases\nBusCoords coords.csv")
    (case / "network" / "coords.csv").write_text("src,0,0\nb1,100,0\nb2,200,30\n")
    return case


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gridmarket.case import load_case
    from gridmarket.results import write_results
    from gridmarket.study import run_study

    tmp = tmp_path_factory.mktemp("overload")
    case = _overloaded_case(tmp / "case")
    study = run_study(load_case(case))
    return write_results(study.to_results(), tmp / "results")


def test_real_run_marks_the_overloaded_line(real_run: Path) -> None:
    data = load_results(real_run)
    cur = data.violations[data.violations["kind"].astype(str).str.lower() == "current"]
    assert len(cur) and set(cur["element"].map(lambda e: element_key("current", e))) == {"line.l2"}
    fig = map_figure(data.buses, data.lines, agents=data.agents, batteries=data.batteries,
                     violations=data.violations, voltages=data.voltages, iterations=[0], shown=0)
    red = fig.data[1]
    assert red.name == "overloaded lines (it. 0)"
    # the segment b1 (100, 0) -> b2 (200, 30) of coords.csv, and nothing else
    assert list(red.x) == [100.0, 200.0, None] and list(red.y) == [0.0, 30.0, None]
    assert len(fig.data) == 1 + MAP_TRACES_PER_ITERATION
    steps = cur[cur["iteration"] == 0]["step"].nunique()
    assert list(fig.data[2].text) == [f"line.l2: out of limits in {steps} step(s)"]
    rings = fig.data[4]
    assert list(rings.text) == ["bus b2: violated"]  # L2's downstream bus
    # the PNG map draws it red as well
    from gridmarket.report.network_map import _map_data

    net = _map_data(data.buses, data.lines, data.agents, data.batteries, data.violations, iteration=0,
                    violated_iteration=0, lv_kv_max=1.0)
    assert len(net.seg_viol) == 1 and net.seg_viol[0].tolist() == [[100.0, 0.0], [200.0, 30.0]]
    # and the page says it, counting (line, step) pairs as iterations.csv does
    text = build_report(real_run, out_dir=real_run.parent / "page").read_text(encoding="utf-8")
    assert f"line.l2: out of limits in {steps} step(s)" in text
    its = pd.read_csv(real_run / "iterations.csv")
    assert int(its.loc[0, "violations"]) == len(cur[cur["iteration"] == 0][["step"]].drop_duplicates())


# ----------------------------------------------------------------------------- long runs
def test_long_run_gets_figures_that_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(style, "figure_png", lambda fig: b"\x89PNG-stub")
    root = build_long_results(tmp_path / "run", days=10)
    text = build_report(root).read_text(encoding="utf-8")
    pngs = {p.name for p in root.glob("*.png")}
    assert {"monthly_energy_it0.png", "monthly_energy_it1.png", "voltage_duration.png"} <= pngs
    assert not any(n.startswith("energy_balance") for n in pngs) and "voltages.png" not in pngs
    assert 'id="ifig-duration"' in text and 'id="ifig-monthly"' in text
    from gridmarket.report.interactive import heatmap_figure

    data = load_results(root)
    fig = heatmap_figure(data.violations, data.lines, before=0, after=1, long_run=True,
                         times=data.market.groupby("step")["time"].first())
    before, after = fig.data[0], fig.data[1]
    assert len(before.y) == 10 and len(before.x) == 24
    # by hand: iteration 0 has 2 undervoltage pairs a day (19:00, 20:00) and one overvoltage
    # at 12:00 on the 5 even days; iteration 1 keeps the overvoltages only
    assert sum(map(sum, before.z)) == 2 * 10 + 5 and sum(map(sum, after.z)) == 5
    assert [row[19] for row in before.z] == [1] * 10 and [row[12] for row in after.z] == [1, 0] * 5


# ----------------------------------------------------------------------------- long lists
def test_many_banks_are_summarised(tmp_path: Path) -> None:
    root = build_contract_results(tmp_path / "run")
    n = MAX_LISTED + 15
    bats = pd.DataFrame({"iteration": 2, "agent": [f"Bat_{k}" for k in range(n)],
                         "bus": [str(500 + k) for k in range(n)], "units": [1 + (k % 3) for k in range(n)],
                         "kw": 2.56, "kwh": 10.24})
    bats.to_csv(root / "batteries.csv", index=False)
    text = build_report(root, interactive=False).read_text(encoding="utf-8")
    assert f"{n} buses; largest: 502:3, 505:3," in text  # by units, then name; names stay text
    assert f"… {n - MAX_LISTED} more (batteries.csv)" in text
    assert "500:1, 501:2, 502:3, 503:1" not in text


def test_report_of_a_copied_folder_is_the_same(page: tuple[Path, str], tmp_path: Path) -> None:
    root, text = page
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    again = build_report(copy).read_text(encoding="utf-8")
    assert again == text, "the page must be reproducible (fixed figure ids, no timestamps)"


def test_zero_annuity_without_the_summary_key_reads_as_not_costed(tmp_path: Path) -> None:
    root = build_contract_results(tmp_path / "run", costed=False)
    summary = json.loads((root / "summary.json").read_text(encoding="utf-8"))
    del summary["battery_costed"]
    (root / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    text = build_report(root, interactive=False).read_text(encoding="utf-8")
    assert 'id="not-costed"' in text


def test_duration_curves_from_steps_equal_those_from_voltages(tmp_path: Path) -> None:
    from gridmarket.report.views import duration_curves

    root = build_long_results(tmp_path / "run", days=3)
    volt = pd.read_parquet(root / "voltages.parquet")
    ext = volt.groupby(["iteration", "step"])["v_pu"].agg(["min", "max"]).reset_index()
    steps = ext.rename(columns={"min": "v_min_pu", "max": "v_max_pu"})
    for it in (0, 1):
        a = duration_curves(volt, iteration=it)
        b = duration_curves(steps, iteration=it)
        pd.testing.assert_frame_equal(a, b)
    # by hand: iteration 0's lowest voltage is 0.93 pu in 2 of 24 hours every day
    low = duration_curves(volt, iteration=0)["v_min_pu"].to_numpy()
    assert (low[:6] == 0.93).all() and (low[6:] > 0.93).all()
