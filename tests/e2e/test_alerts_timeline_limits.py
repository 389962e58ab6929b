"""`ctrail alerts` and `ctrail timeline` take `ctrail search`'s --limit policy: a limit outside
1..100 000 is a one-line error, a table shows at most the newest 1 000 rows and says so, and
JSON is streamed a page at a time (any --limit loaded every document before). The audit record
of each still says how many results there were. One store of 8 000 execs into pods (each
raises CT-K8S-004, some correlations too), three a second, serves every test but the first."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from itertools import groupby
from pathlib import Path
from typing import Any, Final

import orjson
import pytest

from console_scenario import exec_into, write_lines
from ctrail.audit.spool import SPOOL
from ctrail.cli.common import MAX_LIMIT, TABLE_MAX_ROWS
from ctrail.cli.main import main
from ctrail.event import stored_instant
from ctrail.query import parse_query
from ctrail.settings import load_settings
from enrich.timeline import for_user
from enrich.today import explain, load_graph
from sinks.sqlite.store import STREAM_PAGE
from test_extreme_queries import peak_rss_kib

EXECS: Final = 8_000
START: Final = "2026-03-01T00:00:00+00:00"


def cli(capsys: pytest.CaptureFixture[str], data_dir: Path, *args: str) -> tuple[int, str, str]:
    status = main([*args, "--data-dir", str(data_dir)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def lines(out: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in out.splitlines()]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("many-alerts")
    start = datetime.fromisoformat(START)
    # Three execs a second: events (and alerts) of one instant, whose event ids (hashes) do
    # not sort in the order they arrived.
    log = write_lines(root / "audit.log", [
        exec_into(start + timedelta(seconds=i // 3), "alice", "ns", f"pod-{i}", tag=str(i))
        for i in range(EXECS)])
    assert main(["ingest", "--source", "k8s-audit", str(log), "--data-dir",
                 str(root / "data")]) == 0
    return root / "data"


def stored(data_dir: Path, query: str, kind: str, limit: int) -> list[dict[str, Any]]:
    """What Store.search gives: the newest `limit`, oldest first, every one held."""
    settings = load_settings(None, data_dir)
    store = settings.store.build(settings.data_dir)
    try:
        return store.search(parse_query(query), kind, None, None, limit)
    finally:
        store.close()


@pytest.mark.parametrize("limit", ["0", "-5", str(MAX_LIMIT + 1), "100000000"])
def test_a_limit_outside_its_range_is_a_one_line_error(
        capsys: pytest.CaptureFixture[str], tmp_data_dir: Path, limit: str) -> None:
    for command in (["alerts"], ["timeline", "--user", "alice"]):
        for form in ("table", "json"):
            status, out, err = cli(capsys, tmp_data_dir, *command, "--limit", limit,
                                   "--format", form)
            assert (status, out, err.count("\n")) == (2, "", 1), err[:500]
            assert err.startswith("ctrail: error: --limit must be between 1 and 100 000 ")


def test_alerts_in_json_are_every_one_oldest_first_as_search_gives_them(
        capsys: pytest.CaptureFixture[str], store_dir: Path) -> None:
    status, out, err = cli(capsys, store_dir, "alerts", "--format", "json", "--limit",
                           str(MAX_LIMIT))
    printed, expected = lines(out), stored(store_dir, "*", "alerts", MAX_LIMIT)
    assert (status, err) == (0, "")
    assert len(printed) >= EXECS > 10 * STREAM_PAGE          # many pages, none left out
    assert printed == expected
    assert len({doc["event"]["id"] for doc in printed}) == len(printed)
    times = [stored_instant(doc["@timestamp"]) for doc in printed]
    assert times == sorted(times) and times[0].isoformat() == START
    # A smaller limit: the newest that many, still oldest first, across a page boundary.
    status, out, _err = cli(capsys, store_dir, "alerts", "--format", "json",
                            "--limit", str(STREAM_PAGE + 7))
    assert lines(out) == expected[-(STREAM_PAGE + 7):]


def test_the_timeline_in_json_is_streamed_in_time_then_event_id_order(
        capsys: pytest.CaptureFixture[str], store_dir: Path) -> None:
    """The order the timeline gave when it held and sorted every event: by instant, then
    event id. The store's own ties (arrival order) differ from it, so this test fails
    without the ordering of each instant's events."""
    settings = load_settings(None, store_dir)
    graph = load_graph(settings)
    _subject, query = for_user(graph, "alice")
    held = stored(store_dir, query, "events", MAX_LIMIT)
    expected = sorted((explain(graph, doc) for doc in held),
                      key=lambda d: (stored_instant(d["@timestamp"]), d["event"]["id"]))
    ids = [doc["event"]["id"] for doc in held]
    assert [doc["event"]["id"] for doc in expected] != ids   # ties the store orders otherwise
    assert len(expected) == EXECS
    status, out, err = cli(capsys, store_dir, "timeline", "--user", "alice", "--format", "json")
    subject, *events = lines(out)
    assert (status, err) == (0, "") and subject["subject"]["query"] == "alice"
    assert events == expected
    for _instant, same in groupby(events, key=lambda d: d["@timestamp"]):
        ids = [doc["event"]["id"] for doc in same]
        assert ids == sorted(ids)


def test_a_table_shows_the_newest_1000_and_says_so(
        capsys: pytest.CaptureFixture[str], store_dir: Path) -> None:
    note = f"a table shows at most the newest {TABLE_MAX_ROWS} rows"
    status, out, err = cli(capsys, store_dir, "alerts", "--limit", str(MAX_LIMIT))
    assert status == 0 and f"alerts ({TABLE_MAX_ROWS})" in out and note in err
    assert f"pod-{EXECS - 1} " in out and "pod-0 " not in out    # the newest rows
    status, out, err = cli(capsys, store_dir, "alerts")              # its default: 1 000
    assert status == 0 and f"alerts ({TABLE_MAX_ROWS})" in out and err == ""
    # The timeline's default limit (10 000) is more than a table shows.
    status, out, err = cli(capsys, store_dir, "timeline", "--user", "alice")
    assert status == 0 and f"events ({TABLE_MAX_ROWS})" in out and note in err
    assert f"pod-{EXECS - 1} " in out and f"pod-{EXECS - TABLE_MAX_ROWS - 1} " not in out
    status, out, err = cli(capsys, store_dir, "timeline", "--user", "alice", "--limit", "10")
    assert status == 0 and "events (10)" in out and err == ""        # nothing cut: no note


def test_the_audit_records_count_the_results(
        capsys: pytest.CaptureFixture[str], store_dir: Path) -> None:
    """Counted, as search does, since the results are no longer held; an odd limit finds this
    test's records among the others'."""
    alerts = len(stored(store_dir, "*", "alerts", MAX_LIMIT))
    for command in (["alerts"], ["timeline", "--user", "alice"]):
        assert cli(capsys, store_dir, *command, "--format", "json", "--limit", "99991")[0] == 0
        assert cli(capsys, store_dir, *command, "--format", "json", "--limit", "17")[0] == 0
    records = [orjson.loads(orjson.loads(line)["event"]["original"])
               for line in (store_dir / SPOOL).read_bytes().splitlines()]
    counted = {(r["limit"], r["results"]) for r in records if r["limit"] in (99991, 17)}
    assert counted == {(99991, alerts), (99991, EXECS), (17, 17)}


def test_json_is_streamed_not_held(store_dir: Path) -> None:
    """Every alert or event held before the first was printed (8 000 timeline events took
    67 MB more than 10 did, 9 600 alerts 76 MB more): now a page at a time."""
    common = ("--data-dir", str(store_dir), "--format", "json")
    for command in (["alerts"], ["timeline", "--user", "alice"]):
        few = peak_rss_kib(*common, *command, "--limit", "10")
        many = peak_rss_kib(*common, *command, "--limit", str(MAX_LIMIT))
        assert many - few < 30 * 1024, (command, few, many)


def test_a_reader_that_stops_early_ends_it_quietly(store_dir: Path) -> None:
    """`| head`: the broken pipe was a traceback (the disk-full handler, for any OSError,
    caught it before the handler meant for it); now exit 0 and nothing on stderr."""
    exe = Path(sys.executable).with_name("ctrail")
    for command in (["alerts"], ["timeline", "--user", "alice"], ["search", "*"]):
        with subprocess.Popen([str(exe), *command, "--data-dir", str(store_dir), "--format",
                               "json", "--limit", str(MAX_LIMIT)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) as reader:
            assert reader.stdout is not None and reader.stderr is not None
            first = orjson.loads(reader.stdout.readline())
            reader.stdout.close()                 # a few MB unread: the writer gets EPIPE
            err = reader.stderr.read()
            status = reader.wait(timeout=120)
        assert first and (status, err) == (0, b""), (command, err[-2000:])
