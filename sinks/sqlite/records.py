"""A row's record: its document, raw record and audit record in one zstd-compressed blob.

An audit event's JSON document, its raw line and what it has in common with every other audit
event (the same keys, user agents, RBAC reasons) make ~1.6 KB that zstd with a dictionary
trained on the store's own rows packs into ~200 bytes, for ~8 µs of CPU. Each kind of document
gets its dictionary once the table holds TRAIN_ROWS rows: trained from them, kept in the
`dictionaries` table, the rows packed before it packed again with it (in the write's
transaction), and used for every row after. A blob names its dictionary in its first byte
(0: none), so a later dictionary can sit beside the first.

Blob: dictionary number (u8), then a zstd frame of: `original` length (i32: -1 for none), `audit`
length (i32: -1 for none, -2 for '' — the audit record is `original` parsed, see schema.sql),
`original`, `audit`, `doc` (UTF-8). The frame names its dictionary's zstd id too (4 bytes), so
any zstd tool given the `dictionaries` rows reads a record (tests/stored_bytes.py does).

SQL sees the parts through functions registered on the connection (ct_doc, ct_original,
ct_audit), which the search conditions use for fields that are not columns.
"""

from __future__ import annotations

import sqlite3
import struct
import threading
from functools import lru_cache
from pathlib import Path
from typing import Final, Iterable, NamedTuple

import zstandard

HEADER: Final = struct.Struct("<ii")
LEVEL: Final = 3                     # level 6 saves ~10% more bytes for 4x the CPU
DICTIONARY_BYTES: Final = 64 * 1024
TRAIN_ROWS: Final = 1000             # rows of a kind before its dictionary is trained
TRAIN_SAMPLES: Final = 4000          # at most this many rows (the newest) to train on
NONE: Final = -1
SAME_AS_ORIGINAL: Final = -2


class Parts(NamedTuple):
    doc: str
    original: str | None
    audit: str | None                # '' when it is `original` parsed


def payload(doc: bytes, original: str | None, audit: str | None) -> bytes:
    """The uncompressed record of a row."""
    raw = original.encode() if original is not None else b""
    audit_bytes = audit.encode() if audit else b""
    audit_len = NONE if audit is None else SAME_AS_ORIGINAL if audit == "" else len(audit_bytes)
    return (HEADER.pack(len(raw) if original is not None else NONE, audit_len)
            + raw + audit_bytes + doc)


def split(data: bytes) -> Parts:
    original_len, audit_len = HEADER.unpack_from(data)
    at = HEADER.size
    original = None
    if original_len >= 0:
        original = data[at:at + original_len].decode()
        at += original_len
    audit: str | None = None if audit_len == NONE else ""
    if audit_len >= 0:
        audit = data[at:at + audit_len].decode()
        at += audit_len
    return Parts(data[at:].decode(), original, audit)


class Packer:
    """Packs and unpacks one store's records; one per connection, used under its lock."""

    def __init__(self) -> None:
        self._dicts: dict[int, zstandard.ZstdCompressionDict] = {}
        self._newest: dict[str, int] = {}            # kind -> its newest dictionary
        self._kinds: dict[int, str] = {}
        self._compressors: dict[int, zstandard.ZstdCompressor] = {}
        self._decompressors: dict[int, zstandard.ZstdDecompressor] = {}
        self._loaded = 0
        self._uncommitted: list[int] = []           # trained in the open transaction
        self._load_lock = threading.Lock()
        # The same row's record is read by several SQL functions in one query (a field in
        # the document and one in the audit record): unpack it once.
        self.unpack = lru_cache(maxsize=512)(self._unpack)

    def register(self, db: sqlite3.Connection) -> None:
        db.create_function("ct_doc", 1, self._sql_doc, deterministic=True)
        db.create_function("ct_original", 1, self._sql_original, deterministic=True)
        db.create_function("ct_audit", 1, self._sql_audit, deterministic=True)

    def refresh(self, db: sqlite3.Connection) -> None:
        """Load dictionaries added since (by this or another process)."""
        with self._load_lock:
            for number, kind, data in db.execute(
                    "SELECT id, kind, data FROM dictionaries WHERE id > ? ORDER BY id",
                    (self._loaded,)).fetchall():
                self._add(number, kind, data)

    def _add(self, number: int, kind: str, data: bytes) -> None:
        found = zstandard.ZstdCompressionDict(data)
        found.precompute_compress(level=LEVEL)
        self._dicts[number] = found
        self._kinds[number] = kind
        self._newest[kind] = number
        self._loaded = max(self._loaded, number)

    def has_dictionary(self, kind: str) -> bool:
        return kind in self._newest

    def pack(self, kind: str, data: bytes) -> bytes:
        number = self._newest.get(kind, 0)
        compressor = self._compressors.get(number)
        if compressor is None:
            compressor = zstandard.ZstdCompressor(
                level=LEVEL, dict_data=self._dicts.get(number), write_checksum=False,
                write_content_size=True)
            self._compressors[number] = compressor
        return bytes((number,)) + compressor.compress(data)

    def _unpack(self, blob: bytes) -> Parts:
        number = blob[0]
        decompressor = self._decompressors.get(number)
        if decompressor is None:
            if number and number not in self._dicts:
                raise sqlite3.DatabaseError(f"record packed with dictionary {number}, which "
                                            "this store does not have")
            decompressor = zstandard.ZstdDecompressor(dict_data=self._dicts.get(number))
            self._decompressors[number] = decompressor
        return split(decompressor.decompress(memoryview(blob)[1:]))

    def train(self, db: sqlite3.Connection, kind: str, samples: Iterable[bytes]) -> bool:
        """Train `kind`'s dictionary from sample payloads and keep it (in the caller's
        transaction); False when zstd finds too little in them to train on."""
        try:
            trained = zstandard.train_dictionary(DICTIONARY_BYTES, list(samples), level=LEVEL)
        except zstandard.ZstdError:
            return False
        cursor = db.execute("INSERT INTO dictionaries (kind, data) VALUES (?, ?)",
                            (kind, trained.as_bytes()))
        assert cursor.lastrowid is not None
        if cursor.lastrowid > 255:
            raise sqlite3.DatabaseError("a store holds at most 255 dictionaries")
        with self._load_lock:
            self._add(cursor.lastrowid, kind, trained.as_bytes())
            self._uncommitted.append(cursor.lastrowid)
        return True

    def committed(self) -> None:
        self._uncommitted.clear()

    def rolled_back(self) -> None:
        """Forget the dictionaries of a transaction that did not commit."""
        with self._load_lock:
            for number in self._uncommitted:
                del self._dicts[number], self._kinds[number]
                self._compressors.pop(number, None)
                self._decompressors.pop(number, None)
            self._uncommitted.clear()
            self._newest = {}
            for number in sorted(self._dicts):     # each kind's newest that is in the file
                self._newest[self._kinds[number]] = number
            self._loaded = max(self._dicts, default=0)
            self.unpack.cache_clear()

    # SQL functions: NULL in, NULL out (a row of another kind, an outer join's missing row).
    def _sql_doc(self, blob: bytes | None) -> str | None:
        return None if blob is None else self.unpack(blob).doc

    def _sql_original(self, blob: bytes | None) -> str | None:
        return None if blob is None else self.unpack(blob).original

    def _sql_audit(self, blob: bytes | None) -> str | None:
        return None if blob is None else self.unpack(blob).audit


def connect_read_only(path: str | Path, timeout: float = 10) -> sqlite3.Connection:
    """A read-only connection to a store file that reads records as the store does (ct_doc,
    ct_original, ct_audit), for tools and tests that look into the store beside `ctrail run`.
    Raises sqlite3.Error when there is no store there."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
    packer = Packer()
    packer.register(db)
    try:
        packer.refresh(db)
    except sqlite3.Error:
        db.close()
        raise
    return db
