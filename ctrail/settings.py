"""The root Settings: one YAML file, validated by pydantic, with CTRAIL_… environment overrides.

A file may hold only the sections it changes; everything else keeps its default. Environment
variables override the file: `CTRAIL_DATA_DIR`, and nested keys with a double underscore,
e.g. `CTRAIL_ENRICH__CLUSTER_NAME=prod-eu`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from collector.redact import RedactionConfig
from collector.sources import SourceConfig
from ctrail.bus.kafka_config import KafkaBusConfig
from ctrail.bus.local_config import LocalBusConfig
from ctrail.console.config import ConsoleConfig
from ctrail.errors import ConfigError
from ctrail.runtime.ops import OpsConfig
from ctrail.runtime.self_watch import WatchConfig
from detectors import SigmaDetectorConfig
from enrich import EnrichConfig
from sinks import StoreConfig
from sinks.evidence import EvidenceConfig
from sinks.fluentd import FluentdConfig
from sinks.notify.config import REPORT_RECEIVER_TYPES, NotifyConfig
from sinks.reports import ReportConfig
from sinks.sqlite import SqliteConfig


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PipelineConfig(Section):
    batch_events: PositiveInt = Field(1000, description="Records a stage handles per batch.")
    max_record_bytes: PositiveInt = Field(
        1024 * 1024, description="A raw record larger than this is dead-lettered, not parsed.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CTRAIL_", env_nested_delimiter="__",
                                      extra="forbid", frozen=True)

    data_dir: Path = Field(Path("ctrail-data"), description="Where the local log and store live.")
    bus: Annotated[LocalBusConfig | KafkaBusConfig, Field(discriminator="type")] = LocalBusConfig()
    store: StoreConfig = SqliteConfig()
    pipeline: PipelineConfig = PipelineConfig()
    enrich: EnrichConfig = EnrichConfig()
    detection: SigmaDetectorConfig = SigmaDetectorConfig()
    redaction: RedactionConfig = RedactionConfig()
    ops: OpsConfig | None = Field(
        None, description="Serve /healthz, /readyz and /metrics (off unless configured).")
    sources: dict[str, SourceConfig] = Field(
        default_factory=dict, description="Listeners and tailers that `ctrail run` starts, by name.")
    outputs: dict[str, FluentdConfig] = Field(
        default_factory=dict, description="Where the `forward` stage also sends events and "
        "alerts, by name (a discriminated union once there is a second output type).")
    notify: NotifyConfig | None = Field(
        None, description="Slack, PagerDuty, webhook, email, Teams, Opsgenie and Jira "
        "notifications of alerts (the `notify` "
        "stage, built only when `notify.receivers` names one).")
    reports: dict[str, ReportConfig] = Field(
        default_factory=dict, description="Reports by name, rendered on their schedule inside "
        "`ctrail run` and on demand by `ctrail report run NAME`.")
    watch: WatchConfig = Field(
        WatchConfig(), description="The pipeline watching itself (CT-OPS-001..004): silent "
        "sources, dead-letter rate, evidence sealing and verification, notification circuits.")
    evidence: EvidenceConfig | None = Field(
        None, description="The append-only, hash-chained evidence archive of every event and "
        "alert (the `evidence` stage); off when absent.")
    console: ConsoleConfig | None = Field(
        None, description="The web console (`ctrail console`, and `ctrail run` when present): "
        "alerts, search and timelines in the browser for console users (`ctrail users`).")

    @model_validator(mode="after")
    def _reports_name_report_receivers(self) -> "Settings":
        receivers = self.notify.receivers if self.notify is not None else {}
        for name, report in self.reports.items():
            for receiver in report.deliver_to:
                kind = getattr(receivers.get(receiver), "type", None)
                if kind not in REPORT_RECEIVER_TYPES:
                    raise ValueError(
                        f"reports.{name}.deliver_to: {receiver!r} is not a receiver under "
                        f"notify.receivers of type {', '.join(REPORT_RECEIVER_TYPES)}")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file (passed as init kwargs), as users expect.
        return env_settings, init_settings


DEFAULT_CONFIG = Path("config/containertrail.yaml")


def load_settings(path: Path | None, data_dir: Path | None = None) -> Settings:
    """Settings from `path` (or the default file when it exists), the environment and flags.

    Raises ConfigError with the file and the failing key paths."""
    explicit = path is not None
    path = path or DEFAULT_CONFIG
    values: dict[str, Any] = {}
    if path.exists():
        values = _read_yaml(path)
    elif explicit:
        raise ConfigError(f"config file {path} does not exist")
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise ConfigError(f"invalid config {path}: {problems}") from None
    # A command-line flag wins over the environment and the file.
    return settings if data_dir is None else settings.model_copy(update={"data_dir": data_dir})


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return loaded
