"""The open segment of one hour and data class, hash-chained record by record as it is appended.

  open/<epoch>-<class>.jsonl    the records, one a line (what is sealed)
  open/<epoch>-<class>.chain    "<event id> <sha256 of the line> <chain hash>" per record, where
                                chain_i = sha256(chain_(i-1) + record hash), from GENESIS; after
                                each batch, with a signing key, "#head <records> <chain hash>
                                <signature>": the chain's end, signed
  open/.chained                 this archive chains its open segments (a missing chain file is
                                then named, not taken for one written before chaining existed)

Both files are fsynced per batch, the records first: a record line the chain does not name was
never acknowledged (a crash between the two writes) and is cut at startup. The writer keeps the
chain in memory too; sealing compares the file with it, so a record edited, removed or inserted
before its segment is sealed is named in the manifest (`altered_before_seal`), and
`ctrail evidence verify --store` checks the segments still open (check_open).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sinks.evidence.verify import (
    GENESIS,
    Finding,
    Result,
    canonical,
    diff_pairs,
    record_hash,
    record_id,
    signature_ok,
)

if TYPE_CHECKING:
    from sinks.evidence.chain import Signer

log = logging.getLogger(__name__)
Entry = tuple[str, str, str]          # (event id, record hash, chain hash)


def chain_next(previous: str, record: str) -> str:
    return hashlib.sha256(f"{previous}{record}".encode()).hexdigest()


def head_digest(records: int, chain: str) -> str:
    return hashlib.sha256(canonical({"records": records, "chain": chain})).hexdigest()


def whole_lines(data: bytes) -> list[bytes]:
    """The complete lines of `data` (a torn last line, never acknowledged, left out)."""
    return data[:data.rfind(b"\n") + 1].split(b"\n")[:-1]


HEAD: Final = "#head"
MARKER: Final = ".chained"
Head = tuple[int, str, str]            # (records, chain hash, signature)


def parse_chain(data: bytes) -> tuple[list[Entry], Head | None]:
    """The chain's entries and its last signed head."""
    entries: list[Entry] = []
    head = None
    for line in whole_lines(data):
        fields = line.decode().split(" ")
        if fields[0] == HEAD:
            head = (int(fields[1]), fields[2], fields[3])
        else:
            entries.append((fields[0], fields[1], fields[2]))
    return entries, head


def write_append(path: Path, data: bytes) -> None:
    with open(path, "ab") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


@dataclass
class OpenSegment:
    path: Path
    signer: "Signer | None" = None
    ids: list[str] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    chain: str = GENESIS
    problems: list[Finding] = field(default_factory=list)    # found at load, sealed with it
    pending: bytearray = field(default_factory=bytearray)
    pending_chain: bytearray = field(default_factory=bytearray)

    @property
    def chain_path(self) -> Path:
        return self.path.with_suffix(".chain")

    @classmethod
    def load(cls, path: Path, signer: "Signer | None" = None,
             chained: bool = True) -> "OpenSegment":
        """The segment as the last run left it; `chained`: the archive chains open segments
        (else this one may predate chaining, and its chain is built from the file)."""
        segment = cls(path, signer)
        lines = whole_lines(path.read_bytes()) if path.exists() else []
        head = None
        if segment.chain_path.exists():
            data = segment.chain_path.read_bytes()
            entries, head = parse_chain(data)
            _cut(segment.chain_path, len(data[:data.rfind(b"\n") + 1]))     # a torn line
            # Lines past the chain's end were written, not chained: never acknowledged. (Not
            # when the lines before them differ: that is an edit, which sealing names.)
            if len(lines) > len(entries) and all(
                    record_hash(line) == rec for line, (_, rec, _) in zip(lines, entries)):
                lines = lines[:len(entries)]
        else:
            entries = _chain_of(lines)
            segment.chain_path.write_bytes(b"".join(f"{e} {r} {c}\n".encode()
                                                    for e, r, c in entries))
            if chained and lines:
                segment.problems.append(Finding("chain_missing", 0, f"open segment {path.stem}: "
                                                "its chain file was removed"))
        _cut(path, sum(len(line) + 1 for line in lines))
        for event_id, rec, link in entries:
            segment.ids.append(event_id)
            segment.hashes.append(rec)
            segment.chain = link
        segment.seen.update(segment.ids)
        if signer is not None and (chained or head is not None):
            result = Result(findings=[])
            _check_chain(f"open segment {path.stem}", entries, head, signer.public_key, result)
            segment.problems += result.findings
        for problem in segment.problems:
            log.error("The open evidence segment was changed.",
                      extra={"segment": path.name, "finding": str(problem)})
        return segment

    def add(self, event_id: str, line: bytes) -> None:
        rec = record_hash(line)
        self.chain = chain_next(self.chain, rec)
        self.ids.append(event_id)
        self.hashes.append(rec)
        self.seen.add(event_id)
        self.pending += line + b"\n"
        self.pending_chain += f"{event_id} {rec} {self.chain}\n".encode()

    def sync(self) -> None:
        if not self.pending:
            return
        if self.signer is not None:
            signature = self.signer.sign(head_digest(len(self.ids), self.chain))
            self.pending_chain += f"{HEAD} {len(self.ids)} {self.chain} {signature}\n".encode()
        write_append(self.path, bytes(self.pending))
        write_append(self.chain_path, bytes(self.pending_chain))
        self.pending.clear()
        self.pending_chain.clear()

    def appended(self, count: int) -> list[tuple[str, str]]:
        """The first `count` records as appended: [(id, hash)]."""
        return list(zip(self.ids[:count], self.hashes[:count]))

    def changes(self, found: list[tuple[str, str]] | None) -> list[dict[str, Any]]:
        """What differs between the records found in the file at sealing, [(id, hash)] (None:
        the records appended, unchanged), and the records appended, as the manifest keeps it."""
        findings = list(self.problems)
        if found is not None:
            findings += diff_pairs(0, self.appended(len(self.ids)), found, "ok")
        return [{"kind": f.kind, "record": f.record, "detail": f.detail} for f in findings]

    def unlink(self) -> None:
        for path in (self.path, self.chain_path):
            path.unlink(missing_ok=True)


def _chain_of(lines: list[bytes]) -> list[Entry]:
    entries, link = [], GENESIS
    for line in lines:
        link = chain_next(link, record_hash(line))
        entries.append((record_id(line), record_hash(line), link))
    return entries


def _cut(path: Path, keep: int) -> None:
    """Truncate `path` to its first `keep` bytes (a torn or unacknowledged tail)."""
    if path.exists() and path.stat().st_size != keep:
        with open(path, "r+b") as out:
            out.truncate(keep)


def _check_chain(name: str, entries: list[Entry], head: Head | None, public_key: Any,
                 result: Result) -> None:
    """Each link follows from the one before, and the signed head names the chain's end."""
    link = GENESIS
    for event_id, rec, stated in entries:
        link = chain_next(link, rec)
        if stated != link:
            result.findings.append(Finding("chain_broken", 0, f"{name}: the chain does not follow "
                                           "from the record before (chain file edited)", event_id))
            return
    if public_key is None or not entries:
        return
    if head is None:
        result.findings.append(Finding("bad_signature", 0, f"{name}: no signed chain head"))
        return
    records, chain, signature = head
    if not signature_ok(public_key, head_digest(records, chain), signature):
        result.findings.append(Finding("bad_signature", 0, f"{name}: chain head signature invalid"))
    elif records != len(entries) or entries[-1][2] != chain:
        result.findings.append(Finding("chain_broken", 0, f"{name}: the chain does not end where "
                                       f"its signed head says (record {records})"))


def check_open(root: Path, public_key: Any, result: Result) -> None:
    """`verify --store`: every open segment against its chain and the chain's signed head."""
    directory = root / "open"
    for path in sorted(directory.glob("*.jsonl")) if directory.is_dir() else ():
        chain_path, name = path.with_suffix(".chain"), f"open segment {path.stem}"
        data = chain_path.read_bytes() if chain_path.exists() else b""
        entries, head = parse_chain(data)
        if not chain_path.exists() and path.stat().st_size and (directory / MARKER).exists():
            result.findings.append(Finding("chain_missing", 0, f"{name}: no chain file"))
        found = [(record_id(line), record_hash(line)) for line in whole_lines(path.read_bytes())]
        chained = {event_id for event_id, _, _ in entries}
        if head is not None and head[0] < len(entries):     # a batch being written right now
            entries = entries[:head[0]]
        _check_chain(name, entries, head, public_key, result)
        while found and found[-1][0] not in chained:     # written, being chained right now
            found.pop()
        expected = [(e, r) for e, r, _ in entries]
        found = found[:len(expected)] if found[:len(expected)] == expected else found
        for finding in diff_pairs(0, expected, found, "ok"):
            result.findings.append(Finding(finding.kind, 0, f"{name}: {finding.detail}",
                                           finding.record))
