"""Finding a followed file again after it was rotated while we were not looking.

A checkpoint names its file by identity, not by path: device and inode, and a fingerprint (a
hash of the file's first bytes, up to FINGERPRINT_BYTES of what had been read), as Fluent Bit
and Vector's file sources do. At start the file at the path may be another one: kube-apiserver
(lumberjack) renames `audit.log` to `audit-<time>.log` and may gzip it, logrotate renames it to
`audit.log.1` (then `.2`, …, perhaps `.gz`) or copies and truncates it, the kubelet renames
`0.log` to `0.log.<time>` and gzips older ones. The checkpointed file is looked for among the
path's rotated siblings: by device and inode (a rename), else by fingerprint (a copy, or a gzip
of it), and read on from the checkpoint; siblings rotated after it (modified later) were never
read and follow it whole, oldest first; then the file at the path, from its start. "After it"
means modified after the checkpoint was last saved: every file finished before then was last
written before then, and a rotation's time is lost when it is gzipped (lumberjack and logrotate
compress after the rename, so the .gz is newer than the rotations that followed it).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

FINGERPRINT_BYTES: Final = 1024


@dataclass(frozen=True, slots=True)
class Identity:
    """What a checkpoint remembers of its file, besides the position."""

    device: int
    inode: int
    fingerprint: str          # hex digest of the first `fingerprint_bytes` bytes
    fingerprint_bytes: int


def open_log(path: Path) -> BinaryIO:
    """The file's content: gzip files decompressed (positions count decompressed bytes)."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")          # type: ignore[return-value]
    return open(path, "rb")


def fingerprint(path: Path, length: int) -> str | None:
    """Digest of the first `length` bytes of the file's content; None if it has fewer or
    cannot be read (a gzip still being written, a file removed meanwhile)."""
    try:
        with open_log(path) as handle:
            head = handle.read(length)
    except (OSError, EOFError, zlib.error):
        return None
    if len(head) < length:
        return None
    return hashlib.blake2b(head, digest_size=16).hexdigest()


def identity_of(handle: BinaryIO, path: Path, position: int) -> Identity:
    """The identity of an open file whose first `position` bytes were read."""
    stat = os.fstat(handle.fileno())
    length = min(position, FINGERPRINT_BYTES)
    return Identity(stat.st_dev, stat.st_ino, fingerprint(path, length) or "", length)


def rotated_siblings(path: Path) -> list[Path]:
    """Files in the path's directory named as rotations of it: `name.*` (logrotate, kubelet)
    and `stem-*suffix[.gz]` (lumberjack, kube-apiserver's --audit-log-path rotation)."""
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return []
    stem, suffix = path.stem, path.suffix
    found = []
    for entry in entries:
        name = entry.name
        plain = name[:-3] if name.endswith(".gz") else name
        if name != path.name and entry.is_file() and (
                name.startswith(path.name + ".")
                or (suffix and plain.startswith(stem + "-") and plain.endswith(suffix))):
            found.append(entry)
    return found


def matches(path: Path, saved: Identity, position: int) -> str | None:
    """How `path` is the checkpointed file: "inode" (the same file, renamed or not),
    "content" (a copy or gzip of it), or None."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    if saved.fingerprint_bytes and fingerprint(path, saved.fingerprint_bytes) != saved.fingerprint:
        return None
    if not path.name.endswith(".gz") and stat.st_size < position:
        return None                                   # truncated in place (copytruncate)
    if (stat.st_dev, stat.st_ino) == (saved.device, saved.inode):
        return "inode"
    return "content" if saved.fingerprint_bytes else None


def locate(path: Path, saved: Identity, position: int,
           saved_at_ns: int) -> tuple[Path, list[Path]] | None:
    """Where the checkpointed file is now, and the files rotated after it (to read whole,
    before the file at `path`); None when it is gone. `saved_at_ns`: the checkpoint's mtime."""
    # The kubelet's /var/log/containers/*.log are symlinks: its rotations sit beside the target.
    siblings = rotated_siblings(Path(os.path.realpath(path)))
    ranked = sorted(
        ((kind, candidate) for candidate in (path, *siblings)
         if (kind := matches(candidate, saved, position)) is not None),
        key=lambda item: (item[0] != "inode", item[1] != path, item[1].name.endswith(".gz")))
    if not ranked:
        return None
    found = ranked[0][1]
    return found, ([] if found == path else newer_rotations(found, siblings, saved_at_ns))


def newer_rotations(found: Path, siblings: list[Path], since: int) -> list[Path]:
    """Siblings modified after `since`, oldest first; one of each content (a file and its
    gzip copy: the uncompressed one), none that is a copy of `found`. Reading one twice is
    harmless (event ids are derived from the bytes: the store keeps one); missing one is not."""
    seen = {head_digest(found)}
    newer = []
    for sibling in sorted(siblings, key=lambda p: (p.name.endswith(".gz"), p.name)):
        try:
            modified = os.stat(sibling).st_mtime_ns
        except OSError:
            continue
        digest = head_digest(sibling)
        if sibling != found and modified > since and digest not in seen:
            seen.add(digest)
            newer.append((modified, sibling))
    return [sibling for _, sibling in sorted(newer)]


def head_digest(path: Path) -> str | None:
    """Digest of the file's first FINGERPRINT_BYTES (fewer if it is shorter)."""
    try:
        with open_log(path) as handle:
            return hashlib.blake2b(handle.read(FINGERPRINT_BYTES), digest_size=16).hexdigest()
    except (OSError, EOFError, zlib.error):
        return None
