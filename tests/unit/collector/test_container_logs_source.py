"""The container_logs source: kubelet-named files followed live, partial lines joined, one
checkpoint per file that never passes a held piece; rotation by rename and copytruncate."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from collector.parsers.cri_log import ContainerLogParser
from collector.sources.container_logs import ContainerLogsConfig, ContainerLogsSource
from ctrail.components import RawRecord

CID = "3d02975d4378f74f9a5005206e14745ce76947d970fad44ac6a5c5b80a3ccdf0"
NAME = f"web-7d4b9c_shop_nginx-{CID}.log"
T = "2024-05-02T10:00:00.000000001Z"
parser = ContainerLogParser()
_open: list[ContainerLogsSource] = []


@pytest.fixture(autouse=True)
def _close_sources():  # type: ignore[no-untyped-def]
    yield
    while _open:
        _open.pop().close()


def source(tmp_path: Path) -> ContainerLogsSource:
    config = ContainerLogsConfig(glob=str(tmp_path / "containers" / "*.log"),
                                 poll_interval_secs=0.01)
    built = config.build("logs", tmp_path / "data", 4096)
    _open.append(built)
    return built


def cri(stream: str, tag: str, message: str) -> bytes:
    return f"{T} {stream} {tag} {message}\n".encode()


def append(path: Path, *lines: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as handle:
        handle.write(b"".join(lines))


def drain(src: ContainerLogsSource, idle_reads: int = 3) -> list[RawRecord]:
    """Read and commit (as the collector does after publishing) until nothing comes."""
    out: list[RawRecord] = []
    idle = 0
    while idle < idle_reads:
        batch = src.read(100)
        src.commit(batch)
        out.extend(batch)
        idle = 0 if batch else idle + 1
    return out


def messages(records: list[RawRecord]) -> list[str]:
    return [e.message or "" for r in records for e in parser.parse(r)]


def test_lines_become_events_with_the_pod_from_the_kubelet_file_name(tmp_path: Path) -> None:
    log = tmp_path / "containers" / NAME
    append(log, cri("stdout", "F", "hello"), cri("stderr", "F", "oops"))
    (event, _) = [e for r in drain(source(tmp_path)) for e in parser.parse(r)]
    assert event.message == "hello" and event.stream == "stdout"
    assert event.kubernetes is not None and event.kubernetes.namespace == "shop"
    assert event.kubernetes.pod is not None and event.kubernetes.pod.name == "web-7d4b9c"
    assert event.container is not None and event.container.id == CID


def test_partial_pieces_are_joined_per_stream(tmp_path: Path) -> None:
    append(tmp_path / "containers" / NAME, cri("stdout", "P", "one "), cri("stderr", "F", "err"),
           cri("stdout", "P", "two "), cri("stdout", "F", "three"))
    assert messages(drain(source(tmp_path))) == ["err", "one two three"]


def test_rotation_by_rename_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    log = tmp_path / "containers" / NAME
    append(log, cri("stdout", "F", "1"), cri("stdout", "F", "2"))
    src = source(tmp_path)
    got = drain(src)
    append(log, cri("stdout", "F", "3"))                # written before the runtime reopens
    os.rename(log, log.with_name(NAME + ".20240502-100000"))
    append(log, cri("stdout", "F", "4"), cri("stdout", "F", "5"))
    got += drain(src)
    assert messages(got) == ["1", "2", "3", "4", "5"]


def test_copytruncate_loses_and_duplicates_nothing_read_before_the_copy(tmp_path: Path) -> None:
    log = tmp_path / "containers" / NAME
    append(log, cri("stdout", "F", "first line"), cri("stdout", "F", "second line"))
    src = source(tmp_path)
    got = drain(src)
    shutil.copy(log, log.with_name(NAME + ".1"))
    with open(log, "r+b") as handle:
        handle.truncate(0)
    append(log, cri("stdout", "F", "3"))
    got += drain(src)
    assert messages(got) == ["first line", "second line", "3"]


def test_a_restart_in_the_middle_of_a_partial_line_reads_it_again(tmp_path: Path) -> None:
    log = tmp_path / "containers" / NAME
    append(log, cri("stdout", "F", "before"), cri("stdout", "P", "held "),
           cri("stderr", "F", "between"))
    first = source(tmp_path)
    got = drain(first)
    assert messages(got) == ["before", "between"]        # "held " waits for its end
    first.close()
    append(log, cri("stdout", "F", "end"))
    got += drain(source(tmp_path))
    events = [e for r in got for e in parser.parse(r)]
    by_id = {e.event.id: e.message for e in events}
    # "between" is read twice (it follows the held piece) with the same id: the store keeps one.
    assert sorted(by_id.values()) == ["before", "between", "held end"]
    assert [e.message for e in events].count("held end") == 1


def test_a_restart_resumes_after_the_last_commit(tmp_path: Path) -> None:
    log = tmp_path / "containers" / NAME
    append(log, cri("stdout", "F", "a"), cri("stdout", "F", "b"))
    first = source(tmp_path)
    assert messages(drain(first)) == ["a", "b"]
    first.close()
    append(log, cri("stdout", "F", "c"))
    assert messages(drain(source(tmp_path))) == ["c"]


def test_new_files_are_followed_and_deleted_ones_end_with_their_checkpoint(tmp_path: Path) -> None:
    log = tmp_path / "containers" / NAME
    other = tmp_path / "containers" / f"db-0_shop_postgres-{'a' * 64}.log"
    append(log, cri("stdout", "F", "web"))
    src = source(tmp_path)
    assert messages(drain(src)) == ["web"]
    append(other, cri("stdout", "P", "db "), cri("stdout", "P", "unfinished"))
    time.sleep(0.02)
    assert messages(drain(src)) == []                   # held: the line is not finished
    assert src.paths == sorted([str(log), str(other)])
    other.unlink()
    deadline = time.monotonic() + 5
    got: list[RawRecord] = []
    while str(other) in src.paths and time.monotonic() < deadline:
        got += drain(src, idle_reads=1)
    assert messages(got) == ["db unfinished"]           # released as it stands at the end
    assert src.paths == [str(log)]
    assert len(list((tmp_path / "data" / "checkpoints" / "logs").glob("*.json"))) == 1


def _cri_case(real_data: Path) -> dict:  # type: ignore[type-arg]
    import orjson
    raw = (real_data / "fluentbit-k8s-container-logs/multiline_docker_cri_cases.json").read_bytes()
    return next(c for c in orjson.loads(raw)["cases"] if c["name"] == "cri")


def test_the_live_source_joins_fluent_bits_cri_case(tmp_path: Path, real_data: Path) -> None:
    case = _cri_case(real_data)
    append(tmp_path / "containers" / NAME,
           *(line.encode() + b"\n" for line in case["input_lines"]))
    assert messages(drain(source(tmp_path))) == case["expected_messages"]


def test_ctrail_ingest_joins_partial_lines_the_same_way(tmp_path: Path, real_data: Path) -> None:
    from collector.sources.files import FileSource
    path = real_data / "fluentbit-k8s-container-logs/cri_multiline_input.log"
    src = FileSource([str(path)], 4096, reassemble=True)
    assert messages(src.read(100)) == _cri_case(real_data)["expected_messages"]
    src.close()


def test_the_new_source_types_load_from_the_config(tmp_path: Path, real_data: Path) -> None:
    from collector import build_parser
    from ctrail.settings import Settings
    falco = real_data / "falco-alerts-json/falco_website_alerts.jsonl"
    settings = Settings(data_dir=tmp_path / "data", sources={  # type: ignore[arg-type]
        "falco": {"type": "file", "path": str(falco), "format": "falco"},
        "logs": {"type": "container_logs"},
        "docker": {"type": "docker_events", "filters": {"type": ["container"]}}})
    assert [c.type for c in settings.sources.values()] == ["file", "container_logs",
                                                          "docker_events"]
    config = settings.sources["falco"]
    tail = config.build("falco", settings.data_dir, 1 << 20)
    parser = build_parser(config.parser_name, settings.data_dir, settings.redaction)
    records = tail.read(1000)
    tail.commit(records)
    tail.close()
    assert len(records) == len(falco.read_bytes().splitlines())
    assert all(e.event.dataset == "falco.alerts" for r in records for e in parser.parse(r))
    with pytest.raises(ValueError, match="format"):
        Settings(sources={"x": {"type": "file", "path": "/x", "format": "container-log"}})
