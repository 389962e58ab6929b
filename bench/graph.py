"""bench/graph: the entity graph with one million containers tracked.

Usage: .venv/bin/python bench/graph.py [--containers N] [--events N]

Reports, from one run:
- bytes per container (tracemalloc; each container has its own pod, 1 000 Deployments with
  their ReplicaSets, 200 images with pushes and tag history: a large cluster's month);
- lookups per second: a container by its 12-character id (Falco's), and a full `resolve`
  (container -> pod -> workload -> deployer, tag -> digest -> pusher);
- enrichment cost per event: Docker events parsed, beside parsed + enriched (learn + attach)
  against that graph, and the ratio of the two (these machines are noisy; ratios less so).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.parsers.docker_event import DockerEventParser  # noqa: E402
from ctrail.components import RawRecord  # noqa: E402
from enrich import EnrichConfig  # noqa: E402
from enrich.attach import resolve  # noqa: E402
from enrich.graph import EntityGraph, Fact  # noqa: E402

T0 = 1_760_000_000
DEPLOYMENTS = 1000
IMAGES = 200


def container_id(i: int) -> str:
    return f"{i:016x}" * 4


def facts_for(i: int) -> list[Fact]:
    cid, d, image = container_id(i), i % DEPLOYMENTS, i % IMAGES
    pod = f"ns-{d % 50}/api-{d}-7d4b9c8f6-{i:06x}"
    seen = T0 + i
    return [
        Fact("pod", pod, seen, {"uid": f"{i:08x}-4a5b-4c6d-8e9f-0a1b2c3d4e5f",
                                "owner": ("ReplicaSet", f"api-{d}-7d4b9c8f6"),
                                "creator": "system:serviceaccount:kube-system:replicaset-controller",
                                "images": [("api", f"reg.example.com/team/app-{image}:1.4")]}),
        Fact("pod", pod, seen + 1, {"node": f"node-{i % 300}"}),
        Fact("container", cid, seen + 2, {"id": cid, "pod": pod, "name": "api",
                                          "image": f"reg.example.com/team/app-{image}:1.4"}),
    ]


def shared_facts() -> list[Fact]:
    out = []
    for d in range(DEPLOYMENTS):
        ns = f"ns-{d % 50}"
        out.append(Fact("workload", f"Deployment/{ns}/api-{d}", T0, {"changes": [(T0, f"dev-{d % 40}")]}))
        out.append(Fact("workload", f"ReplicaSet/{ns}/api-{d}-7d4b9c8f6", T0, {
            "owner": ("Deployment", f"api-{d}"), "changes": [(T0, "system:deployment-controller")]}))
    for m in range(IMAGES):
        digest = "sha256:" + f"{m:064x}"
        out.append(Fact("push", digest, T0 - 60, {"repository": f"team/app-{m}", "tag": "1.4",
                                                  "user": "ci-bot", "ip": "10.0.0.5",
                                                  "time": T0 - 60}))
        out.append(Fact("tag", f"team/app-{m}:1.4", T0 - 60, {"history": [(T0 - 60, digest)]}))
    return out


def build(graph: EntityGraph, count: int) -> None:
    for fact in shared_facts():
        graph.apply(fact)
    for i in range(count):
        for fact in facts_for(i):
            graph.apply(fact)
    graph.dirty.clear()


def memory(count: int) -> float:
    gc.collect()
    tracemalloc.start()
    graph = EntityGraph(clock=lambda: T0 + count)
    build(graph, count)
    gc.collect()
    used, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del graph
    return used / count


def rate(func, keys: list[str]) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for key in keys:
        func(key)
    return len(keys) / (time.perf_counter() - start)


def docker_lines(count: int, containers: int) -> list[bytes]:
    lines = []
    for n in range(count):
        i = (n * 7919) % containers
        d = i % DEPLOYMENTS
        attributes = {"image": f"reg.example.com/team/app-{i % IMAGES}:1.4",
                      "name": f"k8s_api_api-{d}_ns_{i:08x}_0", "io.kubernetes.container.name": "api",
                      "io.kubernetes.pod.name": f"api-{d}-7d4b9c8f6-{i:06x}",
                      "io.kubernetes.pod.namespace": f"ns-{d % 50}"}
        lines.append(json.dumps({"Type": "container", "Action": "exec_start: sh -c id",
                                 "Actor": {"ID": container_id(i), "Attributes": attributes},
                                 "scope": "local", "timeNano": (T0 + containers + n) * 10**9}
                                ).encode())
    return lines


def enrichment(count: int, containers: int) -> dict[str, float]:
    lines = docker_lines(count, containers)
    parser, now = DockerEventParser(), datetime.now(timezone.utc)
    records = [RawRecord(line, f"bench:{n}", now) for n, line in enumerate(lines)]
    start = time.perf_counter()
    events = [e for record in records for e in parser.parse(record)]
    parse_secs = time.perf_counter() - start
    enricher = EnrichConfig().build(clock=lambda: T0 + containers)
    build(enricher.graph, containers)
    # A million long-lived records make every full GC pass walk them; a rebuilt graph is
    # long-lived by nature, so take it out of the collector's scans (as a service would).
    gc.freeze()
    start = time.perf_counter()
    for record in records:
        for event in parser.parse(record):
            enricher.enrich(event)
    both_secs = time.perf_counter() - start
    assert len(events) == count
    return {"parse_per_s": count / parse_secs, "parse_enrich_per_s": count / both_secs,
            "enrich_us_per_event": (both_secs - parse_secs) / count * 1e6,
            "ratio_parse_enrich_over_parse": both_secs / parse_secs}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--containers", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    bytes_per = memory(args.containers)
    graph = EntityGraph(clock=lambda: T0 + args.containers)
    build(graph, args.containers)
    keys = [container_id((n * 7919) % args.containers)[:12] for n in range(200_000)]
    results = {
        "containers": args.containers, "bytes_per_container": round(bytes_per),
        "short_id_lookups_per_s": round(rate(graph.container, keys)),
        "resolves_per_s": round(rate(lambda k, g=graph: resolve(g, container_id=k), keys)),
    }
    del graph
    gc.collect()
    results.update({k: round(v, 2) for k, v in enrichment(args.events, args.containers).items()})
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
