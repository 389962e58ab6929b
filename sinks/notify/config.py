"""The `notify:` section: receivers by name, routes, a severity floor, quiet hours, patience.

```yaml
notify:
  min_severity: low
  kibana_url: https://kibana.example.com
  receivers:
    chat:   {type: slack, webhook_url: {env: CTRAIL_SLACK_WEBHOOK_URL}}
    oncall: {type: pagerduty, routing_key: {file: /run/secrets/pagerduty}}
    mail:   {type: email, host: smtp.example.com, username: ctrail,
             password: {env: CTRAIL_SMTP_PASSWORD}, from_address: ctrail@example.com,
             to: [secops@example.com]}
    teams:  {type: teams, webhook_url: {env: CTRAIL_TEAMS_WEBHOOK_URL}}
    pager:  {type: opsgenie, api_key: {env: CTRAIL_OPSGENIE_API_KEY}}
    tickets: {type: jira, url: https://acme.atlassian.net, user: ctrail@example.com,
              token: {env: CTRAIL_JIRA_TOKEN}, project: SEC}
  routes:
    - match: {severity_min: high, namespaces: [prod-*]}
      receivers: [oncall, chat]
  quiet_hours: {start: "22:00", end: "07:00", timezone: Europe/Paris, digest: true}
```
The stage is built only when `receivers` is not empty.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Callable

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from sinks.jira import JiraConfig
from sinks.notify.delivery import Patience
from sinks.notify.routing import QuietHours, Route, severity_of
from sinks.notify.service import NotifyService
from sinks.opsgenie import OpsgenieConfig
from sinks.pagerduty import PagerDutyConfig
from sinks.slack import SlackConfig
from sinks.smtp import EmailConfig
from sinks.teams import TeamsConfig
from sinks.webhook import WebhookConfig

# One member per receiver type; `type` picks it.
ReceiverConfig = Annotated[SlackConfig | PagerDutyConfig | WebhookConfig | EmailConfig |
                           TeamsConfig | OpsgenieConfig | JiraConfig,
                           Field(discriminator="type")]
# Receivers that can carry a rendered report (`reports.NAME.deliver_to`).
REPORT_RECEIVER_TYPES = ("email", "slack", "teams")


class DeliveryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    initial_backoff_secs: PositiveFloat = 1.0
    max_backoff_secs: PositiveFloat = 300.0
    breaker_failures: PositiveInt = Field(5, description="Consecutive failures that open a "
                                          "receiver's circuit.")
    breaker_reset_secs: PositiveFloat = Field(60.0, description="How long it stays open before "
                                              "one trial request.")
    poll_interval_secs: PositiveFloat = 1.0
    retention_days: PositiveFloat = Field(7.0, description="Keep delivered outbox rows this "
                                          "long, so a replay of the bus sends nothing twice.")

    def patience(self) -> Patience:
        return Patience(self.initial_backoff_secs, self.max_backoff_secs, self.breaker_failures,
                        self.breaker_reset_secs, self.poll_interval_secs,
                        self.retention_days * 86400.0)


class NotifyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    receivers: dict[str, ReceiverConfig] = Field(default_factory=dict)
    routes: tuple[Route, ...] = Field((), description="None: every receiver gets every alert.")
    min_severity: str = Field("low", description="Alerts below this are not notified.")
    quiet_hours: QuietHours | None = None
    kibana_url: str | None = Field(None, description="Adds an 'Open in Kibana' link.")
    delivery: DeliveryConfig = DeliveryConfig()

    @field_validator("min_severity")
    @classmethod
    def _severity(cls, value: str) -> str:
        return severity_of(value).word

    @model_validator(mode="after")
    def _routes_name_receivers(self) -> "NotifyConfig":
        for index, route in enumerate(self.routes):
            unknown = [name for name in route.receivers if name not in self.receivers]
            if unknown:
                raise ValueError(f"routes[{index}] names unknown receivers: {', '.join(unknown)}")
        return self

    def build(self, data_dir: Path, clock: Callable[[], float] | None = None) -> NotifyService:
        """The notify service (outbox, router, sender); resolves secrets: ConfigError."""
        return NotifyService(self, data_dir, clock)
