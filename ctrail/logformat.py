"""How ctrail's processes write their log lines on stderr: text for people, or ECS JSON
(`--log-format json`, ecs-logging: the formatter Elastic's agents read), with each record's
fields (`extra=`) kept as fields. The intake process writes as its parent does."""

from __future__ import annotations

import logging
from typing import Final

import ecs_logging

TEXT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# What every LogRecord has; anything else on a record came from `extra=`: its context.
STANDARD: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


class ContextFormatter(logging.Formatter):
    """The text line, then the record's context as key=value (the listener's address and TLS,
    the receiver and error of a failed delivery, the worker's role): a line says where it is
    from without a debugger."""

    def __init__(self) -> None:
        super().__init__(TEXT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = [f"{key}={value}" for key, value in vars(record).items()
                   if key not in STANDARD and not key.startswith("_")]
        if not context:
            return line
        first, newline, rest = line.partition("\n")     # after the message, before a traceback
        return f"{first} {' '.join(context)}{newline}{rest}"


def configure_logging(level: int, log_format: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(ecs_logging.StdlibFormatter() if log_format == "json"
                         else ContextFormatter())
    logging.basicConfig(level=level, handlers=[handler])   # a no-op where one is set (tests)


def current_format() -> str:
    """The format this process logs in (for a child process to log as it does)."""
    handlers = logging.getLogger().handlers
    return "json" if any(isinstance(h.formatter, ecs_logging.StdlibFormatter)
                         for h in handlers) else "text"
