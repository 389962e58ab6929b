"""Shared fixtures: where the real-world samples are, and a fresh data directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CTRAIL_SHARED_DATA", REPO.parent / "shared" / "data" / "real"))


@pytest.fixture(scope="session")
def real_data() -> Path:
    """../shared/data/real: samples written by other people (Kubernetes, Falco, registries)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared real-world samples are not at {SHARED_DATA} "
                    "(set CTRAIL_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture
def tmp_data_dir(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    return data_dir
