"""The search tree (ctrail.query) as the Elasticsearch query DSL, meaning what sinks/sqlite means.

The embedded store decides by each stored value's JSON type; Elasticsearch decides by the field's
mapping. So translation takes the mapped types (from the field capabilities API) and picks, per
field, the query that gives the embedded store's answer: `code:403` is a term on a long, a range
with numeric bounds matches only numbers and one with text bounds only strings, a value that
cannot be of the field's type matches nothing rather than failing. Inside a `flattened` map
(labels, annotations, request and response objects) every leaf is a keyword.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Final, Iterator, Mapping

from ctrail import query as q
from ctrail.errors import QueryError
from sinks.elasticsearch.documents import (
    ALERTS_DATASET,
    DEAD_LETTERS_DATASET,
    PREFIX,
    REPLAYS_DATASET,
    stream,
)

TEXT_FIELD: Final = "containertrail.text"     # every string and number, copied at index time
MATCH_NONE: Final[dict[str, Any]] = {"match_none": {}}
DATE_FORMAT: Final = "strict_date_optional_time_nanos"
PREFIX_EXPANSIONS: Final = 1024               # terms a phrase's last word may expand to
NUMERIC: Final = frozenset({"long", "integer", "short", "byte", "double", "float", "half_float",
                            "scaled_float", "unsigned_long"})
KEYWORD: Final = frozenset({"keyword", "constant_keyword", "wildcard", "flattened"})
DATE: Final = frozenset({"date", "date_nanos"})
_WORD = re.compile(r"^\w+$")

FieldTypes = Mapping[str, frozenset[str]]     # field path -> its mapped types (field caps)


def index_of(kind: str, namespace: str) -> str:
    """The streams holding `kind`: event streams are every stream but the alerts, dlq and
    dlq_replays ones."""
    alerts, dead = stream(ALERTS_DATASET, namespace), stream(DEAD_LETTERS_DATASET, namespace)
    replays = stream(REPLAYS_DATASET, namespace)
    if kind == "events":
        # Searches ignore an exclusion naming a data stream exactly (8.19); a pattern works.
        return f"{PREFIX}.*-{namespace},-{alerts}*,-{dead}*,-{replays}*"
    if kind == "alerts":
        return alerts
    if kind == "dead_letters":
        return dead
    if kind == "dead_letter_replays":
        return replays
    raise ValueError(f"unknown kind {kind!r}")


def lucene_dsl(query: str, time_from: datetime | None = None,
               time_to: datetime | None = None) -> dict[str, Any]:
    """A raw Lucene query (e.g. one pySigma's Elasticsearch backend wrote) as a query_string
    query, within [time_from, time_to). Lenient: a value that cannot be of its field's type
    (`responseStatus.code:ALLOW` on a long) matches nothing instead of failing the search."""
    string = {"query_string": {"query": query, "lenient": True, "allow_leading_wildcard": True}}
    return within(string, time_from, time_to)


def fields_of(node: q.Query) -> set[str]:
    """The fields whose mapped types translation needs, with their parents (a flattened root)."""
    found: set[str] = set()
    for field in _value_fields(node):
        parts = field.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return found


def _value_fields(node: q.Query) -> Iterator[str]:
    match node:
        case q.And(children) | q.Or(children):
            for child in children:
                yield from _value_fields(child)
        case q.Not(child):
            yield from _value_fields(child)
        case q.Equals(field) | q.Wildcard(field) | q.Regex(field) | q.Range(field):
            if field != q.TIMESTAMP:
                yield field


def to_dsl(node: q.Query, types: FieldTypes, time_from: datetime | None = None,
           time_to: datetime | None = None) -> dict[str, Any]:
    """The query for `node`, within [time_from, time_to)."""
    return within(Translator(types).dsl(node), time_from, time_to)


def within(query: dict[str, Any], time_from: datetime | None,
           time_to: datetime | None) -> dict[str, Any]:
    """`query` restricted to @timestamp in [time_from, time_to) (either end may be open)."""
    if time_from is None and time_to is None:
        return query
    bounds: dict[str, Any] = {"format": DATE_FORMAT}
    if time_from is not None:
        bounds["gte"] = _instant(time_from)
    if time_to is not None:
        bounds["lt"] = _instant(time_to)
    return {"bool": {"filter": [query, {"range": {q.TIMESTAMP: bounds}}]}}


class Translator:
    def __init__(self, types: FieldTypes) -> None:
        self.types = types

    def dsl(self, node: q.Query) -> dict[str, Any]:
        match node:
            case q.MatchAll():
                return {"match_all": {}}
            case q.And(children):
                return {"bool": {"filter": [self.dsl(c) for c in children]}}
            case q.Or(children):
                return {"bool": {"should": [self.dsl(c) for c in children],
                                 "minimum_should_match": 1}}
            case q.Not(child):
                # must_not keeps documents without the field, as the embedded store does.
                return {"bool": {"must_not": [self.dsl(child)]}}
            case q.Equals(field, value):
                return self._equals(field, value)
            case q.Wildcard(field, pattern):
                self._text_only(field, "a wildcard")
                escaped = pattern.replace("\\", "\\\\")
                return self._if_mapped(field, {"wildcard": {field: {"value": escaped}}})
            case q.Regex(field, pattern):
                _check_regex(pattern)
                self._text_only(field, "a regular expression")
                # NONE: `@ & ~ < > #` are literal characters, as in the embedded store.
                return self._if_mapped(field, {"regexp": {field: {"value": pattern,
                                                                  "flags": "NONE"}}})
            case q.Exists(field):
                return {"match_all": {}} if field == q.TIMESTAMP else {"exists": {"field": field}}
            case q.Range():
                return self._range(node)
            case q.Text(text, prefix):
                return _text(text, prefix)
        raise QueryError(f"unsupported query element: {node}")

    def category(self, field: str) -> str:
        """keyword, numeric, date, boolean, text, object, missing, or the one mapped type."""
        if field == q.TIMESTAMP:
            raise QueryError("@timestamp takes a time or a range, e.g. @timestamp:>=now-1h")
        parts = field.split(".")
        for i in range(1, len(parts)):                # a leaf inside a flattened map
            if "flattened" in self.types.get(".".join(parts[:i]), ()):
                return "keyword"
        mapped = self.types.get(field, frozenset())
        if not mapped:
            return "missing"
        found = {_category(t) for t in mapped}
        if len(found) > 1:
            raise QueryError(f"{field} is mapped as {' and '.join(sorted(mapped))} in different "
                             "backing indices; narrow the time range to one of them")
        return found.pop()

    def _equals(self, field: str, value: str) -> dict[str, Any]:
        match self.category(field):
            case "keyword":
                return {"term": {field: value}}
            case "numeric":
                number = _number(value)
                return MATCH_NONE if number is None else {"term": {field: number}}
            case "boolean":
                return {"term": {field: value}} if value in ("true", "false") else MATCH_NONE
            case "date":
                return {"term": {field: value}} if _is_time(value) else MATCH_NONE
            case "text":
                return {"match_phrase": {field: value}}
            case "missing" | "object":
                return MATCH_NONE
            case _:
                return {"term": {field: value}}

    def _text_only(self, field: str, what: str) -> None:
        if self.category(field) in ("numeric", "date", "boolean"):
            raise QueryError(f"{what} needs a text field; {field} holds "
                             f"{self.category(field)} values: use a range, e.g. {field}:[a TO b]")

    def _if_mapped(self, field: str, query: dict[str, Any]) -> dict[str, Any]:
        return MATCH_NONE if self.category(field) in ("missing", "object") else query

    def _range(self, node: q.Range) -> dict[str, Any]:
        if node.field == q.TIMESTAMP:
            return {"range": {q.TIMESTAMP: _bounds(node, _instant, DATE_FORMAT)}}
        given = [b for b in (node.low, node.high) if b is not None]
        if not given:
            return {"exists": {"field": node.field}}
        numeric = [_number(str(b)) is not None for b in given]
        match self.category(node.field):
            case "numeric" if all(numeric):
                return {"range": {node.field: _bounds(node, lambda b: _number(str(b)))}}
            case "keyword" if not any(numeric):
                return {"range": {node.field: _bounds(node, str)}}
            case "date" if all(_is_time(str(b)) for b in given):
                return {"range": {node.field: _bounds(node, str, DATE_FORMAT)}}
        # Numbers compare only with numbers and text only with text, as in the embedded store.
        return MATCH_NONE


def _category(es_type: str) -> str:
    if es_type in KEYWORD:
        return "keyword"
    if es_type in NUMERIC:
        return "numeric"
    if es_type in DATE:
        return "date"
    if es_type in ("object", "nested"):
        return "object"
    if es_type in ("text", "match_only_text"):
        return "text"
    return es_type


def _bounds(node: q.Range, convert: Any, date_format: str | None = None) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    if node.low is not None:
        bounds["gte" if node.include_low else "gt"] = convert(node.low)
    if node.high is not None:
        bounds["lte" if node.include_high else "lt"] = convert(node.high)
    if date_format:
        bounds["format"] = date_format
    return bounds


def _text(text: str, prefix: bool) -> dict[str, Any]:
    if not prefix:
        return {"match_phrase": {TEXT_FIELD: text}}
    if _WORD.match(text):                         # one token: no cap on the words it may start
        return {"prefix": {TEXT_FIELD: {"value": text.lower()}}}
    return {"match_phrase_prefix": {TEXT_FIELD: {"query": text,
                                                 "max_expansions": PREFIX_EXPANSIONS}}}


def _instant(moment: Any) -> str:
    return moment.astimezone(timezone.utc).isoformat() if isinstance(moment, datetime) else str(moment)


def _number(text: str) -> int | float | None:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None


def _is_time(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _check_regex(pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise QueryError(f"not a regular expression: /{pattern}/ ({exc})") from None
