"""Our generic top-level names (collector, enrich, detectors, sinks) must be ours, and stage
code must stay transport-agnostic: only ctrail/bus may import kafka, only sinks/elasticsearch
may import elasticsearch."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("package", ["ctrail", "collector", "enrich", "detectors", "sinks"])
def test_each_top_level_package_is_ours(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__file__ is not None
    assert Path(module.__file__).resolve().is_relative_to(REPO)


def imported_modules(folder: Path) -> set[str]:
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", ["collector", "enrich", "detectors", "ctrail/runtime",
                                     "ctrail/cli", "sinks/sqlite"])
def test_stage_code_does_not_import_transports(package: str) -> None:
    assert imported_modules(REPO / package) & {"kafka", "elasticsearch"} == set()
