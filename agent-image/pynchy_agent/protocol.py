"""The run API spoken between an agent pod (this runner) and the Pynchy gateway.

One source of truth: the gateway imports these models too. Every request carries the run's
token as `Authorization: Bearer <token>`; the token names the run, so paths carry no run name.

    GET  /v1/run                        -> RunInfo
    GET  /v1/run/turns/next?wait=<s>    -> 200 Turn | 204 (nothing within `wait`) | 410 (run is over: exit)
    POST /v1/run/turns/{turnId}/events  EventBatch -> 204
    POST /v1/run/session                SessionReport -> 204
    POST /v1/run/tools/{tool}           ToolCall -> 200 ToolResult | 403/404/409/422/429 ApiError
    POST /v1/run/permissions?wait=<s>   PermissionRequest -> 200 PermissionAnswer (the tool policy,
                                        asked before any tool runs; 'pending': ask again, same id)

Errors always have the ApiError shape. The model proxy lives at `<gateway>/model` and takes
the same token as the Anthropic API key. The Group's MCP servers are reached only through the
gateway's MCP proxy, `<gateway>/mcp/<server>`, with the same token as `Authorization: Bearer`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

RUN_API_PREFIX = "/v1/run"
MODEL_PROXY_PREFIX = "/model"
MCP_PROXY_PREFIX = "/mcp"
MAX_WAIT_SECONDS = 60


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ApiError(WireModel):
    error: str = Field(description="What went wrong, and what to do about it.")


class RunInfo(WireModel):
    """What the gateway knows about the run the token belongs to."""

    run: str
    namespace: str
    group: str
    admin: bool = False
    context_mode: Literal["group", "isolated"] = "group"


class Turn(WireModel):
    """One message for the agent to answer."""

    id: str = Field(min_length=1, max_length=64)
    prompt: str = Field(min_length=1)
    sender: str | None = None
    reset_session: bool = Field(default=False, description="Start a fresh session before this turn.")


class TextDelta(WireModel):
    type: Literal["text_delta"] = "text_delta"
    text: str


class ToolUse(WireModel):
    type: Literal["tool_use"] = "tool_use"
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class UsageReport(WireModel):
    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cache_read_input_tokens: int = Field(default=0, ge=0)
    cache_creation_input_tokens: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0, alias="costUSD")


class TurnResult(WireModel):
    """The turn's end: the final text, the session it ran in, and what it cost."""

    type: Literal["result"] = "result"
    text: str = ""
    is_error: bool = False
    session_id: str | None = None
    usage: UsageReport = Field(default_factory=UsageReport)
    duration_ms: int = Field(default=0, ge=0)
    num_turns: int = Field(default=0, ge=0, description="Model round trips the turn took.")


class TurnFailed(WireModel):
    type: Literal["error"] = "error"
    message: str


Event = Annotated[TextDelta | ToolUse | TurnResult | TurnFailed, Field(discriminator="type")]


class EventBatch(WireModel):
    events: list[Event] = Field(min_length=1, max_length=1000)


class SessionReport(WireModel):
    session_id: str | None = Field(description="The session the group's conversation continues in; null after a reset.")


class ToolCall(WireModel):
    arguments: dict[str, Any] = Field(default_factory=dict)
    call_id: str | None = Field(
        default=None,
        max_length=100,
        description="Set by calls that wait for a person (ask_user): a retry with the same id finds the same "
        "question, so the call survives a gateway restart.",
    )


class PermissionRequest(WireModel):
    """The runner asks before Claude Code runs a tool (its PreToolUse hook)."""

    tool: str = Field(min_length=1, max_length=200, description="The tool as Claude Code names it: Bash, mcp__s__t.")
    input: dict[str, Any] = Field(default_factory=dict)
    tool_use_id: str = Field(
        min_length=1, max_length=200, description="Idempotency: the same id finds the same request."
    )
    turn_id: str | None = Field(default=None, max_length=64, description="The turn it runs for (where to ask).")


class PermissionAnswer(WireModel):
    decision: Literal["allow", "deny", "pending"]
    reason: str = Field(default="", description="Why it was denied, for the model.")
    approval: str | None = Field(default=None, description="The approval request's id, when a person was asked.")


class ToolResult(WireModel):
    text: str = Field(description="What the agent sees as the tool's answer.")
    data: dict[str, Any] | list[Any] | None = None


# -- agent tool arguments (the runner derives each tool's input schema from these) --------------

GroupName = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
TaskName = Annotated[str, Field(min_length=1, max_length=52, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]


class TargetArgs(WireModel):
    group: GroupName | None = Field(
        default=None, description="Another Group to act on (admin groups only); empty means this group."
    )


class SendMessageArgs(TargetArgs):
    text: str = Field(min_length=1, max_length=40000, description="Message to post in the group's channel now.")


class ScheduleTaskArgs(TargetArgs):
    name: TaskName = Field(description="Task name, lower-case letters, digits and '-', for example daily-digest.")
    prompt: str = Field(min_length=1, max_length=16384, description="What the agent is asked at each run.")
    cron: str | None = Field(default=None, description="Five-field cron expression, for example '0 9 * * 1-5'.")
    interval: str | None = Field(default=None, description="Fixed interval such as 30m or 2h (at least 1m).")
    once: str | None = Field(
        default=None, description="One run at this RFC 3339 time, for example 2026-12-01T09:00:00Z."
    )
    time_zone: str = Field(default="UTC", description="IANA time zone the cron is evaluated in.")
    context_mode: Literal["isolated", "group"] = Field(
        default="isolated", description="'group' continues this conversation; 'isolated' starts fresh."
    )


class TaskArgs(TargetArgs):
    name: TaskName = Field(description="Name of the task, as list_tasks shows it.")


class SaveMemoryArgs(WireModel):
    key: str = Field(min_length=1, max_length=200, description="Short unique name of the fact, for example 'coffee'.")
    content: str = Field(min_length=1, max_length=20000, description="What to remember.")


class RecallMemoriesArgs(WireModel):
    query: str = Field(default="", max_length=500, description="Words to look for; empty lists every memory.")


class ForgetMemoryArgs(WireModel):
    key: str = Field(min_length=1, max_length=200, description="The memory's key.")


class NoArgs(WireModel):
    pass


class Question(WireModel):
    question: str = Field(min_length=1, max_length=1000, description="The question, one short sentence.")
    options: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        min_length=2, max_length=4, description="2 to 4 answers to choose from."
    )
    allow_free_text: bool = Field(default=False, description="The user may answer in their own words instead.")


class AskUserArgs(WireModel):
    questions: list[Question] = Field(min_length=1, max_length=4, description="1 to 4 questions, asked together.")


ASK_USER = "ask_user"


TOOLS: dict[str, tuple[type[WireModel], str]] = {
    "send_message": (SendMessageArgs, "Post a message to the group's channel right away (progress, answers)."),
    "schedule_task": (ScheduleTaskArgs, "Create a scheduled task (cron, interval or once) that runs this agent."),
    "list_tasks": (TargetArgs, "List the group's scheduled tasks with their schedule and next run."),
    "pause_task": (TaskArgs, "Pause a scheduled task (no new runs until resumed)."),
    "resume_task": (TaskArgs, "Resume a paused scheduled task."),
    "cancel_task": (TaskArgs, "Delete a scheduled task."),
    "save_memory": (SaveMemoryArgs, "Remember a fact for this group across conversations."),
    "recall_memories": (RecallMemoriesArgs, "Look up facts remembered for this group."),
    "forget_memory": (ForgetMemoryArgs, "Forget a remembered fact."),
    "reset_context": (NoArgs, "Start a fresh conversation after this turn; memories are kept."),
    ASK_USER: (
        AskUserArgs,
        "Ask the user 1-4 multiple-choice questions in the chat and wait for the answers (buttons in Slack, "
        "numbered choices in pynchy chat). Returns each answer, or says that nobody answered in time.",
    ),
}
