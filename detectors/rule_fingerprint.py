"""What changed in the loaded rule set since the detection stage last started.

A fingerprint maps each loaded rule id (single-event and correlation rules, and Sigma filters,
which change the rules they apply to) to a digest of the rule's YAML document. The digest is of
the parsed document as canonical JSON, so re-indenting a file or editing its comments is not a
change, while any change to what the rule says is. Rules that failed to load are not in the
fingerprint: to the audit trail a rule that stopped loading has been removed.

The last fingerprint is kept in DATA_DIR/detection/rules.json with a generation number that
grows by one with each change, so a change recorded again after a crash gets the same identity
(see ctrail.runtime.rule_audit).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import orjson

from ctrail.durable import write_atomic
from detectors.sigma_rules import readable_documents, rule_files


def fingerprint(paths: Sequence[Path], loaded_ids: Collection[str]) -> dict[str, str]:
    """Rule id -> digest, for the rules in `loaded_ids` (the first document with an id wins,
    as in loading) and every filter under `paths`."""
    digests: dict[str, str] = {}
    for document, context in _documents(paths):
        rule_id = _rule_id(document)
        if rule_id is None or rule_id in digests:
            continue
        if rule_id in loaded_ids or "filter" in document:
            digests[rule_id] = _digest({"rule": document, **context})
    return digests


def _rule_id(document: dict[str, Any]) -> str | None:
    """As detectors.sigma_rules names a rule: its `name`, else its UUID in canonical form."""
    if document.get("name"):
        return str(document["name"])
    if document.get("id") is None:
        return None
    try:
        return str(uuid.UUID(str(document["id"])))
    except ValueError:
        return str(document["id"])


def _documents(paths: Sequence[Path]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Each rule document, with what Sigma's collection actions merge into it: the file's
    `action: global` document (until `action: reset`), and for `action: repeat` the document
    it repeats. A change there changes the rules, so it is part of their digests."""
    for path in rule_files(paths):
        documents = readable_documents(path)   # the loader reported a broken file
        shared: dict[str, Any] | None = None
        previous: dict[str, Any] | None = None
        for doc in (d for d in documents if isinstance(d, dict)):
            action = doc.get("action")
            if action == "global":
                shared = doc
                continue
            if action == "reset":
                shared = None
                continue
            yield doc, {"global": shared, "repeats": previous if action == "repeat" else None}
            previous = doc


def _digest(document: dict[str, Any]) -> str:
    canonical = orjson.dumps(document, default=str, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(canonical, digest_size=16).hexdigest()


def set_digest(rules: dict[str, str]) -> str:
    """One digest of a whole fingerprint."""
    return _digest(rules)


@dataclass(frozen=True, slots=True)
class RuleChanges:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    modified: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.modified)


def changes(before: dict[str, str], after: dict[str, str]) -> RuleChanges:
    return RuleChanges(
        added=tuple(sorted(after.keys() - before.keys())),
        removed=tuple(sorted(before.keys() - after.keys())),
        modified=tuple(sorted(k for k in after.keys() & before.keys() if after[k] != before[k])))


@dataclass(frozen=True, slots=True)
class Remembered:
    """The fingerprint persisted at the last change, and its generation (0: none yet)."""

    generation: int
    rules: dict[str, str]


def load(path: Path) -> Remembered:
    if not path.exists():
        return Remembered(0, {})
    saved = orjson.loads(path.read_bytes())
    return Remembered(int(saved["generation"]), dict(saved["rules"]))


def save(path: Path, remembered: Remembered) -> None:
    write_atomic(path, orjson.dumps({"generation": remembered.generation,
                                     "rules": remembered.rules}, option=orjson.OPT_SORT_KEYS))
