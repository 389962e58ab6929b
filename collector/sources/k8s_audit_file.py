"""Source: the files kube-apiserver writes with --audit-log-path, followed as they grow."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat

from collector.tail import FileTail


class K8sAuditFileConfig(BaseModel):
    """Follow a kube-apiserver audit log file (one audit.k8s.io Event per line)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["k8s_audit_file"] = "k8s_audit_file"
    path: Path = Field(description="The --audit-log-path of the API server.")
    poll_interval_secs: PositiveFloat = 0.5

    @property
    def parser_name(self) -> str:
        return "k8s-audit"

    def build(self, name: str, data_dir: Path, max_record_bytes: int) -> FileTail:
        checkpoints = data_dir / "checkpoints"
        checkpoints.mkdir(parents=True, exist_ok=True)
        return FileTail(self.path, checkpoints / f"{name}.json", max_record_bytes,
                        self.poll_interval_secs)
