"""The documentation follows the code: every results file and column of the contract, every
case.toml key of the schema, every sweep short name and every command option is on its page,
and the README's Python snippet names only things that import.

These tests read the docs as text; they fail when the code gains a name the docs do not list.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from pydantic import BaseModel

from gridmarket import contract
from gridmarket.case.schema import CaseToml

ROOT = Path(__file__).resolve().parents[1]
CASE_FORMAT = ROOT / "docs" / "case_format.md"
MODEL = ROOT / "docs" / "model.md"
SWEEP = ROOT / "docs" / "sweep.md"
README = ROOT / "README.md"


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _section(text: str, heading: str) -> str:
    """The text under ``heading`` (a Markdown heading line) up to the next heading of its level."""
    level = heading.split(" ", 1)[0]
    start = text.index(heading + "\n")
    rest = text[start + len(heading) + 1:]
    nxt = re.search(rf"^{re.escape(level)} ", rest, flags=re.M)
    return rest if nxt is None else rest[:nxt.start()]


# ---------------------------------------------------------------------------- results contract

@pytest.mark.parametrize("file", list(contract.TABLES))
def test_case_format_lists_every_column_of_every_results_table(file: str) -> None:
    text = _text(CASE_FORMAT)
    spec = contract.TABLES[file]
    section = _section(text, f"### `{file}` — {spec.rows}")
    for col in spec.columns:
        row = re.search(rf"^\| `{re.escape(col.name)}` \| (\w+) \|", section, flags=re.M)
        assert row is not None, f"docs/case_format.md: {file} lacks column {col.name!r}"
        assert row.group(1) == col.dtype, f"{file}.{col.name}: docs say {row.group(1)}, contract {col.dtype}"
    listed = re.findall(r"^\| `([^`]+)` \|", section, flags=re.M)
    assert listed == list(spec.names), f"{file}: the docs list {listed}, the contract {list(spec.names)}"
    files = _section(text, "### Files")
    assert f"| `{file}` | {spec.rows} |" in files, f"{file} is not in the files table"


def test_case_format_lists_every_summary_key() -> None:
    section = _section(_text(CASE_FORMAT), "### `summary.json`")
    for key in contract.SUMMARY_KEYS:
        assert f"| `{key}` |" in section, key


def test_case_format_documents_no_table_the_contract_lacks() -> None:
    text = _text(CASE_FORMAT)
    documented = set(re.findall(r"^### `([a-z_]+\.(?:csv|parquet))`", text, flags=re.M))
    assert documented == set(contract.TABLES)


# ---------------------------------------------------------------------------- case.toml keys

def _schema_keys() -> list[tuple[str, str, object]]:
    keys = []
    for section, field in CaseToml.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for key, f in model.model_fields.items():
            default = None if f.is_required() else f.get_default(call_default_factory=True)
            keys.append((section, key, default))
    return keys


@pytest.mark.parametrize(("section", "key", "default"), _schema_keys())
def test_case_format_lists_every_case_toml_key_with_its_default(section: str, key: str, default: object) -> None:
    text = _section(_text(CASE_FORMAT), "## case.toml")
    toml_block = text[text.index("```toml"):text.index("```", text.index("```toml") + 3)]
    sec = _section_of_toml(toml_block, section)
    line = re.search(rf"^{re.escape(key)} = (.+?)\s*(#.*)?$", sec, flags=re.M)
    assert line is not None, f"[{section}].{key} is not in the case.toml example of docs/case_format.md"
    if default is not None:
        value = line.group(1)
        assert _same(value, default), f"[{section}].{key}: docs show {value}, schema default {default!r}"
    assert re.search(rf"^\|.*`{re.escape(key)}`", text, flags=re.M), f"[{section}].{key} is not in the key table"


def _section_of_toml(block: str, section: str) -> str:
    start = block.index(f"[{section}]")
    nxt = re.search(r"^\[", block[start + 1:], flags=re.M)
    return block[start:] if nxt is None else block[start:start + 1 + nxt.start()]


def _same(text: str, default: object) -> bool:
    import tomllib

    value = tomllib.loads(f"x = {text}")["x"]
    if isinstance(default, float) or isinstance(value, float):
        return float(value) == float(default)  # type: ignore[arg-type]
    return bool(value == default)


# ---------------------------------------------------------------------------- reading results

def test_the_documented_ways_to_read_results_keep_names_as_text(tmp_path: Path) -> None:
    """The snippet of docs/case_format.md, on a folder whose names look like numbers and NA."""
    out = tmp_path / "out"
    out.mkdir()
    contract.write_table({"iteration": [1, 1], "agent": ["NA", "SBU_502"], "bus": ["502", "None"],
                          "community": ["C1", "nan"], "units": [1, 3], "kw": [2.56, 7.68],
                          "kwh": [10.24, 30.72]}, out, "batteries.csv")
    contract.write_table({"iteration": [0], "step": [0], "bus": ["502"], "phase": [1], "v_pu": [1.0]},
                         out, "voltages.parquet")
    text = ["agent", "bus", "community"]
    assert text == list(contract.table("batteries.csv").text_columns)
    by_pandas = pd.read_csv(out / "batteries.csv", dtype={c: str for c in text}, keep_default_na=False)
    by_contract = contract.read_table(out, "batteries.csv")
    for frame in (by_pandas, by_contract):
        assert list(frame["bus"]) == ["502", "None"]
        assert list(frame["agent"]) == ["NA", "SBU_502"]
        assert list(frame["community"]) == ["C1", "nan"]
    volts = pd.read_parquet(out / "voltages.parquet")
    assert list(volts["bus"].astype(str)) == ["502"]
    assert "pd.read_csv(out / \"batteries.csv\", dtype={c: str for c in text}, keep_default_na=False)" \
        in _text(CASE_FORMAT)


# ---------------------------------------------------------------------------- README and sweep

def _readme_python() -> str:
    text = _text(README)
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "the README has one Python snippet"
    return blocks[0]


def test_readme_snippet_imports_only_names_that_exist() -> None:
    tree = ast.parse(_readme_python())
    names = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gridmarket"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module}.{alias.name} does not exist"
                names += 1
    assert names >= 4


def test_readme_snippet_guards_dask_with_main() -> None:
    tree = ast.parse(_readme_python())
    guards = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
    assert guards, "run_sweep starts Dask worker processes: the snippet needs if __name__ == '__main__'"
    calls = {ast.unparse(n.func) for n in ast.walk(guards[0]) if isinstance(n, ast.Call)}
    assert "run_sweep" in calls


@pytest.mark.slow
def test_readme_snippet_runs_when_pasted_into_a_script(tmp_path: Path) -> None:
    """Issue 16: the snippet, saved as a script and run as ``python script.py`` (Dask included)."""
    script = tmp_path / "snippet.py"
    script.write_text(_readme_python(), encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "best iteration" in done.stdout
    assert (tmp_path / "api_results" / "market.parquet").is_file()
    summary = json.loads((tmp_path / "api_results" / "summary.json").read_text(encoding="utf-8"))
    doc = _section(_text(CASE_FORMAT), "### `summary.json`")
    undocumented = [k for k in summary if f"`{k}`" not in doc]
    assert not undocumented, f"summary.json keys missing from docs/case_format.md: {undocumented}"
    table = pd.read_csv(tmp_path / "api_sweep_out" / "sweep.csv")
    assert list(table["status"]) == ["ok", "ok"]


def test_readme_keeps_the_two_set_up_commands() -> None:
    text = _text(README)
    assert "pip install . && gridmarket run" in text
    assert 'pip install ".[test]" && pytest' in text


def test_readme_lists_every_command_and_run_option() -> None:
    from typer.main import get_command

    from gridmarket.cli import app

    text = _text(README)
    group = get_command(app)
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        assert f"`gridmarket {name}" in text, f"command {name} is not in the README"
        if name in ("run", "new-case", "calibrate", "sweep"):
            for p in cmd.params:
                for opt in p.opts:
                    if opt.startswith("--") and opt != "--help":
                        assert opt in text or opt in _text(SWEEP), f"{name} {opt} is not documented"


def test_sweep_doc_lists_every_short_name() -> None:
    from gridmarket.sweep import ALIASES, PARAMETERS

    section = _section(_text(SWEEP), "### Parameters")
    for name in [*PARAMETERS, *ALIASES]:
        assert f"`{name}`" in section, name


def test_model_doc_names_every_welfare_part() -> None:
    from gridmarket.market.prices import WELFARE_PARTS

    text = _text(MODEL)
    for part in WELFARE_PARTS:
        assert f"`{part}`" in text, part


def test_sweep_doc_lists_every_sweep_csv_column() -> None:
    from gridmarket.sweep import RESULT_COLUMNS

    text = _text(SWEEP)
    for col in RESULT_COLUMNS:
        assert f"`{col}`" in text, col
