"""Our own audit trail as a user meets it: searches, alert queries, hunts, evidence actions and
rule-set changes are stored as events of dataset containertrail.audit, found with
`ctrail search`, with the OS user, the action and its details; audit records spooled while
`ctrail run` holds the bus are published by it, and a spool a crash left is published once;
a Fluentd output receives them like any event."""

from __future__ import annotations

import getpass
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

from collector.sources.fluent_forward import FluentForwardConfig, ForwardSource
from ctrail.audit.spool import DRAINING, SPOOL
from ctrail.audit.trail import audit_event
from ctrail.bus.codec import encode
from ctrail.settings import Settings
from detectors import PACKAGED_RULES
from tests.signing_key import write_signing_key
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).with_name("ctrail")
SAMPLES = [str(p) for p in sorted((REPO / "samples" / "k8s-audit").glob("*.json"))]
EXEC_RULE = PACKAGED_RULES / "ct-k8s-004-exec-into-pod.yml"
AUDIT = "event.dataset:containertrail.audit"
ME = getpass.getuser()


def trail(ctrail, *config: str, query: str = AUDIT) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Our audit trail as stored, oldest first."""
    found = ctrail("search", query, "--limit", "1000", "--format", "json", *config)
    assert found.status == 0, found.err
    return found.json_lines()


def details(doc: dict[str, Any]) -> dict[str, Any]:
    return orjson.loads(doc["event"]["original"])


def actions(docs: list[dict[str, Any]]) -> list[str]:
    return [doc["event"]["action"] for doc in docs]


def test_searches_alert_queries_hunts_and_timelines_are_recorded_with_user_and_details(ctrail) -> None:  # type: ignore[no-untyped-def]
    assert ctrail("ingest", "--source", "k8s-audit", *SAMPLES).status == 0
    searched = ctrail("search", "event.action:delete", "--from", "2018-01-01T00:00:00Z",
                      "--to", "2019-01-01T00:00:00Z", "--limit", "3", "--format", "json")
    alerts = ctrail("alerts", "--rule", "CT-K8S-004", "--since", "36500d", "--format", "json")
    hunted = ctrail("hunt", str(EXEC_RULE), "--limit", "1", "--format", "json")
    looked = ctrail("timeline", "--user", "minikube-user", "--limit", "5", "--format", "json")
    assert (len(searched.json_lines()), len(alerts.json_lines()), len(hunted.json_lines()),
            len(looked.json_lines())) == (3, 2, 1, 1 + 5)         # the subject, then 5 events
    # The records wait in the audit spool until a pipeline runs: an ingest publishes them.
    assert ctrail("ingest", "--source", "k8s-audit", SAMPLES[0]).status == 0

    docs = trail(ctrail)
    assert actions(docs) == ["rules-change", "search", "alerts-search", "hunt", "timeline"]
    assert {doc["user"]["name"] for doc in docs} == {ME}
    search, alert_query, hunt, timeline = (details(doc) for doc in docs[1:])
    assert search == {**search, "query": "event.action:delete", "limit": 3, "results": 3,
                      "from": "2018-01-01T00:00:00+00:00", "to": "2019-01-01T00:00:00+00:00"}
    assert alert_query == {**alert_query, "query": 'rule.id:"CT-K8S-004"', "rule": "CT-K8S-004",
                           "since": "36500d", "limit": 1000, "results": 2}
    assert alert_query["from"] is not None and alert_query["to"] is None
    assert hunt == {**hunt, "rule": "CT-K8S-004", "rule_file": str(EXEC_RULE), "limit": 1,
                    "results": 1, "from": None, "to": None}
    assert timeline == {**timeline, "subject": "user", "query": "minikube-user", "limit": 5,
                        "results": 5}
    assert all(d["user"] == ME for d in (search, alert_query, hunt, timeline))
    assert (docs[1]["event"]["category"], docs[1]["event"]["type"]) == (["database"], ["access"])
    assert docs[1]["message"] == f"{ME} ran search"
    # Searchable like any event, by action and by user.
    found = ctrail("search", f"{AUDIT} AND event.action:hunt AND user.name:{ME}",
                   "--format", "json").json_lines()
    assert [d["event"]["id"] for d in found] == [docs[3]["event"]["id"]]


@pytest.fixture
def evidence_config(tmp_path: Path) -> Path:
    key = tmp_path / "signing.pem"
    write_signing_key(key)
    path = tmp_path / "ctrail.yaml"
    # The 2018 samples are far past 400 days: expiry deletes them, except what the hold keeps.
    path.write_text(f"""evidence:
  signing_key: {{file: {key}}}
  seal_after_secs: 0
  legal_holds: [{{name: CASE-7, subject: "user.name:minikube-user"}}]
""")
    return path


def test_evidence_verification_and_expiry_are_recorded(ctrail, evidence_config: Path) -> None:  # type: ignore[no-untyped-def]
    config = ("--config", str(evidence_config))
    assert ctrail("ingest", "--source", "k8s-audit", *SAMPLES, *config).status == 0
    assert ctrail("evidence", "verify", "--store", *config).status == 0
    expired = ctrail("evidence", "expire", *config)
    assert expired.status == 0, expired.err
    assert ctrail("ingest", "--source", "k8s-audit", SAMPLES[0], *config).status == 0

    docs = trail(ctrail, *config)
    assert actions(docs) == ["rules-change", "evidence-verify", "evidence-expire"]
    verify, expire = details(docs[1]), details(docs[2])
    assert verify == {**verify, "target": "store", "ok": True, "findings": 0,
                      "signatures_checked": True}
    assert verify["records"] > 0
    assert expire["deleted"] and set(expire["held"].values()) == {"CASE-7"}
    assert f"expired {len(expire['deleted'])} segments; {len(expire['held'])} kept by legal " \
           "holds" in expired.out
    assert (docs[2]["event"]["category"], docs[2]["event"]["type"]) == (["file"], ["deletion"])


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """A copy of our rule pack, to change."""
    copy = tmp_path / "rules"
    shutil.copytree(PACKAGED_RULES, copy, ignore=shutil.ignore_patterns("tests"))
    return copy


def rule_ids(directory: Path) -> list[str]:
    """Every `name:` in the files, read as plain text (independently of the loader)."""
    return sorted(line.split(":", 1)[1].strip() for path in directory.glob("*.yml")
                  for line in path.read_text().splitlines() if line.startswith("name:"))


def test_a_rule_change_is_recorded_once_at_the_next_start(ctrail, rules_dir: Path,  # type: ignore[no-untyped-def]
                                                          tmp_path: Path) -> None:
    config = tmp_path / "rules.yaml"
    config.write_text(f"detection:\n  rule_paths: [{rules_dir}]\n")
    ingest = ("ingest", "--source", "k8s-audit", SAMPLES[0], "--config", str(config))
    assert ctrail(*ingest).status == 0
    changes = f"{AUDIT} AND event.action:rules-change"     # not the searches below
    (first,) = trail(ctrail, "--config", str(config), query=changes)
    assert details(first)["added"] == rule_ids(rules_dir)
    assert (details(first)["removed"], details(first)["modified"]) == ([], [])

    # A comment is not a change of what a rule says.
    port_forward = rules_dir / "ct-k8s-005-port-forward.yml"
    port_forward.write_text("# reviewed by the security team\n" + port_forward.read_text())
    assert ctrail(*ingest).status == 0
    assert len(trail(ctrail, "--config", str(config), query=changes)) == 1

    port_forward.write_text(port_forward.read_text().replace("level: low", "level: high"))
    (rules_dir / "ct-k8s-019-node-proxy.yml").unlink()
    added = (rules_dir / "ct-k8s-005-port-forward.yml").read_text() \
        .replace("name: CT-K8S-005", "name: CT-K8S-900") \
        .replace("id: e552128e-6cad-4089-8153-e8c5f23440fa",
                 "id: 0b7e1c55-0000-4000-8000-000000000900")
    (rules_dir / "ct-k8s-900-local.yml").write_text(added)
    assert ctrail(*ingest).status == 0
    assert ctrail(*ingest).status == 0                      # and unchanged again
    docs = trail(ctrail, "--config", str(config), query=changes)
    assert len(docs) == 2
    change = details(docs[1])
    assert (change["added"], change["removed"], change["modified"]) \
        == (["CT-K8S-900"], ["CT-K8S-019"], ["CT-K8S-005"])
    assert change["user"] == ME and change["rule_paths"] == [str(rules_dir)]


def test_a_detect_stage_of_its_own_records_the_rule_set(ctrail, tmp_data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from ctrail.runtime.pipeline import Pipeline

    # What `ctrail worker process` builds: only the chain, on the configured bus.
    Pipeline(Settings(data_dir=tmp_data_dir), ("process",)).close()
    assert ctrail("ingest", "--source", "k8s-audit", SAMPLES[0]).status == 0
    (recorded,) = trail(ctrail)
    assert details(recorded)["added"] == rule_ids(PACKAGED_RULES)


def start_run(data_dir: Path, config: Path | None = None) -> subprocess.Popen[str]:
    args = [str(EXE), "run", "--data-dir", str(data_dir)]
    return subprocess.Popen([*args, *(("--config", str(config)) if config else ())],
                            cwd=REPO, stderr=subprocess.PIPE, text=True)


def stop_run(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def cli(data_dir: Path, *args: str) -> list[dict[str, Any]]:
    done = subprocess.run([str(EXE), *args, "--data-dir", str(data_dir), "--format", "json"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    return [orjson.loads(line) for line in done.stdout.splitlines()]


def test_searches_while_run_holds_the_bus_are_spooled_and_published_by_it(
        tmp_data_dir: Path) -> None:
    proc = start_run(tmp_data_dir)
    try:
        # Each of these searches is spooled too, and published by the run.
        wait_for(lambda: "rules-change" in actions(cli(tmp_data_dir, "search", AUDIT)))
        cli(tmp_data_dir, "search", "user.name:spool-probe", "--limit", "7")

        def probe() -> list[dict[str, Any]]:
            return [d for d in cli(tmp_data_dir, "search", f"{AUDIT} AND event.action:search")
                    if details(d)["query"] == "user.name:spool-probe"]
        wait_for(lambda: len(probe()) == 1)
        (recorded,) = probe()
        assert details(recorded) == {**details(recorded), "limit": 7, "results": 0}
        assert recorded["user"]["name"] == ME
    finally:
        stop_run(proc)


def test_a_spool_left_by_a_crash_is_published_exactly_once(ctrail, tmp_data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    before, during = (audit_event("search", {"query": f"crash-{n}"}) for n in (1, 2))
    assert ctrail("ingest", "--source", "k8s-audit", SAMPLES[0]).status == 0
    # A pickup published `before` (stored by the ingest below), then died before deleting the
    # draining file; `during` was spooled after that, and the writer's crash tore a line.
    (tmp_data_dir / DRAINING).write_bytes(encode(before) + b"\n")
    assert ctrail("ingest", "--source", "k8s-audit", SAMPLES[0]).status == 0
    (tmp_data_dir / DRAINING).write_bytes(encode(before) + b"\n")
    (tmp_data_dir / SPOOL).write_bytes(encode(during) + b"\n" + encode(during)[:40])

    proc = start_run(tmp_data_dir)
    try:
        wait_for(lambda: not (tmp_data_dir / DRAINING).exists()
                 and not (tmp_data_dir / SPOOL).exists())
        wait_for(lambda: len(cli(tmp_data_dir, "search", f"{AUDIT} AND NOT "
                                 "event.action:rules-change")) >= 2)
    finally:
        stop_run(proc)
    assert ctrail("ingest", "--source", "k8s-audit", SAMPLES[0]).status == 0   # store the rest
    stored = [d for d in trail(ctrail) if d["event"]["action"] == "search"]
    crashed = [details(d)["query"] for d in stored if details(d)["query"].startswith("crash-")]
    assert sorted(crashed) == ["crash-1", "crash-2"]
    assert {d["event"]["id"] for d in stored} >= {before.event.id, during.event.id}
    (torn,) = ctrail("dlq", "list", "--format", "json").json_lines()
    assert (torn["stage"], torn["origin"]) == ("audit-spool", f"{DRAINING} line 2")
    assert torn["original"] == encode(during)[:40].decode()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[ForwardSource]:
    source = FluentForwardConfig(port=0, parser="falco", allow_unauthenticated=True).build(
        "fluentd", tmp_path, 1024 * 1024)
    yield source
    source.close()


def test_a_fluentd_output_receives_the_audit_trail(tmp_path: Path, tmp_data_dir: Path,
                                                    receiver: ForwardSource) -> None:
    config = tmp_path / "ctrail.yaml"
    config.write_text(f"outputs:\n  siem: {{type: fluentd, port: {receiver.port}, "
                      f"tag_prefix: ct}}\n")
    proc = start_run(tmp_data_dir, config)
    forwarded: list[dict[str, Any]] = []

    def received(action: str) -> bool:
        records = receiver.read(1000)
        receiver.commit(records)
        forwarded.extend(orjson.loads(r.data) for r in records)
        return any(d["event"]["action"] == action for d in forwarded)
    try:
        wait_for(lambda: received("rules-change"))
        cli(tmp_data_dir, "search", "user.name:forward-probe", "--config", str(config))
        wait_for(lambda: received("search"))
    finally:
        stop_run(proc)
    (search,) = [d for d in forwarded if d["event"]["action"] == "search"]
    assert search["event"]["dataset"] == "containertrail.audit"
    assert search["user"]["name"] == ME
    assert details(search)["query"] == "user.name:forward-probe"
