"""Layout rules of the package that a refactoring could quietly break."""

from __future__ import annotations

import ast
from pathlib import Path

import gridmarket

SRC = Path(gridmarket.__file__).resolve().parent
#: the modules allowed to import the OpenDSS bindings (see gridmarket.network's docstring)
OPENDSS_MODULES = {"network/_dss.py"}


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_only_the_network_package_imports_opendss() -> None:
    importers = {p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py")
                 if _imported_roots(p) & {"opendssdirect", "dss"}}
    assert importers == OPENDSS_MODULES


def test_the_rule_would_see_an_import_inside_a_function(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def f():\n    import opendssdirect as odd\n    from dss import IDSS\n")
    assert _imported_roots(f) == {"opendssdirect", "dss"}
