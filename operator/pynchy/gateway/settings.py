"""Gateway settings: one typed object read from PYNCHY_* variables, validated at start-up."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CommaList = Annotated[list[str], NoDecode]


class GatewaySettings(BaseSettings):
    """Everything the gateway needs that is not in a custom resource."""

    model_config = SettingsConfigDict(env_prefix="PYNCHY_", extra="ignore", frozen=True)

    run_token_key: SecretStr = Field(
        min_length=32,
        description="Key that signs run tokens; the same value as the operator's (keep it in a shared Secret).",
    )
    database_url: str = Field(
        default="sqlite:////var/lib/pynchy/gateway.db",
        description="SQLAlchemy URL of the conversation store: sqlite:///path or postgresql+psycopg://...",
    )
    listen_host: str = Field(default="0.0.0.0", description="Address the run API and model proxy listen on.")
    listen_port: int = Field(default=8080, ge=0, le=65535, description="Port of the run API and model proxy.")
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

    @field_validator("namespaces", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> GatewaySettings:
        if (self.anthropic_api_key is None) == (self.anthropic_auth_token is None):
            raise ValueError(
                "set exactly one of PYNCHY_ANTHROPIC_API_KEY or PYNCHY_ANTHROPIC_AUTH_TOKEN "
                "(the model credential agent pods use through the proxy)"
            )
        return self
