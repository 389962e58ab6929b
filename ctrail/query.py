"""The search language: Lucene query syntax, parsed once with luqum into a small tree.

Every store translates this tree (SQLite to SQL, Elasticsearch to its query DSL), so the same
query means the same thing on both. What the tree can say:

    user.name:alice                 exact value of a field (any element, when it is a list)
    user.name:"system:anonymous"    the same, quoted
    user.name:sys*  name:a?c        wildcards (case-sensitive, as on keyword fields)
    responseStatus.code:[400 TO 499]   ranges: [] inclusive, {} exclusive, and >, >=, <, <=
    @timestamp:>=now-15m            times: ISO 8601, now, now-DURATION (s m h d w)
    user.name:*   _exists_:user.name   the field exists
    field:/regex/                   a regular expression over the whole value
    forbidden   "exec into"   exe*  free text: words, phrases, prefixes anywhere in the event
    AND OR NOT ( ) + -              boolean logic; terms side by side mean OR, as in Lucene

Fuzzy (~), proximity and boosts (^) rank results and have no meaning for an audit search:
they are refused with a QueryError rather than silently ignored. `*:*` (and `*`, or nothing)
matches everything, as in Lucene.

A query is bounded, so that no query costs a traceback or a translation either store refuses
(SQLite's expression depth is 1000): at most MAX_QUERY_CHARS characters, MAX_TERMS terms
(Lucene's own limit is 1024 clauses) and MAX_DEPTH levels of nesting (groups, NOT, fields).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Final

from luqum import tree
from luqum.exceptions import ParseError
from luqum.parser import parser

from ctrail.errors import QueryError

TIMESTAMP: Final = "@timestamp"
DURATION = re.compile(r"^(\d+)([smhdw])$")
UNIT_SECS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_UNESCAPE = re.compile(r"\\(.)")
MAX_QUERY_CHARS: Final = 16_384
MAX_TERMS: Final = 512
MAX_DEPTH: Final = 32
SHOWN_CHARS: Final = 80          # of a query quoted in an error message
_WILDCARD = re.compile(r"(?<!\\)[*?]")


# ── the tree ─────────────────────────────────────────────────────────────────────────────────

@dataclass(frozen=True, slots=True)
class MatchAll:
    pass


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Query, ...]


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Query, ...]


@dataclass(frozen=True, slots=True)
class Not:
    child: Query


@dataclass(frozen=True, slots=True)
class Equals:
    field: str
    value: str


@dataclass(frozen=True, slots=True)
class Wildcard:
    field: str
    pattern: str          # `*` any run of characters, `?` one character; no escapes left


@dataclass(frozen=True, slots=True)
class Regex:
    field: str
    pattern: str          # matched against the whole value (Lucene regexps are anchored)


@dataclass(frozen=True, slots=True)
class Exists:
    field: str


@dataclass(frozen=True, slots=True)
class Range:
    field: str
    low: str | datetime | None
    high: str | datetime | None
    include_low: bool = True
    include_high: bool = True


@dataclass(frozen=True, slots=True)
class Text:
    """Free text anywhere in the event: a word, a phrase, or a word prefix."""

    text: str
    prefix: bool = False


Query = MatchAll | And | Or | Not | Equals | Wildcard | Regex | Exists | Range | Text


# ── parsing ──────────────────────────────────────────────────────────────────────────────────

@lru_cache(maxsize=256)
def parse_query(text: str) -> Query:
    """The tree for `text`; QueryError with a one-line reason when it is not a query we answer."""
    if not text.strip() or text.strip() in ("*", "*:*"):
        return MatchAll()
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"the query is too long: {len(text)} characters (at most "
                         f"{MAX_QUERY_CHARS})")
    try:
        parsed = parser.parse(text)
    except (ParseError, TypeError, ValueError) as exc:
        raise QueryError(f"cannot parse query {_shown(text)}: {_shown(str(exc), False)}") \
            from None
    except RecursionError:
        raise QueryError(f"the query is nested too deeply (at most {MAX_DEPTH} levels)") \
            from None
    _check_size(parsed)
    return _convert(parsed, field=None)


def as_query(query: str | Query) -> Query:
    """A query as text (parsed here) or already a tree: the console ANDs a user's scope into
    the parsed tree, never into the text, so no query text can escape the scope."""
    return parse_query(query) if isinstance(query, str) else query


def _check_size(parsed: tree.Item) -> None:
    """QueryError when the parsed query has more than MAX_TERMS terms or MAX_DEPTH levels;
    walked without recursion, so a query of any shape gets this one-line answer."""
    terms = 0
    stack: list[tuple[tree.Item, int]] = [(parsed, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise QueryError(f"the query is nested too deeply (at most {MAX_DEPTH} levels)")
        children = node.children
        if not children:
            terms += 1
            if terms > MAX_TERMS:
                raise QueryError(f"the query has too many terms (at most {MAX_TERMS})")
        stack.extend((child, depth + 1) for child in children)


def _shown(text: str, quoted: bool = True) -> str:
    """`text` for a one-line error message: cut to SHOWN_CHARS, and quoted if asked."""
    cut = text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…"
    return repr(cut) if quoted else " ".join(cut.split())


def parse_duration(text: str) -> timedelta:
    """'30m', '24h', '7d' → timedelta; QueryError otherwise."""
    match = DURATION.match(text.strip())
    if not match:
        raise QueryError(f"not a duration: {text!r} (use e.g. 30m, 24h, 7d)")
    return timedelta(seconds=int(match.group(1)) * UNIT_SECS[match.group(2)])


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 time (naive means UTC), `now` or `now-DURATION`, as an aware datetime."""
    text = text.strip()
    now = now or datetime.now(timezone.utc)
    if text == "now":
        return now
    if text.startswith("now-"):
        return now - parse_duration(text[4:])
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(f"not a time: {text!r} (use ISO 8601, now or now-24h)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _convert(node: tree.Item, field: str | None) -> Query:
    match node:
        case tree.SearchField():
            if field is not None:
                raise QueryError(f"a field inside a field: {node}")
            name = _unescape(node.name)
            if name == "*" and str(node.expr) == "*":     # Lucene's match-all, inside a query
                return MatchAll()
            if name == "_exists_":
                return Exists(_unescape(str(node.expr)))
            return _convert(node.expr, name)
        case tree.Group() | tree.FieldGroup():
            return _convert(node.expr, field)
        case tree.AndOperation():
            return And(tuple(_convert(child, field) for child in node.children))
        case tree.OrOperation():
            return Or(tuple(_convert(child, field) for child in node.children))
        case tree.UnknownOperation():
            return _implicit(node, field)
        case tree.Not() | tree.Prohibit():
            return Not(_convert(node.a, field))
        case tree.Plus():
            return _convert(node.a, field)
        case tree.Word():
            return _word(node.value, field)
        case tree.Phrase():
            value = _unescape(node.value[1:-1])
            return Text(value) if field is None else Equals(field, value)
        case tree.Regex():
            if field is None:
                raise QueryError(f"a regular expression needs a field: field:{node.value}")
            return Regex(field, node.value[1:-1])
        case tree.Range():
            return _range(field, node.low, node.high, node.include_low, node.include_high)
        case tree.From():
            return _range(field, node.a, None, node.include, True)
        case tree.To():
            return _range(field, None, node.a, True, node.include)
        case tree.Fuzzy() | tree.Proximity() | tree.Boost():
            raise QueryError(f"{type(node).__name__.lower()} ({node}) ranks results; "
                             "audit searches match exactly — remove it")
    raise QueryError(f"unsupported query element: {node}")


def _implicit(node: tree.UnknownOperation, field: str | None) -> Query:
    """Lucene's rule for terms side by side: +must, -must-not, the rest optional (OR)."""
    for child in node.children:
        if isinstance(child, tree.Word) and child.value in ("&&", "||", "!"):
            raise QueryError(f"use AND, OR and NOT instead of {child.value!r}")
    must = [_convert(c.a, field) for c in node.children if isinstance(c, tree.Plus)]
    must_not = [Not(_convert(c.a, field)) for c in node.children if isinstance(c, tree.Prohibit)]
    should = [_convert(c, field) for c in node.children
              if not isinstance(c, (tree.Plus, tree.Prohibit))]
    required: list[Query] = [*must, *must_not]
    if should and not must:
        required.append(should[0] if len(should) == 1 else Or(tuple(should)))
    if not required:
        return MatchAll()
    return required[0] if len(required) == 1 else And(tuple(required))


def _word(raw: str, field: str | None) -> Query:
    if field is None:
        if raw == "*":
            return MatchAll()
        if _WILDCARD.search(raw):
            stem = raw[:-1]
            if not raw.endswith("*") or _WILDCARD.search(stem) or not stem:
                raise QueryError(f"free-text wildcards may only end a word (e.g. exe*): {raw!r}")
            return Text(_unescape(stem), prefix=True)
        return Text(_unescape(raw))
    if raw == "*":
        return Exists(field)
    if _WILDCARD.search(raw):
        return Wildcard(field, _wildcard_pattern(raw))
    if field == TIMESTAMP:                     # one instant: times compare as times, not text
        instant = parse_time(_unescape(raw))
        return Range(field, instant, instant)
    return Equals(field, _unescape(raw))


def _range(field: str | None, low: tree.Item | None, high: tree.Item | None,
           include_low: bool, include_high: bool) -> Range:
    if field is None:
        raise QueryError("a range needs a field, e.g. @timestamp:[now-1h TO now]")
    return Range(field, _bound(field, low), _bound(field, high), include_low, include_high)


def _bound(field: str, node: tree.Item | None) -> str | datetime | None:
    if node is None:
        return None
    value = _unescape(node.value[1:-1] if isinstance(node, tree.Phrase) else str(node.value))
    if value == "*":
        return None
    return parse_time(value) if field == TIMESTAMP else value


def _wildcard_pattern(raw: str) -> str:
    """Keep unescaped * and ?; an escaped one is a literal, which our patterns cannot say."""
    if re.search(r"\\[*?]", raw):
        raise QueryError(f"a literal * or ? inside a wildcard is not supported: {raw!r}")
    return _unescape(raw)


def _unescape(text: str) -> str:
    return _UNESCAPE.sub(r"\1", text)
