"""The container log parser and CriReassembler on Fluent Bit's test data (json-file and CRI)."""

from __future__ import annotations

import random
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import given, strategies as st

from collector import PARSERS
from collector.parsers.cri_log import ContainerLogParser
from collector.parsers.cri_reassembly import CriReassembler
from ctrail.components import RawRecord
from ctrail.errors import InvalidInput
from ctrail.event import Event
from parser_fuzz import FUZZ, NOW, SHARED_DATA, check, generate

parser = ContainerLogParser()
CID = "c9898099f6d235126d564ed38a020007ea7a6fac6e25e718de683c9dd0076c16"
LINK = f"/var/log/containers/base_core_fluent-bit-{CID}.log"
POD_LOG = "/var/log/pods/core_base_e9f2963f-55f2-11e9-84c5-02e422b8a84a/fluent-bit/0.log"


def parse(data: bytes, origin: str = f"{LINK}:1") -> list[Event]:
    return parser.parse(RawRecord(data, origin, NOW))


def records(lines: list[bytes], path: str) -> list[RawRecord]:
    return [RawRecord(line, f"{path}:{n}", NOW) for n, line in enumerate(lines, 1)]


def reassembled(lines: list[bytes], path: str = POD_LOG) -> list[RawRecord]:
    joiner = CriReassembler()
    out = [r for record in records(lines, path) for r in joiner.feed(record)]
    return out + joiner.flush()


def messages(recs: list[RawRecord]) -> list[str]:
    out = []
    for record in recs:
        try:
            out.append(parser.parse(record)[0].message or "")
        except InvalidInput as exc:
            out.append(exc.reason.value)
    return out


@pytest.fixture(scope="module")
def log_files(real_data: Path) -> dict[Path, list[bytes]]:
    folder = real_data / "fluentbit-k8s-container-logs"
    return {p: p.read_bytes().splitlines() for p in sorted(folder.rglob("*.log"))}


@pytest.fixture(scope="module")
def cases(real_data: Path) -> dict[str, dict]:
    raw = (real_data / "fluentbit-k8s-container-logs/multiline_docker_cri_cases.json").read_bytes()
    return {case["name"]: case for case in orjson.loads(raw)["cases"]}


def test_it_is_registered_under_its_cli_name() -> None:
    assert PARSERS["container-log"] is ContainerLogParser


def test_every_real_line_parses_alone(log_files: dict[Path, list[bytes]]) -> None:
    lines = [line for file_lines in log_files.values() for line in file_lines]
    events = [event for line in lines for event in parse(line)]
    assert len(events) == len(lines) > 100
    assert [e.event.original.encode() for e in events] == lines


def test_golden_json_file_line_with_the_kubelet_path(log_files: dict[Path, list[bytes]]) -> None:
    line = next(v for p, v in log_files.items() if p.name == "core_base_fluent-bit.log")[0]
    (event,) = parse(line, f"{LINK}:1")
    assert event.model_dump(by_alias=True, exclude_none=True, exclude={"event": {"id"}}) == {
        "@timestamp": datetime(2019, 4, 1, 17, 58, 33, 598656, tzinfo=timezone.utc),
        "event": {"kind": "event", "category": (), "type": ("info",), "action": "log",
                  "outcome": "unknown", "dataset": "kubernetes.container_logs",
                  "module": "kubernetes", "original": line.decode(), "ingested": NOW},
        "message": "Fluent Bit is logging", "stream": "stdout",
        "log": {"file": {"path": LINK}},
        "container": {"id": CID},
        "kubernetes": {"namespace": "core", "pod": {"name": "base"},
                       "container": {"name": "fluent-bit"}},
        "tags": (),
    }


def test_the_pod_directory_layout_gives_the_pod_uid() -> None:
    (event,) = parse(b"2016-10-06T00:17:09.669794202Z stderr F boom", f"{POD_LOG}:9")
    assert event.kubernetes is not None and event.kubernetes.pod is not None
    assert event.kubernetes.pod.uid == "e9f2963f-55f2-11e9-84c5-02e422b8a84a"
    assert event.kubernetes.container is not None and event.kubernetes.container.name == "fluent-bit"
    assert (event.stream, event.message, event.container) == ("stderr", "boom", None)


def test_fluent_bits_test_file_names_are_not_mistaken_for_kubelet_ones(
        log_files: dict[Path, list[bytes]]) -> None:
    path, lines = next((p, v) for p, v in log_files.items() if p.name == "core_base_fluent-bit.log")
    (event,) = parse(lines[0], f"{path}:1")
    assert event.kubernetes is None and event.container is None


def test_kubelet_paths_agree_with_fluent_bits_enrichment_oracle(real_data: Path) -> None:
    folder = real_data / "fluentbit-k8s-container-logs/kubernetes"
    checked = 0
    for out in sorted(folder.glob("out/**/*.out")):
        record = orjson.loads(out.read_bytes().splitlines()[0])[1]
        meta = record.get("kubernetes", {})
        if "docker_id" not in meta or "log" not in record:
            continue
        log = folder / "log" / out.parent.name / out.name.replace(".out", ".log")
        path = (f"/var/log/containers/{meta['pod_name']}_{meta['namespace_name']}_"
                f"{meta['container_name']}-{meta['docker_id']}.log")
        (event,) = parse(log.read_bytes().splitlines()[0], f"{path}:1")
        assert event.kubernetes is not None and event.kubernetes.pod is not None
        assert (event.kubernetes.namespace, event.kubernetes.pod.name) == (
            meta["namespace_name"], meta["pod_name"])
        assert event.kubernetes.container and event.kubernetes.container.name == meta["container_name"]
        assert event.container is not None and event.container.id == meta["docker_id"]
        assert event.message == record["log"].removesuffix("\n")
        checked += 1
    assert checked == 5                 # six outputs name a docker_id; one has no log file


def test_cri_partials_are_joined_per_stream_as_fluent_bit_expects(cases: dict[str, dict]) -> None:
    for name in ("cri", "docker_cri_chain"):
        lines = [line.encode() for line in cases[name]["input_lines"]]
        assert messages(reassembled(lines)) == cases[name]["expected_messages"]


def test_json_file_partials_are_joined_and_invalid_lines_dead_lettered(cases: dict[str, dict]) -> None:
    """Fluent Bit's docker cases hold lines with a raw newline inside a JSON string. Docker never
    writes those and a line reader would split them; we refuse them, so the pieces they would
    have ended stay open until the next full line (or the end of the file)."""
    lines = [line.encode() for line in cases["docker"]["input_lines"]]
    assert messages(reassembled(lines)) == [
        "aa", "aa", "invalid_json", "schema_mismatch", "ddee", "bb"]
    lines = [line.encode() for line in cases["container_mix"]["input_lines"]]
    assert messages(reassembled(lines)) == [
        "a1", "a2", "invalid_json", "single full", "1a. some multiline log",
        "1b. some multiline log", "bbccdd-out", "dddd-err"]


def test_reassembly_matches_fluent_bits_tail_oracle(log_files: dict[Path, list[bytes]],
                                                    real_data: Path) -> None:
    for name in ("dockermode", "dockermode_splitted_line"):
        lines = next(v for p, v in log_files.items() if p.name == f"{name}.log")
        out = real_data / f"fluentbit-k8s-container-logs/tail/out/{name}.out"
        expected = [orjson.loads(l)["log"].removesuffix("\n") for l in out.read_bytes().splitlines()]
        joined = reassembled(lines, f"/var/lib/docker/containers/{CID}/{CID}-json.log")
        events = [parser.parse(r)[0] for r in joined]
        assert [e.message for e in events] == expected
        assert all("timestamp_from_ingest" in e.tags for e in events)       # no time in these
        assert [e.event.original for e in events] == [r.data.decode() for r in joined]


def test_held_pieces_are_visible_and_a_flushed_partial_is_tagged() -> None:
    joiner = CriReassembler()
    (first, second) = records([b"2019-05-07T18:57:50Z stdout P part one ",
                               b"2019-05-07T18:57:51Z stderr F other"], POD_LOG)
    assert joiner.feed(first) == [] and joiner.held == (first,)
    assert joiner.feed(second) == [second]
    (flushed,) = joiner.flush()
    (event,) = parser.parse(flushed)
    assert "partial_message" in event.tags and joiner.held == ()


def test_a_line_too_long_to_hold_is_released() -> None:
    joiner = CriReassembler(max_bytes=100)
    piece = b"2019-05-07T18:57:50Z stdout P " + b"x" * 40
    assert joiner.feed(RawRecord(piece, "f:1", NOW)) == []
    (released,) = joiner.feed(RawRecord(piece, "f:2", NOW))
    assert released.data == piece + b"\n" + piece and released.origin == "f:1"


@pytest.mark.parametrize(("data", "reason"), [
    (b"hello world", "schema_mismatch"),
    (b"2019-05-07T18:57:50Z stdout X text", "schema_mismatch"),
    (b"2019-05-07T18:57:50Z stdin F text", "schema_mismatch"),
    (b"yesterday stdout F text", "invalid_timestamp"),
    (b'{"log": 5, "stream": "stdout"}', "schema_mismatch"),
    (b'{"log": "x\\n", "time": "noon"}', "invalid_timestamp"),
    (b'{"log": "x\\n"', "invalid_json"),
    (b"2019-05-07T18:57:50Z stdout F a\n2019-05-07T18:57:50Z stdout F b", "schema_mismatch"),
    (b"2019-05-07T18:57:50Z stdout P a\n2019-05-07T18:57:50Z stderr F b", "schema_mismatch"),
    (b"\xff\xfe", "invalid_encoding"),
])
def test_malformed_lines_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        parse(data)


SAMPLES = [line for p in sorted((SHARED_DATA / "fluentbit-k8s-container-logs").rglob("*.log"))
           for line in p.read_bytes().splitlines()]
KEYS = ["log", "stream", "time", "attrs"]
PATHS = [LINK, POD_LOG, f"/var/lib/docker/containers/{CID}/{CID}-json.log", "/tmp/x.log", ""]


@FUZZ
@given(st.integers(0, 2**64))
def test_fuzz_reassembly_then_parsing_lets_only_invalid_input_escape(seed: int) -> None:
    rng = random.Random(seed)
    lines = [generate(rng.getrandbits(64), SAMPLES or [b"{}"], KEYS) for _ in range(rng.randint(1, 4))]
    lines = [line.replace(b"\n", b"") for line in lines]     # a line reader never yields one
    joiner = CriReassembler(max_bytes=rng.choice([64, 4096]))
    path = rng.choice(PATHS)
    out = [r for rec in records(lines, path) for r in joiner.feed(rec)] + joiner.flush()
    assert sorted(piece for r in out for piece in r.data.split(b"\n")) == sorted(lines)  # none lost
    for record in out:
        check(parser, record.data, record.origin)
