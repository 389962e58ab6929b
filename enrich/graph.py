"""EntityGraph: what the events taught us about containers, pods, workloads and images.

Nodes, each with first/last seen (epoch seconds) and, once known, when it went away:
    container (full id; a 12-character id until the full one is known) -> pod
    pod (namespace/name, uid, node, owner, creator, spec images)       -> owner workload
    workload (kind/namespace/name, owner, recent changes with their users) -> owner workload
    push (manifest digest: who pushed it, when, from where; last pull; deletion)
    tag (repository:tag -> [(time, digest)]: tags are mutable, so keep what each pointed to)

Facts arrive as `Fact`s (enrich.learn) and merge in any order: scalar fields are overwritten by a
newer non-empty value, first/last take the min/max, change lists are unioned. The same merge
restores the graph from the persisted entity states (enrich.persistence), so replay order and
duplicates do not matter.

Memory: records are __slots__ objects, containers are keyed by the 12-character id prefix (the
form Falco and `docker ps` print, so the short-id index costs nothing), pods by "namespace/name",
repeated strings (namespaces, nodes, images, users, owners) are interned.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Final, Iterator

DAY_SECS: Final = 86_400
SHORT_ID: Final = 12
MAX_CHANGES: Final = 8          # workload changes kept: enough to find the deployer of any pod
MAX_TAG_HISTORY: Final = 32
TOUCH_SECS: Final = 60          # a later last-seen is worth persisting only after this long
# Event time may run ahead of the wall clock by this much (clock skew); a record stamped further
# in the future must not make retention forget the present.
MAX_FUTURE_SECS: Final = DAY_SECS
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Fact:
    """A partial record of one entity, learned from one event at `seen` (epoch seconds)."""

    kind: str                   # container | pod | workload | push | tag
    key: str
    seen: int
    fields: dict[str, Any]


class Record:
    __slots__ = ("first", "last", "gone")
    TUPLES: ClassVar[frozenset[str]] = frozenset()    # fields held as (nested) tuples

    def __init__(self, seen: int) -> None:
        self.first = self.last = seen
        self.gone: int | None = None

    def state(self) -> dict[str, Any]:
        return {name: getattr(self, name) for cls in type(self).__mro__
                for name in getattr(cls, "__slots__", ()) if getattr(self, name) is not None}


class Container(Record):
    __slots__ = ("id", "pod", "uid", "name", "image", "digest")
    id: str | None
    pod: str | None
    uid: str | None
    name: str | None
    image: str | None
    digest: str | None

    def __init__(self, seen: int) -> None:
        super().__init__(seen)
        self.id = self.pod = self.uid = self.name = self.image = self.digest = None


class Pod(Record):
    __slots__ = ("uid", "node", "owner", "creator", "images")
    TUPLES = frozenset({"owner", "images"})
    uid: str | None
    node: str | None
    owner: tuple[str, str] | None
    creator: str | None
    images: tuple[tuple[str, str], ...] | None

    def __init__(self, seen: int) -> None:
        super().__init__(seen)
        self.uid = self.node = self.owner = self.creator = self.images = None


class Workload(Record):
    __slots__ = ("owner", "changes")
    TUPLES = frozenset({"owner", "changes"})
    owner: tuple[str, str] | None
    changes: tuple[tuple[int, str], ...] | None

    def __init__(self, seen: int) -> None:
        super().__init__(seen)
        self.owner = self.changes = None


class Push(Record):
    __slots__ = ("repository", "tag", "user", "ip", "time", "pulled_by", "pulled", "deleted")
    repository: str | None
    tag: str | None
    user: str | None
    ip: str | None
    time: int | None
    pulled_by: str | None
    pulled: int | None
    deleted: int | None

    def __init__(self, seen: int) -> None:
        super().__init__(seen)
        self.repository = self.tag = self.user = self.ip = self.time = None
        self.pulled_by = self.pulled = self.deleted = None


class Tag(Record):
    __slots__ = ("history",)
    TUPLES = frozenset({"history"})

    def __init__(self, seen: int) -> None:
        super().__init__(seen)
        self.history: tuple[tuple[int, str], ...] = ()


KINDS: Final[dict[str, type[Record]]] = {"container": Container, "pod": Pod,
                                         "workload": Workload, "push": Push, "tag": Tag}
FIRST_PUSH: Final = frozenset({"time", "user", "ip", "tag", "repository"})
INTERNED: Final = frozenset({"pod", "name", "image", "node", "creator", "repository", "tag",
                             "user", "pulled_by", "ip"})


def _tuple(value: Any) -> Any:
    """JSON lists back to (nested) tuples, interning their strings."""
    if isinstance(value, list | tuple):
        return tuple(_tuple(v) for v in value)
    return sys.intern(value) if isinstance(value, str) else value


class EntityGraph:
    """The graph; see the module docstring. Not thread-safe: one enrich stage owns it."""

    def __init__(self, retention_days: float = 30, clock: Clock = time.time) -> None:
        self.retention_secs = int(retention_days * DAY_SECS)
        self.clock = clock
        self.tables: dict[str, dict[str, Record]] = {kind: {} for kind in KINDS}
        self.dirty: set[tuple[str, str]] = set()
        self.newest = 0             # the latest event time learned (epoch seconds)

    # ── learning ──────────────────────────────────────────────────────────────────────────

    def apply(self, fact: Fact) -> None:
        """Merge one fact; the entity becomes dirty (to persist) when it changed."""
        key = self._container_key(fact.key) if fact.kind == "container" else fact.key
        table = self.tables[fact.kind]
        record = table.get(key)
        created = record is None
        if record is None:
            record = table[key] = KINDS[fact.kind](fact.seen)
        changed = self._merge(record, fact) or created
        if fact.seen < record.first:
            record.first, changed = fact.seen, True
        if fact.seen > record.last:
            changed = changed or fact.seen - record.last >= TOUCH_SECS
            record.last = fact.seen
        if record.last > self.newest:
            self.newest = record.last
        if changed:
            self.dirty.add((fact.kind, key))

    def _container_key(self, container_id: str) -> str:
        """The 12-character prefix, unless another container already owns it (a collision of
        48 bits: rare, but then the full id is the key)."""
        short = container_id[:SHORT_ID]
        held = self.tables["container"].get(short)
        held_id = getattr(held, "id", None)
        if held_id and len(held_id) > SHORT_ID and held_id != container_id \
                and len(container_id) > SHORT_ID:
            return container_id
        return short

    @staticmethod
    def _merge(record: Record, fact: Fact) -> bool:
        changed = False
        pushed = fact.fields.get("time")
        # Who pushed a digest is whoever pushed it first; a later push (a re-tag) does not
        # change that, it only adds to the tag's history.
        later_push = pushed is not None and getattr(record, "time", None) is not None \
            and int(pushed) > record.time  # type: ignore[attr-defined]
        for name, value in fact.fields.items():
            if value is None or (later_push and name in FIRST_PUSH):
                continue
            if name in ("first", "last"):
                value = int(value)
                old = getattr(record, name)
                if (value < old) if name == "first" else (value > old):
                    setattr(record, name, value)
                    changed = True
                continue
            if name in ("changes", "history"):
                value = _union(getattr(record, name) or (), _tuple(value),
                               MAX_CHANGES if name == "changes" else MAX_TAG_HISTORY)
            elif name in record.TUPLES:
                value = _tuple(value)
            elif name in INTERNED and isinstance(value, str):
                value = sys.intern(value)
            elif name == "gone" and value == 0:
                value = None                     # started again: not gone
            elif name == "id" and getattr(record, "id", None) and len(value) < len(record.id):  # type: ignore[attr-defined]
                continue                         # a short id never replaces the full one
            if getattr(record, name) != value:
                setattr(record, name, value)
                changed = True
        return changed

    def restore(self, kind: str, key: str, state: dict[str, Any]) -> None:
        """Merge a persisted entity state (see Record.state) without marking it dirty."""
        if kind not in KINDS:
            return
        self.apply(Fact(kind, key, int(state.get("first") or state.get("last") or 0), state))
        self.dirty.discard((kind, key))

    def mark_all_dirty(self) -> None:
        """Every entity to be persisted again: a snapshot of the whole graph."""
        self.dirty.update((kind, key) for kind, table in self.tables.items() for key in table)

    def take_dirty(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(kind, key, full state) of every entity changed since the last call."""
        dirty, self.dirty = self.dirty, set()
        for kind, key in dirty:
            record = self.tables[kind].get(key)
            if record is not None:
                yield kind, key, record.state()

    # ── lookups ───────────────────────────────────────────────────────────────────────────

    def container(self, container_id: str) -> Container | None:
        table = self.tables["container"]
        found = table.get(container_id) if len(container_id) > SHORT_ID else None
        found = found or table.get(container_id[:SHORT_ID])
        if found is None or (len(container_id) > SHORT_ID and found.id  # type: ignore[attr-defined]
                             and found.id != container_id):  # type: ignore[attr-defined]
            return None
        return found  # type: ignore[return-value]

    def pod(self, namespace: str, name: str) -> Pod | None:
        return self.tables["pod"].get(f"{namespace}/{name}")  # type: ignore[return-value]

    def workload(self, kind: str, namespace: str, name: str) -> Workload | None:
        return self.tables["workload"].get(f"{kind}/{namespace}/{name}")  # type: ignore[return-value]

    def push(self, digest: str) -> Push | None:
        return self.tables["push"].get(digest)  # type: ignore[return-value]

    def digest_at(self, repository: str, tag: str, when: int) -> str | None:
        """The digest repository:tag pointed to at `when` (the latest push at or before it;
        failing that, the first one known: a push may be logged after the deploy it served)."""
        record = self.tables["tag"].get(f"{repository}:{tag}")
        if record is None or not record.history:  # type: ignore[attr-defined]
            return None
        history = record.history  # type: ignore[attr-defined]
        before = [digest for t, digest in history if t <= when]
        return before[-1] if before else history[0][1]

    def containers_of(self, predicate: Callable[[Container], bool], limit: int = 500
                      ) -> list[Container]:
        """Containers matching `predicate` (a scan: for the timeline, not the hot path)."""
        found = []
        for record in self.tables["container"].values():
            if predicate(record):  # type: ignore[arg-type]
                found.append(record)
                if len(found) >= limit:
                    break
        return found  # type: ignore[return-value]

    def __len__(self) -> int:
        return sum(len(table) for table in self.tables.values())

    # ── retention ─────────────────────────────────────────────────────────────────────────

    def event_time(self) -> int:
        """Now, in event time: the latest time any event taught the graph (never more than a
        day past the wall clock). A forensic import of last quarter's logs lives in last
        quarter: what it learns is kept while it is read, however old the wall clock says it is."""
        return min(self.newest, int(self.clock()) + MAX_FUTURE_SECS)

    def expire(self, now: float | None = None) -> int:
        """Forget what went away (or was last seen) more than the retention before `now`
        (default: event_time(), not the wall clock). Pods live as long as a container of
        theirs, workloads as long as a pod below them, pushes as long as a container runs their
        digest. Returns how many entities were dropped."""
        cutoff = int(self.event_time() if now is None else now) - self.retention_secs
        dropped = 0
        containers = self.tables["container"]
        for key in [k for k, r in containers.items() if (r.gone or r.last) < cutoff]:
            del containers[key]
            dropped += 1
        live_pods = {c.pod for c in containers.values()}  # type: ignore[attr-defined]
        dropped += self._sweep("pod", cutoff, live_pods)
        live_workloads: set[str] = set()
        for key, pod in self.tables["pod"].items():
            namespace = key.split("/", 1)[0]
            owner = pod.owner  # type: ignore[attr-defined]
            for _ in range(4):              # Pod -> ReplicaSet -> Deployment; Job -> CronJob
                if not owner:
                    break
                wkey = f"{owner[0]}/{namespace}/{owner[1]}"
                live_workloads.add(wkey)
                found = self.tables["workload"].get(wkey)
                owner = found.owner if found is not None else None  # type: ignore[attr-defined]
        dropped += self._sweep("workload", cutoff, live_workloads)
        # A live container's image tag (and every digest it held) stays: it may be asked
        # which digest ran, and who pushed it.
        references = {c.image for c in containers.values()}  # type: ignore[attr-defined]
        references |= {image for pod in self.tables["pod"].values()
                       for _name, image in pod.images or ()}  # type: ignore[attr-defined]
        live_tags = set()
        for reference in references - {None}:
            name, tag, _digest = split_image(reference)
            live_tags.add(f"{repository_of(name)}:{tag or 'latest'}")
        dropped += self._sweep("tag", cutoff, live_tags)
        live_digests = {c.digest for c in containers.values()}  # type: ignore[attr-defined]
        live_digests |= {digest for key in live_tags if (entry := self.tables["tag"].get(key))
                         for _t, digest in entry.history}  # type: ignore[attr-defined]
        dropped += self._sweep("push", cutoff, live_digests)
        return dropped

    def _sweep(self, kind: str, cutoff: int, keep: set[Any]) -> int:
        table = self.tables[kind]
        doomed = [k for k, r in table.items() if (r.gone or r.last) < cutoff and k not in keep]
        for key in doomed:
            del table[key]
        return len(doomed)


REGISTRY_HOST_HINTS: Final = (".", ":")


def split_image(reference: str) -> tuple[str, str | None, str | None]:
    """"host:5000/team/api:1.4@sha256:..." -> (name, tag, digest)."""
    name, _, digest = reference.partition("@")
    tag = None
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    return name, tag, digest or None


def repository_of(name: str) -> str:
    """The repository path a registry knows an image name by: without the registry host."""
    first, sep, rest = name.partition("/")
    if sep and (first == "localhost" or any(h in first for h in REGISTRY_HOST_HINTS)):
        return rest
    return name



def _union(old: tuple[Any, ...], new: tuple[Any, ...], limit: int) -> tuple[Any, ...]:
    """Sorted, de-duplicated, the newest `limit` kept."""
    if all(item in old for item in new):
        return old
    return tuple(sorted(set(old) | set(new)))[-limit:]
