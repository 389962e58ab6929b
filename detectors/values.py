"""One Sigma value -> a test of one field value from an event: the leaves of a compiled rule.

Semantics, as Sigma defines them and pySigma's backends apply them:
- Strings match case-insensitively unless `|cased`; `*` and `?` are wildcards, and a plain
  string must equal the whole value. `|contains`, `|startswith` and `|endswith` arrive here as
  wildcards pySigma has already added.
- Numbers, booleans and strings meet across types the way a search store indexes them: the rule
  string `'403'` matches the number 403, the number 403 matches the string `"403"`, and `true`
  matches the string `"True"`.
- `|re` is searched, not anchored (the rule writes `^` and `$` where it means them), with
  pySigma's regular-expression engine (RE2 by default: linear time, whatever a rule contains);
  case-sensitive unless `|i`.
- `|cidr` matches an IP address string inside the network; `|lt`, `|lte`, `|gt`, `|gte` and
  `|neq` compare numbers.

A value type or modifier this module cannot match (`|expand` placeholders, `|fieldref`,
timestamp parts) raises RuleCompileError when the rule loads, never later while matching.
"""

from __future__ import annotations

import operator
import re
from ipaddress import ip_address
from typing import Any, Callable, Final

from sigma.policy import default_policy
from sigma.types import (
    CompareOperators,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExpansion,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaString,
    SpecialChars,
)

from ctrail.errors import ConfigError

ValueTest = Callable[[Any], bool]

COMPARE: Final = {CompareOperators.LT: operator.lt, CompareOperators.LTE: operator.le,
                  CompareOperators.GT: operator.gt, CompareOperators.GTE: operator.ge,
                  CompareOperators.NEQ: operator.ne}


class RuleCompileError(ConfigError):
    """A rule uses a Sigma feature the matcher does not implement; the rule is not loaded."""


def as_text(value: Any) -> str | None:
    """The text a string pattern is matched against; None for objects, lists and nulls."""
    if type(value) is str:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return None


def value_test(value: Any) -> ValueTest:
    """A test for one event value; raises RuleCompileError for unsupported Sigma types."""
    if isinstance(value, SigmaString):       # SigmaCasedString included
        return string_test(value, cased=isinstance(value, SigmaCasedString))
    if isinstance(value, SigmaBool):
        return _bool_test(value.boolean)
    if isinstance(value, SigmaNumber):
        return _number_test(value.number)
    if isinstance(value, SigmaRegularExpression):
        return _regex_test(value)
    if isinstance(value, SigmaCIDRExpression):
        return _cidr_test(value)
    if isinstance(value, SigmaCompareExpression):
        return _compare_test(value)
    if isinstance(value, SigmaExpansion):    # |windash, |base64offset: any of the variants
        tests = [value_test(v) for v in value.values]
        return lambda x: any(test(x) for test in tests)
    raise RuleCompileError(f"{type(value).__name__} values are not supported by the matcher")


def exact_text(value: Any) -> str | None:
    """The lower-cased text of a case-insensitive string without wildcards, else None. Such
    values are the common case (`verb: create`) and are matched as a set in one lookup."""
    if type(value) is not SigmaString or not all(isinstance(p, str) for p in value.s):
        return None
    return "".join(value.s).lower()  # type: ignore[arg-type]


def string_test(value: SigmaString, cased: bool) -> ValueTest:
    parts = _merged_parts(value)
    fold: Callable[[str], str] = str if cased else str.lower
    parts = [fold(p) if isinstance(p, str) else p for p in parts]
    many = SpecialChars.WILDCARD_MULTI
    if all(isinstance(p, str) for p in parts):
        whole = "".join(parts)  # type: ignore[arg-type]
        return lambda x: (t := as_text(x)) is not None and fold(t) == whole
    if parts == [many]:
        return lambda x: as_text(x) is not None
    if len(parts) == 3 and parts[0] is many and parts[2] is many and isinstance(parts[1], str):
        inner = parts[1]
        return lambda x: (t := as_text(x)) is not None and inner in fold(t)
    if len(parts) == 2 and isinstance(parts[0], str) and parts[1] is many:
        prefix = parts[0]
        return lambda x: (t := as_text(x)) is not None and fold(t).startswith(prefix)
    if len(parts) == 2 and parts[0] is many and isinstance(parts[1], str):
        suffix = parts[1]
        return lambda x: (t := as_text(x)) is not None and fold(t).endswith(suffix)
    pattern = re.compile("".join(_regex_part(p) for p in parts), re.DOTALL)
    return lambda x: (t := as_text(x)) is not None and pattern.fullmatch(fold(t)) is not None


def _merged_parts(value: SigmaString) -> list[str | SpecialChars]:
    """The string's parts with adjacent plain text joined; placeholders are refused."""
    parts: list[str | SpecialChars] = []
    for part in value.s:
        if isinstance(part, str):
            if parts and isinstance(parts[-1], str):
                parts[-1] += part
            else:
                parts.append(part)
        elif isinstance(part, SpecialChars):
            parts.append(part)
        else:
            raise RuleCompileError(f"placeholder %{part.name}% (|expand) is not supported")
    return parts


def _regex_part(part: str | SpecialChars) -> str:
    if isinstance(part, str):
        return re.escape(part)
    return ".*" if part is SpecialChars.WILDCARD_MULTI else "."


def _bool_test(expected: bool) -> ValueTest:
    word = "true" if expected else "false"
    return lambda x: x is expected or (type(x) is str and x.lower() == word)


def _number_test(expected: int | float) -> ValueTest:
    def test(x: Any) -> bool:
        if isinstance(x, bool):
            return False
        if isinstance(x, (int, float)):
            return bool(x == expected)
        if type(x) is str:
            try:
                return float(x) == expected
            except ValueError:
                return False
        return False
    return test


def _regex_test(value: SigmaRegularExpression) -> ValueTest:
    flags = 0
    for flag in value.flags:
        flags |= SigmaRegularExpression.sigma_to_python_flags[flag]
    engine = (value.policy or default_policy).regex_engine
    pattern = engine.compile(str(value.regexp), flags)
    return lambda x: (t := as_text(x)) is not None and pattern.search(t) is not None


def _cidr_test(value: SigmaCIDRExpression) -> ValueTest:
    network = value.network

    def test(x: Any) -> bool:
        if type(x) is not str:
            return False
        try:
            return ip_address(x) in network
        except ValueError:
            return False
    return test


def _compare_test(value: SigmaCompareExpression) -> ValueTest:
    compare, bound = COMPARE[value.op], value.number.number

    def test(x: Any) -> bool:
        if isinstance(x, bool) or not isinstance(x, (int, float, str)):
            return False
        try:
            return bool(compare(float(x) if type(x) is str else x, bound))
        except ValueError:
            return False
    return test
