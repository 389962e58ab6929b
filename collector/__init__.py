"""Collectors: sources read raw records, parsers normalise them to the Event model.

PARSERS is the registry of wire formats, keyed by the `--source` name of `ctrail ingest`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Protocol

from collector.parsers.cri_log import ContainerLogParser
from collector.parsers.distribution import DistributionParser
from collector.parsers.docker_event import DockerEventParser
from collector.parsers.falco import FalcoParser
from collector.parsers.harbor import HarborParser
from collector.parsers.k8s_audit import K8sAuditParser
from collector.redact import RedactionConfig, Redactor
from ctrail.components import Parser


class ParserType(Protocol):
    """A parser class: its dataset, and built with the deployment's redactor (or none: a key
    of this process only)."""

    dataset: str

    def __call__(self, redactor: Redactor | None = None) -> Parser: ...


PARSERS: Final[dict[str, ParserType]] = {
    "k8s-audit": K8sAuditParser,
    "docker-events": DockerEventParser,
    "container-log": ContainerLogParser,
    "falco": FalcoParser,
    "registry": DistributionParser,
    "harbor": HarborParser,
}


def source_of_dataset(dataset: str | None) -> str | None:
    """The `--source` name whose parser produces `dataset` (one parser per dataset), or None:
    how `ctrail dlq replay` finds the parser that rejected a record from its dead letter."""
    return next((name for name, parser in PARSERS.items() if parser.dataset == dataset), None)


def build_parser(name: str, data_dir: Path, redaction: RedactionConfig) -> Parser:
    """PARSERS[name], built with the deployment's redactor."""
    return PARSERS[name](redaction.build(data_dir))
