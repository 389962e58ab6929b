"""The root Settings: one YAML file, validated by pydantic, with CTRAIL_… environment overrides.

A file may hold only the sections it changes; everything else keeps its default. Environment
variables override the file: `CTRAIL_DATA_DIR`, and nested keys with a double underscore,
e.g. `CTRAIL_ENRICH__CLUSTER_NAME=prod-eu`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Final

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
    batch_bytes: PositiveInt = Field(
        8 * 1024 * 1024, description="A batch also closes once its records reach this many bytes: "
                                     "a webhook record holds up to 400 events, and a batch of "
                                     "batch_events of them would hold an alert back for seconds. "
                                     "Smaller batches pay a batch's fixed costs (commits, "
                                     "checkpoints) more often: at 6 000 events/s, 1 MiB "
                                     "batches stored 10% fewer events per second than 8 MiB.")
    max_record_bytes: PositiveInt = Field(
        1024 * 1024, description="A raw record larger than this is dead-lettered, not parsed.")


ENV_PREFIX: Final = "CTRAIL_"
ENV_NESTING: Final = "__"
# The union members pydantic names in a secret reference's errors (ctrail.secrets.SecretRef).
SECRET_REF_TYPES: Final = frozenset({"EnvRef", "FileRef"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTING,
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
        raise ConfigError(config_problems(exc, path)) from None
    # A command-line flag wins over the environment and the file.
    return settings if data_dir is None else settings.model_copy(update={"data_dir": data_dir})


def config_problems(exc: ValidationError, path: Path) -> str:
    """One line naming where each problem is: the environment variable that set the value (an
    override wins over the file, so the file is not where to look), else the key path in the
    file. A secret written as a plain string is told how secrets are written."""
    problems, from_env = [], True
    seen: set[tuple[Any, ...]] = set()
    for error in exc.errors():
        loc = tuple(error["loc"])
        if loc and loc[-1] in SECRET_REF_TYPES:      # one problem, not one per union member
            loc = loc[:-1]
            if loc in seen:
                continue
            if isinstance(error.get("input"), str):
                error = {**error, "msg": "a secret is never written in the config: use "
                         "{env: NAME} (an environment variable) or {file: /run/secrets/NAME}"}
        seen.add(loc)
        variable = env_variable(loc)
        from_env = from_env and variable is not None
        where = f"environment variable {variable}" if variable else ".".join(map(str, loc))
        problems.append(f"{where or '(root)'}: {error['msg']}")
        if len(problems) == 5:
            break
    if from_env:
        return "invalid environment: " + "; ".join(problems)
    return f"invalid config {path}: " + "; ".join(problems)


def env_variable(loc: tuple[Any, ...]) -> str | None:
    """The CTRAIL_... variable that supplied the value at `loc` (or a section around it)."""
    upper = {name.upper(): name for name in os.environ}
    for end in range(len(loc), 0, -1):
        name = ENV_PREFIX + ENV_NESTING.join(str(part).upper() for part in loc[:end])
        if name in upper:
            return upper[name]
        if end == len(loc):                 # a key below it (bus: set by CTRAIL_BUS__TYPE)
            below = sorted(v for k, v in upper.items() if k.startswith(name + ENV_NESTING))
            if below:
                return ", ".join(below)
    return None


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
