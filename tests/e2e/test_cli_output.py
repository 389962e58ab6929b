"""The CLI says what it did (issue 12): global options on either side of the command, --format
json honoured or refused, search warnings, our own audit records kept out of results, alerts by
raised time, a missing data directory, an empty timeline, and an ingest that stored nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctrail.cli.main import main

EXEC = "falco-k8saudit-traces/trace_files/exec_pod.json"
FALCO_ALERTS = "falco-alerts-json/falco_website_alerts.jsonl"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def ingested(ctrail, real_data: Path):  # type: ignore[no-untyped-def]
    done = ctrail("ingest", "--source", "k8s-audit", str(real_data / EXEC))
    assert done.status == 0, done.err
    return ctrail


def test_global_options_work_before_and_after_the_command(
        ingested, capsys: pytest.CaptureFixture[str], tmp_data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    before = run(capsys, "--data-dir", str(tmp_data_dir), "--format", "json", "alerts")
    after = run(capsys, "alerts", "--data-dir", str(tmp_data_dir), "--format", "json")
    assert before[0] == after[0] == 0
    assert before[1] == after[1] and '"rule":{"id":"CT-K8S-004"' in before[1]


def test_format_json_is_refused_where_it_means_nothing(ctrail, real_data: Path) -> None:  # type: ignore[no-untyped-def]
    refused = ctrail("ingest", "--source", "k8s-audit", str(real_data / EXEC), "--format", "json")
    assert refused.status == 2 and "--format json means nothing to `ctrail ingest`" in refused.err


def test_search_warns_about_unknown_fields_and_lowercase_operators(ingested) -> None:  # type: ignore[no-untyped-def]
    typo = ingested("search", "usr.name:minikube-user")
    assert typo.status == 0 and "no stored event has the field usr.name" in typo.err
    known = ingested("search", "user.name:minikube-user")
    assert known.err == "" and "minikube-user" in known.out
    words = ingested("search", 'user.name:minikube-user and event.action:create or "and not"')
    assert "'and' is searched for as a word" in words.err
    assert "'or' is searched for as a word" in words.err and "'not'" not in words.err


def test_our_own_audit_records_are_left_out_unless_asked_for(ingested) -> None:  # type: ignore[no-untyped-def]
    ingested("search", "*")                               # itself an audited action
    ingested("ingest", "--source", "k8s-audit", "/dev/null")   # stores the spooled records
    everything = ingested("search", "*", "--format", "json").json_lines()
    assert {d["event"]["dataset"] for d in everything} == {"kubernetes.audit"}
    own = ingested("search", "event.dataset:containertrail.audit", "--format", "json")
    assert own.json_lines() and {d["event"]["action"] for d in own.json_lines()} >= {"search"}


def test_alerts_since_counts_event_time_or_raised_time(ingested) -> None:  # type: ignore[no-untyped-def]
    # The trace's exec happened in 2018; its alert was raised just now.
    assert ingested("alerts", "--since", "1h", "--format", "json").json_lines() == []
    raised = ingested("alerts", "--since", "1h", "--time", "raised", "--format", "json")
    assert [d["rule"]["id"] for d in raised.json_lines()] == ["CT-K8S-004"]


def test_a_data_directory_that_does_not_exist_is_an_error(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    for command in (["alerts"], ["search", "*"], ["timeline", "--user", "alice"]):
        status, out, err = run(capsys, *command, "--data-dir", str(missing))
        assert status == 2 and "does not exist" in err and out == ""
    assert not missing.exists()


def test_an_empty_timeline_prints_one_line(ingested) -> None:  # type: ignore[no-untyped-def]
    empty = ingested("timeline", "--user", "nobody@example.com")
    assert empty.status == 0 and empty.out.count("\n") == 1 and len(empty.out) < 200
    assert ingested("search", "user.name:nobody").out == "events: none.\n"


def test_an_ingest_that_dead_letters_everything_fails_with_a_hint(ctrail, real_data: Path) -> None:  # type: ignore[no-untyped-def]
    wrong = ctrail("ingest", "--source", "k8s-audit", str(real_data / FALCO_ALERTS))
    assert wrong.status == 1 and wrong.out.startswith("0 accepted,")
    assert "wrong --source?" in wrong.err and "ctrail dlq list" in wrong.err


def test_log_format_json_writes_ecs_log_lines(ctrail_subprocess, tmp_path: Path,  # type: ignore[no-untyped-def]
                                              real_data: Path) -> None:
    done = ctrail_subprocess("--log-format", "json", "ingest", "--source", "falco",
                             str(real_data / EXEC), "--data-dir", str(tmp_path / "data"))
    lines = [json.loads(line) for line in done.err.splitlines() if line.startswith("{")]
    (dead,) = [line for line in lines if line["message"] == "Records of a batch were dead-lettered."]
    assert dead["log.level"] == "warning" and dead["ecs.version"]
    assert dead["log"]["logger"] == "ctrail.runtime.chain" and dead["dead_lettered"] == 1
