"""The entity graph's live source: list and watch the Kubernetes API (pods and workloads).

Optional: used when `enrich.kubernetes_api` names a kubeconfig or asks for the in-cluster
service account. The audit log tells who did what; the API tells what exists now, including
pods created before ContainerTrail started and the container ids of `status.containerStatuses`
as the kubelet reports them, so a Falco alert's short id resolves even when no audit event
carried the pod's status.

Each resource is followed the way client-go's reflector does it: a paginated LIST gives the
state and a resourceVersion, a WATCH from there (with bookmarks) gives the changes; a watch
that ends is resumed from the last resourceVersion, one refused with 410 Gone (the version is
older than the API server keeps) starts over with a LIST. Connection failures back off
(1 s doubling to 30 s). Objects are read as JSON, not turned into the client's model classes:
only a few fields are needed, and the watch volume can be high.

Credentials are the official client's (kubeconfig: token, client certificate, exec plugin;
or the in-cluster service account); nothing of them is logged.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Final, Iterator

import orjson
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from ctrail.errors import ConfigError
from enrich.graph import Fact
from enrich.learn import from_api_object

log = logging.getLogger(__name__)

# resource -> its cluster-wide list path (core group under /api, the others under /apis)
PATHS: Final[dict[str, str]] = {
    "pods": "/api/v1/pods",
    "replicasets": "/apis/apps/v1/replicasets",
    "deployments": "/apis/apps/v1/deployments",
    "statefulsets": "/apis/apps/v1/statefulsets",
    "daemonsets": "/apis/apps/v1/daemonsets",
    "jobs": "/apis/batch/v1/jobs",
    "cronjobs": "/apis/batch/v1/cronjobs",
}
PAGE: Final = 500                       # objects per LIST request, as client-go's default
MAX_BACKOFF_SECS: Final = 30.0
Sink = Callable[[list[Fact]], None]


class KubeApiConfig(BaseModel):
    """Where the Kubernetes API is and how to reach it; off unless one of the two is given."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kubeconfig: Path | None = Field(
        None, description="A kubeconfig file (its current context, or `context`).")
    context: str | None = Field(None, description="The kubeconfig context to use.")
    in_cluster: bool = Field(
        False, description="Use the pod's service account (KUBERNETES_SERVICE_HOST and "
                           "/var/run/secrets/kubernetes.io/serviceaccount).")
    resources: tuple[str, ...] = Field(
        ("pods", "replicasets", "deployments", "jobs", "cronjobs"),
        description=f"What to list and watch, of: {', '.join(PATHS)}.")
    watch_timeout_secs: PositiveInt = Field(
        300, description="How long one WATCH request lasts before it is resumed.")

    @model_validator(mode="after")
    def _known(self) -> "KubeApiConfig":
        unknown = sorted(set(self.resources) - set(PATHS))
        if unknown:
            raise ValueError(f"unknown resources {unknown}; known: {sorted(PATHS)}")
        if self.kubeconfig is not None and self.in_cluster:
            raise ValueError("give kubeconfig or in_cluster, not both")
        return self

    @property
    def enabled(self) -> bool:
        return self.kubeconfig is not None or self.in_cluster


def api_client(config: KubeApiConfig) -> Any:
    """The official client's ApiClient, configured from the kubeconfig or the pod's account."""
    try:
        from kubernetes import client, config as kube_config
    except ImportError:
        raise ConfigError("enrich.kubernetes_api needs the kubernetes package: "
                          "pip install 'containertrail[kubernetes]'") from None
    configuration = client.Configuration()
    try:
        if config.in_cluster:
            kube_config.load_incluster_config(client_configuration=configuration)
        else:
            kube_config.load_kube_config(config_file=str(config.kubeconfig),
                                         context=config.context,
                                         client_configuration=configuration)
    except (kube_config.ConfigException, OSError) as exc:
        where = "in-cluster credentials" if config.in_cluster else str(config.kubeconfig)
        raise ConfigError(f"enrich.kubernetes_api: cannot use {where}: "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                          ) from None
    return client.ApiClient(configuration)


class Gone(Exception):
    """410: the resourceVersion is older than the API server keeps; LIST again."""


class KubeWatcher:
    """One thread per resource, each LISTing then WATCHing; facts go to `sink` (called from
    those threads: the sink must be thread-safe, e.g. a queue the enrich stage drains)."""

    def __init__(self, config: KubeApiConfig, sink: Sink,
                 clock: Callable[[], float] = time.time) -> None:
        self.config, self.sink, self.clock = config, sink, clock
        self.client = api_client(config)
        self.stopping = threading.Event()
        self.listed = {resource: threading.Event() for resource in config.resources}
        self._responses: dict[str, Any] = {}
        # (namespace, name) of the objects each resource has now, as far as we know: a LIST
        # again (after a 410, or a restart of the watch) tells what was deleted meanwhile.
        self._known: dict[str, set[tuple[str, str]]] = {r: set() for r in config.resources}
        self._threads = [threading.Thread(target=self._follow, args=(resource,),
                                          name=f"kube-watch-{resource}", daemon=True)
                         for resource in config.resources]

    def start(self) -> "KubeWatcher":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        for response in list(self._responses.values()):
            response.close()                # ends a WATCH blocked on a quiet stream
        for thread in self._threads:
            thread.join(timeout=10)
        self.client.close()

    # ── one resource ─────────────────────────────────────────────────────────────────────

    def _follow(self, resource: str) -> None:
        version: str | None = None
        pause = 1.0
        while not self.stopping.is_set():
            try:
                if version is None:
                    version = self._list(resource)
                    self.listed[resource].set()
                version = self._watch(resource, version)
                pause = 1.0
            except Gone:
                log.info("Kubernetes watch expired; listing again.", extra={"resource": resource})
                version = None
            except Exception as exc:        # the API may be down for a while: keep trying
                if self.stopping.is_set():
                    return
                log.warning("Kubernetes API request failed; retrying.",
                            extra={"resource": resource, "error": _one_line(exc),
                                   "retry_secs": pause})
                self.stopping.wait(pause)
                pause = min(pause * 2, MAX_BACKOFF_SECS)

    def _list(self, resource: str) -> str:
        """All objects, page by page; returns the list's resourceVersion. Objects known
        before and missing from the list were deleted while no watch ran: they are gone, as
        client-go's reflector replaces its store."""
        token, listed = None, set[tuple[str, str]]()
        while True:
            query = [("limit", PAGE)] + ([("continue", token)] if token else [])
            response = self._get(resource, query, read_timeout=60)
            try:
                page = orjson.loads(response.data)
            finally:
                response.release_conn()
            items = page.get("items") or []
            self._emit(resource, "ADDED", items)
            listed.update(filter(None, map(_name_of, items)))
            metadata = page.get("metadata") or {}
            token = metadata.get("continue")
            if not token:
                break
        deleted = self._known[resource] - listed
        self._emit(resource, "DELETED", [{"metadata": {"namespace": namespace, "name": name}}
                                         for namespace, name in sorted(deleted)])
        self._known[resource] = listed
        log.info("Listed from the Kubernetes API.", extra={
            "resource": resource, "objects": len(listed), "deleted_meanwhile": len(deleted)})
        return str(metadata.get("resourceVersion") or "")

    def _watch(self, resource: str, version: str) -> str:
        """Changes from `version` until the server ends the request; the last version seen."""
        timeout = self.config.watch_timeout_secs
        query = [("watch", "true"), ("allowWatchBookmarks", "true"),
                 ("timeoutSeconds", timeout)] + ([("resourceVersion", version)] if version else [])
        response = self._get(resource, query, read_timeout=timeout + 30)
        self._responses[resource] = response
        try:
            for line in _lines(response):
                change = orjson.loads(line)
                kind, obj = change.get("type"), change.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone()
                    raise RuntimeError(f"watch error {obj.get('code')}: {obj.get('message')}")
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._emit(resource, kind, [obj])
                    name = _name_of(obj)
                    if name is not None:
                        (self._known[resource].discard if kind == "DELETED"
                         else self._known[resource].add)(name)
        finally:
            self._responses.pop(resource, None)
            response.release_conn()
        return version

    def _get(self, resource: str, query: list[tuple[str, Any]], read_timeout: float) -> Any:
        """The open urllib3 response of one GET (its body not read yet: a watch streams)."""
        method, url, headers, _body, _post = self.client.param_serialize(
            "GET", PATHS[resource], query_params=query,
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
        answer = self.client.call_api(method, url, header_params=headers,
                                      _request_timeout=(10, read_timeout))
        if answer.status == 410:
            answer.response.release_conn()
            raise Gone()
        if answer.status >= 400:
            answer.response.release_conn()
            raise RuntimeError(f"{PATHS[resource]} answered {answer.status} {answer.reason}")
        return answer.response

    def _emit(self, resource: str, change: str, objects: list[dict[str, Any]]) -> None:
        seen = int(self.clock())
        facts = [fact for obj in objects for fact in from_api_object(resource, change, obj, seen)]
        if facts:
            self.sink(facts)


def _name_of(obj: dict[str, Any]) -> tuple[str, str] | None:
    meta = obj.get("metadata") or {}
    namespace, name = meta.get("namespace"), meta.get("name")
    return (namespace, name) if namespace and name else None


def _lines(response: Any) -> Iterator[bytes]:
    """The watch stream's JSON lines (one change each), however the chunks fall."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=True):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from (line for line in lines if line.strip())
    if pending.strip():
        yield pending


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
