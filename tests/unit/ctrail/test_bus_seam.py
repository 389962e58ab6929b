"""One narrow bus seam: outside ctrail/bus no module imports a bus implementation, directly or
through what it imports, and the embedded commands never load kafka-python."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PACKAGES = ("ctrail", "collector", "enrich", "detectors", "sinks")
IMPLEMENTATIONS = ("ctrail.bus.local", "ctrail.bus.kafka")
SAMPLE = REPO / "samples" / "k8s-audit" / "attach_pod.json"


def outside_the_bus() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (REPO / package).rglob("*.py")
                  if not path.is_relative_to(REPO / "ctrail" / "bus"))


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def direct_violations(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Name) and node.id in ("LocalBus", "KafkaBus"):
            names = [node.id]                   # e.g. isinstance(bus, KafkaBus)
        else:
            continue
        found += [f"{path.relative_to(REPO)}:{node.lineno}: {name}" for name in names
                  if name in ("LocalBus", "KafkaBus") or
                  any(name == impl or name.startswith(impl + ".") for impl in IMPLEMENTATIONS)]
    return found


def test_no_module_outside_the_bus_imports_a_bus_implementation() -> None:
    assert [v for path in outside_the_bus() for v in direct_violations(path)] == []


IMPORT_EACH = """
import importlib, json, sys
forbidden = set(sys.argv[2:])
culprits = {}
for name in sys.argv[1].split(","):
    importlib.import_module(name)
    loaded = sorted(m for m in forbidden if m in sys.modules)
    if loaded:
        culprits[name] = loaded
        for m in list(sys.modules):                 # so the next culprit shows too
            if any(m == f or m.startswith(f + ".") for f in forbidden):
                del sys.modules[m]
print(json.dumps(culprits))
"""


def test_no_module_outside_the_bus_imports_one_indirectly() -> None:
    """Each module imported in turn, in a fresh interpreter; whichever first brings a bus
    implementation (or kafka-python) into sys.modules is named."""
    names = [module_name(path) for path in outside_the_bus()]
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH, ",".join(names), *IMPLEMENTATIONS, "kafka"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(result.stdout.splitlines()[-1]) == {}


RUN_CLI = """
import json, sys
from ctrail.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "loaded": sorted(
    m for m in sys.modules if m in ("kafka", "ctrail.bus.kafka") or m.startswith("kafka."))}))
"""


def cli(*args: str) -> dict[str, object]:
    result = subprocess.run([sys.executable, "-c", RUN_CLI, *args], cwd=REPO,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("command", [
    ("ingest", "--source", "k8s-audit", str(SAMPLE)),
    ("search", "event.action:*", "--limit", "5"),
    ("timeline", "--container", "3f2a9c1e7b4d"),
])
def test_embedded_commands_do_not_import_kafka_python(tmp_path: Path,
                                                      command: tuple[str, ...]) -> None:
    data_dir = ["--data-dir", str(tmp_path / "data")]
    if command[0] != "ingest":                  # something to search for
        assert cli("ingest", "--source", "k8s-audit", str(SAMPLE), *data_dir)["loaded"] == []
    assert cli(*command, *data_dir) == {"code": 0, "loaded": []}
