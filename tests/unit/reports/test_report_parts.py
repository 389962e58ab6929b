"""The pure parts of reports: image references, pod specs, gaps, chart geometry, rendering,
the order of counts, what the compliance report says of the store's retention."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ctrail.settings import Settings
from sinks.elasticsearch import ElasticsearchConfig
from sinks.reports import ReportConfig, cron_trigger
from sinks.reports.compliance import audit_gaps, store_retention
from sinks.reports.data import host_access, identity_kind, parse_image, pod_spec
from sinks.reports.model import Chart, Report, Section, Table, by_count, time_series
from sinks.reports.render import draw, render
from sinks.reports.weekly import image_ref
from sinks.sqlite.store import SqliteStore

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)


@pytest.mark.parametrize(("ref", "registry", "repository", "tag", "pinned"), [
    ("nginx", "docker.io", "nginx", "latest", False),
    ("nginx:1.25", "docker.io", "nginx", "1.25", False),
    ("library/nginx@sha256:ab", "docker.io", "library/nginx", None, True),
    ("ghcr.io/org/app:v1@sha256:ab", "ghcr.io", "org/app", "v1", True),
    ("localhost:5000/app", "localhost:5000", "app", "latest", False),
])
def test_image_references_are_split_as_docker_does(ref, registry, repository, tag, pinned) -> None:  # type: ignore[no-untyped-def]
    image = parse_image(ref)
    assert (image.registry, image.repository, image.tag, image.pinned) == (
        registry, repository, tag, pinned)


def test_host_access_is_found_in_a_deployment_template() -> None:
    doc = {"kubernetes": {"audit": {"requestObject": {"kind": "Deployment", "spec": {
        "template": {"spec": {"hostPID": True, "volumes": [{"hostPath": {"path": "/"}}],
                              "containers": [{"name": "c", "image": "x",
                                              "securityContext": {"privileged": True}}]}}}}}}}
    spec = pod_spec(doc)
    assert spec is not None
    assert host_access(spec) == ["hostPID", "privileged container c", "hostPath /"]


def test_identities_are_told_apart() -> None:
    assert [identity_kind(u) for u in ("alice", "system:serviceaccount:ns:sa", "system:kcm")] \
        == ["human", "service account", "system"]


def test_gaps_count_from_the_period_start_and_to_its_end() -> None:
    docs = [{"@timestamp": (T0 + timedelta(hours=h)).isoformat()} for h in (1, 2, 10)]
    gaps = audit_gaps(docs, T0, T0 + timedelta(hours=20), timedelta(hours=6))
    assert [(g[0], g[3]) for g in gaps] == [("(default)", 8.0), ("(default)", 10.0)]


def test_time_series_chooses_a_step_and_counts_per_step() -> None:
    chart = time_series("t", [T0, T0 + timedelta(hours=30)], T0, T0 + timedelta(days=7))
    assert len(chart.values) == 28 and chart.values[0] == 1 and chart.values[5] == 1


def test_bars_are_proportional_and_an_empty_chart_has_none() -> None:
    drawing = draw(Chart("c", ["high", "low"], [4, 2]))
    assert [bar.w for bar in drawing.bars][0] == 2 * drawing.bars[1].w
    assert drawing.bars[0].colour == "#e8590c"
    assert draw(Chart("c", [], [])).bars == []


def test_render_escapes_html_and_markdown_and_writes_csv(tmp_path: Path) -> None:
    report = Report("r", "R", T0, T0 + timedelta(days=1), T0, sections=[Section("S", tables=[
        Table("T", ["a", "b"], [["<script>x</script>", "p|q"]])])])
    html, md, csv = render(report, tmp_path, ["html", "md", "csv"])
    assert "&lt;script&gt;" in html.read_text() and "<script>x" not in html.read_text()
    assert "p\\|q" in md.read_text()
    assert csv.read_text().splitlines() == ["a,b", "<script>x</script>,p|q"]


HOSTILE = ["<img src=x onerror=alert(1)>", "[open the runbook](javascript:alert(1))",
           "![pixel](https://tracker.example/p.png)", "<https://evil.example>",
           "<script>alert(1)</script>", "a*b_c `x` ~~y~~ \\ & p|q"]


def test_markdown_cells_render_as_text_never_as_html_links_or_images(tmp_path: Path) -> None:
    markdown_it = pytest.importorskip("markdown_it")
    report = Report("r", "R", T0, T0 + timedelta(days=1), T0, sections=[Section("S", tables=[
        Table("T", ["value"], [[value] for value in HOSTILE])])])
    [md] = render(report, tmp_path, ["md"])
    # The worst case: a renderer that passes raw HTML through.
    html = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").render(
        md.read_text())
    for tag in ("<img", "<script", "<a "):
        assert tag not in html, tag
    cells = [c.split("</td>")[0] for c in html.split("<td>")[1:]]
    unescape = __import__("html").unescape
    assert [unescape(c) for c in cells] == HOSTILE


@pytest.mark.parametrize("cell", ["=HYPERLINK(\"https://evil.example\",\"x\")", "+1+1", "-2+3",
                                  "@SUM(A1)", "\t=1", "\r=1"])
def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(cell: str, tmp_path: Path) -> None:
    report = Report("r", "R", T0, T0 + timedelta(days=1), T0, sections=[Section("S", tables=[
        Table("T", ["user", "n"], [[cell, -3], ["alice", 2]])])])
    [path] = render(report, tmp_path, ["csv"])
    import csv as csv_module
    with path.open(newline="") as handle:
        rows = list(csv_module.reader(handle))
    assert rows == [["user", "n"], ["'" + cell, "-3"], ["alice", "2"]]


def test_cron_weekdays_count_from_sunday_as_cron_does() -> None:
    trigger = cron_trigger("0 6 * * 1")
    fire = trigger.get_next_fire_time(None, T0 - timedelta(days=1))     # T0 is a Monday
    assert fire == T0 + timedelta(hours=6)
    with pytest.raises(ValueError, match="5 fields"):
        ReportConfig(template="weekly", schedule="0 6 * *")


def test_equal_counts_are_ordered_by_label_not_by_first_sighting() -> None:
    counts = Counter(["b", "a", "c", "c"])
    assert by_count(counts) == [("c", 2), ("a", 1), ("b", 1)]
    assert Chart.top("t", counts, limit=2).labels == ["c", "a"]


@pytest.mark.parametrize(("image", "ref"), [
    ({"name": "registry.example.com/team/api", "tag": ["1.4"]},
     "registry.example.com/team/api:1.4"),
    ({"name": "nginx", "tag": ["1.25"], "hash": {"all": ["sha256:ab"]}}, "nginx:1.25@sha256:ab"),
    ({"name": "localhost:5000/app"}, "localhost:5000/app"),
    ({"name": "nginx:1.25", "tag": ["1.25"]}, "nginx:1.25"),
])
def test_a_runtime_image_keeps_its_tag_and_digest(image: dict[str, Any], ref: str) -> None:
    assert image_ref({"container": {"image": image}}) == ref


@pytest.mark.parametrize(("ilm", "said"), [
    (True, "store keeps events 90 days"),
    (False, "store set to keep events 90 days but keeps them until deleted (no index "
            "lifecycle management on the cluster)")])
def test_a_retention_the_cluster_cannot_enforce_is_not_claimed(ilm: bool, said: str) -> None:
    settings = Settings(store=ElasticsearchConfig(hosts=["http://127.0.0.1:1"]))
    assert store_retention(settings, SimpleNamespace(ilm=ilm)) == said  # type: ignore[arg-type]


def test_the_embedded_store_keeps_events_until_deleted(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.sqlite3")
    try:
        assert store_retention(Settings(data_dir=tmp_path), store) == \
            "store keeps events until deleted"
    finally:
        store.close()


def test_time_buckets_adapt_to_the_reports_span() -> None:
    quarter_hour = time_series("t", [T0 + timedelta(minutes=m) for m in (0, 1, 14)], T0,
                               T0 + timedelta(minutes=15))
    assert len(quarter_hour.values) == 15 and sum(quarter_hour.values) == 3   # per minute
    assert len(time_series("t", [], T0, T0 + timedelta(hours=3)).values) == 36   # per 5 min
    assert len(time_series("t", [], T0, T0 + timedelta(days=90)).values) == 13   # per week


def test_bar_labels_are_not_clipped() -> None:
    long = "system:serviceaccount:kube-prometheus-stack:my-kube-prometheus-stack-operator"
    drawing = draw(Chart("c", [long, "alice", None], [3, 2, 1]))   # type: ignore[list-item]
    # The label column is wide enough for what is drawn (right-aligned at label_x - 6).
    assert all(len(bar.shown) * 7.0 <= drawing.label_x - 6 for bar in drawing.bars)
    assert drawing.bars[0].label == long and drawing.bars[0].shown.endswith("…")
    assert [bar.shown for bar in drawing.bars[1:]] == ["alice", "(none)"]
    assert all(bar.x + bar.w + 4 + 7.0 * len(str(bar.value)) <= drawing.width
               for bar in drawing.bars)


def test_no_none_reaches_any_format_and_wide_tables_scroll(tmp_path: Path) -> None:
    report = Report("r", "R", T0, T0 + timedelta(days=1), T0,
                    summary=[("alerts", None)], notes=["n"],
                    sections=[Section("S", text="", charts=[Chart("c", ["a"], [1])], tables=[
                        Table("T", ["user", "namespace"], [[None, "x" * 300]], note="")])])
    for path in render(report, tmp_path, ["html", "md", "csv"]):
        assert "None" not in path.read_text(), path
    html = (tmp_path / f"r-{T0 + timedelta(days=1):%Y%m%dT%H%M}.html").read_text()
    assert '<div class="table-wrap">' in html and "overflow-x: auto" in html
