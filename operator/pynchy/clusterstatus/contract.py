"""The gateway's `GET /status` on its metrics port: the JSON the gateway serves and `pynchy status`
reads. camelCase on the wire, like the pynchy.dev resources."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

STATUS_PATH = "/status"


class _Wire(BaseModel):
    # Unknown fields are ignored, not refused: an older `pynchy status` still reads a newer gateway.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class StoreHealth(_Wire):
    ok: bool = Field(description="The store answered a trivial query within the timeout.")
    error: str | None = Field(default=None, description="Why not, when it did not.")
    latency_ms: float | None = Field(default=None, description="How long the query took (None when it did not end).")


class GatewayHealth(_Wire):
    store: StoreHealth
    queue_depth: int | None = Field(
        description="Turns waiting for a run to claim them, every Group of the gateway (None: the store did not say)."
    )
    running_turns: int | None = Field(description="Turns a run has claimed and not answered yet.")
    active_runs: int = Field(description="AgentRuns not finished, from the gateway's watch.")
    queued: dict[str, int] = Field(
        default_factory=dict, description="`namespace/name` -> queued turns, for the Groups with any."
    )
    pending_approvals: int | None = Field(
        default=None, description="Tool calls waiting for a person's approval; null when the store cannot be read."
    )

    def to_wire(self) -> dict[str, object]:
        return self.model_dump(mode="json", by_alias=True)
