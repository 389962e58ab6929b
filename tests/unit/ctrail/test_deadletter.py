"""Issue 14: a dead letter never keeps a secret of the record it was built from.

A record that cannot be parsed (not JSON, cut at max_record_bytes, a parser bug) is kept with
its raw bytes; what the redaction policy recognises in text form is hashed first, with the
deployment's key, so a replay of the redacted record stores what a clean parse would have.
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import ClassVar

import orjson

from collector.parsers.cri_log import ContainerLogParser
from collector.parsers.k8s_audit import K8sAuditParser
from collector.redact import PREFIX, Redactor
from ctrail.components import RawRecord
from ctrail.errors import Reason
from ctrail.event import Event, Rejection
from ctrail.runtime.collect import judged_at_intake, parse_record
from ctrail.runtime.deadletter import rejection

KEY = b"deployment-key-for-the-test"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJlLXBsYW50ZWQ"
PLANTED = {
    "bearer": "PLANTEDbearerQ7x1",
    "basic": base64.b64encode(b"admin:PLANTEDbasicQ7x2").decode(),
    "jwt": JWT,
    "url password": "PLANTEDurlQ7x3",
    "password=": "PLANTEDassignQ7x4",
    "--token": "PLANTEDflagQ7x5",
    "json password": "PLANTEDjsonQ7x6",
    "pem": "MIIEPLANTEDpemBodyQ7x7",
}
TEXT = (f'Authorization: Bearer {PLANTED["bearer"]} '
        f'authorization: Basic {PLANTED["basic"]} jwt={JWT} '
        f'DATABASE_URL=postgres://app:{PLANTED["url password"]}@db:5432/app '
        f'password={PLANTED["password="]} run --token {PLANTED["--token"]} '
        f'{{"password": "{PLANTED["json password"]}"}} '
        f'-----BEGIN RSA PRIVATE KEY-----\n{PLANTED["pem"]}\n-----END RSA PRIVATE KEY-----')
NOW = datetime(2026, 11, 20, tzinfo=timezone.utc)


def assert_clean(dead: Rejection) -> None:
    assert dead.original_encoding == "utf-8"
    for what, value in PLANTED.items():
        assert value not in dead.original, f"{what} kept in the dead letter"
        assert value not in dead.detail, f"{what} kept in the detail"
        assert value not in dead.model_dump_json(), f"{what} kept"
    # The deployment's hash stands where the value was: equality and replay still work.
    assert Redactor(KEY).digest(PLANTED["password="]) in dead.original
    assert "run --token " + PREFIX in dead.original
    assert "-----BEGIN RSA PRIVATE KEY-----" in dead.original


def test_a_record_that_is_not_json_is_dead_lettered_without_its_secrets() -> None:
    parser = K8sAuditParser(Redactor(KEY))
    dead = parse_record(parser, RawRecord(TEXT.encode(), "audit.log:3", NOW))
    assert isinstance(dead, Rejection) and dead.reason == Reason.INVALID_JSON.value
    assert_clean(dead)


def test_a_record_cut_at_intake_is_dead_lettered_without_its_secrets() -> None:
    record = RawRecord(('{"kind":"Event","requestObject":' + TEXT[:2000]).encode(),
                       "audit.log:4", NOW, truncated=True)
    for parser in (K8sAuditParser(Redactor(KEY)), ContainerLogParser()):
        dead = judged_at_intake(record, parser)
        assert dead is not None and dead.reason == Reason.RECORD_TOO_LARGE.value
        for what, value in PLANTED.items():
            assert value not in dead.original, f"{what} kept ({parser.dataset})"
        again = parse_record(parser, record)
        assert isinstance(again, Rejection)
        assert not any(value in again.original for value in PLANTED.values())


class BrokenParser:
    """A parser with the deployment's redactor that fails on everything (a parser bug)."""

    dataset: ClassVar[str] = "kubernetes.audit"

    def __init__(self) -> None:
        self.redactor = Redactor(KEY)

    def parse(self, record: RawRecord) -> list[Event]:
        raise ValueError(f"choked on {record.data[:400].decode()}")

    def redact_text(self, text: str) -> str:
        return self.redactor.redact_text(text)

    def scrub(self, data: bytes) -> bytes:
        return data


def test_a_parser_bug_keeps_neither_the_secret_nor_it_in_the_detail() -> None:
    dead = parse_record(BrokenParser(), RawRecord(TEXT.encode(), "hook req-1", NOW))
    assert isinstance(dead, Rejection) and dead.reason == Reason.STAGE_ERROR.value
    assert_clean(dead)


def test_bytes_that_are_not_utf8_keep_their_bytes_and_lose_their_secret() -> None:
    raw = b"\x92\xa3bad\xc1\xff password=" + PLANTED["password="].encode() + b" \x00\xfe"
    dead = rejection(stage="collect", reason=Reason.UNDECODABLE, detail="bad frame",
                     origin="forward 127.0.0.1", raw=raw, dataset=None,
                     redact=Redactor(KEY).redact_text)
    assert dead.original_encoding == "base64"
    kept = base64.b64decode(dead.original)
    assert PLANTED["password="].encode() not in kept
    assert kept.startswith(b"\x92\xa3bad\xc1\xff password=hmac-sha256:")
    assert kept.endswith(b" \x00\xfe")


def test_redacting_twice_changes_nothing() -> None:
    redactor = Redactor(KEY)
    once = redactor.redact_text(TEXT)
    assert once != TEXT
    assert redactor.redact_text(once) == once


AUDIT = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
         "auditID": "5b2f0b8e-1c1e-4c2e-9d6a-3f0c1a2b3c4d", "stage": "ResponseComplete",
         "requestURI": "/api/v1/namespaces/prod/secrets", "verb": "create",
         "user": {"username": "alice"}, "sourceIPs": ["203.0.113.7"],
         "objectRef": {"resource": "secrets", "namespace": "prod", "name": "db",
                       "apiVersion": "v1"},
         "responseStatus": {"metadata": {}, "code": 201},
         "requestObject": {"kind": "Secret", "apiVersion": "v1",
                           "metadata": {"name": "db", "namespace": "prod"},
                           "stringData": {"password": PLANTED["json password"]}},
         "requestReceivedTimestamp": "2026-11-20T10:43:00.000000Z",
         "stageTimestamp": "2026-11-20T10:43:00.050000Z"}


def test_a_replay_of_the_redacted_record_stores_what_a_clean_parse_stores() -> None:
    raw = orjson.dumps(AUDIT)
    dead = parse_record(BrokenParser(), RawRecord(raw, "audit.log:9", NOW))
    assert isinstance(dead, Rejection)
    assert PLANTED["json password"] not in dead.original
    parser = K8sAuditParser(Redactor(KEY))
    [clean] = parser.parse(RawRecord(raw, "audit.log:9", NOW))
    [replayed] = parser.parse(RawRecord(dead.original.encode(), "audit.log:9", NOW))
    assert isinstance(clean, Event) and isinstance(replayed, Event)
    assert orjson.loads(replayed.event.original) == orjson.loads(clean.event.original)
