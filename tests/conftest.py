"""Shared fixtures: a tiny valid case folder and the path of ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from casefactory import write_tiny_case

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    """../shared/data beside the checkout (or $GRIDMARKET_SHARED_DATA)."""
    env = os.environ.get("GRIDMARKET_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture
def tiny_case(tmp_path: Path) -> Path:
    return write_tiny_case(tmp_path / "tiny")


@pytest.fixture
def cr_mar_dir() -> Path:
    d = shared_data() / "cr_mar"
    if not (d / "DSS" / "Master_MAR.dss").is_file():
        pytest.skip(f"cr_mar feeder not found at {d} (it is not redistributable; place ../shared/data beside"
                    " the checkout or set GRIDMARKET_SHARED_DATA)")
    return d


# CI runs every property test on hypothesis' fixed example sequence, so that a red CI is a
# reproducible one; local runs keep exploring new examples (and store failures in .hypothesis/)
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
