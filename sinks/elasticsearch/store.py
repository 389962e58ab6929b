"""ElasticsearchStore: the store of distributed mode, answering the same searches as sinks/sqlite.

Writes go to data streams (see bulk.py for how replays stay single); searches translate the query
tree with the fields' mapped types (search.py). Safe to share between threads: the client is.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any, Final, Iterator, Sequence

from elastic_transport import ConnectionError, TransportError
from elasticsearch import ApiError, Elasticsearch

from ctrail.bus.codec import Item
from ctrail.components import WriteResult
from ctrail.errors import QueryError, Unavailable
from ctrail.query import Query, as_query
from ctrail.secrets import resolve_secret
from sinks.elasticsearch import bulk, templates
from sinks.elasticsearch.backing import BackingIndices
from sinks.elasticsearch.config import ElasticsearchConfig
from sinks.elasticsearch.search import FieldTypes, fields_of, index_of, lucene_dsl, to_dsl

log = logging.getLogger(__name__)
PAGE: Final = 10_000                    # index.max_result_window: the most one request returns
# Ties on @timestamp are broken by id, so pages never skip or repeat a document.
TIEBREAK: Final = {"events": "event.id", "alerts": "event.id", "dead_letters": "id",
                   "dead_letter_replays": "id"}
NO_INDEX_FAILS: Final[dict[str, Any]] = {"ignore_unavailable": True, "allow_no_indices": True}
# A read answered 429, 503 or "shards not ready" is retried this long: a data stream's new backing index answers
# 503 no_shard_available until its primary starts (milliseconds to seconds, longer after a
# restart), and a search is safe to repeat. Past it, the caller gets Unavailable.
READ_RETRY_SECS: Final = 20.0
# Shards not ready yet: a new index's primary not started, or a shard still recovering after a
# restart (that one answers 404, not 503).
SHARDS_STARTING: Final = frozenset({"no_shard_available_action_exception",
                                    "illegal_index_shard_state_exception",
                                    "unavailable_shards_exception"})


def connect(config: ElasticsearchConfig) -> Elasticsearch:
    auth: dict[str, Any] = {}
    if config.api_key is not None:
        auth["api_key"] = resolve_secret(config.api_key).get_secret_value()
    elif config.username is not None and config.password is not None:
        auth["basic_auth"] = (config.username, resolve_secret(config.password).get_secret_value())
    if config.ca_file is not None:
        auth["ca_certs"] = str(config.ca_file)
    # retry_on_status=(): a whole request refused with 429/503 is not resent blindly; the
    # stage that wrote (process for events, store for alerts and dead letters) backs off and
    # redelivers the batch, which replays nothing twice.
    return Elasticsearch(config.hosts, request_timeout=config.request_timeout_secs,
                         max_retries=config.max_retries, retry_on_timeout=True,
                         retry_on_status=(), **auth)


class ElasticsearchStore:
    def __init__(self, config: ElasticsearchConfig) -> None:
        self.config = config
        self.namespace = config.namespace
        self.client = connect(config)
        try:
            self.ilm = templates.install(self.client, config)
        except (ApiError, TransportError) as exc:
            self.client.close()
            raise Unavailable(f"cannot install templates in Elasticsearch {config.hosts}: "
                              f"{_one_line(exc)}") from exc
        self.indices = BackingIndices(self.client)

    # ── the sink side ────────────────────────────────────────────────────────────────────────

    def write(self, items: Sequence[Item]) -> WriteResult:
        return bulk.write(self.client, self.indices, self.namespace, items,
                          self.config.refresh_on_write, self.config.concurrent_requests)

    def check(self) -> None:
        try:
            self.client.cluster.health()
            missing = templates.missing(self.client, self.namespace)
        except (ApiError, TransportError) as exc:
            raise Unavailable(f"Elasticsearch {self.config.hosts}: {_one_line(exc)}") from exc
        if missing:
            raise Unavailable(f"Elasticsearch {self.config.hosts} lacks the index templates "
                              f"{', '.join(missing)}; restart to install them")

    def close(self) -> None:
        self.client.close()

    # ── the search side ──────────────────────────────────────────────────────────────────────

    def search(self, query: str | Query, kind: str = "events",
               time_from: datetime | None = None, time_to: datetime | None = None,
               limit: int = 100) -> list[dict[str, Any]]:
        """The newest `limit` matching documents, oldest first; time_to is exclusive."""
        index = index_of(kind, self.namespace)
        return self._newest(index, kind, self._query(query, index, time_from, time_to), limit)

    def search_lucene(self, query: str, time_from: datetime | None = None,
                      time_to: datetime | None = None, limit: int = 100
                      ) -> list[dict[str, Any]]:
        """Events matching a raw Lucene query string (Elasticsearch's query_string, not our
        query language: `ctrail hunt` runs pySigma's Elasticsearch backend output with it). The
        newest `limit`, oldest first; time_to is exclusive. QueryError when ES refuses it."""
        return self._newest(index_of("events", self.namespace), "events",
                            lucene_dsl(query, time_from, time_to), limit)

    def _newest(self, index: str, kind: str, body: dict[str, Any], limit: int
                ) -> list[dict[str, Any]]:
        sort = [{"@timestamp": {"order": "desc"}}, {TIEBREAK[kind]: {"order": "desc"}}]
        found: list[dict[str, Any]] = []
        after: list[Any] | None = None
        while len(found) < limit:
            size = min(PAGE, limit - len(found))
            hits = self._page(index, body, sort, size, after, source=True)
            found.extend(hit["_source"] for hit in hits)
            if len(hits) < size:
                break
            after = hits[-1]["sort"]
        return found[::-1]

    def stream(self, query: str | Query, kind: str = "events",
               time_from: datetime | None = None, time_to: datetime | None = None,
               limit: int = 100) -> Iterator[dict[str, Any]]:
        """What `search` returns, in its order, a page at a time: the oldest of the newest
        `limit` is found walking back without sources, then documents are read forward from
        it, so memory holds a page of documents, not `limit` of them."""
        index = index_of(kind, self.namespace)
        body = self._query(query, index, time_from, time_to)
        newest_first = [{"@timestamp": {"order": "desc"}}, {TIEBREAK[kind]: {"order": "desc"}}]
        oldest: dict[str, Any] | None = None
        after: list[Any] | None = None
        seen = 0
        while seen < limit:
            size = min(PAGE, limit - seen)
            hits = self._page(index, body, newest_first, size, after, source=False)
            if not hits:
                break
            seen, oldest, after = seen + len(hits), hits[-1], hits[-1]["sort"]
            if len(hits) < size:
                break
        if oldest is None:
            return
        yield self._request(self.client.get, index=oldest["_index"], id=oldest["_id"])["_source"]
        oldest_first = [{"@timestamp": {"order": "asc"}}, {TIEBREAK[kind]: {"order": "asc"}}]
        after, left = oldest["sort"], seen - 1
        while left > 0:
            size = min(PAGE, left)
            hits = self._page(index, body, oldest_first, size, after, source=True)
            yield from (hit["_source"] for hit in hits)
            if len(hits) < size:
                return
            after, left = hits[-1]["sort"], left - len(hits)

    def _page(self, index: str, body: dict[str, Any], sort: list[dict[str, Any]], size: int,
              after: list[Any] | None, source: bool) -> list[dict[str, Any]]:
        page = self._request(self.client.search, index=index, query=body, sort=sort, size=size,
                             search_after=after, source=source, track_total_hits=False,
                             allow_partial_search_results=False, **NO_INDEX_FAILS)
        hits: list[dict[str, Any]] = page["hits"]["hits"]
        return hits

    def count(self, query: str | Query, kind: str = "events",
              time_from: datetime | None = None, time_to: datetime | None = None) -> int:
        index = index_of(kind, self.namespace)
        body = self._query(query, index, time_from, time_to)
        return int(self._request(self.client.count, index=index, query=body,
                                 **NO_INDEX_FAILS)["count"])

    def _query(self, query: str | Query, index: str, time_from: datetime | None,
               time_to: datetime | None) -> dict[str, Any]:
        tree = as_query(query)
        return to_dsl(tree, self._types(fields_of(tree), index), time_from, time_to)

    def _types(self, fields: set[str], index: str) -> FieldTypes:
        if not fields:
            return {}
        caps = self._request(self.client.field_caps, index=index, fields=sorted(fields),
                             **NO_INDEX_FAILS)
        return {field: frozenset(types) for field, types in caps["fields"].items()}

    def _request(self, method: Any, **kwargs: Any) -> Any:
        """One read, retried while Elasticsearch says it is busy or its shards are starting.
        Searches refuse partial results: a forensic answer is whole or it is an error."""
        deadline = time.monotonic() + READ_RETRY_SECS
        pause = 0.1
        while True:
            try:
                body = method(**kwargs).body
                # A count cannot refuse partial results: one that missed a shard is retried.
                failed = body.get("_shards", {}).get("failed", 0)
                if not failed:
                    return body
                if time.monotonic() + pause > deadline:
                    raise Unavailable(f"Elasticsearch {self.config.hosts}: {failed} shard(s) "
                                      "did not answer")
            except ConnectionError as exc:
                raise Unavailable(f"Elasticsearch is unreachable: {exc.message}") from exc
            except ApiError as exc:
                if exc.status_code == 400:
                    raise QueryError(f"Elasticsearch refused the query: {_one_line(exc)}") from None
                busy = exc.status_code in (429, 503) or _root_cause(exc) in SHARDS_STARTING
                if not busy or time.monotonic() + pause > deadline:
                    raise Unavailable(f"Elasticsearch {self.config.hosts}: {_one_line(exc)}"
                                      ) from exc
                log.debug("Elasticsearch answered %s; reading again in %.1f s",
                          _one_line(exc), pause)
            except TransportError as exc:
                raise Unavailable(f"Elasticsearch {self.config.hosts}: {_one_line(exc)}") from exc
            time.sleep(pause)
            pause = min(pause * 2, 2.0)

def _root_cause(exc: ApiError) -> str | None:
    error = exc.body.get("error") if isinstance(exc.body, dict) else None
    if not isinstance(error, dict):
        return None
    root = (error.get("root_cause") or [error])[0]
    return root.get("type") if isinstance(root, dict) else None


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ApiError):
        error = exc.body.get("error") if isinstance(exc.body, dict) else None
        root = (error.get("root_cause") or [error])[0] if isinstance(error, dict) else None
        if isinstance(root, dict):
            return f"{exc.status_code} {root.get('type')}: {root.get('reason')}"
        return f"{exc.status_code} {exc.message}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
