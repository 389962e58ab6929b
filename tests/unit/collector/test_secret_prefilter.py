"""The audit intake's byte pre-filter (k8s_audit.may_hold_secret) is a superset test: whenever
the redactor would change a record, it says True. It is compared here with its plain
definition (the regexes over the whole record) on real audit logs and on crafted records."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import orjson
import pytest

from collector.parsers.k8s_audit import BODY_HINTS, may_hold_secret
from collector.redact import HINT, SELF_EVIDENT

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
from corpus import write_audit_log  # noqa: E402  (shared with bench/)

SELF_EVIDENT_BYTES = re.compile(SELF_EVIDENT.pattern.encode())
HINT_BYTES = re.compile(HINT.pattern.encode())
ANY_URI_QUERY = re.compile(rb'"requestURI"\s*:\s*"[^"?]*\?([^"]*)"')


def by_definition(data: bytes) -> bool:
    if any(hint in data for hint in BODY_HINTS) or SELF_EVIDENT_BYTES.search(data):
        return True
    return any(HINT_BYTES.search(query) for query in ANY_URI_QUERY.findall(data))


def audit_lines(real_data: Path, tmp_path: Path) -> list[bytes]:
    """The audit events of the real samples, and bench/corpus.py's rebuild of the benign Helm
    cluster's log (with its Falco attack traces)."""
    corpus = tmp_path / "audit.log"
    write_audit_log(corpus, 20_000)
    lines = corpus.read_bytes().splitlines()
    for path in sorted(real_data.rglob("*")):
        if path.is_file() and path.suffix in (".log", ".json", ".jsonl"):
            lines.extend(line for line in path.read_bytes().splitlines()
                         if b'"requestURI"' in line)
    return lines


def test_agrees_with_its_definition_on_real_audit_logs(real_data: Path, tmp_path: Path) -> None:
    lines = audit_lines(real_data, tmp_path)
    assert len(lines) > 20_000
    assert [may_hold_secret(line) for line in lines] == [by_definition(line) for line in lines]
    assert any(may_hold_secret(line) for line in lines)
    assert not all(may_hold_secret(line) for line in lines)


def event(uri: str, agent: str = "kubectl/v1.30.0") -> dict[str, object]:
    return {"kind": "Event", "level": "Metadata", "verb": "get", "requestURI": uri,
            "userAgent": agent, "annotations": {"authorization.k8s.io/decision": "allow"}}


@pytest.mark.parametrize(("record", "expected"), [
    (orjson.dumps(event("/api/v1/pods?limit=500")), False),
    (orjson.dumps(event("/api/v1/pods?access_token=abc")), True),
    (orjson.dumps(event("/api/v1/pods", agent="curl Bearer abc")), True),
    (orjson.dumps(event("/api/v1/pods", agent="eyJhbGciOi.x.y")), True),
    (orjson.dumps(event("/proxy/http://user:pw@host/")), True),
    # An EventList: the credential is in the second item's URI only.
    (orjson.dumps({"kind": "EventList", "items": [event("/api?watch=1"), event("/api?token=x")]}),
     True),
    (orjson.dumps({"kind": "EventList", "items": [event("/api?watch=1"), event("/api?limit=1")]}),
     False),
    # Spacing kube-apiserver never writes, but a hand-made log may.
    (b'{"kind": "Event", "requestURI" : "/api/v1/pods?password=x"}', True),
    (b'{"kind":"Event","requestURI":"/api/v1/secrets","requestObject":{}}', True),
])
def test_crafted_records(record: bytes, expected: bool) -> None:
    assert may_hold_secret(record) is expected
    assert by_definition(record) is expected
