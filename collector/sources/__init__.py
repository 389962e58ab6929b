"""Configured sources for `ctrail run`: one discriminated union, the registry of source types."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from collector.sources.cloudwatch_logs import CloudWatchLogsConfig
from collector.sources.container_logs import ContainerLogsConfig
from collector.sources.distribution_webhook import DistributionWebhookConfig
from collector.sources.docker_events import DockerEventsConfig
from collector.sources.falco_http import FalcoHttpConfig
from collector.sources.fluent_forward import FluentForwardConfig
from collector.sources.gcp_pubsub import GcpPubSubConfig
from collector.sources.harbor_webhook import HarborWebhookConfig
from collector.sources.k8s_audit_file import K8sAuditFileConfig
from collector.sources.k8s_audit_webhook import K8sAuditWebhookConfig
from collector.sources.kafka_topic import KafkaTopicConfig
from collector.sources.tailed_file import TailedFileConfig

SourceConfig = Annotated[
    K8sAuditFileConfig | K8sAuditWebhookConfig
    | FalcoHttpConfig | DistributionWebhookConfig | HarborWebhookConfig
    | DockerEventsConfig | ContainerLogsConfig | TailedFileConfig
    | FluentForwardConfig | CloudWatchLogsConfig | KafkaTopicConfig | GcpPubSubConfig,
    Field(discriminator="type")]
