"""Sigma `attack.*` tags -> the ECS `threat.*` group of an alert.

Sigma writes techniques as `attack.t1609` or `attack.t1552.007` and tactics by their short name,
`attack.execution`, `attack.privilege-escalation` (older rules: `privilege_escalation`). ECS wants
technique ids as ATT&CK spells them (`T1552.007`, with the technique's page as its reference)
and tactic names as titles (`Privilege Escalation`, `Command and Control`). Group (`g0096`) and
software (`s0002`) tags name no tactic and are left out.
"""

from __future__ import annotations

import re
from typing import Final, Iterable

from ctrail.event import Threat, ThreatTactic, ThreatTechnique

TECHNIQUE: Final = re.compile(r"t(\d{4})(?:\.(\d{3}))?")
GROUP_OR_SOFTWARE: Final = re.compile(r"[gs]\d{4}")
LOWER_WORDS: Final = frozenset({"and", "of", "the"})


def threat_from_tags(tags: Iterable[str]) -> Threat | None:
    """The ATT&CK techniques and tactics a rule's tags name; None when there are none."""
    techniques: list[str] = []
    tactics: list[str] = []
    for tag in tags:
        namespace, _, name = tag.lower().partition(".")
        if namespace != "attack" or not name:
            continue
        if technique := TECHNIQUE.fullmatch(name):
            techniques.append(technique_id(technique))
        elif not GROUP_OR_SOFTWARE.fullmatch(name):
            tactics.append(tactic_name(name))
    if not techniques and not tactics:
        return None
    return Threat(
        technique=ThreatTechnique(id=tuple(techniques),
                                  reference=tuple(technique_reference(t) for t in techniques))
        if techniques else None,
        tactic=ThreatTactic(name=tuple(tactics)) if tactics else None)


def technique_id(match: re.Match[str]) -> str:
    number, sub = match.groups()
    return f"T{number}.{sub}" if sub else f"T{number}"


def technique_reference(technique: str) -> str:
    return f"https://attack.mitre.org/techniques/{technique.replace('.', '/')}/"


def tactic_name(short: str) -> str:
    words = short.replace("_", "-").split("-")
    return " ".join(w if i and w in LOWER_WORDS else w.capitalize() for i, w in enumerate(words))
