"""EvidenceArchive: every stored event and alert, appended to time-bucketed segments that are
sealed into a hash chain (the `evidence` stage writes it; `ctrail evidence` reads it).

Layout of DATA_DIR/evidence:
  open/<bucket epoch>-<class>.jsonl   the open segment of one hour and data class (appended,
                                      fsynced per batch; a torn last line is cut at startup),
                                      hash-chained per record (.chain: open_segment.py)
  segments/NNNNNNNN.jsonl.gz, .idx    sealed segments and their record index (verify.py)
  manifests/NNNNNNNN.json, head.json  the chain (chain.py)
  manifests/NNNNNNNN.tst              RFC 3161 timestamp tokens (timestamp.py)
A record is the event or alert as the bus carries it (ECS JSON), one a line.

Delivery is at least once, so writes are idempotent by event id: a redelivered record is
dropped when the open segment or a sealed segment of its bucket already holds it; a record for
an already-sealed bucket goes to a late segment (the next `part`), chained like any other.
One process writes an archive (an exclusive flock); its threads share one instance (open()).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import threading
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Final, Sequence

import orjson

from ctrail.bus.codec import Item, encode
from ctrail.components import WriteResult
from ctrail.durable import lock_directory
from ctrail.errors import Unavailable
from ctrail.event import Alert, Event
from sinks.evidence.chain import Chain, Signer
from sinks.evidence.keys import check_signer
from sinks.evidence.open_segment import MARKER, OpenSegment
from sinks.evidence.timestamp import Timestamps
from sinks.evidence.verify import index_name, record_hash, record_id, segment_name

if TYPE_CHECKING:
    from sinks.evidence import EvidenceConfig

log = logging.getLogger(__name__)
AUDIT_DATASETS: Final = frozenset({"kubernetes.audit", "containertrail.audit"})
COMPRESS_LEVEL: Final = 3           # ~2x faster than 6 on JSON, a few % larger
SEALED_ID_CACHE: Final = 64          # buckets whose sealed ids are kept for late dedup
Key = tuple[int, str]                # (bucket start, epoch seconds; data class)
_SHARED: dict[Path, "EvidenceArchive"] = {}
_SHARED_LOCK = threading.Lock()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def data_class(item: Event | Alert) -> str:
    if isinstance(item, Alert):
        return "alerts"
    return "audit" if item.event.dataset in AUDIT_DATASETS else "runtime"


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat().replace("+00:00", "Z")


def _fsync(path: Path) -> None:
    with open(path, "rb+") as out:
        os.fsync(out.fileno())


class EvidenceArchive:
    def __init__(self, config: "EvidenceConfig", root: Path,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.config = config
        self.root = root
        self.clock = clock
        self.signer = Signer(config.signing_key) if config.signing_key is not None else None
        if self.signer is not None:
            check_signer(config, self.signer.public_key)
        self.timestamps: Timestamps | None = None
        if config.timestamp is not None:
            self.timestamps = Timestamps(config.timestamp, root)
        self._lock_file = lock_directory(
            root, f"the evidence archive {root} is being written by another process")
        self._lock = threading.RLock()
        self._users = 1
        self.chain = Chain(root, self.signer)
        self.sealed: dict[Key, list[dict]] = {}
        for manifest in self.chain.manifests():
            if manifest["type"] == "segment":
                self.sealed.setdefault(self._key_of(manifest), []).append(manifest)
        self._sealed_ids: OrderedDict[Key, set[str]] = OrderedDict()
        self._remote: Any = None           # sinks.evidence.remote.RemoteArchive, when configured
        (root / "open").mkdir(exist_ok=True)
        self.open: dict[Key, OpenSegment] = {}
        chained = (root / "open" / MARKER).exists()   # else: open segments of an older version
        for path in sorted((root / "open").glob("*.jsonl")):
            self._recover(path, chained)
        (root / "open" / MARKER).touch()

    @classmethod
    def open_shared(cls, config: "EvidenceConfig", data_dir: Path) -> "EvidenceArchive":
        """The process's one writer for this archive (the stage and the scheduler share it)."""
        root = config.root(data_dir).resolve()
        with _SHARED_LOCK:
            archive = _SHARED.get(root)
            if archive is None:
                archive = _SHARED[root] = cls(config, root)
            else:
                archive._users += 1
            return archive

    def _key_of(self, manifest: dict) -> Key:
        epoch = datetime.fromisoformat(manifest["bucket"]).timestamp()
        return int(epoch), manifest["data_class"]

    def _recover(self, path: Path, chained: bool) -> None:
        epoch, klass = path.stem.split("-", 1)
        key = (int(epoch), klass)
        segment = OpenSegment.load(path, self.signer, chained)
        sealed = self.sealed.get(key)
        last = sealed[-1] if sealed else None
        if not segment.ids or (last is not None and last["first_id"] == segment.ids[0]
                               and last["records"] == len(segment.ids)):
            segment.unlink()               # empty, or sealed just before a crash
            return
        self.open[key] = segment

    # ── writing ──────────────────────────────────────────────────────────────────────────────

    def write(self, items: Sequence[Item]) -> WriteResult:
        """Append the events and alerts (dead letters are not evidence), durable on return."""
        with self._lock:
            touched: dict[Key, OpenSegment] = {}
            for item in items:
                if not isinstance(item, (Event, Alert)):
                    continue
                key = self._bucket(item)
                segment = touched.get(key) or self._open_segment(key)
                touched[key] = segment
                if item.event.id in segment.seen or item.event.id in self._ids_sealed(key):
                    continue
                segment.add(item.event.id, encode(item))
            for key, segment in touched.items():
                segment.sync()
                if not segment.ids:        # everything was a redelivery: nothing to open
                    del self.open[key]
            self.seal_due()
        return WriteResult(delivered=len(items))

    def _bucket(self, item: Event | Alert) -> Key:
        size = self.config.bucket_secs
        return int(item.timestamp.timestamp()) // size * size, data_class(item)

    def _open_segment(self, key: Key) -> OpenSegment:
        if key not in self.open:
            self.open[key] = OpenSegment(self.root / "open" / f"{key[0]}-{key[1]}.jsonl",
                                         self.signer)
        return self.open[key]

    def _ids_sealed(self, key: Key) -> set[str]:
        if key not in self.sealed:
            return set()
        if key not in self._sealed_ids:
            ids: set[str] = set()
            for manifest in self.sealed[key]:
                index = self.root / index_name(manifest["seq"])
                if index.exists():
                    ids.update(line.split(" ", 1)[0] for line in index.read_text().splitlines())
            self._sealed_ids[key] = ids
            while len(self._sealed_ids) > SEALED_ID_CACHE:
                self._sealed_ids.popitem(last=False)
        self._sealed_ids.move_to_end(key)
        return self._sealed_ids[key]

    # ── sealing ──────────────────────────────────────────────────────────────────────────────

    def seal_due(self, now: datetime | None = None) -> int:
        """Seal every open segment whose bucket ended seal_after_secs ago; returns how many."""
        now_epoch = (now or self.clock()).timestamp()
        due_after = self.config.bucket_secs + self.config.seal_after_secs
        with self._lock:
            due = [key for key in self.open if key[0] + due_after <= now_epoch]
            for key in sorted(due):
                self._seal(key)
        return len(due)

    def seal_all(self) -> int:
        """Seal every open segment now (before an export that must include the newest hour)."""
        with self._lock:
            keys = sorted(self.open)
            for key in keys:
                self._seal(key)
        return len(keys)

    def _seal(self, key: Key) -> None:
        segment = self.open.pop(key)
        segment.sync()
        seq = self.chain.seq + 1
        packed_path, index_path = self.root / segment_name(seq), self.root / index_name(seq)
        content, index, packed = hashlib.sha256(), hashlib.sha256(), hashlib.sha256()
        # Streamed line by line: an hour of a busy cluster does not fit in memory.
        with open(segment.path, "rb") as source, open(index_path, "wb") as idx, \
                open(packed_path, "wb") as raw, \
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=COMPRESS_LEVEL, mtime=0) as out:
            count, first, last = 0, b"", b""
            found: list[tuple[str, str]] | None = None    # kept from the first difference on
            for line in source:
                rec = record_hash(line[:-1])
                # The record as appended and chained (its id known), else what is there.
                same = found is None and count < len(segment.hashes) and (
                    segment.hashes[count] == rec)
                event_id = segment.ids[count] if same else record_id(line[:-1])
                if not same:
                    found = found if found is not None else segment.appended(count)
                    found.append((event_id, rec))
                entry = f"{event_id} {rec}\n".encode()
                idx.write(entry)
                index.update(entry)
                content.update(line)
                out.write(line)
                first, last, count = first or line, line, count + 1
        for path in (index_path, packed_path):
            _fsync(path)
        with open(packed_path, "rb") as written:
            for chunk in iter(lambda: written.read(1 << 20), b""):
                packed.update(chunk)
        previous = self.sealed.get(key, [])
        if found is None and count < len(segment.ids):          # records gone from the end
            found = segment.appended(count)
        altered = segment.changes(found)
        first_id, last_id = ((found[0][0], found[-1][0]) if found else
                             (segment.ids[0], segment.ids[count - 1 if count else -1]))
        manifest = self.chain.append({
            "type": "segment", "bucket": iso(key[0]), "bucket_secs": self.config.bucket_secs,
            "data_class": key[1], "part": len(previous), "late": bool(previous),
            "file": segment_name(seq), "sha256": packed.hexdigest(),
            "bytes": packed_path.stat().st_size, "content_sha256": content.hexdigest(),
            "index_sha256": index.hexdigest(), "records": count,
            # The file, as sealed; an open file emptied by hand has no first record to show.
            "first_id": first_id, "last_id": last_id,
            "first_ts": orjson.loads(first)["@timestamp"] if first else None,
            "last_ts": orjson.loads(last)["@timestamp"] if last else None,
            "sealed_at": iso(self.clock().timestamp()),
            **({"altered_before_seal": altered} if altered else {}),
        })
        self.sealed.setdefault(key, []).append(manifest)
        if self.timestamps is not None:
            self.timestamps.sealed(manifest["seq"])
        if key in self._sealed_ids:           # keep late-event dedup warm: no index re-read
            self._sealed_ids[key].update(segment.ids)
        segment.unlink()

    def catch_up(self) -> None:
        """After sealing (the scheduler's pass): copy what is sealed to the remote, if one is
        configured. A failure is logged and retried by a later pass; nothing local changes."""
        if self.timestamps is not None:
            with self._lock:
                self.timestamps.stamp_waiting(rescan=True)
        if self.config.remote is None:
            return
        from sinks.evidence.remote import RemoteArchive
        if self._remote is None:
            self._remote = RemoteArchive(self.config.remote, self.root)
        try:
            result = self._remote.sync(self.config.legal_holds)
        except Unavailable as exc:
            log.warning("Evidence is not copied to the remote yet.", extra={"error": str(exc)})
            return
        if result.uploaded or result.holds_changed:
            log.info("Evidence copied to the remote.", extra={
                "uploaded": len(result.uploaded), "holds_changed": result.holds_changed})

    def check(self) -> None:
        pass

    def close(self) -> None:
        with _SHARED_LOCK:
            self._users -= 1
            if self._users > 0:
                return
            _SHARED.pop(self.root.resolve(), None)
        with self._lock:
            for segment in self.open.values():
                segment.sync()
            if self.timestamps is not None:
                self.timestamps.close()
            self._lock_file.close()
