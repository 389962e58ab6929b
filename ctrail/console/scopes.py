"""A user's scope (namespaces, clusters) as a query tree, ANDed into every query on the server.

The scope is joined to the parsed tree of the user's query (ctrail.query), never to its text, so
no query text (`NOT`, wildcards, `_exists_`, free text, an unbalanced parenthesis) can reach
outside it, and the store answers only rows inside it: pages are not filtered afterwards, so
counts, limits and exports are of the scoped rows alone. A document without a namespace (a
cluster-scoped object, a Docker event outside Kubernetes) is outside every namespace scope.
"""

from __future__ import annotations

from typing import Any, Final

from ctrail import query as q
from ctrail.cli.common import field
from ctrail.console.users import User

NAMESPACE: Final = "kubernetes.namespace"
CLUSTER: Final = "orchestrator.cluster.name"


def scope_filter(user: User) -> q.Query | None:
    """The condition every row this user sees must meet; None for an unscoped user."""
    parts: list[q.Query] = []
    for path, values in ((NAMESPACE, user.namespaces), (CLUSTER, user.clusters)):
        if values:
            equals = tuple(q.Equals(path, value) for value in values)
            parts.append(equals[0] if len(equals) == 1 else q.Or(equals))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else q.And(tuple(parts))


def scoped(query: str | q.Query, user: User) -> q.Query:
    """`query` (text or tree) within the user's scope."""
    tree = q.as_query(query)
    condition = scope_filter(user)
    return tree if condition is None else q.And((condition, tree))


def in_scope(doc: dict[str, Any], user: User) -> bool:
    """Whether a document is inside the scope: the second lock, for documents changed after the
    store answered (a timeline row explained with what the entity graph knows now)."""
    for path, values in ((NAMESPACE, user.namespaces), (CLUSTER, user.clusters)):
        if values and field(doc, path) not in values:
            return False
    return True
