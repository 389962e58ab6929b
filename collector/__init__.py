"""Collectors: sources read raw records, parsers normalise them to the Event model.

PARSERS is the registry of wire formats, keyed by the `--source` name of `ctrail ingest`.
"""

from __future__ import annotations

from typing import Final

from collector.parsers.k8s_audit import K8sAuditParser
from ctrail.components import Parser

PARSERS: Final[dict[str, type[Parser]]] = {
    "k8s-audit": K8sAuditParser,
}
