"""Tests of gridmarket.report on a small synthetic results folder (tests/_results_fixture.py)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import matplotlib.image as mpimg
import pandas as pd
import pytest
from matplotlib.figure import Figure

from _results_fixture import (
    BUSES,
    LINES,
    TWO_AREA_BUSES,
    TWO_AREA_LINES,
    WELFARE,
    build_results,
)
from gridmarket import report
from gridmarket.errors import ResultsError
from gridmarket.report import (
    bank_summary,
    build_report,
    format_iteration_table,
    iteration_table,
    load_results,
    plot_energy_balance,
    plot_iterations,
    plot_network_map,
    plot_voltages,
    save_figures,
    style,
    to_markdown,
)
from gridmarket.report._load import REQUIRED_FILES
from gridmarket.report.elements import violated_elements
from gridmarket.report.network_map import lv_areas

PNGS = {"iterations.png", "energy_balance_it0.png", "energy_balance_it2.png", "voltages.png",
        "violations_heatmap.png", "network_map.png"}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = build_results(tmp_path_factory.mktemp("results") / "run")
    return root, build_report(root)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return build_results(tmp_path / "run")


# ----------------------------------------------------------------------------- report
def test_build_report_writes_html_and_pngs(built: tuple[Path, Path]) -> None:
    root, html_path = built
    assert html_path == root / "report.html"
    assert PNGS <= {p.name for p in root.glob("*.png")}
    assert not list(root.glob(".*.tmp")), "temporary files left behind"
    for name in PNGS:
        img = mpimg.imread(root / name)
        assert img.ndim == 3
        assert img.shape[0] > 200 and img.shape[1] > 300


def test_html_embeds_images_and_tables(built: tuple[Path, Path]) -> None:
    root, html_path = built
    page = html_path.read_text(encoding="utf-8")
    uris = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) == len(PNGS)
    embedded = {base64.b64decode(u) for u in uris}
    assert embedded == {(root / name).read_bytes() for name in PNGS}
    # summary
    for text in ("fixture-two-communities", "physical", "clarabel", "Best iteration"):
        assert text in page
    # iteration table values: welfare, % change vs base, banks
    for text in ("83.30", "109.20", "119.20", "+31.1", "+43.1", "1 × 1 SBU + 1 × 3 SBU",
                 "b4:1, b5:3", '<tr class="best">'):
        assert text in page
    # community table: C1's mean price over the 4 steps = 0.55 + 0.05 * 1.5
    assert "C1" in page and "0.6250" in page
    assert "line.l45.1" in page  # worst current violation
    assert "<script src" not in page  # self-contained (tests/test_report_page.py checks more)


def test_save_figures_is_deterministic(built: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = built
    out = tmp_path / "figs"
    paths = save_figures(root, out_dir=out)
    assert {p.name for p in paths} == PNGS
    for path in paths:
        assert path.parent == out
        assert path.read_bytes() == (root / path.name).read_bytes()


@pytest.fixture
def fast_png(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip the (slow) rasterising where a test only checks which figures are made."""
    monkeypatch.setattr(style, "figure_png", lambda fig: b"\x89PNG-stub-" + fig.get_label().encode())


@pytest.mark.usefixtures("fast_png")
def test_no_coordinates_skips_map_with_note(tmp_path: Path) -> None:
    root = build_results(tmp_path / "run", coordinates=False)
    page = build_report(root).read_text(encoding="utf-8")
    assert not (root / "network_map.png").exists()
    assert "Network map skipped" in page and "no coordinates" in page
    assert page.count('<img src="data:image/png;base64,') == len(PNGS) - 1


@pytest.mark.usefixtures("fast_png")
def test_missing_optional_network_files_skip_map(results: Path) -> None:
    (results / "network_lines.csv").unlink()
    page = build_report(results).read_text(encoding="utf-8")
    assert "Network map skipped: network_lines.csv" in page


def test_single_iteration_base_is_best(tmp_path: Path) -> None:
    root = build_results(tmp_path / "run", iterations=1)
    build_report(root)
    names = {p.name for p in root.glob("*.png")}
    assert names == {"iterations.png", "energy_balance_it0.png", "voltages.png",
                     "violations_heatmap.png", "network_map.png"}


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("name", list(REQUIRED_FILES))
def test_missing_file_names_it(results: Path, name: str) -> None:
    (results / name).unlink()
    with pytest.raises(ResultsError, match=re.escape(name)):
        build_report(results)
    assert not (results / "report.html").exists()


def test_missing_column_names_file_and_column(results: Path) -> None:
    frame = pd.read_parquet(results / "market.parquet").drop(columns=["alpha_kw"])
    frame.to_parquet(results / "market.parquet", index=False)
    with pytest.raises(ResultsError, match=r"market\.parquet: missing column\(s\) 'alpha_kw'"):
        load_results(results)


def test_empty_file_and_bad_summary(results: Path) -> None:
    (results / "batteries.csv").write_text("", encoding="utf-8")
    with pytest.raises(ResultsError, match=r"batteries\.csv: the file is empty"):
        load_results(results)
    (results / "summary.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ResultsError, match=r"summary\.json: must hold a JSON object"):
        load_results(results)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="does not exist"):
        build_report(tmp_path / "nope")


# ----------------------------------------------------------------------------- tables
def test_iteration_table_change_and_banks(results: Path) -> None:
    data = load_results(results)
    table = iteration_table(data.iterations, data.batteries, best_iteration=2)
    # hand values: (109.2 - 83.3) / 83.3 = 31.0924 %, (119.2 - 83.3) / 83.3 = 43.0972 %
    assert table["welfare_change_pct"].tolist() == pytest.approx([0.0, 31.0924, 43.0972],
                                                                  abs=1e-4)
    assert table["banks"].tolist() == ["none", "1 × 1 SBU", "1 × 1 SBU + 1 × 3 SBU"]
    assert table["bank_buses"].tolist() == ["", "b5:1", "b4:1, b5:3"]
    assert table["best"].tolist() == [False, False, True]
    assert table["welfare"].tolist() == WELFARE
    # violations from iterations.csv: it. 0 has 3 voltage + 1 current (line l45 -> bus b5)
    assert table.loc[0, ["violations", "voltage_violations", "current_violations",
                         "buses_violated"]].tolist() == [4, 3, 1, 2]


def test_iteration_table_zero_base_welfare_gives_nan() -> None:
    it = pd.DataFrame({"iteration": [0, 1], "welfare": [0.0, 5.0], "violations": [2, 0],
                       "voltage_violations": [2, 0], "current_violations": [0, 0],
                       "buses_violated": [1, 0], "lines_violated": [0, 0],
                       "battery_units": [0, 5]})
    table = iteration_table(it)
    assert table["welfare_change_pct"].isna().all()
    assert table["banks"].tolist() == ["none", "none"]


def test_bank_summary() -> None:
    assert bank_summary([]) == "none"
    assert bank_summary([1, 1, 1]) == "3 × 1 SBU"
    assert bank_summary([5.0, 1, 1]) == "2 × 1 SBU + 1 × 5 SBU"


def test_markdown_table(results: Path) -> None:
    data = load_results(results)
    md = to_markdown(format_iteration_table(
        iteration_table(data.iterations, data.batteries, best_iteration=2), currency="R$"))
    lines = md.splitlines()
    assert lines[0].startswith("| Iteration | Welfare [R$] | Δ welfare vs base [%]")
    assert len(lines) == 2 + 3
    cells = [c.strip() for c in lines[-1].strip("|").split("|")]
    assert cells[:3] == ["2 *", "119.20", "+43.1"]
    assert cells[-2:] == ["1 × 1 SBU + 1 × 3 SBU", "b4:1, b5:3"]
    assert set(lines[1]) <= {"|", "-", ":"}


def test_violated_buses_maps_current_to_downstream_bus(results: Path) -> None:
    data = load_results(results)
    buses, lines = violated_elements(data.violations, data.lines, iteration=0)
    assert buses == ["b4", "b5"]
    assert lines == ["line.l45"]


# ----------------------------------------------------------------------------- plots
def test_plot_functions_return_figures(results: Path) -> None:
    data = load_results(results)
    figs = [
        plot_energy_balance(data.market, data.communities, iteration=2, currency="R$"),
        plot_voltages(data.voltages, iterations=[0, 2]),
        plot_network_map(data.buses, data.lines, data.agents, data.batteries,
                         data.violations, iteration=2),
        plot_iterations(data.iterations, best_iteration=2, currency="R$"),
    ]
    for fig in figs:
        assert isinstance(fig, Figure)
        labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
        assert labels, "every figure labels its axes"
    assert "Power [kW]" in figs[0].axes[0].get_ylabel()
    assert figs[1].axes[0].get_ylabel() == "Voltage [pu]"


def test_energy_balance_sides_are_equal(results: Path) -> None:
    from gridmarket.report.plots import energy_balance

    data = load_results(results)
    for it in range(3):
        bal = energy_balance(data.market, iteration=it)
        consumption = bal["load_kw"] + bal["charge_kw"] + bal["export_kw"]
        supply = bal["pv_kw"] + bal["discharge_kw"] + bal["import_kw"]
        assert (consumption - supply).abs().max() < 1e-9
        assert (bal["net_kw"] - (bal["import_kw"] - bal["export_kw"])).abs().max() < 1e-9


def test_network_map_without_coordinates_raises(results: Path) -> None:
    data = load_results(results)
    buses = data.buses.assign(x=float("nan"), y=float("nan"))
    assert not report.has_coordinates(buses)
    with pytest.raises(ValueError, match="coordinates"):
        plot_network_map(buses, data.lines, iteration=0)


def test_public_api() -> None:
    for name in ("build_report", "iteration_table", "plot_energy_balance", "plot_voltages",
                 "plot_network_map", "plot_iterations", "save_figures"):
        assert name in report.__all__
        assert callable(getattr(report, name))


# ----------------------------------------------------------------------------- network map areas
def _lv_components(buses: pd.DataFrame, lines: pd.DataFrame) -> list[set[str]]:
    """LV areas of a fixture network, by a plain graph search (kv_base <= 1 kV is LV)."""
    lv = set(buses.loc[buses["kv_base"] <= 1.0, "bus"])
    nbrs: dict[str, set[str]] = {b: set() for b in lv}
    for b1, b2 in zip(lines["bus1"], lines["bus2"], strict=True):
        if b1 in lv and b2 in lv:
            nbrs[b1].add(b2)
            nbrs[b2].add(b1)
    areas, seen = [], set()
    for start in sorted(lv):
        if start in seen:
            continue
        stack, comp = [start], set()
        while stack:
            b = stack.pop()
            if b not in comp:
                comp.add(b)
                stack.extend(nbrs[b] - comp)
        seen |= comp
        areas.append(comp)
    return areas


def _buses_in_view(ax, buses: pd.DataFrame) -> set[str]:
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    inside = buses["x"].between(x0, x1) & buses["y"].between(y0, y1)
    return set(buses.loc[inside, "bus"])


def test_lv_areas_of_the_fixtures() -> None:
    # from the circuit sketches in _results_fixture.py: b1-b3 behind t1, b4-b5 behind t2
    assert lv_areas(TWO_AREA_BUSES, TWO_AREA_LINES) == [["b1", "b2", "b3"], ["b4", "b5"]]
    assert lv_areas(BUSES, LINES) == [["b1", "b2", "b3", "b4", "b5"]]
    assert lv_areas(BUSES.drop(columns="kv_base"), LINES) == []
    # a base of 0 kV (OpenDSS without voltage bases) is unknown, not LV
    unknown = TWO_AREA_BUSES.assign(kv_base=TWO_AREA_BUSES["kv_base"].where(
        TWO_AREA_BUSES["bus"] != "b3", 0.0))
    assert lv_areas(unknown, TWO_AREA_LINES) == [["b1", "b2"], ["b4", "b5"]]
    # ordered west to east: mirror the x coordinates and the order flips
    mirrored = TWO_AREA_BUSES.assign(x=-TWO_AREA_BUSES["x"])
    assert lv_areas(mirrored, TWO_AREA_LINES) == [["b4", "b5"], ["b1", "b2", "b3"]]


def test_network_map_one_panel_per_lv_area(tmp_path: Path) -> None:
    data = load_results(build_results(tmp_path / "run", network="two_areas"))
    fig = plot_network_map(data.buses, data.lines, data.agents, data.batteries,
                           data.violations, iteration=2)
    assert sorted(ax.get_label() for ax in fig.axes) == ["lv_area_1", "lv_area_2", "overview"]
    panels = {ax.get_label(): ax for ax in fig.axes}
    buses = TWO_AREA_BUSES
    areas = _lv_components(buses, TWO_AREA_LINES)
    assert len(areas) == 2
    # the MV buses drawn at an LV bus's place (the transformers t1, t2) show in its panel too
    xy = {b: (x, y) for b, x, y in zip(buses["bus"], buses["x"], buses["y"], strict=True)}
    mv = set(buses.loc[buses["kv_base"] > 1.0, "bus"])
    shown = []
    for k in (1, 2):
        in_view = _buses_in_view(panels[f"lv_area_{k}"], buses)
        area = next(a for a in areas if a & in_view)
        colocated = {m for m in mv if any(xy[m] == xy[b] for b in area)}
        assert in_view == area | colocated, f"panel {k}"
        assert colocated  # each fixture area has its transformer bus
        shown.append(area)
    assert shown == [{"b1", "b2", "b3"}, {"b4", "b5"}]  # west to east
    # every bus strictly inside its panel (padding), equal aspect
    for k, area in enumerate(shown, start=1):
        ax = panels[f"lv_area_{k}"]
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        pts = buses[buses["bus"].isin(area)]
        assert (pts["x"] > x0).all() and (pts["x"] < x1).all()
        assert (pts["y"] > y0).all() and (pts["y"] < y1).all()
        assert ax.get_aspect() == 1.0
    assert "transformer b1" in panels["lv_area_1"].get_title()
    assert "3 agents" in panels["lv_area_1"].get_title()
    assert "transformer b4" in panels["lv_area_2"].get_title()
    # the overview holds the whole feeder and boxes both areas
    overview = panels["overview"]
    png = style.figure_png(fig)  # draws: the overview's limits are final after the aspect is applied
    assert _buses_in_view(overview, buses) == set(buses["bus"])
    assert len(overview.patches) == 2
    # one shared legend with both levels and both communities
    assert len(fig.legends) == 1
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert {"MV line", "LV line", "Community C1", "Community C2"} <= labels
    assert png == style.figure_png(plot_network_map(data.buses, data.lines, data.agents,
                                              data.batteries, data.violations, iteration=2))


def test_network_map_panels_only_for_areas_with_agents(tmp_path: Path) -> None:
    data = load_results(build_results(tmp_path / "run", network="two_areas"))
    area_a = {"b1", "b2", "b3"}
    agents = data.agents[data.agents["bus"].isin(area_a)]
    fig = plot_network_map(data.buses, data.lines, agents, None, None, iteration=2)
    assert sorted(ax.get_label() for ax in fig.axes) == ["lv_area_1", "overview"]
    lv_panel = next(ax for ax in fig.axes if ax.get_label() == "lv_area_1")
    assert _buses_in_view(lv_panel, TWO_AREA_BUSES) == area_a | {"t1"}


def test_network_map_single_level_is_one_panel(results: Path) -> None:
    data = load_results(results)
    fig = plot_network_map(data.buses, data.lines, data.agents, data.batteries,
                           data.violations, iteration=2)
    assert len(fig.axes) == 1
    assert _buses_in_view(fig.axes[0], BUSES) == set(BUSES["bus"])


@pytest.mark.usefixtures("fast_png")
def test_report_map_of_two_area_feeder(tmp_path: Path) -> None:
    root = build_results(tmp_path / "run", network="two_areas")
    page = build_report(root).read_text(encoding="utf-8")
    assert (root / "network_map.png").is_file()
    assert "its 2 LV area(s) holding agents boxed" in page
