"""The search tree (ctrail.query) as an SQL condition over one kind's table.

The hot fields (HOT) are columns of their kind's table, with an index each. Other field values
live in the JSON document: `json_each` walks a value or a list, so `tags:x` matches a list
holding x as Elasticsearch does. The document, `event.original` and the audit record (for
`kubernetes.audit.*` paths) are parts of the row's compressed `record`, read with the store's
SQL functions ct_doc, ct_original and ct_audit (schema.sql, records.py). Free text goes to
FTS5.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from typing import Any, Final

import re2

from ctrail import query as q
from ctrail.errors import QueryError

# Fields our model keeps as one scalar, per kind: the ECS field and its column (schema.sql).
HOT: Final[dict[str, dict[str, str]]] = {
    "events": {
        "event.action": "action", "user.name": "user_name", "kubernetes.namespace": "namespace",
        "source.ip": "source_ip", "container.id": "container_id",
        "kubernetes.pod.name": "pod_name", "orchestrator.resource.type": "resource_type",
        "event.dataset": "dataset", "event.outcome": "outcome",
    },
    "alerts": {
        "rule.id": "rule_id", "alert.severity": "severity", "user.name": "user_name",
        "kubernetes.namespace": "namespace", "container.id": "container_id",
        "kubernetes.pod.name": "pod_name",
    },
    "dead_letters": {"reason": "reason", "stage": "stage"},
    "dead_letter_replays": {"dead_letter_id": "dead_letter_id"},
}
# event.original, where the row keeps it (an alert may refer to its event's).
ORIGINAL: Final = {
    "events": "ct_original(events.record)",
    "alerts": "coalesce(ct_original(alerts.record), (SELECT ct_original(e.record) FROM events e "
              "WHERE e.id = alerts.original_of))",
}
AUDIT: Final = "kubernetes.audit"
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Condition:
    """SQL text with its parameters, built up from the tree."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.params: list[Any] = []
        self._hot = HOT.get(table, {})

    def sql(self, node: q.Query) -> str:
        match node:
            case q.MatchAll():
                return "1"
            case q.And(children):
                return "(" + " AND ".join(self.sql(c) for c in children) + ")"
            case q.Or(children):
                return "(" + " OR ".join(self.sql(c) for c in children) + ")"
            case q.Not(child):
                # A missing field makes a test NULL; NOT must still keep that document.
                return f"({self.sql(child)}) IS NOT 1"
            case q.Equals(field, value):
                return self._values(field, "{v} IN (" + ", ".join(
                    self._param(v) for v in _candidates(value)) + ")")
            case q.Wildcard(field, pattern):
                return self._values(field, "{v} GLOB " + self._param(_glob(pattern)))
            case q.Regex(field, pattern):
                _check_regex(pattern)
                return self._values(field, "{v} REGEXP " + self._param(pattern))
            case q.Exists(field):
                if field == q.TIMESTAMP:
                    return "1"
                column = self._column(field)
                if column is not None:
                    return f"({column} IS NOT NULL)"
                # JSON null and an empty list count as missing, as in Elasticsearch.
                source, path = self._json(field)
                return (f"(json_type({source}, {path}) NOT IN ('null', 'array') "
                        f"OR json_array_length({source}, {path}) > 0)")
            case q.Range():
                return self._range(node)
            case q.Text():
                # `+seq`: not a rowid lookup per match (then a sort of them all) but a probe
                # of the matches' list, so `ORDER BY ts DESC LIMIT n` walks the ts index and
                # stops at the n-th newest match; a hot column's index still leads if given.
                return (f"+seq IN (SELECT rowid FROM {self.table}_text "
                        f"WHERE {self.table}_text MATCH {self._param(fts_match(node))})")
        raise QueryError(f"unsupported query element: {node}")

    def _values(self, field: str, test: str) -> str:
        """`test` (over `{v}`) holds for the field's value or any element of its list."""
        if field == q.TIMESTAMP:
            raise QueryError("@timestamp takes a time or a range, e.g. @timestamp:>=now-1h")
        column = self._column(field)
        if column is not None:                # a scalar column
            return test.format(v=column)
        source, path = self._json(field)
        return (f"EXISTS (SELECT 1 FROM json_each({source}, {path}) "
                f"WHERE type != 'object' AND {test.format(v='value')})")

    def _column(self, field: str) -> str | None:
        """The column (or expression) that holds a scalar field of this kind, if any."""
        if field in self._hot:
            return self._hot[field]
        if field == "event.original":
            return ORIGINAL.get(self.table)
        return None

    def _json(self, field: str) -> tuple[str, str]:
        """The JSON text that holds a field, and the field's path in it (an SQL literal)."""
        if self.table in ORIGINAL and (field == AUDIT or field.startswith(AUDIT + ".")):
            rest = field[len(AUDIT) + 1:]
            # '' in `audit`: the audit record is the raw record parsed (schema.sql).
            source = (f"(CASE WHEN ct_audit(record) = '' THEN {ORIGINAL[self.table]} "
                      "ELSE ct_audit(record) END)")
            return source, _literal(json_path(rest) if rest else "$")
        return "ct_doc(record)", _literal(json_path(field))

    def _range(self, node: q.Range) -> str:
        if node.field == q.TIMESTAMP:
            parts = []
            if isinstance(node.low, datetime):
                parts.append(f"ts {'>=' if node.include_low else '>'} {self._param(micros(node.low))}")
            if isinstance(node.high, datetime):
                parts.append(f"ts {'<=' if node.include_high else '<'} {self._param(micros(node.high))}")
            return "(" + " AND ".join(parts) + ")" if parts else "1"
        tests = []
        for bound, op in ((node.low, ">=" if node.include_low else ">"),
                          (node.high, "<=" if node.include_high else "<")):
            if bound is not None:
                number = _number(str(bound))
                # Numbers compare as numbers, anything else as text (keyword order).
                if number is None:
                    tests.append(f"typeof({{v}}) = 'text' AND {{v}} {op} {self._param(bound)}")
                else:
                    tests.append(f"typeof({{v}}) IN ('integer', 'real') AND {{v}} {op} "
                                 f"{self._param(number)}")
        return self._values(node.field, " AND ".join(tests) or "1")

    def _param(self, value: Any) -> str:
        self.params.append(value)
        return "?"


def fts_match(node: q.Text) -> str:
    """A word, phrase or prefix as an FTS5 query string."""
    return '"' + node.text.replace('"', '""') + '"' + ("*" if node.prefix else "")


def json_path(field: str) -> str:
    """user.name → $.user.name; keys that are not plain identifiers are quoted."""
    return "$" + "".join(f".{part}" if _PLAIN_KEY.match(part) else f'."{part}"'
                         for part in field.split("."))


def _literal(text: str) -> str:
    """An SQL string literal (for JSON paths, which must be literal to match an index)."""
    return "'" + text.replace("'", "''") + "'"


def micros(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def _candidates(value: str) -> list[Any]:
    """The text, and the number or boolean it spells: `code:403` matches 403 stored as a number."""
    found: list[Any] = [value]
    number = _number(value)
    if number is not None:
        found.append(number)
    if value in ("true", "false"):
        found.append(1 if value == "true" else 0)
    return found


def _number(text: str) -> int | float | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def _glob(pattern: str) -> str:
    """Our wildcard pattern as a GLOB: only `[` is special to GLOB and not to us."""
    return pattern.replace("[", "[[]")


# Regular expressions run on RE2 (google-re2), whose time is linear in the value:
# a pattern like /(a+)+b/ that backtracks for ever in Python's `re` cannot hang a search. RE2
# has no backreferences or look-arounds; Lucene's regexps have neither.
RE2_OPTIONS: Final = re2.Options()
RE2_OPTIONS.log_errors = False          # a bad pattern is our QueryError, not a line on stderr


@lru_cache(maxsize=128)
def compiled(pattern: str) -> Any:
    return re2.compile(pattern, RE2_OPTIONS)


def _check_regex(pattern: str) -> None:
    try:
        compiled(pattern)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(
            exc.args[0], bytes) else str(exc)
        raise QueryError(f"not a regular expression: /{pattern}/ ({reason})") from None


def regexp(pattern: str, value: Any) -> bool:
    """SQLite's REGEXP: a Lucene regexp matches the whole value."""
    return isinstance(value, str) and compiled(pattern).fullmatch(value) is not None
