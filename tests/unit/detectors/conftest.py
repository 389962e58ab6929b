"""Fixtures for the detector tests: the real samples and Sigma rules written from text."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest


@pytest.fixture
def write_rule(tmp_path: Path) -> Callable[..., Path]:
    """Write a Sigma rule for the audit logsource with the given detection; returns its path."""
    counter = iter(range(1, 1000))

    def write(detection: str, extra: str = "", name: str | None = None) -> Path:
        number = next(counter)
        path = tmp_path / (name or f"rule-{number}.yml")
        path.write_text(
            f"title: Test rule {number}\n"
            f"id: 00000000-0000-4000-8000-{number:012d}\n"
            f"name: TEST-{number:03d}\n"
            "logsource:\n    product: kubernetes\n    service: audit\n"
            "detection:\n" + detection + "\nlevel: low\n" + extra)
        return path
    return write


@pytest.fixture(scope="session")
def sigmahq_rules(real_data: Path) -> Path:
    return real_data / "sigmahq-kubernetes-audit" / "rules"


@pytest.fixture(scope="session")
def falco_traces(real_data: Path) -> Path:
    return real_data / "falco-k8saudit-traces" / "trace_files"
