"""Time order (issue 12): every stored time has one fixed-width UTC form, and the timeline sorts
by the instant. Times whose fractions differ in length compared as text put 10:12:06.5 before
10:12:06 ("." sorts before "Z"), and an offset other than Z compares by its local digits."""

from __future__ import annotations

from pathlib import Path

import orjson

USER = "dana@example.com"


def exec_at(received: str, audit_id: str) -> bytes:
    return orjson.dumps({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": audit_id, "stage": "ResponseComplete", "verb": "get",
        "requestURI": f"/api/v1/namespaces/shop/configmaps/{audit_id}",
        "user": {"username": USER, "groups": ["system:authenticated"]},
        "sourceIPs": ["203.0.113.7"], "userAgent": "kubectl/v1.30.2",
        "objectRef": {"resource": "configmaps", "namespace": "shop", "name": audit_id,
                      "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": received, "stageTimestamp": received})


def test_the_timeline_orders_by_instant_and_every_time_has_one_form(  # type: ignore[no-untyped-def]
        ctrail, tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes(b"\n".join([
        exec_at("2026-11-20T10:12:06.5Z", "half-past"),
        exec_at("2026-11-20T10:12:06Z", "on-the-second"),
        exec_at("2026-11-20T12:12:05.9+02:00", "offset"),      # 10:12:05.9Z
    ]) + b"\n")
    assert ctrail("ingest", "--source", "k8s-audit", str(log)).status == 0
    timeline = ctrail("timeline", "--user", USER, "--format", "json")
    assert timeline.status == 0, timeline.err
    events = timeline.json_lines()[1:]
    assert [e["kubernetes"]["audit"]["auditID"] for e in events] == \
        ["offset", "on-the-second", "half-past"]
    assert [e["@timestamp"] for e in events] == [
        "2026-11-20T10:12:05.900000Z", "2026-11-20T10:12:06.000000Z",
        "2026-11-20T10:12:06.500000Z"]
    found = ctrail("search", f'user.name:"{USER}"', "--format", "json").json_lines()
    assert {d["@timestamp"] for d in found} == {e["@timestamp"] for e in events}
    assert all(len(d["event"]["ingested"]) == len("2026-11-20T10:12:06.000000Z") for d in found)
