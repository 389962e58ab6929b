"""`ctrail hunt` on the embedded store: the real audit samples ingested with `ctrail ingest`, then
a rule run over them after the fact. Expected events are picked from the raw files with plain
Python (objectRef.resource pods and subresource exec or attach), independently of the matcher.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "samples" / "k8s-audit").glob("*.json"))
EXEC_RULE = REPO / "detectors" / "rules" / "ct-k8s-004-exec-into-pod.yml"
CORRELATION_RULE = REPO / "detectors" / "rules" / "ct-cor-003-forbidden-burst.yml"


def exec_or_attach_audit_ids() -> list[str]:
    found = []
    for path in SAMPLES:
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            doc: Any = orjson.loads(line)
            ref = doc.get("objectRef") if isinstance(doc, dict) else None
            if isinstance(ref, dict) and ref.get("resource") == "pods" \
                    and ref.get("subresource") in ("exec", "attach"):
                found.append(doc["auditID"])
    return found


def test_hunt_finds_exactly_the_exec_and_attach_events(ctrail) -> None:  # type: ignore[no-untyped-def]
    ingested = ctrail("ingest", "--source", "k8s-audit", *map(str, SAMPLES))
    assert ingested.status == 0, ingested.err
    expected = exec_or_attach_audit_ids()
    assert len(expected) == 2

    found = ctrail("hunt", str(EXEC_RULE), "--format", "json")
    assert found.status == 0, found.err
    docs = found.json_lines()
    assert sorted(doc["kubernetes"]["audit"]["auditID"] for doc in docs) == sorted(expected)
    assert {doc["orchestrator"]["resource"]["type"] for doc in docs} == {"pods/exec", "pods/attach"}
    stamps = [doc["@timestamp"] for doc in docs]
    assert stamps == sorted(stamps)

    table = ctrail("hunt", str(EXEC_RULE))
    assert table.status == 0 and "pods/exec" in table.out and "pods/attach" in table.out

    newest = ctrail("hunt", str(EXEC_RULE), "--format", "json", "--limit", "1").json_lines()
    assert [d["event"]["id"] for d in newest] == [docs[-1]["event"]["id"]]

    before = ctrail("hunt", str(EXEC_RULE), "--format", "json", "--to", stamps[-1]).json_lines()
    assert [d["event"]["id"] for d in before] == [docs[0]["event"]["id"]]


def test_a_correlation_rule_hunted_gives_the_alerts_ingest_raised(  # type: ignore[no-untyped-def]
        ctrail, tmp_path: Path) -> None:
    from tests.hunt_replay import forbidden

    log = tmp_path / "audit.log"
    log.write_bytes(b"".join(orjson.dumps(forbidden(i * 0.2, "system:serviceaccount:a:probe"))
                             + b"\n" for i in range(12)))
    assert ctrail("ingest", "--source", "k8s-audit", str(log)).status == 0
    raised = ctrail("alerts", "--rule", "CT-COR-003", "--format", "json").json_lines()
    hunted = ctrail("hunt", str(CORRELATION_RULE), "--format", "json")
    assert hunted.status == 0, hunted.err
    assert len(raised) == 1 and hunted.json_lines() == raised
