"""The evidence archive as a user meets it: `ctrail ingest` archives and seals, `ctrail evidence
export` writes a bundle that `ctrail evidence verify` and the bundled standalone verifier both
accept, tampering is named, and the export itself is in our audit trail."""

from __future__ import annotations

import gzip
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.signing_key import write_signing_key

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "samples/k8s-audit").glob("*.json"))
RANGE = ("--from", "2018-10-01T00:00:00Z", "--to", "2018-11-01T00:00:00Z")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    key = tmp_path / "signing.pem"
    write_signing_key(key)
    path = tmp_path / "ctrail.yaml"
    # The samples are from 2018: their hours ended long ago, so each batch seals at once.
    path.write_text(f"evidence:\n  signing_key: {{file: {key}}}\n  seal_after_secs: 0\n")
    return path


@pytest.fixture
def archived(ctrail, config: Path, tmp_data_dir: Path) -> Path:  # type: ignore[no-untyped-def]
    result = ctrail("ingest", "--config", str(config), "--source", "k8s-audit", *map(str, SAMPLES))
    assert result.status == 0, result.err
    return tmp_data_dir / "evidence"


def test_ingested_events_and_alerts_are_sealed_and_verify(ctrail, config, archived) -> None:  # type: ignore[no-untyped-def]
    result = ctrail("evidence", "verify", "--store", "--config", str(config))
    assert result.status == 0, result.out
    assert "signatures checked with key" in result.out and "(of evidence.signing_key);" in result.out
    assert result.out.rstrip().endswith(": OK")
    classes = {m.read_text().split('"data_class":"')[1].split('"')[0]
               for m in (archived / "manifests").glob("*.json")}
    assert classes == {"audit", "alerts"}


def test_an_exported_bundle_verifies_with_the_cli_and_standalone(ctrail, config, archived,  # type: ignore[no-untyped-def]
                                                                 tmp_path) -> None:
    bundle = tmp_path / "evidence.tar"
    result = ctrail("evidence", "export", *RANGE, "--out", str(bundle), "--config", str(config))
    assert result.status == 0, result.err
    with tarfile.open(bundle) as tar:
        names = set(tar.getnames())
        tar.extractall(tmp_path / "unpacked", filter="data")
    assert {"VERIFY.md", "verify.py", "EXPORT.json", "public_key.pem", "head.json"} <= names
    assert ctrail("evidence", "verify", str(bundle), "--config", str(config)).status == 0
    standalone = subprocess.run([sys.executable, "-I", str(tmp_path / "unpacked/verify.py"),
                                 str(tmp_path / "unpacked")], capture_output=True, text=True,
                                cwd=tmp_path)
    assert standalone.returncode == 0, standalone.stdout + standalone.stderr
    assert "signatures checked: OK" in standalone.stdout


def test_verify_names_a_deleted_record(ctrail, config, archived) -> None:  # type: ignore[no-untyped-def]
    segment = max((archived / "segments").glob("*.jsonl.gz"),
                  key=lambda p: len(gzip.decompress(p.read_bytes()).splitlines()))
    lines = gzip.decompress(segment.read_bytes()).splitlines()
    victim = lines[1].split(b'"id":"')[1].split(b'"')[0].decode()
    segment.write_bytes(gzip.compress(b"".join(l + b"\n" for i, l in enumerate(lines) if i != 1)))
    result = ctrail("evidence", "verify", "--store", "--config", str(config))
    assert result.status == 1
    assert f"MISSING: segment {int(segment.name[:8])} record {victim}" in result.out


def test_an_export_is_recorded_in_our_audit_trail(ctrail, config, archived, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert ctrail("evidence", "export", *RANGE, "--out", str(tmp_path / "e.tar"),
                  "--config", str(config)).status == 0
    # The record waits in the audit spool until a pipeline runs: any ingest stores it. The
    # first ingest (the `archived` fixture) recorded the initial rule set.
    assert ctrail("ingest", "--config", str(config), "--source", "k8s-audit",
                  str(SAMPLES[0])).status == 0
    found = ctrail("search", "event.dataset:containertrail.audit", "--format", "json",
                   "--config", str(config)).json_lines()
    assert [doc["event"]["action"] for doc in found] == ["rules-change", "evidence-export"]
    assert str(tmp_path / "e.tar") in found[1]["event"]["original"]
