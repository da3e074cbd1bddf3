"""`gridmarket check` runs the base case (no load, peak load) and warns about a study that
cannot mean much, as `new-case` does (issue 16)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gridmarket.cli import main


def _default_case(tmp_path: Path, source_pu: float | None) -> Path:
    out = tmp_path / "case"
    assert main(["new-case", "default", str(out)]) == 0
    if source_pu is not None:
        toml = out / "case.toml"
        text = toml.read_text(encoding="utf-8")
        text = re.sub(r"\[network\]\n", f"[network]\nsource_pu = {source_pu}\n", text, count=1)
        toml.write_text(text, encoding="utf-8")
    return out


def test_check_prints_the_base_case_and_no_warning_on_the_embedded_case(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    case = _default_case(tmp_path, None)
    capsys.readouterr()
    assert main(["check", str(case)]) == 0
    out, err = capsys.readouterr()
    assert "is valid" in out
    # the embedded case's source is 1.00 pu: the no-load voltage is the source voltage
    assert "base case: source 1.0000 pu" in out and "no load 1.0000-1.0000 pu" in out
    assert "warning" not in err


def test_check_warns_when_the_source_sits_at_the_upper_limit(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    case = _default_case(tmp_path, 1.049)
    capsys.readouterr()
    assert main(["check", str(case)]) == 0
    out, err = capsys.readouterr()
    assert "base case: source 1.0490 pu" in out
    assert "warning: the source voltage is 1.0490 pu" in err
    assert "within 0.01 pu of the upper limit 1.05 pu" in err
