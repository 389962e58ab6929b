"""The entity graph's live source against an HTTP server that speaks the Kubernetes API's list
and watch protocol as documented (https://kubernetes.io/docs/reference/using-api/api-concepts/:
paginated LIST with `limit`/`continue`, WATCH as a stream of JSON lines from a
resourceVersion, bookmarks, 410 Gone as an ERROR event) and checks the bearer token of every
request; no Kubernetes API server can run on this machine. The real client (the official
`kubernetes` package) does the talking, configured from a kubeconfig file."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlparse

import orjson
import pytest

from ctrail.errors import ConfigError
from ctrail.event import Event
from enrich import EnrichConfig, GraphEnricher
from enrich.kube_api import KubeApiConfig
from tests.waiting import wait_for

TOKEN = "kube-token-never-logged-7f3a"
CONTAINER = "3f2a9c1e7b4d" + "5e" * 26
DIGEST = "sha256:" + "d1" * 32
PAGE_SIZE = 2                     # the server pages at 2 objects, whatever `limit` asks


def pod(name: str, version: int, container_id: str | None = None,
        node: str = "node-7") -> dict[str, Any]:
    statuses = [{
        "name": "api", "image": "registry.example.com/team/api:1.4",
        "imageID": f"docker-pullable://registry.example.com/team/api@{DIGEST}",
        "containerID": f"containerd://{container_id}", "ready": True, "restartCount": 0,
        "started": True, "state": {"running": {"startedAt": "2026-11-18T09:00:03Z"}},
    }] if container_id else []
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}",
                     "resourceVersion": str(version),
                     "creationTimestamp": "2026-11-18T09:00:00Z",
                     "labels": {"app": "api", "pod-template-hash": "7d4b9c8f6"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                          "name": "api-7d4b9c8f6", "uid": "rs-uid",
                                          "controller": True, "blockOwnerDeletion": True}]},
        "spec": {"nodeName": node, "containers": [
            {"name": "api", "image": "registry.example.com/team/api:1.4"}]},
        "status": {"phase": "Running" if container_id else "Pending",
                   "containerStatuses": statuses},
    }


def workload(kind: str, name: str, version: int, owner: tuple[str, str] | None = None
             ) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "shop", "uid": f"uid-{name}",
                            "resourceVersion": str(version)}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0],
                                    "name": owner[1], "uid": "x", "controller": True}]
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": meta, "spec": {}}


class FakeResource:
    """One resource's objects and its change log, as the API server keeps them."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = {o["metadata"]["name"]: o for o in objects}
        self.version = max([int(o["metadata"]["resourceVersion"]) for o in objects] or [1])
        self.changes: list[tuple[int, str, dict[str, Any]]] = []
        self.oldest_kept = 0                # versions below this answer 410 Gone
        self.changed = threading.Condition()

    def change(self, kind: str, obj: dict[str, Any]) -> None:
        with self.changed:
            self.version += 1
            obj["metadata"]["resourceVersion"] = str(self.version)
            if kind == "DELETED":
                self.objects.pop(obj["metadata"]["name"], None)
            else:
                self.objects[obj["metadata"]["name"]] = obj
            self.changes.append((self.version, kind, obj))
            self.changed.notify_all()


class KubeApi(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, resources: dict[str, FakeResource]) -> None:
        super().__init__(("127.0.0.1", 0), KubeApiHandler)
        self.resources = resources
        self.requests: list[str] = []
        self.watches = 0


class KubeApiHandler(BaseHTTPRequestHandler):
    server: KubeApi

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.server.requests.append(self.path)
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._json(401, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                    "message": "Unauthorized", "reason": "Unauthorized",
                                    "code": 401})
        assert "application/json" in self.headers.get("Accept", "")
        resource = self.server.resources.get(url.path.rsplit("/", 1)[-1])
        if resource is None:
            return self._json(404, {"kind": "Status", "code": 404})
        if query.get("watch") == "true":
            return self._watch(resource, query)
        return self._list(resource, query)

    def _list(self, resource: FakeResource, query: dict[str, str]) -> None:
        assert int(query["limit"]) > 0
        names = sorted(resource.objects)
        start = int(query.get("continue", 0))
        page = names[start:start + PAGE_SIZE]
        more = start + PAGE_SIZE < len(names)
        self._json(200, {"kind": "List", "apiVersion": "v1",
                         "metadata": {"resourceVersion": str(resource.version),
                                      **({"continue": str(start + PAGE_SIZE)} if more else {})},
                         "items": [resource.objects[n] for n in page]})

    def _watch(self, resource: FakeResource, query: dict[str, str]) -> None:
        self.server.watches += 1
        assert query.get("allowWatchBookmarks") == "true"
        since = int(query.get("resourceVersion") or 0)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if since < resource.oldest_kept:
            self._chunk({"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
                "reason": "Expired", "message": f"too old resource version: {since}"}})
            return self._end()
        deadline = time.monotonic() + min(float(query.get("timeoutSeconds", 5)), 5)
        while time.monotonic() < deadline:
            with resource.changed:
                pending = [c for c in resource.changes if c[0] > since]
                if not pending:
                    resource.changed.wait(0.2)
                    continue
            for version, kind, obj in pending:
                self._chunk({"type": kind, "object": obj})
                since = version
        self._chunk({"type": "BOOKMARK", "object": {
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"resourceVersion": str(since)}}})
        self._end()

    def _chunk(self, doc: dict[str, Any]) -> None:
        body = orjson.dumps(doc) + b"\n"
        self.wfile.write(f"{len(body):x}\r\n".encode() + body + b"\r\n")
        self.wfile.flush()

    def _end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _json(self, status: int, doc: dict[str, Any]) -> None:
        body = orjson.dumps(doc)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def api() -> Iterator[KubeApi]:
    server = KubeApi({
        "pods": FakeResource([pod("api-7d4b9c8f6-x2x9q", 10, CONTAINER),
                              pod("worker-1", 11), pod("worker-2", 12)]),
        "replicasets": FakeResource([workload("ReplicaSet", "api-7d4b9c8f6", 5,
                                              owner=("Deployment", "api"))]),
        "deployments": FakeResource([workload("Deployment", "api", 4)]),
        "jobs": FakeResource([]), "cronjobs": FakeResource([])})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def kubeconfig(tmp_path: Path, server: KubeApi, token: str = TOKEN) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: http://127.0.0.1:{server.server_address[1]}
users:
- name: auditor
  user:
    token: {token}
contexts:
- name: test
  context: {{cluster: test, user: auditor}}
current-context: test
""")
    return path


def enricher_for(path: Path) -> GraphEnricher:
    config = EnrichConfig(kubernetes_api=KubeApiConfig(kubeconfig=path, watch_timeout_secs=2))
    return config.build()


def falco_alert(container_id: str) -> Event:
    """A Falco alert as parsed: the 12-character container id is all it says."""
    now = datetime.now(timezone.utc)
    return Event.model_validate({
        "@timestamp": now, "message": "Terminal shell in container",
        "event": {"id": f"falco-{container_id}", "action": "Terminal shell in container",
                  "dataset": "falco", "module": "falco", "ingested": now,
                  "original": orjson.dumps({"output_fields": {"container.id": container_id}}
                                           ).decode()},
        "container": {"id": container_id}})



def resolved(enricher: GraphEnricher, container_id: str) -> Event:
    enricher.begin_batch()
    return enricher.enrich(falco_alert(container_id[:12]))


def test_pods_running_before_we_started_resolve_a_falco_short_id(api: KubeApi,
                                                                  tmp_path: Path) -> None:
    enricher = enricher_for(kubeconfig(tmp_path, api))
    try:
        assert enricher.watcher is not None
        for listed in enricher.watcher.listed.values():
            assert listed.wait(20)
        event = resolved(enricher, CONTAINER)
    finally:
        enricher.close()
    assert event.container is not None and event.container.id == CONTAINER
    assert event.kubernetes is not None and event.kubernetes.pod is not None
    assert (event.kubernetes.namespace, event.kubernetes.pod.name, event.kubernetes.pod.uid,
            event.kubernetes.node.name if event.kubernetes.node else None) == (
        "shop", "api-7d4b9c8f6-x2x9q", "uid-api-7d4b9c8f6-x2x9q", "node-7")
    assert event.container.image is not None and event.container.image.hash is not None
    assert event.container.image.hash.all == (DIGEST,)
    assert event.containertrail is not None and event.containertrail.workload is not None
    assert (event.containertrail.workload.kind, event.containertrail.workload.name) == (
        "Deployment", "api")
    # Three pods at two a page: the LIST followed `continue`.
    assert sum("/api/v1/pods?" in r and "watch" not in r for r in api.requests) == 2


def test_watched_changes_reach_the_graph_and_a_deleted_pod_is_gone(api: KubeApi,
                                                                   tmp_path: Path) -> None:
    enricher = enricher_for(kubeconfig(tmp_path, api))
    pods = api.resources["pods"]
    new_container = "9a8b7c6d5e4f" + "77" * 26
    try:
        assert enricher.watcher is not None and enricher.watcher.listed["pods"].wait(20)
        pods.change("ADDED", pod("api-7d4b9c8f6-k3k3k", 0))            # scheduled, pending
        pods.change("MODIFIED", pod("api-7d4b9c8f6-k3k3k", 0, new_container, node="node-9"))
        wait_for(lambda: (resolved(enricher, new_container).kubernetes or
                            None) is not None)
        event = resolved(enricher, new_container)
        assert event.kubernetes is not None and event.kubernetes.node is not None
        assert event.kubernetes.node.name == "node-9"
        pods.change("DELETED", pod("api-7d4b9c8f6-k3k3k", 0, new_container, node="node-9"))
        wait_for(lambda: (enricher.begin_batch() or enricher.graph.pod(
            "shop", "api-7d4b9c8f6-k3k3k").gone) is not None)  # type: ignore[union-attr]
    finally:
        enricher.close()


def test_a_watch_too_old_for_the_server_lists_again_and_learns_the_deletions(api: KubeApi, tmp_path: Path) -> None:
    enricher = enricher_for(kubeconfig(tmp_path, api))
    pods = api.resources["pods"]
    late_container = "0c0c0c0c0c0c" + "42" * 26
    try:
        assert enricher.watcher is not None and enricher.watcher.listed["pods"].wait(20)
        lists_before = sum("watch" not in r and "/pods?" in r for r in api.requests)
        # The server forgets its history (etcd compaction) while a pod starts and another is
        # deleted: only a new LIST can tell, the deletion by what it no longer holds.
        with pods.changed:
            pods.objects["late"] = pod("late", pods.version + 1, late_container)
            del pods.objects["worker-1"]
            pods.version += 1
            pods.oldest_kept = pods.version + 1
        wait_for(lambda: sum("watch" not in r and "/pods?" in r
                               for r in api.requests) > lists_before)
        wait_for(lambda: (resolved(enricher, late_container).kubernetes or None) is not None)
        wait_for(lambda: (enricher.begin_batch() or enricher.graph.pod(
            "shop", "worker-1").gone) is not None)  # type: ignore[union-attr]
        assert enricher.graph.pod("shop", "worker-2").gone is None  # type: ignore[union-attr]
    finally:
        enricher.close()


def test_a_refused_token_is_retried_and_never_logged(api: KubeApi, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    enricher = enricher_for(kubeconfig(tmp_path, api, token="wrong-token-also-secret"))
    try:
        wait_for(lambda: sum("/api/v1/pods" in r for r in api.requests) >= 2)
        assert enricher.watcher is not None and not enricher.watcher.listed["pods"].is_set()
        assert any("Kubernetes API request failed" in r.getMessage() for r in caplog.records)
    finally:
        enricher.close()
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "wrong-token-also-secret" not in logged and TOKEN not in logged


def test_without_a_kubeconfig_nothing_is_watched_and_a_bad_one_is_a_config_error(
        tmp_path: Path) -> None:
    enricher = EnrichConfig().build()
    assert enricher.watcher is None
    with pytest.raises(ValueError, match="unknown resources"):
        KubeApiConfig(in_cluster=True, resources=("pods", "secrets"))
    missing = tmp_path / "no-such-kubeconfig"
    with pytest.raises(ConfigError, match=f"cannot use {missing}: Invalid kube-config file"):
        enricher_for(missing)


def test_facts_from_the_api_are_persisted_while_no_event_flows(api: KubeApi,
                                                                tmp_path: Path) -> None:
    """The process stage, idle (no event in ctrail.raw), still applies and persists what the API
    told, so `ctrail timeline` (which reads ctrail.entities) knows the pod at once."""
    from ctrail.bus import ENTITIES
    from ctrail.runtime.pipeline import Pipeline
    from ctrail.settings import Settings
    from enrich.graph import EntityGraph
    from enrich.persistence import rebuild

    settings = Settings(data_dir=tmp_path / "data", enrich={"kubernetes_api": {
        "kubeconfig": str(kubeconfig(tmp_path, api)), "watch_timeout_secs": 2}})
    pipeline = Pipeline(settings, ["process"])
    try:
        (worker,) = pipeline.workers
        # The chain's first batch is its own rules-change audit record; after it, nothing waits.
        assert worker.run_once(timeout_secs=0) == 1

        def persisted() -> bool:
            assert worker.run_once(timeout_secs=0) == 0           # idle: nothing consumed
            graph = EntityGraph()
            rebuild(graph, settings.bus.read_topic(settings.data_dir, ENTITIES, "test", 1.0))
            return graph.container(CONTAINER[:12]) is not None
        wait_for(persisted)
    finally:
        pipeline.close()
