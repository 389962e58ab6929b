"""Issue 14: `ctrail search` answers `*:*`, and extreme queries get one line, not a traceback."""

from __future__ import annotations

import pytest


def test_star_colon_star_lists_what_star_lists(ctrail) -> None:  # type: ignore[no-untyped-def]
    star = ctrail("search", "*", "--format", "json")
    lucene = ctrail("search", "*:*", "--format", "json")
    assert (star.status, lucene.status) == (0, 0)
    assert lucene.out == star.out


@pytest.mark.parametrize("query", ["a " * 5000, "NOT " * 2000, "NOT " * 2000 + "a",
                                   "(" * 3000 + "a" + ")" * 3000])
def test_an_extreme_query_is_a_one_line_error(ctrail, query: str) -> None:  # type: ignore[no-untyped-def]
    done = ctrail("search", query)
    assert done.status == 2
    assert done.err.startswith("ctrail: error: ") and done.err.count("\n") == 1, done.err[:500]
