"""Sigma ATT&CK tags become ECS threat fields."""

from __future__ import annotations

from detectors.attack import threat_from_tags


def test_techniques_subtechniques_and_tactics() -> None:
    threat = threat_from_tags(["attack.privilege_escalation", "attack.command-and-control",
                               "attack.t1552.007", "attack.T1609", "attack.g0096",
                               "attack.s0002", "cve.2021-44228", "detection.threat-hunting"])
    assert threat is not None
    assert threat.model_dump(exclude_none=True) == {
        "framework": "MITRE ATT&CK",
        "technique": {"id": ("T1552.007", "T1609"),
                      "reference": ("https://attack.mitre.org/techniques/T1552/007/",
                                    "https://attack.mitre.org/techniques/T1609/")},
        "tactic": {"name": ("Privilege Escalation", "Command and Control")},
    }


def test_no_attack_tags_means_no_threat() -> None:
    assert threat_from_tags(["cve.2021-44228"]) is None
    assert threat_from_tags([]) is None
