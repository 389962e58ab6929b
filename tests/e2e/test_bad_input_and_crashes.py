"""Bad input is kept with its reason; a kill -9 loses nothing; errors are one clear line."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from collector.parsers.k8s_audit import K8sAuditParser
from collector.redact import RedactionConfig
from corpus import write_audit_log
from ctrail.ecs import DATASET_K8S_AUDIT
from ctrail.identity import event_id

REPO = Path(__file__).resolve().parents[2]

VALID = [
    b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"v1","verb":"get","stage":"ResponseComplete",'
    b'"requestReceivedTimestamp":"2026-03-01T10:00:00Z","user":{"username":"alice"}}',
    b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"v2","verb":"delete","stage":"ResponseComplete",'
    b'"requestReceivedTimestamp":"2026-03-01T10:00:01Z","user":{"username":"bob"},'
    b'"objectRef":{"resource":"secrets","namespace":"prod","name":"db"}}',
    b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"v3","verb":"list","stage":"ResponseComplete",'
    b'"requestReceivedTimestamp":"2026-03-01T10:00:02Z","user":{"username":"alice"}}',
]
BAD = [  # (line, reason)
    (b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"t1","verb":"get"', "invalid_json"),
    (b"this is not json", "invalid_json"),
    (b'{"kind":"Pod","apiVersion":"v1","metadata":{"name":"x"}}', "schema_mismatch"),
    (b'{"kind":"Event","auditID":"b1","requestReceivedTimestamp":"31/12/2025 25:61"}', "invalid_timestamp"),
    (b"\x00\x01\xfe\xff binary \x89PNG\r\x1a", "invalid_encoding"),
    (b'{"kind":"Event","auditID":"big","pad":"' + b"A" * (2 * 1024 * 1024) + b'"}', "record_too_large"),
]


def test_a_mixed_file_keeps_every_valid_event_and_every_bad_line(ctrail, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lines = [VALID[0], BAD[0][0], BAD[1][0], VALID[1], BAD[2][0], BAD[3][0], BAD[4][0],
             BAD[5][0], VALID[2]]
    mixed = tmp_path / "mixed.log"
    mixed.write_bytes(b"\n".join(lines) + b"\n")
    result = ctrail("ingest", "--source", "k8s-audit", str(mixed))
    assert result.status == 0
    assert result.out.strip() == f"{len(VALID)} accepted, {len(BAD)} dead-lettered"

    stored = ctrail("search", "*", "--format", "json").json_lines()
    # Our own audit records only when asked for: the first start's rules.
    ours = ctrail("search", "event.dataset:containertrail.audit", "--format", "json").json_lines()
    assert [d["event"]["action"] for d in ours] == ["rules-change"]
    assert sorted(d["event"]["original"].encode() for d in stored) == sorted(VALID)

    dead = ctrail("dlq", "list", "--format", "json").json_lines()
    got = sorted((int(d["origin"].rsplit(":", 1)[1]), d["reason"]) for d in dead)
    want = sorted((lines.index(line) + 1, reason) for line, reason in BAD)
    assert got == want
    assert all(d["origin"].startswith(str(mixed)) for d in dead)
    binary = next(d for d in dead if d["reason"] == "invalid_encoding")
    assert binary["original_encoding"] == "base64"


def test_bad_arguments_are_one_line_errors_with_a_non_zero_status(ctrail_subprocess, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    missing = ctrail_subprocess("ingest", "--source", "k8s-audit", str(tmp_path / "nope.log"))
    assert missing.status == 2
    assert missing.err.strip() == f"ctrail: error: no such file: {tmp_path / 'nope.log'}"

    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("store:\n  type: cassandra\n")
    config = ctrail_subprocess("search", "*", "--config", str(bad_config))
    assert config.status == 2
    assert config.err.startswith(f"ctrail: error: invalid config {bad_config}: store")
    assert "Traceback" not in config.err

    query = ctrail_subprocess("search", "user.name:(alice", "--data-dir", str(tmp_path / "d"))
    assert query.status == 2 and query.err.startswith("ctrail: error:")
    assert len(query.err.strip().splitlines()) == 1

    source = ctrail_subprocess("ingest", "--source", "nonsense", "x")
    assert source.status == 2 and "invalid choice" in source.err


def _stored_ids(data_dir: Path, dataset: str = DATASET_K8S_AUDIT) -> list[str]:
    with sqlite3.connect(data_dir / "store.sqlite3") as db:
        return [row[0] for row in db.execute(
            "SELECT id FROM events WHERE dataset = ?", (dataset,))]


@pytest.mark.slow
def test_kill_9_mid_ingest_then_ingest_again_stores_every_event_exactly_once(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write_audit_log(log, 200_000)
    data_dir = tmp_path / "data"
    # Each id hashes the line as intake appended it: with its secrets hashed (Parser.scrub).
    scrub = K8sAuditParser(RedactionConfig().build(data_dir)).scrub
    expected = {event_id(DATASET_K8S_AUDIT, scrub(line)) for line in log.read_bytes().splitlines()}
    exe = Path(sys.executable).with_name("ctrail")
    args = [str(exe), "ingest", "--source", "k8s-audit", "--data-dir", str(data_dir), str(log)]
    victim = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    store = data_dir / "store.sqlite3"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:           # kill once the store holds part of the input
        if victim.poll() is not None:
            pytest.fail(f"ingest finished before it could be killed: {victim.stderr.read()!r}")
        if store.exists() and len(_stored_ids(data_dir)) > 20_000:
            break
        time.sleep(0.2)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    victim.stderr.close()
    partial = len(_stored_ids(data_dir))
    assert 0 < partial < len(expected)

    again = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "200000 accepted, 0 dead-lettered"
    ids = _stored_ids(data_dir)
    assert len(ids) == len(expected) == 200_000
    assert set(ids) == expected
    # Our audit trail holds the first start's rule set once; the restart changed no rule.
    assert len(_stored_ids(data_dir, "containertrail.audit")) == 1


def test_config_files_may_hold_one_section_and_the_environment_overrides_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ctrail.settings import load_settings
    partial = tmp_path / "partial.yaml"
    partial.write_text("enrich:\n  cluster_name: from-file\n")
    settings = load_settings(partial)
    assert settings.enrich.cluster_name == "from-file"
    assert settings.pipeline.batch_events == 1000                 # untouched default
    monkeypatch.setenv("CTRAIL_ENRICH__CLUSTER_NAME", "from-env")
    monkeypatch.setenv("CTRAIL_DATA_DIR", str(tmp_path / "env-dir"))
    settings = load_settings(partial)
    assert settings.enrich.cluster_name == "from-env"
    assert settings.data_dir == tmp_path / "env-dir"
    assert load_settings(partial, tmp_path / "flag-dir").data_dir == tmp_path / "flag-dir"


def test_the_shipped_config_is_valid_and_embedded(tmp_path: Path) -> None:
    from ctrail.settings import load_settings
    settings = load_settings(REPO / "config" / "containertrail.yaml")
    assert settings.bus.type == "local" and settings.store.type == "sqlite"
    assert orjson.dumps(settings.model_dump(mode="json"))
