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
from sigma.types import SigmaNumber

from detectors.field_mapping import AUDIT_PREFIX
from detectors.matcher import EventView, FieldPath, flatten_or
from detectors.values import exact_text

if TYPE_CHECKING:
    from detectors.sigma_rules import CompiledRule

# A key's values: lower-case texts, and numbers (as floats) for Sigma number values.
IndexKey = tuple[str, frozenset[str | float]]

# The most selective fields first: an audit rule keyed on its resource meets fewer events than
# one keyed on its verb.
PREFERRED_FIELDS: Final = (f"{AUDIT_PREFIX}objectRef.resource",
                           f"{AUDIT_PREFIX}objectRef.subresource", f"{AUDIT_PREFIX}verb")


def index_key(conditions: Sequence[Any]) -> IndexKey | None:
    """The field and values one of which a rule with these condition trees requires, or None.
    Only a single condition is keyed (several conditions are OR-ed)."""
    if len(conditions) != 1:
        return None
    keys = required(conditions[0])
    if not keys:
        return None
    rank = {name: i for i, name in enumerate(PREFERRED_FIELDS)}
    return min(keys, key=lambda key: rank.get(key[0], len(rank)))


def required(node: Any) -> list[IndexKey]:
    """Every (field, values) requirement the tree imposes: through ANDs from its root, and
    through an OR where every alternative requires the same field (the values united), as
    `(resource: events and verb: delete) or (resource: configmaps and ...)` requires a resource
    of the two."""
    if isinstance(node, ConditionAND):
        return [key for arg in node.args for key in required(arg)]
    if isinstance(node, ConditionFieldEqualsValueExpression):
        value = key_value(node.value)
        return [(node.field, frozenset((value,)))] if value is not None else []
    if isinstance(node, ConditionOR):
        alternatives = [required(alternative) for alternative in flatten_or(node)]
        common = [field for field, _ in alternatives[0]
                  if all(any(f == field for f, _ in keys) for keys in alternatives[1:])]
        return [(field, frozenset().union(*(next(v for f, v in keys if f == field)
                                           for keys in alternatives)))
                for field in dict.fromkeys(common)]
    return []


def key_value(value: Any) -> str | float | None:
    """What a value is looked up as: the lower-cased text of a case-insensitive string without
    wildcards, a number as a float (as number_key reads an event's value), else None."""
    if type(value) is SigmaNumber:
        return float(value.number)
    return exact_text(value)


def number_key(value: Any) -> float | None:
    """An event value as a number-keyed rule's test reads it (detectors.values: a number, or
    a string that parses as one; never a boolean), or None."""
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, (int, float)) or type(value) is str:
            return float(value)
    except (ValueError, OverflowError):
        return None
    return None


class RuleIndex:
    """The rules of one dataset, by index key; candidates() keeps the rules' load order."""

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        self.unkeyed: list[tuple[int, CompiledRule]] = []
        # field -> (its path, whether any key of it is a number, rules by key value)
        self.keyed: dict[str, tuple[FieldPath, bool, dict[str | float, list[tuple[int, CompiledRule]]]]] = {}
        for position, rule in enumerate(rules):
            if rule.inert:
                continue
            if rule.key is None:
                self.unkeyed.append((position, rule))
                continue
            field, values = rule.key
            path, numbers, table = self.keyed.get(field, (FieldPath(field), False, {}))
            numbers = numbers or any(isinstance(value, float) for value in values)
            self.keyed[field] = (path, numbers, table)
            for value in values:
                table.setdefault(value, []).append((position, rule))

    def candidates(self, view: EventView) -> list[CompiledRule]:
        found = list(self.unkeyed)
        for path, numbers, table in self.keyed.values():
            for text in view.lowered(path):
                hits = table.get(text)
                if hits:
                    found.extend(hits)
            if numbers:
                for value in view.values(path):
                    hits = table.get(number_key(value))     # type: ignore[arg-type]
                    if hits:
                        found.extend(hits)
        if len(found) > len(self.unkeyed):
            found = sorted(dict(found).items())    # once each, in load order
        return [rule for _, rule in found]
