"""The search language: Lucene syntax into the tree every store translates."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from ctrail.errors import QueryError
from ctrail.query import (
    And,
    Equals,
    Exists,
    MatchAll,
    Not,
    Or,
    Range,
    Regex,
    Text,
    Wildcard,
    parse_query,
    parse_time,
)


@pytest.mark.parametrize(("text", "tree"), [
    ("", MatchAll()),
    ("*", MatchAll()),
    ("user.name:alice", Equals("user.name", "alice")),
    ('user.name:"system:anonymous"', Equals("user.name", "system:anonymous")),
    (r"user.name:system\:anonymous", Equals("user.name", "system:anonymous")),
    ("user.name:sys*", Wildcard("user.name", "sys*")),
    ("user.name:*", Exists("user.name")),
    ("_exists_:user.name", Exists("user.name")),
    ("user.name:/ali.e/", Regex("user.name", "ali.e")),
    ("code:[400 TO 499]", Range("code", "400", "499", True, True)),
    ("code:{400 TO *]", Range("code", "400", None, False, True)),
    ("code:>400", Range("code", "400", None, False, True)),
    ("code:<=499", Range("code", None, "499", True, True)),
    ("a:1 AND b:2", And((Equals("a", "1"), Equals("b", "2")))),
    ("a:1 OR b:2", Or((Equals("a", "1"), Equals("b", "2")))),
    ("a:1 b:2", Or((Equals("a", "1"), Equals("b", "2")))),
    ("+a:1 b:2", Equals("a", "1")),                      # with a must, the rest only ranks
    ("+a:1 -b:2", And((Equals("a", "1"), Not(Equals("b", "2"))))),
    ("NOT a:1", Not(Equals("a", "1"))),
    ("a:(1 OR 2)", Or((Equals("a", "1"), Equals("a", "2")))),
    ("forbidden", Text("forbidden")),
    ('"exec into"', Text("exec into")),
    ("exe*", Text("exe", prefix=True)),
])
def test_lucene_syntax_becomes_the_tree(text: str, tree: object) -> None:
    assert parse_query(text) == tree


def test_timestamps_become_times_and_now_is_relative() -> None:
    tree = parse_query("@timestamp:[now-15m TO now]")
    assert isinstance(tree, Range) and isinstance(tree.low, datetime)
    assert isinstance(tree.high, datetime)
    assert tree.high - tree.low == pytest.approx(timedelta(minutes=15), abs=timedelta(seconds=1))
    assert parse_query("@timestamp:2026-03-01T10:00:00") == Range(
        "@timestamp", datetime(2026, 3, 1, 10, tzinfo=timezone.utc),
        datetime(2026, 3, 1, 10, tzinfo=timezone.utc))


@pytest.mark.parametrize(("text", "says"), [
    ("a:b~2", "fuzzy"), ("a:b^2", "boost"), ('"a b"~2', "proximity"),
    ("a:b && c:d", "use AND"), ("a:[1 TO", "cannot parse"), ("*ab", "end a word"),
    ("[1 TO 2]", "needs a field"), ("/x/", "needs a field"), ("@timestamp:>soon", "not a time"),
    (r"a:x\*y*", "literal"),
])
def test_what_we_cannot_answer_exactly_is_refused_with_a_reason(text: str, says: str) -> None:
    with pytest.raises(QueryError, match=says):
        parse_query(text)


def test_parse_time_reads_iso_now_and_durations() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert parse_time("now", now) == now
    assert parse_time("now-2h", now) == now - timedelta(hours=2)
    assert parse_time("2026-01-01T00:00:00+01:00", now) == datetime(2025, 12, 31, 23, tzinfo=timezone.utc)


# -- issue 14: Lucene's match-all, and extreme queries get a one-line error ----------------------

@pytest.mark.parametrize(("text", "tree"), [
    ("*:*", MatchAll()),
    (" *:* ", MatchAll()),
    ("*:* AND user.name:alice", And((MatchAll(), Equals("user.name", "alice")))),
    ("NOT *:*", Not(MatchAll())),
])
def test_star_colon_star_matches_everything_as_in_lucene(text: str, tree: object) -> None:
    assert parse_query(text) == tree


@pytest.mark.parametrize("text", [
    "a " * 5000, "NOT " * 2000, "NOT " * 2000 + "a", "(" * 3000 + "a" + ")" * 3000,
    "a OR " * 600 + "a", "user.name:(" + "a " * 600 + ")", "- " * 3000 + "a",
    "x" * 100_000, "NOT " * 40 + "a",
])
def test_extreme_queries_get_a_one_line_query_error(text: str) -> None:
    with pytest.raises(QueryError) as raised:
        parse_query(text)
    message = str(raised.value)
    assert "\n" not in message and len(message) < 300, message


def test_queries_within_the_bounds_are_answered() -> None:
    from ctrail.query import MAX_DEPTH, MAX_TERMS
    assert isinstance(parse_query(" OR ".join(["a"] * MAX_TERMS)), Or)
    deep = parse_query("NOT " * (MAX_DEPTH - 2) + "a")
    while isinstance(deep, Not):
        deep = deep.child
    assert deep == Text("a")
