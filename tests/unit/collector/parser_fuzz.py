"""Hypothesis strategies shared by the parser fuzz tests: real samples, mutated, and made up.

A parser's promise is narrow: for any bytes it returns Events that validate and encode for the
bus, or raises InvalidInput. Mutations follow what breaks real pipelines: truncated writes,
flipped bytes, a value of the wrong type where a string was expected, and absurd nesting.
"""

from __future__ import annotations

import os
import random
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

import orjson
from hypothesis import HealthCheck, settings, strategies as st

from ctrail.bus import EVENTS
from ctrail.bus.codec import decode, encode
from ctrail.components import Parser, RawRecord
from ctrail.errors import InvalidInput
from ctrail.event import Event

NOW: Final = datetime(2026, 1, 1, tzinfo=timezone.utc)
_CANDIDATES: Final = [Path(p) for p in (os.environ.get("CTRAIL_SHARED_DATA"),) if p] or [
    Path(__file__).resolve().parents[4] / "shared/data/real", Path("/work/shared/data/real")]
SHARED_DATA: Final = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0])
"""The real samples, found as tests/conftest.py finds them (strategies are built at import)."""
FUZZ_EXAMPLES: Final = int(os.environ.get("CTRAIL_FUZZ_EXAMPLES", "500"))
"""Examples per fuzz test: a few seconds each in the suite; scripts/fuzz runs 10 000 and more."""
FUZZ: Final = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                       suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                              HealthCheck.large_base_example])
DEEP: Final = "\x00deep\x00"

def wrong_value(rng: random.Random) -> Any:
    """A value of the wrong type, or a right-looking wrong value."""
    return rng.choice([
        None, True, 0, -1, 2**63, 2**70, -(2**70), 1.5, 1e308, "", "<NA>", "x" * rng.randint(1, 300),
        "2024-13-45T99:99:99Z", "\u0000\n\"{", [1, 2], {"k": 1}, [], {}, DEEP, "sha256:zz",
        "1.2.3.4:5", "[::1]:80", rng.randint(-(2**64), 2**64),
    ])


def json_paths(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [path]
    if isinstance(doc, dict):
        for key, value in doc.items():
            paths += json_paths(value, (*path, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            paths += json_paths(value, (*path, i))
    return paths


def replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        return {**doc, head: replaced(doc[head], rest, value)}
    return [replaced(v, rest, value) if i == head else v for i, v in enumerate(doc)]


def dumps(doc: Any, depth: int) -> bytes:
    """JSON bytes; the DEEP marker becomes `depth` nested arrays (beyond json.dumps' reach)."""
    try:
        data = orjson.dumps(doc)
    except orjson.JSONEncodeError:                  # an integer beyond 64 bits
        data = repr(doc).encode()
    return data.replace(orjson.dumps(DEEP), b"[" * depth + b"1" + b"]" * depth)


def json_mutation(rng: random.Random, sample: bytes) -> bytes:
    try:
        doc = orjson.loads(sample)
    except orjson.JSONDecodeError:
        return byte_mutation(rng, sample)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(json_paths(doc))
        if len(path) == 1 and isinstance(doc, dict) and rng.random() < 0.3:
            doc = {k: v for k, v in doc.items() if k != path[0]}      # drop a top-level key
        else:
            doc = replaced(doc, path, wrong_value(rng))
    return dumps(doc, rng.choice([2, 30, 70, 900, 1100, 3000]))


def byte_mutation(rng: random.Random, sample: bytes) -> bytes:
    data = bytearray(sample)
    for _ in range(rng.randint(1, 4)):
        at = rng.randint(0, max(len(data) - 1, 0))
        how = rng.choice(["truncate", "flip", "insert", "delete"])
        if how == "truncate":
            del data[at:]
        elif how == "flip" and data:
            data[at] ^= rng.randint(1, 127)          # mostly stays UTF-8, to reach the parser
        elif how == "insert":
            data[at:at] = rng.choice([rng.randbytes(rng.randint(1, 8)), b'"', b"{", b"]", b",",
                                      b"\\", b"\\u0000", b" ", b"\n", b":"])
        elif data:
            del data[at]
    return bytes(data)


def made_up(rng: random.Random, keys: list[str], depth: int = 0) -> dict[str, Any]:
    """A JSON object over the format's own keys, with values of any type."""
    out: dict[str, Any] = {}
    for key in rng.sample(keys, rng.randint(0, min(6, len(keys)))):
        roll = rng.random()
        if roll < 0.25 and depth < 4:
            out[key] = made_up(rng, keys, depth + 1)
        elif roll < 0.35 and depth < 4:
            out[key] = [made_up(rng, keys, depth + 1) for _ in range(rng.randint(0, 3))]
        else:
            out[key] = wrong_value(rng)
    return out


def generate(seed: int, samples: list[bytes], keys: list[str]) -> bytes:
    rng = random.Random(seed)
    roll = rng.random()
    if roll < 0.45:
        return json_mutation(rng, rng.choice(samples))
    if roll < 0.8:
        return byte_mutation(rng, rng.choice(samples))
    if roll < 0.95:
        return dumps(made_up(rng, keys), 2)
    return rng.randbytes(rng.randint(0, 200))


def inputs(samples: list[bytes], keys: list[str]) -> st.SearchStrategy[bytes]:
    """Mutated real samples, made-up JSON objects over the format's own keys, and noise.

    Hypothesis draws only a seed; the mutation runs on random.Random(seed). Drawing every choice
    through Hypothesis costs ~2.5 ms an example, too slow for 10 000 examples per parser."""
    return st.integers(0, 2**64).map(lambda seed: generate(seed, samples, keys))


def check(parser: Parser, data: bytes, origin: str = "fuzz:1") -> list[Event]:
    """Parse; anything but InvalidInput fails the test, and every Event must survive the bus."""
    try:
        events = parser.parse(RawRecord(data, origin, NOW))
    except InvalidInput:
        return []
    for event in events:
        assert isinstance(event, Event)
        assert decode(EVENTS, encode(event)) == event
    return events


def damaged(draw: st.DrawFn, raw: bytes) -> bytes:
    """`raw` as a request on the wire may arrive (the HTTP listeners' fuzzers): whole most of
    the time, else cut short, with a byte flipped, or with a few bytes inserted."""
    damage = draw(st.sampled_from(["none"] * 12 + ["truncate", "flip", "insert"]))
    if damage == "none" or not raw:
        return raw
    at = draw(st.integers(0, len(raw) - 1))
    if damage == "truncate":
        return raw[:at]
    if damage == "flip":
        return raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1:]
    return raw[:at] + draw(st.binary(max_size=8)) + raw[at:]
