"""Configured sources for `ctrail run`: one discriminated union, the registry of source types."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from collector.sources.k8s_audit_file import K8sAuditFileConfig
from collector.sources.k8s_audit_webhook import K8sAuditWebhookConfig

SourceConfig = Annotated[K8sAuditFileConfig | K8sAuditWebhookConfig, Field(discriminator="type")]
