"""Gateway settings: one typed object read from PYNCHY_* variables, validated at start-up."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pynchy.api.group import (
    DEFAULT_MAX_SCHEDULED_TASKS,
    DEFAULT_MIN_SCHEDULE_INTERVAL_SECONDS,
    DEFAULT_SEND_MESSAGES_PER_MINUTE,
    MAX_SCHEDULED_TASKS,
    MAX_SEND_MESSAGES_PER_MINUTE,
    MIN_SCHEDULE_INTERVAL_BOUNDS,
    Budget,
)
from pynchy.gateway.pricing import DEFAULT_PRICES, Price
from pynchy.gateway.toollimits import LimitValues
from pynchy.store import retention
from pynchy.store.db import DEFAULT_DATABASE_URL

CommaList = Annotated[list[str], NoDecode]


def _retention_days(kind: str, description: str) -> Any:
    """A retention period in days: the kind's default, 0 (forever) up to retention.MAX_DAYS."""
    return Field(default=retention.DEFAULT_DAYS[kind], ge=0, le=retention.MAX_DAYS, description=description)


class GatewaySettings(BaseSettings):
    """Everything the gateway needs that is not in a custom resource."""

    model_config = SettingsConfigDict(env_prefix="PYNCHY_", extra="ignore", frozen=True)

    run_token_key: SecretStr = Field(
        min_length=32,
        description="Key that signs run tokens; the same value as the operator's (keep it in a shared Secret).",
    )
    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL of the conversation store: sqlite:///path or postgresql+psycopg://...",
    )
    listen_host: str = Field(default="0.0.0.0", description="Address the run API and model proxy listen on.")
    listen_port: int = Field(default=8080, ge=0, le=65535, description="Port of the run API and model proxy.")
    metrics_port: int = Field(
        default=9090,
        ge=0,
        le=65535,
        description="Port of Prometheus /metrics, apart from the run API so agent pods cannot read it; 0 disables.",
    )
    namespaces: CommaList = Field(
        default_factory=list, description="Namespaces with Groups (comma-separated); empty means all."
    )
    model_upstream_url: str = Field(
        default="https://api.anthropic.com",
        pattern=r"^https?://",
        description="Anthropic-compatible API the model proxy forwards to.",
    )
    anthropic_api_key: SecretStr | None = Field(
        default=None, description="Real model API key (sent as x-api-key); set this or PYNCHY_ANTHROPIC_AUTH_TOKEN."
    )
    anthropic_auth_token: SecretStr | None = Field(
        default=None, description="Real model OAuth/bearer token (sent as Authorization: Bearer)."
    )
    long_poll_seconds: int = Field(default=30, ge=1, le=60, description="Longest wait of a next-turn request.")
    slack_bot_token: SecretStr | None = Field(
        default=None, description="Slack bot token (xoxb-…); enables the Slack channel."
    )
    slack_app_token: SecretStr | None = Field(
        default=None, description="Slack app-level token (xapp-…): receive events over Socket Mode."
    )
    slack_signing_secret: SecretStr | None = Field(
        default=None,
        description="Slack signing secret: receive events over HTTP at /slack/events (when no app token is set).",
    )
    slack_api_url: str = Field(
        default="https://slack.com/api/", pattern=r"^https?://.*/$", description="Slack Web API base URL."
    )
    chat_token: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="Bearer token of the local channel (`pynchy chat`); unset disables the local channel's API.",
    )
    owner: str | None = Field(
        default=None,
        pattern=r"^[UW][A-Z0-9]{8,20}$",
        description="Slack user id that 'owner' in a Group's allowedSenders stands for "
        "(the local channel's user is always the owner).",
    )

    default_budget: Budget | None = Field(
        default=None,
        description="Budget of every Group without spec.budget, as JSON in the Group's spelling, for example "
        '{"dailyUsd": 5, "timeZone": "Europe/Berlin"}; unset: such Groups have no limit.',
    )
    model_prices: dict[str, Price] = Field(
        default_factory=dict,
        description="USD per million tokens by model-name prefix, as JSON "
        '({"claude-sonnet-4-5": {"input": 3, "output": 15, "cache_write": 3.75, "cache_read": 0.3}}); '
        "added to and replacing rows of Anthropic's list prices built in.",
    )

    # Agent tool limits (gateway/toollimits.py, docs/gateway.md): a Group's spec.agent.toolLimits overrides each.
    send_messages_per_minute: int = Field(
        default=DEFAULT_SEND_MESSAGES_PER_MINUTE,
        ge=0,
        le=MAX_SEND_MESSAGES_PER_MINUTE,
        description="send_message calls a Group's agent may make in any 60 seconds; 0 turns the tool off.",
    )
    max_scheduled_tasks: int = Field(
        default=DEFAULT_MAX_SCHEDULED_TASKS,
        ge=0,
        le=MAX_SCHEDULED_TASKS,
        description="ScheduledTasks created by a Group's agent that may exist at once; 0 turns schedule_task off.",
    )
    min_schedule_interval_seconds: int = Field(
        default=DEFAULT_MIN_SCHEDULE_INTERVAL_SECONDS,
        ge=MIN_SCHEDULE_INTERVAL_BOUNDS[0],
        le=MIN_SCHEDULE_INTERVAL_BOUNDS[1],
        description="Shortest time between two runs of a task an agent schedules (interval or cron spacing).",
    )

    # Retention (store/retention.py, docs/store.md): days each kind of row is kept, 0 keeps it forever.
    retention_messages_days: int = _retention_days(
        "messages",
        "Days channel messages are kept (the conversation record and the inbound dedupe keys); 0: forever.",
    )
    retention_turns_days: int = _retention_days(
        "turns",
        "Days a finished turn is kept after it finished (queued and running ones always are); 0: forever.",
    )
    retention_outbound_days: int = _retention_days(
        "outbound",
        "Days a sent, failed or stored ledger row is kept (pending ones always are); 0: forever.",
    )
    retention_usage_days: int = _retention_days(
        "usage",
        f"Days model usage rows are kept; 0: forever, else at least {retention.USAGE_MIN_DAYS} "
        "(budgets read the current month's).",
    )
    retention_audit_days: int = _retention_days(
        "audit",
        "Days the audit log of agent tool calls is kept; 0: forever.",
    )
    retention_approvals_days: int = _retention_days(
        "approvals",
        "Days a decided approval request is kept after its decision (pending ones always are; the audit log "
        "keeps each decision for its own period); 0: forever.",
    )
    retention_questions_days: int = _retention_days(
        "questions",
        "Days an agent's answered or expired question (ask_user) is kept; 0: forever.",
    )
    retention_interval_seconds: float = Field(
        default=3600, gt=0, description="Seconds between two retention passes over the store."
    )
    retention_batch_size: int = Field(
        default=retention.DEFAULT_BATCH_SIZE,
        ge=1,
        le=10_000,
        description="Rows deleted per transaction by retention: small, so writers wait at most one short batch.",
    )

    @model_validator(mode="after")
    def _distinct_ports(self) -> GatewaySettings:
        if self.metrics_port and self.metrics_port == self.listen_port:
            raise ValueError(
                f"PYNCHY_METRICS_PORT and PYNCHY_LISTEN_PORT are both {self.metrics_port}: agent pods reach the "
                "run API's port and must not read /metrics; give them different ports"
            )
        return self

    @property
    def tool_limits(self) -> LimitValues:
        """The defaults every Group's spec.agent.toolLimits overrides."""
        return LimitValues(self.send_messages_per_minute, self.max_scheduled_tasks, self.min_schedule_interval_seconds)

    @property
    def prices(self) -> dict[str, Price]:
        return {**DEFAULT_PRICES, **self.model_prices}

    @field_validator("retention_usage_days")
    @classmethod
    def _usage_covers_budgets(cls, value: int) -> int:
        if 0 < value < retention.USAGE_MIN_DAYS:
            raise ValueError(
                f"{value} days is too short: budgets read the usage of the current day and month in each "
                "Group's time zone, so usage is always kept back to the start of the previous month "
                f"(up to 62 days and 14 hours); give at least {retention.USAGE_MIN_DAYS}, or 0 to keep it forever"
            )
        return value

    @property
    def retention_policy(self) -> retention.RetentionPolicy:
        days = {kind: getattr(self, f"retention_{kind}_days") for kind in retention.KIND}
        return retention.RetentionPolicy(days, batch_size=self.retention_batch_size)

    @field_validator("default_budget", mode="before")
    @classmethod
    def _budget_json(cls, value: object) -> object:
        return Budget.from_k8s(value) if isinstance(value, dict) else value

    @field_validator("namespaces", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> GatewaySettings:
        if self.anthropic_api_key is not None and self.anthropic_auth_token is not None:
            raise ValueError(
                "set only one of PYNCHY_ANTHROPIC_API_KEY or PYNCHY_ANTHROPIC_AUTH_TOKEN "
                "(the model credential agent pods use through the proxy)"
            )
        slack_inbound = self.slack_app_token is not None or self.slack_signing_secret is not None
        if self.slack_bot_token is not None and not slack_inbound:
            raise ValueError(
                "PYNCHY_SLACK_BOT_TOKEN is set but Slack events have no way in: set PYNCHY_SLACK_APP_TOKEN "
                "(Socket Mode) or PYNCHY_SLACK_SIGNING_SECRET (HTTP Events API at /slack/events)"
            )
        if slack_inbound and self.slack_bot_token is None:
            raise ValueError("PYNCHY_SLACK_APP_TOKEN / PYNCHY_SLACK_SIGNING_SECRET need PYNCHY_SLACK_BOT_TOKEN as well")
        return self

    @property
    def model_credential_missing(self) -> bool:
        """No model credential: everything runs, and agents say plainly that they cannot think."""
        return self.anthropic_api_key is None and self.anthropic_auth_token is None

    @property
    def slack_enabled(self) -> bool:
        return self.slack_bot_token is not None
