"""Every log line carries its context (issue 12): text lines end with the record's fields as
key=value, JSON lines (ECS, ecs-logging) carry them as fields."""

from __future__ import annotations

import logging

import ecs_logging
import orjson

from ctrail.logformat import ContextFormatter


def record(message: str, **extra: object) -> logging.LogRecord:
    made = logging.getLogger("ctrail.runtime.http.listener").makeRecord(
        "ctrail.runtime.http.listener", logging.INFO, __file__, 1, message, None, None,
        extra=extra)
    return made


def test_a_text_line_ends_with_its_context() -> None:
    line = ContextFormatter().format(record("Listening for webhooks.", source="audit",
                                            host="0.0.0.0", port=8443, tls=True))
    assert line.endswith("INFO ctrail.runtime.http.listener: Listening for webhooks. "
                         "source=audit host=0.0.0.0 port=8443 tls=True")
    plain = ContextFormatter().format(record("Stopping."))
    assert plain.endswith(": Stopping.")


def test_a_json_line_is_ecs_with_its_context_as_fields() -> None:
    line = orjson.loads(ecs_logging.StdlibFormatter().format(record(
        "Delivery failed; it will be retried.", receiver="oncall", status=503,
        detail="upstream unavailable")))
    assert line["message"] == "Delivery failed; it will be retried."
    assert (line["receiver"], line["status"], line["detail"]) == ("oncall", 503,
                                                                  "upstream unavailable")
    assert line["log.level"] == "info" and "ecs.version" in line
