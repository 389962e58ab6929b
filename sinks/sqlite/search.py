"""The search tree (ctrail.query) as an SQL condition over one kind's table.

Field values live in the JSON document: `json_extract` reads a scalar, `json_each` walks a list,
so `tags:x` matches a list holding x as Elasticsearch does. The hot fields of schema.sql are
written exactly as their expression indexes, so SQLite uses the index; free text goes to FTS5.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from typing import Any, Final

from ctrail import query as q
from ctrail.errors import QueryError

# Fields our model keeps as one scalar, with an expression index in schema.sql.
INDEXED: Final = frozenset({
    "event.action", "user.name", "kubernetes.namespace", "source.ip", "container.id",
    "kubernetes.pod.name", "orchestrator.resource.type", "rule.id", "reason",
    "dead_letter_id",
})
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Condition:
    """SQL text with its parameters, built up from the tree."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.params: list[Any] = []

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
                # JSON null and an empty list count as missing, as in Elasticsearch.
                path = _literal(json_path(field))
                return (f"(json_type(doc, {path}) NOT IN ('null', 'array') "
                        f"OR json_array_length(doc, {path}) > 0)")
            case q.Range():
                return self._range(node)
            case q.Text(text, prefix):
                match = '"' + text.replace('"', '""') + '"' + ("*" if prefix else "")
                return (f"seq IN (SELECT rowid FROM {self.table}_text "
                        f"WHERE {self.table}_text MATCH {self._param(match)})")
        raise QueryError(f"unsupported query element: {node}")

    def _values(self, field: str, test: str) -> str:
        """`test` (over `{v}`) holds for the field's value or any element of its list."""
        if field == q.TIMESTAMP:
            raise QueryError("@timestamp takes a time or a range, e.g. @timestamp:>=now-1h")
        path = _literal(json_path(field))
        if field in INDEXED:                  # a scalar: the indexed expression, verbatim
            return test.format(v=f"json_extract(doc, {path})")
        return (f"EXISTS (SELECT 1 FROM json_each(doc, {path}) "
                f"WHERE type != 'object' AND {test.format(v='value')})")

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


@lru_cache(maxsize=128)
def compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _check_regex(pattern: str) -> None:
    try:
        compiled(pattern)
    except re.error as exc:
        raise QueryError(f"not a regular expression: /{pattern}/ ({exc})") from None


def regexp(pattern: str, value: Any) -> bool:
    """SQLite's REGEXP: a Lucene regexp matches the whole value."""
    return isinstance(value, str) and compiled(pattern).fullmatch(value) is not None
