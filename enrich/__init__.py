"""Enrichers: attach what is known about an event's subject before it is stored and matched."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ctrail.event import Event
from enrich.audit_context import attach_audit_context


class EnrichConfig(BaseModel):
    """Enrichment settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["audit_context"] = "audit_context"
    cluster_name: str | None = Field(
        None, description="orchestrator.cluster.name for events whose source does not say it.")

    def build(self) -> "AuditContextEnricher":
        return AuditContextEnricher(self.cluster_name)


class AuditContextEnricher:
    """Enricher: the audit event's own object reference and pod metadata as ECS fields."""

    def __init__(self, cluster_name: str | None) -> None:
        self.cluster_name = cluster_name

    def enrich(self, event: Event) -> Event:
        return attach_audit_context(event, self.cluster_name)
