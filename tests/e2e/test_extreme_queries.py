"""Issue 14: `ctrail search` answers `*:*`, extreme queries and limits get one line, not a
traceback, and the table form is capped."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from console_scenario import audit, write_lines
from ctrail.cli.common import TABLE_MAX_ROWS


def ingest_events(ctrail, directory: Path, count: int) -> None:  # type: ignore[no-untyped-def]
    start = datetime(2026, 3, 1, tzinfo=timezone.utc)
    lines = [audit(start + timedelta(seconds=i), "get", f"user-{i}",
                   {"resource": "configmaps", "namespace": "ns", "name": f"cm-{i}"})
             for i in range(count)]
    assert ctrail("ingest", "--source", "k8s-audit",
                  str(write_lines(directory / "audit.log", lines))).status == 0


def test_star_colon_star_lists_everything(ctrail, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`*:*` means every document in Lucene; it found nothing."""
    ingest_events(ctrail, tmp_path, 12)
    star = ctrail("search", "*", "--format", "json")
    lucene = ctrail("search", "*:*", "--format", "json")
    assert (star.status, lucene.status) == (0, 0)
    assert len(lucene.out.splitlines()) == 12 and lucene.out == star.out
    assert len(ctrail("search", "*:* AND user.name:user-3", "--format", "json").out
               .splitlines()) == 1


@pytest.mark.parametrize("query", ["a " * 5000, "NOT " * 2000, "NOT " * 2000 + "a",
                                   "(" * 3000 + "a" + ")" * 3000])
def test_an_extreme_query_is_a_one_line_error(ctrail, query: str) -> None:  # type: ignore[no-untyped-def]
    done = ctrail("search", query)
    assert done.status == 2
    assert done.err.startswith("ctrail: error: ") and done.err.count("\n") == 1, done.err[:500]


@pytest.mark.parametrize("limit", ["0", "-5", "100001"])
def test_a_limit_outside_its_range_is_a_one_line_error(ctrail, limit: str) -> None:  # type: ignore[no-untyped-def]
    for form in ("table", "json"):
        done = ctrail("search", "*", "--limit", limit, "--format", form)
        assert done.status == 2 and done.err.count("\n") == 1, done.err[:500]
        assert done.err.startswith("ctrail: error: --limit must be between 1 and 100 000")


def test_the_table_form_is_capped_and_says_so(ctrail, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """--limit 100000 as a table built 100 000 rich rows (1.6 GB); it shows the newest 1 000,
    says so on stderr, and --format json still prints what --limit asks for."""
    ingest_events(ctrail, tmp_path, TABLE_MAX_ROWS + 50)
    table = ctrail("search", "*", "--limit", "100000")
    assert table.status == 0 and f"events ({TABLE_MAX_ROWS})" in table.out
    assert "user-1049" in table.out and "user-49 " not in table.out     # the newest rows
    assert "a table shows at most the newest 1000 rows" in table.err
    found = ctrail("search", "*", "--limit", "100000", "--format", "json")
    assert len(found.out.splitlines()) == TABLE_MAX_ROWS + 50 and found.err == ""
    small = ctrail("search", "*", "--limit", "10")
    assert "events (10)" in small.out and small.err == ""              # nothing cut: no note


def peak_rss_kib(*args: str) -> int:
    """The peak resident memory of `ctrail ARGS` (its output thrown away), in KiB: measured by
    a parent of its own, so no other child of the test process counts."""
    exe = Path(sys.executable).with_name("ctrail")
    done = subprocess.run([sys.executable, "-c", (
        "import resource, subprocess, sys; "
        "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"), str(exe), *args],
        capture_output=True, text=True, timeout=300, check=True)
    return int(done.stdout)


def test_json_results_are_streamed_not_held(ctrail, tmp_data_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """--format json with --limit 100000 held every document before printing the first (about
    13 KB of memory each): it prints each as it is read, in pages, so 8 000 results take no
    more memory than 10."""
    ingest_events(ctrail, tmp_path, 8_000)
    common = ("--data-dir", str(tmp_data_dir), "--format", "json", "search", "*")
    few, many = peak_rss_kib(*common, "--limit", "10"), peak_rss_kib(*common, "--limit", "100000")
    assert many - few < 30 * 1024, (few, many)
    assert len(ctrail("search", "*", "--limit", "100000", "--format", "json").out
               .splitlines()) == 8_000
