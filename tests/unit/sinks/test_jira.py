"""Jira: an issue per alert group, comments on repeats, a transition when the group resolves."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from chat_ops_receivers import JiraReceiver, adf_problems, adf_text
from receivers import make_alert
from sinks.jira import JiraConfig, JiraNotifier, document, pick_transition, to_adf, to_wiki
from sinks.notify.config import NotifyConfig
from sinks.notify.message import Message, Outcome, Pending


@pytest.fixture
def jira() -> Iterator[JiraReceiver]:
    receiver = JiraReceiver()
    yield receiver
    receiver.close()


def notifier(jira: JiraReceiver, monkeypatch: pytest.MonkeyPatch, **extra: object) -> JiraNotifier:
    monkeypatch.setenv("T_JIRA", jira.token)
    return JiraConfig.model_validate({
        "url": jira.base, "user": jira.user, "token": {"env": "T_JIRA"}, "project": "SEC",
        **extra}).build("tickets", "https://kibana.example.com")


def test_the_issue_document_is_valid_adf_with_the_facts_and_next_steps() -> None:
    alerts = [make_alert(i) for i in range(3)]
    doc = to_adf(document(alerts, "https://kibana.example.com", "ContainerTrail raised this."))
    assert adf_problems(doc) == []
    text = adf_text(doc)
    for expected in ("Who: alice@example.com", "Pod: web-1", "Alerts: 3 (3 occurrences)",
                     "alert-000000, alert-000001, alert-000002", "ctrail timeline --pod shop/web-1",
                     "Open in Kibana"):
        assert expected in text, expected
    link = doc["content"][-1]["content"][0]["marks"][0]
    assert link["type"] == "link" and link["attrs"]["href"].startswith("https://kibana")


def test_wiki_markup_for_v2_escapes_links_and_macros_in_the_data() -> None:
    alert = make_alert(1, pod="[evil|https://evil.example]", user="{html}<script>")
    wiki = to_wiki(document([alert], None, "ContainerTrail raised this."))
    assert "\\[evil\\|https://evil.example\\]" in wiki and "\\{html\\}" in wiki
    outside_noformat = "".join(wiki.split("{noformat}")[::2])
    assert "[evil|" not in outside_noformat.replace("\\[evil\\|", "")
    assert "{noformat}\nctrail timeline --pod" in wiki      # literal in a noformat block
    breakout = to_wiki([("code", "x {noformat} [evil|https://evil.example]")])
    assert breakout.count("{noformat}") == 2


def test_first_alert_creates_an_issue_later_ones_comment_on_it(
        jira: JiraReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    n = notifier(jira, monkeypatch, priorities={"high": "High"})
    [create] = n.messages([Pending(1, make_alert(1, severity="high", pod="web\n1 " + "x" * 300))], 3)
    assert create.kind == "trigger"
    created = n.post(create)
    assert created.outcome is Outcome.DELIVERED and created.reference == "SEC-1"
    fields = jira.issues["SEC-1"]["fields"]
    assert len(fields["summary"]) == 255 and "\n" not in fields["summary"]
    assert fields["priority"] == {"name": "High"} and fields["issuetype"] == {"name": "Task"}
    assert fields["labels"][:2] == ["containertrail", "CT-K8S-004"]
    assert fields["labels"][2].startswith("ctrail-group-")
    repeat = [Pending(2, make_alert(2), incident="SEC-1"), Pending(3, make_alert(3), incident="SEC-1")]
    [comment] = n.messages(repeat, 3)
    assert comment.kind == "comment" and comment.key == "SEC-1" and comment.seqs == (2, 3)
    assert n.post(comment).outcome is Outcome.DELIVERED
    assert "2 more alert(s)" in adf_text(jira.issues["SEC-1"]["comments"][0])
    assert not jira.problems and len(jira.issues) == 1


def test_a_comment_on_a_deleted_issue_opens_a_new_one(jira: JiraReceiver,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    n = notifier(jira, monkeypatch)
    [comment] = n.messages([Pending(1, make_alert(1), incident="SEC-77")], 3)
    result = n.post(comment)
    assert result.outcome is Outcome.DELIVERED and result.reference == "SEC-1"
    assert [d.path.rsplit("/", 1)[-1] for d in jira.refused] == ["comment"]


def test_resolving_transitions_to_done_once(jira: JiraReceiver,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    n = notifier(jira, monkeypatch)
    n.post(n.messages([Pending(1, make_alert(1))], 3)[0])
    resolve = n.resolve_message("g", "SEC-1")
    assert n.post(resolve).outcome is Outcome.DELIVERED
    assert jira.issues["SEC-1"]["status"] == "Done"
    again = n.post(resolve)          # already done: nothing to do, nothing posted
    assert again.outcome is Outcome.DELIVERED and "no resolving transition" in again.detail
    assert [d.method for d in jira.accepted].count("POST") == 2
    assert n.post(n.resolve_message("g", "SEC-404")).outcome is Outcome.DELIVERED


def test_transition_choice_by_name_or_done_category() -> None:
    transitions = [{"id": "11", "name": "Start", "to": {"name": "In Progress",
                                                        "statusCategory": {"key": "indeterminate"}}},
                   {"id": "41", "name": "Close", "to": {"name": "Closed",
                                                        "statusCategory": {"key": "done"}}},
                   {"id": "51", "name": "Resolve", "to": {"name": "Resolved",
                                                          "statusCategory": {"key": "done"}}}]
    assert pick_transition(transitions, None) == "41"
    assert pick_transition(transitions, "resolve") == "51"
    assert pick_transition(transitions, "Resolved") == "51"
    assert pick_transition(transitions, "Won't do") is None


def test_auth_failures_are_retried_and_bad_requests_rejected_with_jiras_reasons(
        jira: JiraReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_BAD", "wrong-token")
    bad = JiraConfig.model_validate({"url": jira.base, "user": jira.user,
                                     "token": {"env": "T_BAD"}, "project": "SEC"}).build("t", None)
    [message] = bad.messages([Pending(1, make_alert(1))], 3)
    denied = bad.post(message)
    assert denied.outcome is Outcome.RETRY and denied.status == 401
    n = notifier(jira, monkeypatch, project="NOPE")
    [message] = n.messages([Pending(1, make_alert(1))], 3)
    rejected = n.post(message)
    assert rejected.outcome is Outcome.REJECTED and "project: valid project" in rejected.detail
    pat = JiraConfig.model_validate({"url": jira.base, "token": {"env": "T_BAD"},
                                     "project": "SEC", "api_version": 2}).build("t", None)
    pat.post(Message((1,), {"issue": None, "create": {"fields": {}}}, "trigger"))
    assert jira.refused[-1].headers["authorization"] == "Bearer wrong-token"
    assert jira.refused[-1].path == "/rest/api/2/issue"


def test_without_resolving_later_alerts_still_comment_on_the_groups_issue(
        jira: JiraReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_JIRA", jira.token)
    config = NotifyConfig.model_validate({"receivers": {"tickets": {
        "type": "jira", "url": jira.base, "user": jira.user, "token": {"env": "T_JIRA"},
        "project": "SEC", "resolve_after_secs": None}}})
    service = config.build(tmp_path)
    try:
        for i in range(3):
            service.enqueue([make_alert(i)])
            service.sender.tick()
    finally:
        service.close()
    assert len(jira.issues) == 1 and len(jira.issues["SEC-1"]["comments"]) == 2
    assert jira.alerts_covered() == 3 and jira.issues["SEC-1"]["status"] == "To Do"


def test_a_create_whose_answer_was_lost_is_found_by_its_label_not_made_twice(
        jira: JiraReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    n = notifier(jira, monkeypatch)
    jira.lose_creates = 1                       # Jira makes SEC-1, the answer never arrives
    [create] = n.messages([Pending(1, make_alert(1))], 3)
    lost = n.post(create)
    assert lost.outcome is Outcome.RETRY and lost.status == 504 and list(jira.issues) == ["SEC-1"]
    [again] = n.messages([Pending(1, make_alert(1)), Pending(2, make_alert(2))], 3)
    found = n.post(again)                       # searches by the group label, comments
    assert found.outcome is Outcome.DELIVERED and found.reference == "SEC-1"
    assert list(jira.issues) == ["SEC-1"] and len(jira.issues["SEC-1"]["comments"]) == 1
    assert [d.path.split("?")[0] for d in jira.accepted][-2:] == [
        "/rest/api/3/search/jql", "/rest/api/3/issue/SEC-1/comment"]
    [later] = n.messages([Pending(3, make_alert(3, pod="db-0"))], 3)
    assert n.post(later).reference == "SEC-2"    # other groups create as usual, no search
    assert jira.accepted[-1].path == "/rest/api/3/issue" and not jira.problems
