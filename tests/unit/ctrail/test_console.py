"""The console's pure parts: scope trees, roles, triage folding, CSV cells, passwords, config."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctrail import query as q
from ctrail.console.api import csv_text
from ctrail.console.auth import hash_password, password_matches
from ctrail.console.config import ConsoleConfig
from ctrail.console.data import AlertFilter, group_alerts, scoped_subject, triage_state
from ctrail.console.graph import picture
from ctrail.console.scopes import in_scope, scope_filter, scoped
from ctrail.console.users import ConsoleDb, Role, User
from ctrail.errors import ConfigError, UsageError

PAY = User("pay", Role.RESPONDER, ("payments",))
TWO = User("two", Role.VIEWER, ("a", "b"), ("prod",))
ALL = User("root", Role.ADMIN)


def test_the_scope_is_anded_around_the_parsed_query_not_its_text() -> None:
    # Text that would escape a scope joined as text: "(scope) AND a) OR (b".
    with pytest.raises(q.QueryError):
        scoped("a) OR (b", PAY)
    tree = scoped("NOT kubernetes.namespace:payments OR *", PAY)
    assert isinstance(tree, q.And)
    assert tree.children[0] == q.Equals("kubernetes.namespace", "payments")
    assert tree.children[1] == q.parse_query("NOT kubernetes.namespace:payments OR *")
    assert scoped("x", ALL) == q.parse_query("x")          # unscoped: the query as it is
    assert scope_filter(TWO) == q.And((
        q.Or((q.Equals("kubernetes.namespace", "a"), q.Equals("kubernetes.namespace", "b"))),
        q.Equals("orchestrator.cluster.name", "prod")))


def test_in_scope_needs_every_limit() -> None:
    doc = {"kubernetes": {"namespace": "a"}, "orchestrator": {"cluster": {"name": "prod"}}}
    assert in_scope(doc, TWO) and in_scope(doc, ALL)
    assert not in_scope({"kubernetes": {"namespace": "a"}}, TWO)
    assert not in_scope({}, PAY)


def test_roles_are_ordered() -> None:
    assert Role.ADMIN.allows(Role.RESPONDER) and Role.RESPONDER.allows(Role.VIEWER)
    assert not Role.VIEWER.allows(Role.RESPONDER) and not Role.RESPONDER.allows(Role.ADMIN)


def test_triage_state_is_folded_from_the_records_in_order() -> None:
    history = [{"action": "acknowledge"}, {"action": "assign", "assignee": "ann"},
               {"action": "note", "note": "x"}, {"action": "close", "reason": "benign"}]
    state = triage_state(history)
    assert (state["status"], state["assignee"], state["reason"], state["notes"]) == (
        "closed", "ann", "benign", 1)
    reopened = triage_state([*history, {"action": "reopen"}])
    assert (reopened["status"], reopened["reason"]) == ("open", None)
    assert triage_state([])["status"] == "open"


def test_a_subject_card_is_whole_only_for_a_pod_or_container_in_scope() -> None:
    pod = {"type": "pod", "query": "payments/x", "namespace": "payments", "node": "n1"}
    assert scoped_subject(pod, PAY) == pod
    assert scoped_subject({**pod, "namespace": "shop"}, PAY) == {
        "type": "pod", "query": "payments/x", "limited_to_scope": True}
    user = {"type": "user", "query": "alice", "images_pushed": ["sha256:1"]}
    assert scoped_subject(user, PAY)["limited_to_scope"] and scoped_subject(user, ALL) == user


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted() -> None:
    doc = {"@timestamp": "t", "event": {"id": "1", "action": "=HYPERLINK(\"x\")"},
           "user": {"name": "@SUM(1)"}, "kubernetes": {"namespace": "-2+3"}}
    lines = csv_text([doc]).splitlines()
    assert lines[0].startswith("id,@timestamp,action")
    assert "'=HYPERLINK" in lines[1] and "'@SUM(1)" in lines[1] and "'-2+3" in lines[1]


def test_alert_filters_are_tree_conditions() -> None:
    tree = AlertFilter("x", severity="high", rule="CT-K8S-004").tree()
    assert tree == q.And((q.Text("x"), q.Equals("alert.severity", "high"),
                          q.Equals("rule.id", "CT-K8S-004")))


def test_passwords_are_argon2id_and_at_least_12_characters() -> None:
    with pytest.raises(ValueError, match="12"):
        hash_password("short")
    hashed = hash_password("a long enough password")
    assert hashed.startswith("$argon2id$")
    assert password_matches(hashed, "a long enough password")
    assert not password_matches(hashed, "a long enough passworD")
    assert not password_matches("not a hash", "x")


def test_console_db_refuses_duplicates_and_unknown_users(tmp_path: Path) -> None:
    db = ConsoleDb(tmp_path)
    db.add_user(PAY, "h")
    with pytest.raises(UsageError, match="exists already"):
        db.add_user(PAY, "h")
    with pytest.raises(UsageError, match="no user"):
        db.remove_user("ghost")
    db.add_session("s1", "pay", "c", 1e12)
    db.add_token("pay", "ctrail_t", "ci")
    assert db.session("s1") == (PAY, "c") and db.token_user("ctrail_t") == PAY
    db.update_user(User("pay", Role.VIEWER))             # a change ends the sessions
    assert db.session("s1") is None and db.token_user("ctrail_t") == User("pay", Role.VIEWER)
    db.remove_user("pay")                                # tokens go with the user
    assert db.token_user("ctrail_t") is None
    db.close()


def test_console_tls_files_are_checked_at_startup(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls_key_file needs tls_cert_file"):
        ConsoleConfig(tls_key_file=tmp_path / "k").check_tls()
    with pytest.raises(ConfigError, match="cannot load the TLS files"):
        ConsoleConfig(tls_cert_file=tmp_path / "missing.crt").check_tls()
    assert ConsoleConfig(tls_cert_file=tmp_path / "c").cookies_secure
    assert not ConsoleConfig().cookies_secure
    assert ConsoleConfig(secure_cookies=True).cookies_secure


def test_a_storm_folds_into_one_row_per_group_with_its_counts() -> None:
    def alert(i: int, group: str, count: int = 1) -> dict:  # type: ignore[type-arg]
        return {"@timestamp": f"2026-01-01T00:00:0{i}Z", "event": {"id": f"a{i}"},
                "alert": {"group_key": group, "count": count}}
    docs = [alert(1, "g1"), alert(2, "g2", 5), alert(3, "g1", 2), alert(4, "g1")]
    folded = group_alerts(docs)
    assert [(d["event"]["id"], d["group"]["alerts"], d["group"]["events"]) for d in folded] == [
        ("a2", 1, 5), ("a4", 3, 4)]


def test_the_entity_graph_picture_links_a_pod_to_its_containers_node_and_people() -> None:
    subject = {"type": "pod", "query": "shop/api-1", "namespace": "shop", "pod_name": "api-1",
               "node": "node-7", "workload_kind": "Deployment", "workload_name": "api",
               "digest": "sha256:" + "d1" * 32, "deployed_by": "alice", "pushed_by": "ci-bot",
               "containers": ["3f2a9c1e7b4d" + "0" * 52]}
    drawn = picture(subject)
    assert drawn is not None and drawn.centre.label == "shop/api-1"
    links = {(n.kind, n.link_kind, n.link_value) for n in drawn.around}
    assert links == {("container", "container", "3f2a9c1e7b4d" + "0" * 52),
                     ("node", None, None), ("workload", None, None),
                     ("image", "image", "sha256:" + "d1" * 32),
                     ("deployed by", "user", "alice"), ("pushed by", "user", "ci-bot")}
    assert all(0 <= n.x <= drawn.width and 0 <= n.y <= drawn.height for n in drawn.around)
    assert picture({"type": "user", "query": "x", "limited_to_scope": True}) is None
