"""The four kinds of pynchy.dev/v1alpha1: full-object models and their CRD metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from pynchy.api.agentrun import AgentRunSpec, AgentRunStatus
from pynchy.api.base import API_GROUP, API_VERSION, ApiModel
from pynchy.api.group import GroupSpec, GroupStatus
from pynchy.api.scheduledtask import ScheduledTaskSpec, ScheduledTaskStatus
from pynchy.api.workspace import WorkspaceSpec, WorkspaceStatus

SpecT = TypeVar("SpecT", bound=ApiModel)
StatusT = TypeVar("StatusT", bound=ApiModel)


class ObjectMeta(BaseModel):
    """The part of metadata Pynchy reads; the API server owns the rest."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(max_length=253)
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Resource(ApiModel, Generic[SpecT, StatusT]):
    api_version: Literal["pynchy.dev/v1alpha1"] = Field(default="pynchy.dev/v1alpha1", alias="apiVersion")
    kind: str
    metadata: ObjectMeta
    spec: SpecT
    status: StatusT | None = None


class Group(Resource[GroupSpec, GroupStatus]):
    kind: Literal["Group"] = "Group"


class Workspace(Resource[WorkspaceSpec, WorkspaceStatus]):
    kind: Literal["Workspace"] = "Workspace"


class ScheduledTask(Resource[ScheduledTaskSpec, ScheduledTaskStatus]):
    kind: Literal["ScheduledTask"] = "ScheduledTask"


class AgentRun(Resource[AgentRunSpec, AgentRunStatus]):
    kind: Literal["AgentRun"] = "AgentRun"


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0

    def to_crd(self) -> dict[str, Any]:
        column: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            column["description"] = self.description
        if self.priority:
            column["priority"] = self.priority
        return column


def _condition(type_: str) -> str:
    return f'.status.conditions[?(@.type=="{type_}")].status'


READY = PrinterColumn("Ready", _condition("Ready"), description="Whether the object is ready for use.")
AGE = PrinterColumn("Age", ".metadata.creationTimestamp", type="date")


@dataclass(frozen=True)
class Kind:
    """Everything the CRD generator needs to know about one kind."""

    kind: str
    plural: str
    model: type[Resource[Any, Any]]
    spec: type[ApiModel]
    status: type[ApiModel]
    description: str
    short_names: tuple[str, ...]
    columns: tuple[PrinterColumn, ...]
    max_name_length: int = 63
    extra_rules: tuple[dict[str, str], ...] = field(default=())

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{API_GROUP}"

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"


KINDS: tuple[Kind, ...] = (
    Kind(
        kind="Group",
        plural="groups",
        model=Group,
        spec=GroupSpec,
        status=GroupStatus,
        description="A Group is one conversation space (a Slack channel or a local channel) with its own "
        "isolated agent: its files, memory, credentials, tools and network rules.",
        short_names=("grp",),
        # Child names add up to 20 characters ("pynchy-<group>-state"); stay within label limits.
        max_name_length=40,
        columns=(
            READY,
            PrinterColumn("Workspace", ".spec.workspaceRef.name", description="Workspace mounted at /workspace."),
            PrinterColumn("Run", ".status.activeRun", description="The AgentRun serving the Group now."),
            PrinterColumn("Spend", ".status.spend.todayUsd", type="number", description="USD spent today."),
            PrinterColumn("Budget", ".status.spend.budget", priority=1, description="Budget state."),
            PrinterColumn("Admin", ".spec.admin", type="boolean", priority=1),
            AGE,
        ),
    ),
    Kind(
        kind="Workspace",
        plural="workspaces",
        model=Workspace,
        spec=WorkspaceSpec,
        status=WorkspaceStatus,
        description="A Workspace is a persistent volume of files an agent works in, optionally cloned "
        "from a git repository on first use.",
        short_names=("ws",),
        max_name_length=40,
        columns=(
            READY,
            PrinterColumn("Size", ".spec.storage.size"),
            PrinterColumn("Git", ".spec.git.url", description="Repository cloned into the workspace."),
            AGE,
        ),
    ),
    Kind(
        kind="ScheduledTask",
        plural="scheduledtasks",
        model=ScheduledTask,
        spec=ScheduledTaskSpec,
        status=ScheduledTaskStatus,
        description="A ScheduledTask wakes a Group's agent with a prompt on a cron, interval or one-off "
        "schedule, like a CronJob for agents.",
        short_names=("stask",),
        # Run names append an 11-character scheduled-time suffix, as CronJob does.
        max_name_length=52,
        columns=(
            PrinterColumn("Group", ".spec.groupRef.name"),
            PrinterColumn("Suspend", ".spec.suspend", type="boolean"),
            # Strings, not dates: kubectl renders a date column as an age, and a future time as <invalid>.
            PrinterColumn("Next", ".status.nextScheduleTime", description="Next due time (UTC)."),
            PrinterColumn("Last", ".status.lastScheduleTime", description="Last due time that ran (UTC)."),
            READY,
            AGE,
        ),
    ),
    Kind(
        kind="AgentRun",
        plural="agentruns",
        model=AgentRun,
        spec=AgentRunSpec,
        status=AgentRunStatus,
        description="An AgentRun is one execution of a Group's agent: a pod that serves one or more turns, "
        "created by the gateway for messages and by the operator for schedules.",
        short_names=("ar",),
        columns=(
            PrinterColumn("Group", ".spec.groupRef.name"),
            PrinterColumn("Phase", ".status.phase"),
            PrinterColumn("Turns", ".status.turnsServed", type="integer"),
            PrinterColumn("Cost", ".status.usage.costUSD", type="number", description="USD metered by the gateway."),
            PrinterColumn("Reason", ".status.reason", priority=1),
            PrinterColumn("Pod", ".status.podName", priority=1),
            AGE,
        ),
    ),
)

KINDS_BY_NAME = {k.kind: k for k in KINDS}
__all__ = [
    "API_GROUP",
    "API_VERSION",
    "KINDS",
    "KINDS_BY_NAME",
    "AgentRun",
    "Group",
    "Kind",
    "ScheduledTask",
    "Workspace",
]
