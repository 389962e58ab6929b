"""Fixtures: a simulated clock, an Ed25519 key file, and signed archives over a tmp dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from evidence_support import T0, Clock
from sinks.evidence import EvidenceConfig
from sinks.evidence.archive import EvidenceArchive
from tests.signing_key import write_signing_key


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "signing.pem"
    write_signing_key(path)
    return path


@pytest.fixture
def open_archive(tmp_path: Path, clock: Clock, key_file: Path
                 ) -> Iterator[Callable[..., EvidenceArchive]]:
    """open_archive(**config): a signed archive in tmp_path/evidence on the simulated clock."""
    opened: list[EvidenceArchive] = []

    def build(**config: Any) -> EvidenceArchive:
        settings = EvidenceConfig.model_validate({"signing_key": {"file": str(key_file)},
                                                 "seal_after_secs": 0, **config})
        archive = EvidenceArchive(settings, tmp_path / "evidence", clock)
        opened.append(archive)
        return archive
    yield build
    for archive in opened:
        if not archive._lock_file.closed:
            archive.close()
