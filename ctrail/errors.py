"""The error tree: an error's type says what the caller does next.

CtrailError
├── ConfigError        startup only: print the config path and stop (exit 2)
├── UsageError         a bad argument or a missing input file on the command line (exit 2)
├── QueryError         a search query that does not parse (exit 2)
├── InvalidInput       this record can never succeed: dead-letter it with a reason code
└── Retryable          the world is briefly unhappy: back off, keep the input uncommitted
    └── Unavailable    a dependency is down (Kafka, Elasticsearch, Slack); readiness fails
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Bounded reason codes for dead letters (Vector's `error_type` discipline)."""

    INVALID_JSON = "invalid_json"
    INVALID_ENCODING = "invalid_encoding"
    SCHEMA_MISMATCH = "schema_mismatch"
    INVALID_TIMESTAMP = "invalid_timestamp"
    RECORD_TOO_LARGE = "record_too_large"
    UNKNOWN_DATASET = "unknown_dataset"
    UNDECODABLE = "undecodable"
    REJECTED_BY_STORE = "rejected_by_store"
    STAGE_ERROR = "stage_error"


class CtrailError(Exception):
    """Base of every error ContainerTrail raises on purpose."""


class ConfigError(CtrailError):
    """The configuration is invalid; raised at startup only."""


class UsageError(CtrailError):
    """A command-line argument or input path is wrong."""


class QueryError(CtrailError):
    """A search query could not be parsed or translated."""


class InvalidInput(CtrailError):
    """A record that can never be processed; it goes to the dead-letter topic."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class Retryable(CtrailError):
    """A transient failure: the caller backs off and leaves its input uncommitted."""


class Unavailable(Retryable):
    """A dependency is down."""
