"""Source: any line-per-record file one of our parsers reads (Docker events saved by `docker events
--format '{{json .}}'`, Falco's file_output, ...), followed as it grows.

One `file` type with a `format:` naming the parser, rather than one type per format: the tailing
is the same for all of them, and a new format needs a parser only. Container log files are not
accepted here: they need partial-line joining and per-file pod names (`container_logs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat

from collector.tail import FileTail

Format = Literal["docker-events", "falco", "k8s-audit", "registry", "harbor"]


class TailedFileConfig(BaseModel):
    """Follow a file of one record per line, in the format `format` names."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["file"] = "file"
    path: Path = Field(description="The file to follow; rotation by rename or copytruncate.")
    format: Format = Field(description="The parser (the `--source` names of `ctrail ingest`).")
    poll_interval_secs: PositiveFloat = 0.5

    @property
    def parser_name(self) -> str:
        return self.format

    def build(self, name: str, data_dir: Path, max_record_bytes: int) -> FileTail:
        checkpoints = data_dir / "checkpoints"
        checkpoints.mkdir(parents=True, exist_ok=True)
        return FileTail(self.path, checkpoints / f"{name}.json", max_record_bytes,
                        self.poll_interval_secs)
