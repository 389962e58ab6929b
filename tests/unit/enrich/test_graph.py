"""The entity graph: order-independent merges, retention on a simulated clock, persistence on
the local bus across a restart, and the short-id and tag-history lookups."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from ctrail.bus import ENTITIES
from ctrail.bus.local import LocalBus, read_topic_files
from enrich import EnrichConfig
from enrich.attach import resolve
from enrich.graph import DAY_SECS, EntityGraph, Fact
from enrich.persistence import rebuild

T0 = 1_700_000_000
FULL = "3f2a9c1e7b4d" + "ab" * 26


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def facts() -> list[Fact]:
    return [
        Fact("push", "sha256:d1", T0, {"repository": "team/api", "tag": "1.4", "user": "ci",
                                       "ip": "10.0.0.5", "time": T0}),
        Fact("tag", "team/api:1.4", T0, {"history": [(T0, "sha256:d1")]}),
        Fact("workload", "Deployment/shop/api", T0 + 10, {"changes": [(T0 + 10, "alice")]}),
        Fact("workload", "ReplicaSet/shop/api-1", T0 + 11, {"owner": ("Deployment", "api"),
                                                            "changes": [(T0 + 11, "system:rs")]}),
        Fact("pod", "shop/api-1-x", T0 + 12, {"uid": "u1", "owner": ("ReplicaSet", "api-1"),
                                              "images": [("api", "reg.io/team/api:1.4")]}),
        Fact("pod", "shop/api-1-x", T0 + 13, {"node": "node-7"}),
        Fact("container", FULL, T0 + 14, {"id": FULL, "pod": "shop/api-1-x", "name": "api"}),
        Fact("tag", "team/api:1.4", T0 + 3600, {"history": [(T0 + 3600, "sha256:d2")]}),
        Fact("container", FULL, T0 + 7200, {"gone": T0 + 7200}),
    ]


def check_resolves(graph: EntityGraph) -> None:
    identity = resolve(graph, container_id=FULL[:12])
    assert identity is not None
    assert (identity.container_id, identity.pod_name, identity.namespace, identity.node) == (
        FULL, "api-1-x", "shop", "node-7")
    assert (identity.workload_kind, identity.workload_name) == ("Deployment", "api")
    assert (identity.digest, identity.deployed_by, identity.pushed_by) == (
        "sha256:d1", "alice", "ci")
    assert (identity.first_seen, identity.gone) == (T0 + 12, T0 + 7200)


def test_facts_merge_to_the_same_graph_in_any_order() -> None:
    forward, backward = EntityGraph(), EntityGraph()
    for fact in facts():
        forward.apply(fact)
    for fact in reversed(facts()):
        backward.apply(fact)
    check_resolves(forward)
    check_resolves(backward)


def test_a_short_id_learned_first_merges_into_the_full_one() -> None:
    graph = EntityGraph()
    graph.apply(Fact("container", FULL[:12], T0, {"id": FULL[:12]}))
    graph.apply(Fact("container", FULL, T0 + 1, {"id": FULL, "pod": "shop/p"}))
    graph.apply(Fact("container", FULL[:12], T0 + 2, {"id": FULL[:12]}))
    found = graph.container(FULL[:12])
    assert found is not None and (found.id, found.pod, found.first) == (FULL, "shop/p", T0)
    assert graph.container(FULL[:12] + "ff" * 26) is None     # same prefix, other container


def test_a_later_push_of_the_same_digest_does_not_change_who_pushed_it() -> None:
    graph = EntityGraph()
    graph.apply(Fact("push", "sha256:d", T0 + 5, {"user": "mallory", "time": T0 + 5}))
    graph.apply(Fact("push", "sha256:d", T0, {"user": "ci", "time": T0}))
    graph.apply(Fact("push", "sha256:d", T0 + 9, {"user": "eve", "time": T0 + 9}))
    push = graph.push("sha256:d")
    assert push is not None and (push.user, push.time) == ("ci", T0)


def test_retention_expires_30_days_of_event_time_after_the_container_is_gone() -> None:
    clock = Clock(T0 + 7 * DAY_SECS)
    graph = EntityGraph(retention_days=30, clock=clock)
    for fact in facts():
        graph.apply(fact)
    assert graph.expire() == 0
    check_resolves(graph)                                  # a simulated week later
    clock.now = T0 + 7200 + 30 * DAY_SECS + 1
    assert graph.expire() == 0                             # no event has moved time on
    check_resolves(graph)
    later = T0 + 7200 + 30 * DAY_SECS + 1
    graph.apply(Fact("container", "c0ffee" * 10 + "abcd", later, {"id": "c0ffee" * 10 + "abcd"}))
    graph.expire()
    assert graph.container(FULL) is None and graph.pod("shop", "api-1-x") is None
    assert graph.workload("Deployment", "shop", "api") is None and len(graph) == 1


def test_a_forensic_import_of_last_quarter_resolves_as_it_is_read() -> None:
    # Today's wall clock; events from 90 days ago: the graph keeps what they teach.
    graph = EntityGraph(retention_days=30, clock=Clock(T0 + 90 * DAY_SECS))
    for fact in facts():
        graph.apply(fact)
    assert graph.expire() == 0
    check_resolves(graph)


def test_an_event_from_the_far_future_does_not_make_the_present_expire() -> None:
    graph = EntityGraph(retention_days=30, clock=Clock(T0 + 7200))
    for fact in facts():
        graph.apply(fact)
    graph.apply(Fact("container", "bad" * 20 + "abcd", T0 + 365 * DAY_SECS, {}))  # skewed clock
    graph.expire()
    check_resolves(graph)


def test_a_live_container_keeps_its_pod_workload_and_push() -> None:
    graph = EntityGraph(retention_days=30, clock=Clock(T0 + 40 * DAY_SECS))
    for fact in facts()[:-1]:
        graph.apply(fact)
    graph.apply(Fact("container", FULL, T0 + 39 * DAY_SECS, {"id": FULL}))
    graph.expire()
    identity = resolve(graph, container_id=FULL)
    assert identity is not None and identity.deployed_by == "alice"
    assert identity.pushed_by == "ci"


def test_the_tag_resolves_to_the_digest_of_the_deploy_time() -> None:
    graph = EntityGraph()
    for fact in facts():
        graph.apply(fact)
    assert graph.digest_at("team/api", "1.4", T0 + 100) == "sha256:d1"
    assert graph.digest_at("team/api", "1.4", T0 + 4000) == "sha256:d2"
    assert graph.digest_at("team/api", "1.4", T0 - 100) == "sha256:d1"


def test_the_graph_survives_a_restart_through_the_entities_topic(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path / "bus")
    enricher = EnrichConfig().build(bus, clock=Clock(T0))
    for fact in facts():
        enricher.graph.apply(fact)
    enricher.end_batch()
    enricher.close()
    bus.close()
    # Compaction keeps one state per entity, the latest: the restore needs no more.
    restarted_bus = LocalBus(tmp_path / "bus")
    week_later = EnrichConfig().build(restarted_bus, clock=Clock(T0 + 7 * DAY_SECS))
    check_resolves(week_later.graph)
    week_later.close()
    restarted_bus.close()
    read_only = EntityGraph()                   # what `ctrail timeline` does beside `ctrail run`
    assert rebuild(read_only, read_topic_files(tmp_path / "bus" / ENTITIES)) == 6      # one state per entity
    check_resolves(read_only)
    assert (tmp_path / "bus" / ENTITIES).is_dir()


def test_lookups_touching_only_last_seen_are_not_rewritten_every_event() -> None:
    graph = EntityGraph()
    graph.apply(Fact("container", FULL, T0, {"id": FULL}))
    list(graph.take_dirty())
    graph.apply(Fact("container", FULL, T0 + 5, {"id": FULL}))
    assert list(graph.take_dirty()) == []
    graph.apply(Fact("container", FULL, T0 + 120, {"id": FULL}))
    assert [key for _kind, key, _state in graph.take_dirty()] == [FULL[:12]]


def test_an_enriched_event_carries_the_timestamps_as_datetimes() -> None:
    graph = EntityGraph()
    for fact in facts():
        graph.apply(fact)
    identity = resolve(graph, container_id=FULL)
    assert identity is not None
    assert identity.as_dict()["first_seen"] == datetime.fromtimestamp(
        T0 + 12, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")     # the fixed-width form
    assert timedelta(seconds=identity.last_seen - identity.first_seen) > timedelta(hours=1)
