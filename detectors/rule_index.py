"""Which rules can possibly match an event, found by look-up instead of trying every rule.

Most Sigma rules require one field to equal one of a few strings: `objectRef.resource: pods`,
`verb: [create, update]`. Such a requirement, taken from the top-level AND of the rule's
condition, is the rule's index key; the index maps each key text to its rules, so an event is
tested only against the rules keyed by its own value of that field, plus the rules that have no
key. With SigmaHQ's 16 audit rules and ours, a typical event meets 3 or 4 rules instead of 17,
and the cost stays flat as the pack grows.

The key is a necessary condition, never a sufficient one: candidates are still matched in full.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Sequence

from sigma.conditions import ConditionAND, ConditionFieldEqualsValueExpression, ConditionOR

from detectors.field_mapping import AUDIT_PREFIX
from detectors.matcher import EventView, FieldPath, flatten_or
from detectors.values import exact_text

if TYPE_CHECKING:
    from detectors.sigma_rules import CompiledRule

IndexKey = tuple[str, frozenset[str]]

# The most selective fields first: an audit rule keyed on its resource meets fewer events than
# one keyed on its verb.
PREFERRED_FIELDS: Final = (f"{AUDIT_PREFIX}objectRef.resource",
                           f"{AUDIT_PREFIX}objectRef.subresource", f"{AUDIT_PREFIX}verb")


def index_key(conditions: Sequence[Any]) -> IndexKey | None:
    """The field and lower-case texts one of which a rule with these condition trees requires,
    or None. Only a single condition is keyed (several conditions are OR-ed)."""
    if len(conditions) != 1:
        return None
    keys = required(conditions[0])
    if not keys:
        return None
    rank = {name: i for i, name in enumerate(PREFERRED_FIELDS)}
    return min(keys, key=lambda key: rank.get(key[0], len(rank)))


def required(node: Any) -> list[IndexKey]:
    """Every (field, texts) requirement the tree imposes through ANDs from its root."""
    if isinstance(node, ConditionAND):
        return [key for arg in node.args for key in required(arg)]
    if isinstance(node, ConditionFieldEqualsValueExpression):
        text = exact_text(node.value)
        return [(node.field, frozenset((text,)))] if text is not None else []
    if isinstance(node, ConditionOR):
        alternatives = flatten_or(node)
        leaves = [a for a in alternatives if isinstance(a, ConditionFieldEqualsValueExpression)]
        texts = [exact_text(leaf.value) for leaf in leaves]
        fields = {leaf.field for leaf in leaves}
        if len(leaves) == len(alternatives) and len(fields) == 1 and None not in texts:
            return [(fields.pop(), frozenset(t for t in texts if t is not None))]
    return []


class RuleIndex:
    """The rules of one dataset, by index key; candidates() keeps the rules' load order."""

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        self.unkeyed: list[tuple[int, CompiledRule]] = []
        self.keyed: dict[str, tuple[FieldPath, dict[str, list[tuple[int, CompiledRule]]]]] = {}
        for position, rule in enumerate(rules):
            if rule.key is None:
                self.unkeyed.append((position, rule))
                continue
            field, texts = rule.key
            _, table = self.keyed.setdefault(field, (FieldPath(field), {}))
            for text in texts:
                table.setdefault(text, []).append((position, rule))

    def candidates(self, view: EventView) -> list[CompiledRule]:
        found = list(self.unkeyed)
        for path, table in self.keyed.values():
            for text in view.lowered(path):
                hits = table.get(text)
                if hits:
                    found.extend(hits)
        if len(found) > len(self.unkeyed):
            found = sorted(dict(found).items())    # once each, in load order
        return [rule for _, rule in found]
