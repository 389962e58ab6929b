"""The write path: skip what is already stored, bulk-create the rest, read every item's result.

Why look before writing: `create` refuses an `_id` that exists (409, counted as delivered), but
only within one backing index. After a rollover the stream writes to a new backing index, where
every old id is free again, and a data stream does not let a writer pick the backing index from
the document. So a replay (at-least-once delivery after a crash, a webhook batch sent again)
could store a second copy. An `ids` search over the backing indices older than the write index
finds the ids stored there and leaves them out; the write index itself needs no search, its
`create` refuses them (and sees documents not yet refreshed). A stream that never rolled over
needs no search at all: on a busy pipeline that search cost Elasticsearch about a tenth of its
CPU in batches of 500, and as much as the writes themselves in batches of 50.

Which indices are older comes from BackingIndices (backing.py), resolved once per stream. When
a bulk answer shows documents created in a write index it did not know (the stream rolled over
since), the stream is resolved again and those documents are looked up in the indices now older
(refreshed first, for the last writes to the previous write index): a copy found there means the
new one is a second copy, and it is deleted again.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final, Iterator, Sequence

from ctrail.bus.codec import Item
from ctrail.components import WriteResult
from ctrail.errors import Retryable, Unavailable
from ctrail.event import Rejection
from sinks.elasticsearch.documents import Document, bulk_lines, document
from sinks.elasticsearch.outcome import Outcome, classify, rejected

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from sinks.elasticsearch.backing import BackingIndices

log = logging.getLogger(__name__)
# Documents per bulk request; also the ids one lookup asks for, under the 10 000 a search returns.
MAX_BULK_DOCS: Final = 5000
# Below this many documents a request is not split further (see write).
MIN_CONCURRENT_DOCS: Final = 200


def write(client: Elasticsearch, indices: BackingIndices, namespace: str,
          items: Sequence[Item], refresh: bool, requests: int = 1) -> WriteResult:
    """Store items once each; retry what the cluster could not take now, reject what it never will.
    Raises Retryable (Unavailable when unreachable) if a request as a whole failed.

    The batch goes out as up to `requests` bulk requests at once (each with its own lookup):
    one request is indexed by one write thread of the cluster, so a lone request leaves the
    other cores of a node idle while this process waits, as Vector's request.concurrency and
    Logstash's pipeline workers avoid. Every request must succeed before this returns; the
    caller commits its input only then."""
    docs = [document(item, namespace) for item in items]
    chunks = list(_chunks(docs, requests))
    if len(chunks) <= 1:
        results = [_write_chunk(client, indices, chunk, refresh) for chunk in chunks]
    else:
        with ThreadPoolExecutor(len(chunks), thread_name_prefix="es-bulk") as pool:
            results = list(pool.map(
                lambda chunk: _write_chunk(client, indices, chunk, refresh), chunks))
    return WriteResult(delivered=sum(r.delivered for r in results),
                       retry=tuple(i for r in results for i in r.retry),
                       rejected=tuple(i for r in results for i in r.rejected))


def _chunks(docs: list[Document], requests: int) -> Iterator[list[Document]]:
    """`docs` in about `requests` equal parts, none above MAX_BULK_DOCS nor below
    MIN_CONCURRENT_DOCS (a small batch is one request: splitting it buys nothing)."""
    parts = max(1, min(requests, len(docs) // MIN_CONCURRENT_DOCS))
    size = min(MAX_BULK_DOCS, -(-len(docs) // parts)) if docs else 1
    for start in range(0, len(docs), size):
        yield docs[start:start + size]


def _write_chunk(client: Elasticsearch, indices: BackingIndices, chunk: Sequence[Document],
                 refresh: bool) -> WriteResult:
    delivered = 0
    retry: list[Item] = []
    refused: list[Rejection] = []
    stored = already_stored(client, chunk, indices.older(doc.stream for doc in chunk))
    fresh = [doc for doc in chunk if doc.id not in stored]
    delivered += len(chunk) - len(fresh)
    unknown_index: list[tuple[Document, str]] = []
    for doc, result in zip(fresh, create(client, fresh, refresh)):
        outcome = classify(result)
        if outcome is Outcome.DELIVERED:
            delivered += 1
            index = result.get("_index")
            if result["status"] != 409 and not indices.is_write_index(doc.stream, index):
                unknown_index.append((doc, str(index)))
        elif outcome is Outcome.RETRY:
            # An Item as write() is typed (resolution.write_verdicts passes replay verdicts).
            retry.append(doc.item)  # type: ignore[arg-type]
        else:
            refused.append(rejected(doc, result))
    if unknown_index:
        _delete_second_copies(client, indices, unknown_index)
    return WriteResult(delivered=delivered, retry=tuple(retry), rejected=tuple(refused))


def already_stored(client: Elasticsearch, docs: Sequence[Document],
                   indices: Sequence[str]) -> set[str]:
    """The ids among `docs` that `indices` hold (none asked when there are none)."""
    if not indices or not docs:
        return set()
    ids = sorted({doc.id for doc in docs})
    response = call(client.search, index=",".join(indices), query={"ids": {"values": ids}},
                    size=len(ids), source=False, track_total_hits=False,
                    ignore_unavailable=True, allow_no_indices=True, filter_path="hits.hits._id")
    return {hit["_id"] for hit in response.get("hits", {}).get("hits", [])}


def _delete_second_copies(client: Elasticsearch, indices: BackingIndices,
                          created: list[tuple[Document, str]]) -> None:
    """`created` went to write indices this writer did not know: their streams rolled over (or
    were created) since it looked. Any of them that an index now older holds is a second copy
    of a replayed document: deleted from where it was just created."""
    streams = {doc.stream for doc, _index in created}
    indices.forget(streams)
    older = indices.older(streams)
    if not older:
        return                                  # a new stream: nothing can be stored twice
    # The previous write index may hold writes not refreshed yet (searches see them only then).
    call(client.indices.refresh, index=",".join(older), ignore_unavailable=True,
         allow_no_indices=True)
    stored = already_stored(client, [doc for doc, _index in created], older)
    copies = [(doc, index) for doc, index in created if doc.id in stored]
    if not copies:
        return
    operations = [{"delete": {"_index": index, "_id": doc.id}} for doc, index in copies]
    response = call(client.bulk, operations=operations, filter_path="items.*.status")
    failed = [doc.id for (doc, _index), item in zip(copies, response.get("items", []))
              if next(iter(item.values()))["status"] not in (200, 404)]
    if failed:
        log.error("A replayed document was stored a second time after a rollover, and "
                  "deleting the copy failed.", extra={"ids": failed[:20], "count": len(failed)})
    else:
        log.info("Replayed documents found in an older backing index after a rollover; their "
                 "second copies were deleted.", extra={"count": len(copies)})


def create(client: Elasticsearch, docs: Sequence[Document], refresh: bool) -> list[dict[str, Any]]:
    """Each document's item result, in order. The client's own retry on 429 is off (see
    store.connect): a refused document comes back here, classified, never retried blindly."""
    if not docs:
        return []
    response = call(client.bulk, operations=bulk_lines(list(docs)),
                    refresh="wait_for" if refresh else False,
                    filter_path="items.*.status,items.*.error,items.*._index")
    return [next(iter(item.values())) for item in response["items"]]


def call(method: Any, **kwargs: Any) -> Any:
    """A client method's answer body, its failures as ours: Unavailable when the cluster is
    unreachable, Retryable when it refused the request as a whole."""
    from elastic_transport import ConnectionError, TransportError
    from elasticsearch import ApiError

    try:
        return method(**kwargs).body
    except ConnectionError as exc:
        raise Unavailable(f"Elasticsearch is unreachable: {exc.message}") from exc
    except (ApiError, TransportError) as exc:  # the whole request: 429, 5xx, timeouts
        raise Retryable(f"Elasticsearch refused a request: {exc}") from exc
