"""The collect step keeps a record its parser chokes on, instead of stalling its source."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import ClassVar

import pytest

from ctrail.components import RawRecord
from ctrail.event import Event
from ctrail.runtime.collect import parse_record


class BrokenParser:
    dataset: ClassVar[str] = "test.broken"

    def parse(self, record: RawRecord) -> list[Event]:
        raise KeyError("a bug, not bad input")

    def redact_text(self, text: str) -> str:
        return text

    def scrub(self, data: bytes) -> bytes:
        return data


def test_a_parser_bug_dead_letters_the_record_with_its_reason(
        caplog: pytest.LogCaptureFixture) -> None:
    record = RawRecord(b'{"a": 1}', "audit.log:7", datetime.now(timezone.utc))
    dead = parse_record(BrokenParser(), record)
    assert not isinstance(dead, list)
    assert (dead.reason, dead.origin, dead.original) == ("stage_error", "audit.log:7", '{"a": 1}')
    assert "KeyError" in dead.detail
    assert "Parser failed" in caplog.text
