"""Every byte a run left on disk, in readable form, for tests that grep it for planted secrets.

A plain grep of the files misses what is compressed: the SQLite store packs each row into a zstd
frame with a dictionary trained on its own rows (sinks/sqlite/records.py), evidence segments
are gzip, and a full-text index keeps terms, not text. So, without depending on any one format:
every gzip member and zstd frame in a file or a database value is decompressed wherever it
starts (with the zstd dictionaries found in the databases), every SQLite database is read row by
row from a copy with its WAL applied, and its full-text indexes are asked for each value.
"""

from __future__ import annotations

import shutil
import sqlite3
import zlib
from pathlib import Path
from typing import Final, Iterable, Iterator, Mapping

import zstandard

ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
ZSTD_DICTIONARY_MAGIC: Final = b"\x37\xa4\x30\xec"
GZIP_MAGIC: Final = b"\x1f\x8b\x08"
SQLITE_MAGIC: Final = b"SQLite format 3\x00"
Dictionaries = dict[int, zstandard.ZstdCompressionDict]


def every_byte(roots: Iterable[Path], scratch: Path, planted: Mapping[str, str]
               ) -> tuple[dict[str, bytes], list[str]]:
    """{where: bytes} for every file under `roots`, each compressed part of it, and each value
    of each SQLite database among them (and its compressed parts); and, for each of `planted`'s
    values ({name: value}) a full-text index still finds, "<name> in the index <table>"."""
    texts: dict[str, bytes] = {}
    databases: list[tuple[Path, list[bytes], sqlite3.Connection]] = []
    files = [p for root in roots for p in sorted(root.rglob("*")) if p.is_file()]
    for path in files:
        texts[str(path)] = path.read_bytes()
        if texts[str(path)].startswith(SQLITE_MAGIC):
            db = opened_copy(path, scratch)
            databases.append((path, table_values(db), db))
    dicts = dictionaries(value for _, values, _ in databases for value in values)
    for path in files:
        for n, part in enumerate(decompressed(texts[str(path)], dicts)):
            texts[f"{path} (compressed part {n})"] = part
    hits = []
    for path, values, db in databases:
        for n, value in enumerate(values):
            texts[f"{path} value {n}"] = value
            for m, part in enumerate(decompressed(value, dicts)):
                texts[f"{path} value {n} (compressed part {m})"] = part
        hits += full_text_hits(db, planted)
        db.close()
    return texts, hits


def files_now(roots: Iterable[Path]) -> dict[str, bytes]:
    """{where: bytes} for every file under `roots` while a run still writes them (the raw log's
    segments are deleted at its close), and each compressed part of those that are not SQLite
    databases (every_byte reads those, once the run has stopped). A file deleted meanwhile is
    left out."""
    texts: dict[str, bytes] = {}
    for path in [p for root in roots for p in sorted(root.rglob("*"))]:
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            continue
        texts[f"{path} (running)"] = data
        if not data.startswith(SQLITE_MAGIC):
            for n, part in enumerate(decompressed(data, {})):
                texts[f"{path} (running, compressed part {n})"] = part
    return texts


def found_in(texts: Mapping[str, bytes], planted: Mapping[str, str], root: Path
             ) -> dict[str, list[str]]:
    """{name of a planted value: where it was found}, paths shown relative to `root`."""
    found: dict[str, list[str]] = {}
    for where, text in texts.items():
        for name, value in planted.items():
            if value.encode() in text:
                found.setdefault(name, []).append(where.replace(f"{root}/", ""))
    return found


def opened_copy(path: Path, scratch: Path) -> sqlite3.Connection:
    """The database at `path`, copied with its WAL (so nothing of the run's is changed) and
    opened: SQLite applies the WAL's committed pages."""
    scratch.mkdir(parents=True, exist_ok=True)
    copy = scratch / f"{len(list(scratch.iterdir()))}-{path.name}"
    for suffix in ("", "-wal"):
        if Path(f"{path}{suffix}").exists():
            shutil.copyfile(f"{path}{suffix}", f"{copy}{suffix}")
    return sqlite3.connect(copy)


def table_values(db: sqlite3.Connection) -> list[bytes]:
    """Every value of every ordinary table (a full-text index's shadow tables included)."""
    values: list[bytes] = []
    tables = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall()
    for name, sql in tables:
        if sql.upper().startswith("CREATE VIRTUAL"):
            continue                          # read through its shadow tables, asked below
        for row in db.execute(f'SELECT * FROM "{name}"'):
            values += [v if isinstance(v, bytes) else str(v).encode() for v in row
                       if v is not None]
    return values


def full_text_hits(db: sqlite3.Connection, planted: Mapping[str, str]) -> list[str]:
    """Planted values a full-text index of `db` still finds: its terms are not plain bytes."""
    hits = []
    for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND "
                               "upper(sql) LIKE '%USING FTS%'").fetchall():
        for name, value in planted.items():
            phrase = '"' + value.replace('"', '""') + '"'
            if db.execute(f'SELECT count(*) FROM "{table}" WHERE "{table}" MATCH ?',
                          (phrase,)).fetchone()[0]:
                hits.append(f"{name} in the index {table}")
    return hits


def dictionaries(blobs: Iterable[bytes]) -> Dictionaries:
    found = {}
    for blob in blobs:
        if blob.startswith(ZSTD_DICTIONARY_MAGIC):
            dictionary = zstandard.ZstdCompressionDict(blob)
            found[dictionary.dict_id()] = dictionary
    return found


def decompressed(data: bytes, dicts: Dictionaries) -> Iterator[bytes]:
    """Every gzip member and zstd frame in `data`, wherever it starts, decompressed. A frame
    that names a dictionary nobody kept fails the test: it could hide a copy."""
    at = data.find(GZIP_MAGIC)
    while at >= 0:
        try:
            yield zlib.decompressobj(31).decompress(data[at:])
        except zlib.error:
            pass
        at = data.find(GZIP_MAGIC, at + 1)
    at = data.find(ZSTD_MAGIC)
    while at >= 0:
        try:
            dict_id = zstandard.get_frame_parameters(data[at:at + 18]).dict_id
        except zstandard.ZstdError:
            dict_id = 0
        assert not dict_id or dict_id in dicts, f"a zstd frame needs dictionary {dict_id}"
        try:
            decompressor = zstandard.ZstdDecompressor(dict_data=dicts.get(dict_id))
            yield decompressor.decompressobj().decompress(data[at:])
        except zstandard.ZstdError:
            pass
        at = data.find(ZSTD_MAGIC, at + 1)
