"""Shared fixtures: where the real-world samples are, and a fresh data directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Beside the checkout (../shared), or where the workspace keeps it when the checkout is a clone
# somewhere else; CTRAIL_SHARED_DATA overrides both.
CANDIDATES = [Path(p) for p in (os.environ.get("CTRAIL_SHARED_DATA"),) if p] or [
    REPO.parent / "shared" / "data" / "real", Path("/work/shared/data/real")]
SHARED_DATA = next((path for path in CANDIDATES if path.is_dir()), CANDIDATES[0])
# The same copy for what the tests import from bench/ (bench/corpus.py reads the real Helm
# audit log) and for every process they start.
os.environ.setdefault("CTRAIL_SHARED_DATA", str(SHARED_DATA))


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
