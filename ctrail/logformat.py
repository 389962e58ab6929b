"""How ctrail's processes write their log lines on stderr: text for people, or ECS JSON
(`--log-format json`, ecs-logging: the formatter Elastic's agents read), with each record's
fields (`extra=`) kept as fields. The intake process writes as its parent does."""

from __future__ import annotations

import logging
from typing import Final

import ecs_logging

TEXT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int, log_format: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(ecs_logging.StdlibFormatter() if log_format == "json"
                         else logging.Formatter(TEXT))
    logging.basicConfig(level=level, handlers=[handler])   # a no-op where one is set (tests)


def current_format() -> str:
    """The format this process logs in (for a child process to log as it does)."""
    handlers = logging.getLogger().handlers
    return "json" if any(isinstance(h.formatter, ecs_logging.StdlibFormatter)
                         for h in handlers) else "text"
