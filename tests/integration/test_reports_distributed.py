"""`ctrail report run` renders every shipped report the same from Elasticsearch (distributed mode:
`ctrail worker` processes on the real Kafka, storing into the real Elasticsearch) as from SQLite
(embedded mode), after each mode ingested the same files itself.

Data: the audit samples the report e2e test uses (samples/k8s-audit, Falco's traces: several
share an auditID and an instant), the timeline test's incident (registry, runtime, Falco and
audit, out of order), and 12 000 generated audit events (more than one Elasticsearch search
page). Compared: every CSV row and every Markdown line. Allowed to differ, and nothing else:
  - GENERATED: the Markdown's "generated <time>": each run renders at its own moment;
  - STORE_RETENTION: the store's part of the evidence cell of compliance's PCI DSS 10.5.1 row:
    the embedded store keeps events until deleted, Elasticsearch has a retention setting.
(event.ingested, the one stored field that differs between the modes, is in no report.)
"""

from __future__ import annotations

import csv
import io
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest

from ctrail.components import Store
from ctrail.settings import load_settings
from tests.services import elasticsearch_url, kafka_bootstrap

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).with_name("ctrail")
sys.path.insert(0, str(REPO / "tests" / "e2e"))
sys.path.insert(0, str(REPO / "bench"))
from corpus import START as CORPUS_START, write_sample_log  # noqa: E402  (shared with bench/)
from test_timeline import OUT_OF_ORDER, a_week_ago, write_scenario  # noqa: E402

SAMPLES = sorted((REPO / "samples" / "k8s-audit").glob("*.json"))
CORPUS_EVENTS = 12_000                   # Elasticsearch answers at most 10 000 hits a request
MAX_ROWS = 5_000                         # the capped reports' max_rows, below CORPUS_EVENTS
REPORTS = ("weekly", "user-activity", "compliance")
CAPPED = tuple(f"capped-{name}" for name in REPORTS)
GENERATED = re.compile(r"generated \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00")
STORE_RETENTION = re.compile(r"; store .*")
RETENTION_CONTROL = "PCI DSS 10.5.1"
STEM = re.compile(r"^.*-\d{8}T\d{4}")          # weekly-20181027T0200-sessions.csv: -sessions.csv
TRUNCATED = f"more than max_rows ({MAX_ROWS})"
# A query each capped report reads more than MAX_ROWS documents of, over the corpus.
AUDIT_CUT = f"{CORPUS_EVENTS} events match `event.dataset:kubernetes.audit`"
CUT_QUERY = {"capped-weekly": "alerts match `*`", "capped-user-activity": AUDIT_CUT,
             "capped-compliance": AUDIT_CUT}
REPORTS_CONFIG = "reports:\n" + "".join(
    f"  capped-{name}: {{template: {name}, max_rows: {MAX_ROWS}}}\n" for name in REPORTS)


def ctrail(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(EXE), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"ctrail {' '.join(args)}:\n{done.stderr[-3000:]}"
    return done


@dataclass
class Modes:
    """The same data in both modes: the arguments that choose each, and reports rendered."""

    tmp: Path
    embedded: list[str]
    distributed: list[str]
    periods: dict[str, tuple[str, str]]
    rendered: dict[tuple[str, str, str], dict[str, str]] = field(default_factory=dict)

    def ingest(self, source: str, *files: Path) -> None:
        names = [str(f) for f in files]
        alone = ctrail("ingest", "--source", source, *names, *self.embedded)
        spread = ctrail("ingest", "--source", source, *names, "--wait", "300",
                        *self.distributed)
        assert spread.stdout == alone.stdout          # "N accepted, M dead-lettered"

    def report(self, mode: str, name: str, period: str) -> dict[str, str]:
        """{file name without the report's stem: text} of `ctrail report run` in one mode."""
        key = (mode, name, period)
        if key not in self.rendered:
            out = self.tmp / "out" / mode / name / period
            time_from, time_to = self.periods[period]
            done = ctrail("report", "run", name, "--from", time_from, "--to", time_to,
                          "--out", str(out), *getattr(self, mode))
            files = [Path(line) for line in done.stdout.splitlines()]
            self.rendered[key] = {STEM.sub("", path.name): path.read_text()
                                  for path in files if path.suffix in (".md", ".csv")}
        return self.rendered[key]


def start_workers(tmp: Path, config: Path) -> dict[str, subprocess.Popen[bytes]]:
    workers = {}
    for stage in ("process", "correlate", "store"):
        log = open(tmp / f"{stage}.log", "ab")
        workers[stage] = subprocess.Popen(
            [str(EXE), "worker", stage, "--config", str(config), "--data-dir",
             str(tmp / stage)], cwd=REPO, stdout=log, stderr=log)
        log.close()
    return workers


def stop_workers(tmp: Path, workers: dict[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM to each, each waited for, then each one's clean exit checked."""
    for proc in workers.values():
        proc.send_signal(signal.SIGTERM)
    codes = {}
    for name, proc in workers.items():
        try:
            codes[name] = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            codes[name] = proc.wait()
    failed = {name: code for name, code in codes.items() if code != 0}
    assert not failed, "\n".join(f"{name} exited {code}:\n"
                                 + (tmp / f"{name}.log").read_text()[-3000:]
                                 for name, code in failed.items())


# One partition for raw and events. Events are shown with today's graph (enrich.today), but
# alerts are decided once, in arrival order, with what was seen before them (a tag's earlier
# digest, the graph's knowledge): with several partitions the workers see events of different
# keys in another order than embedded mode, and such an alert can carry another event's time
# (a 4-partition run put one registry alert an hour earlier). That is streaming detection, not
# a store difference, which is what this compares.
@pytest.fixture(scope="module")
def modes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Modes]:
    tmp = tmp_path_factory.mktemp("reports")
    namespace = "t" + uuid.uuid4().hex[:12]
    distributed, embedded = tmp / "distributed.yaml", tmp / "embedded.yaml"
    distributed.write_text(f"""
bus:
  type: kafka
  bootstrap_servers: "{kafka_bootstrap()}"
  namespace: "{namespace}."
  partitions: {{raw: 1, events: 1, alerts: 1, dlq: 1, entities: 1}}
store:
  type: elasticsearch
  hosts: ["{elasticsearch_url()}"]
  namespace: {namespace}
{REPORTS_CONFIG}""")
    embedded.write_text(REPORTS_CONFIG)
    workers = start_workers(tmp, distributed)
    try:
        t0 = a_week_ago()
        modes = Modes(tmp, ["--config", str(embedded), "--data-dir", str(tmp / "embedded")],
                      ["--config", str(distributed), "--data-dir", str(tmp / "cli")], {
            # Given with an offset: both stores must turn it into the same instants.
            "samples": ("2018-10-20T02:00:00+02:00", "2018-10-27T02:00:00+02:00"),
            "scenario": (iso(t0 - timedelta(hours=1)), iso(t0 + timedelta(days=1))),
            "corpus": (iso(CORPUS_START), iso(CORPUS_START + timedelta(days=1)))})
        ingest_everything(modes, tmp)
        wait_until_elasticsearch_has_what_sqlite_has(modes, tmp, embedded, distributed)
        yield modes
    finally:
        stop_workers(tmp, workers)


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat()


def ingest_everything(modes: Modes, tmp: Path) -> None:
    modes.ingest("k8s-audit", *SAMPLES)
    t0 = datetime.fromisoformat(modes.periods["scenario"][0]) + timedelta(hours=1)
    scenario = write_scenario(tmp, t0)
    for source in OUT_OF_ORDER:
        modes.ingest(source, scenario[source])
    corpus = tmp / "corpus.log"
    write_sample_log(corpus, CORPUS_EVENTS)
    modes.ingest("k8s-audit", corpus)


def wait_until_elasticsearch_has_what_sqlite_has(modes: Modes, tmp: Path, embedded: Path,
                                                 distributed: Path) -> None:
    """Per period, as many events and alerts in Elasticsearch as in SQLite (the workers have
    committed them, but a search sees them only after the next refresh)."""
    sqlite = load_settings(embedded, tmp / "embedded").store.build(tmp / "embedded")
    elastic = load_settings(distributed).store.build(tmp)
    try:
        want = stored_counts(sqlite, modes.periods)
        assert want["corpus", "events"] == CORPUS_EVENTS
        deadline = time.monotonic() + 120
        while (got := stored_counts(elastic, modes.periods)) != want:
            assert time.monotonic() < deadline, f"Elasticsearch has {got}, SQLite {want}"
            time.sleep(1)
    finally:
        sqlite.close()
        elastic.close()
    assert not (tmp / "cli" / "store.sqlite3").exists()    # distributed reads Elasticsearch


def stored_counts(store: Store, periods: dict[str, tuple[str, str]]
                  ) -> dict[tuple[str, str], int]:
    return {(period, kind): store.count("*", kind, datetime.fromisoformat(start),
                                        datetime.fromisoformat(end))
            for period, (start, end) in periods.items() for kind in ("events", "alerts")}


def comparable(files: dict[str, str]) -> dict[str, list[list[str]] | list[str]]:
    """CSV files as rows, Markdown as lines; the parts allowed to differ replaced by a marker."""
    return {name: (_csv_rows(text) if name.endswith(".csv") else _markdown_lines(text))
            for name, text in files.items()}


def _csv_rows(text: str) -> list[list[str]]:
    rows = list(csv.reader(io.StringIO(text)))
    for row in rows:
        if row and row[0] == RETENTION_CONTROL:
            row[2] = STORE_RETENTION.sub("; store <retention>", row[2])
    return rows


def _markdown_lines(text: str) -> list[str]:
    lines = [GENERATED.sub("generated <time>", line) for line in text.splitlines()]
    for i, line in enumerate(lines):
        if line.startswith(f"| {RETENTION_CONTROL} |"):
            cells = line.split(" | ")
            cells[2] = STORE_RETENTION.sub("; store <retention>", cells[2])
            lines[i] = " | ".join(cells)
    return lines


def assert_same(modes: Modes, name: str, period: str) -> tuple[dict[str, str], dict[str, str]]:
    embedded = modes.report("embedded", name, period)
    distributed = modes.report("distributed", name, period)
    assert sorted(distributed) == sorted(embedded)
    want, got = comparable(embedded), comparable(distributed)
    for file in embedded:
        assert got[file] == want[file], file
    return embedded, distributed


@pytest.mark.parametrize("period", ["samples", "scenario", "corpus"])
@pytest.mark.parametrize("name", REPORTS)
def test_each_report_renders_the_same_on_elasticsearch_as_on_sqlite(modes: Modes, name: str,
                                                                     period: str) -> None:
    embedded, _ = assert_same(modes, name, period)
    tables = [comparable({f: t})[f] for f, t in embedded.items() if f.endswith(".csv")]
    assert any(len(rows) > 1 for rows in tables), "every table is empty: nothing was compared"


def test_the_store_retention_is_the_only_cell_that_differs(modes: Modes) -> None:
    embedded, distributed = assert_same(modes, "compliance", "samples")
    (want,) = [line for line in embedded[".md"].splitlines() if RETENTION_CONTROL in line]
    (got,) = [line for line in distributed[".md"].splitlines() if RETENTION_CONTROL in line]
    assert "store keeps events until deleted" in want
    # Elasticsearch's default events_days; "but keeps them until deleted" without ILM.
    assert re.search(r"store (set to keep|keeps) events 90 days", got)


def test_more_events_than_one_search_page_are_all_read_on_both_stores(modes: Modes) -> None:
    for mode in ("embedded", "distributed"):
        weekly = modes.report(mode, "weekly", "corpus")[".md"]
        activity = modes.report(mode, "user-activity", "corpus")[".md"]
        compliance = modes.report(mode, "compliance", "corpus")[".md"]
        assert f"- **Audit events**: {CORPUS_EVENTS}\n" in weekly
        assert f"- **Audit events**: {CORPUS_EVENTS}\n" in compliance
        assert f"- **API requests**: {CORPUS_EVENTS}\n" in activity   # one auditID per line
        assert "more than max_rows" not in weekly + activity + compliance


@pytest.mark.parametrize("name", CAPPED)
def test_past_max_rows_both_stores_cut_at_the_same_instant_and_say_so(modes: Modes,
                                                                      name: str) -> None:
    embedded, distributed = assert_same(modes, name, "corpus")
    for files in (embedded, distributed):
        markdown = files[".md"]
        assert f"{CUT_QUERY[name]}, {TRUNCATED}: what is listed or charted from them covers " \
               f"only those after {CORPUS_START:%Y-%m-%d}T" in markdown
        if name == "capped-user-activity":
            # One event a millisecond: the cut drops only the instant the store stopped at.
            assert f"- **API requests**: {MAX_ROWS}\n" in markdown
        else:                                          # totals come from count(), exact
            assert f"- **Audit events**: {CORPUS_EVENTS}\n" in markdown
