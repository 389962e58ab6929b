"""The real audit samples through `ctrail ingest`, then found again with `ctrail search`.

Expected counts are computed here from the raw files with plain Python, independently of the
parser and the store.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import orjson
import pytest

from collector.parsers.k8s_audit import unwrap_envelope


def audit_files(real_data: Path) -> list[Path]:
    return [*sorted((real_data / "falco-k8saudit-traces/trace_files").glob("*.json")),
            *sorted((real_data / "elastic-k8s-audit-pipeline-tests").glob("*.log")),
            real_data / "panther-k8s-rule-tests/raw_audit_events_from_tests.jsonl"]


def distinct_audit_events(files: list[Path]) -> list[dict[str, Any]]:
    """Each distinct valid line once (the store keeps one copy of identical records)."""
    seen: set[bytes] = set()
    events = []
    for path in files:
        for line in path.read_bytes().splitlines():
            if not line.strip() or line in seen:
                continue
            seen.add(line)
            doc = orjson.loads(line)
            inner = unwrap_envelope(doc)
            if inner.get("kind") == "Event":
                events.append(inner)
    return events


def count(events: list[dict[str, Any]], test: Callable[[dict[str, Any]], bool]) -> int:
    return sum(1 for e in events if test(e))


@pytest.fixture
def ingested(ctrail, real_data: Path):  # type: ignore[no-untyped-def]
    files = audit_files(real_data)
    result = ctrail("ingest", "--source", "k8s-audit", *map(str, files))
    assert result.status == 0, result.err
    return distinct_audit_events(files), result


def test_ingest_reports_every_record_as_accepted_or_dead_lettered(ingested, real_data: Path) -> None:  # type: ignore[no-untyped-def]
    _events, result = ingested
    lines = sum(1 for p in audit_files(real_data) for l in p.read_bytes().splitlines() if l.strip())
    accepted, dead = (int(n) for n in result.out.replace(" dead-lettered", "").split(" accepted, "))
    assert (accepted, dead) == (lines - 1, 1)            # fal_01_003.json is {"kind": 0}


def test_no_event_is_lost(ctrail, ingested) -> None:  # type: ignore[no-untyped-def]
    events, _ = ingested
    found = ctrail("search", "*", "--limit", "100000", "--format", "json").json_lines()
    # Our own audit records are left out unless asked for: the first start's rules.
    ours = ctrail("search", "event.dataset:containertrail.audit", "--format", "json").json_lines()
    assert [doc["event"]["action"] for doc in ours] == ["rules-change"]
    assert len(found) == len(events)
    originals = {doc["event"]["original"] for doc in found}
    assert len(originals) == len(events)


@pytest.mark.parametrize(("query", "expected"), [
    ("user.name:minikube-user", lambda e: (e.get("user") or {}).get("username") == "minikube-user"),
    ('user.name:"system:anonymous"',
     lambda e: (e.get("user") or {}).get("username") == "system:anonymous"),
    ("event.action:delete", lambda e: e.get("verb") == "delete"),
    ("kubernetes.audit.objectRef.resource:secrets",
     lambda e: (e.get("objectRef") or {}).get("resource") == "secrets"),
    ("kubernetes.namespace:kube-system",
     lambda e: (e.get("objectRef") or {}).get("namespace") == "kube-system"),
    ("source.ip:192.168.99.1", lambda e: (e.get("sourceIPs") or [None])[0] == "192.168.99.1"),
    ("kubernetes.audit.objectRef.resource:pods AND event.action:create",
     lambda e: (e.get("objectRef") or {}).get("resource") == "pods" and e.get("verb") == "create"),
])
def test_search_finds_events_by_user_verb_resource_namespace_and_ip(
        ctrail, ingested, query: str, expected: Callable[[dict[str, Any]], bool]) -> None:  # type: ignore[no-untyped-def]
    events, _ = ingested
    want = count(events, expected)
    assert want > 0
    found = ctrail("search", query, "--limit", "100000", "--format", "json").json_lines()
    assert len(found) == want


def test_search_by_time_range(ctrail, ingested) -> None:  # type: ignore[no-untyped-def]
    events, _ = ingested

    def received(e: dict[str, Any]) -> datetime | None:
        ts = e.get("requestReceivedTimestamp")
        if not ts:
            return None
        parsed = datetime.fromisoformat(ts)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)

    start, end = datetime(2018, 1, 1, tzinfo=timezone.utc), datetime(2019, 1, 1, tzinfo=timezone.utc)
    want = count(events, lambda e: (t := received(e)) is not None and start <= t < end)
    assert want > 0
    found = ctrail("search", "*", "--from", "2018-01-01T00:00:00Z", "--to", "2019-01-01T00:00:00Z",
                   "--limit", "100000", "--format", "json").json_lines()
    assert len(found) == want
    assert all("2018" <= doc["@timestamp"] < "2019" for doc in found)


def test_the_table_output_names_the_events(ctrail, ingested) -> None:  # type: ignore[no-untyped-def]
    table = ctrail("search", "user.name:minikube-user AND event.action:delete")
    assert table.status == 0
    assert "minikube-user" in table.out and "delete" in table.out


def test_exec_into_a_pod_raises_ct_k8s_004(ctrail, ingested) -> None:  # type: ignore[no-untyped-def]
    events, _ = ingested
    # One alert per request: its auditID, or the event itself when it has none. A request the
    # API server refused did not happen (Panther's two denied execs, 403): no alert.
    execs = {e.get("auditID") or id(e) for e in events
             if (e.get("objectRef") or {}).get("resource") == "pods"
             and (e.get("objectRef") or {}).get("subresource") in ("exec", "attach")
             and ((e.get("responseStatus") or {}).get("code") or 0) < 400}
    assert execs
    alerts = ctrail("alerts", "--rule", "CT-K8S-004", "--format", "json").json_lines()
    assert len(alerts) == len(execs)                      # once per request (auditID)
    assert all(a["rule"]["id"] == "CT-K8S-004" and a["event"]["kind"] == "alert" for a in alerts)
    assert ctrail("alerts", "--rule", "CT-NONE-000", "--format", "json").json_lines() == []


def test_the_dead_letter_names_its_file_line_and_reason(ctrail, ingested) -> None:  # type: ignore[no-untyped-def]
    (dead,) = ctrail("dlq", "list", "--format", "json").json_lines()
    assert dead["reason"] == "schema_mismatch"
    assert dead["origin"].endswith("fal_01_003.json:1")
    assert dead["original"] == '{"kind": 0}'


def test_ingesting_the_same_files_again_stores_nothing_twice(ctrail, ingested, real_data: Path) -> None:  # type: ignore[no-untyped-def]
    events, _ = ingested
    again = ctrail("ingest", "--source", "k8s-audit", *map(str, audit_files(real_data)))
    assert again.status == 0
    found = ctrail("search", "*", "--limit", "100000", "--format", "json").json_lines()
    assert len(found) == len(events)
    # Our audit trail's record of the first start's rule set (the second start, with the same
    # rules, records none), apart from the searches.
    own = ctrail("search", "event.dataset:containertrail.audit AND NOT event.action:search",
                 "--format", "json").json_lines()
    assert [d["event"]["action"] for d in own] == ["rules-change"]
    assert len(ctrail("dlq", "list", "--format", "json").json_lines()) == 1


def test_what_ingest_writes_is_readable_by_its_owner_only(ctrail_subprocess, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                         real_data: Path) -> None:
    """The data directory holds audit data and the redaction key: 0700 directories, 0600 files,
    whatever the user's umask."""
    data_dir = tmp_path / "data"
    trace = real_data / "falco-k8saudit-traces/trace_files/create_secret.json"
    result = ctrail_subprocess("ingest", "--source", "k8s-audit", "--data-dir", str(data_dir),
                               str(trace))
    assert result.status == 0, result.err
    modes = {path: path.stat().st_mode & 0o777 for path in [data_dir, *data_dir.rglob("*")]}
    assert len(modes) > 5
    assert {path: mode for path, mode in modes.items()
            if mode != (0o700 if path.is_dir() else 0o600)} == {}
