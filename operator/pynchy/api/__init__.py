"""Typed models of the pynchy.dev/v1alpha1 API; the CRDs in crds/ are generated from them."""

from pynchy.api.agentrun import AgentRunSpec, AgentRunStatus
from pynchy.api.base import API_GROUP, API_VERSION, GROUP_VERSION, Condition
from pynchy.api.group import GroupSpec, GroupStatus
from pynchy.api.resources import KINDS, KINDS_BY_NAME, AgentRun, Group, Kind, ScheduledTask, Workspace
from pynchy.api.scheduledtask import ScheduledTaskSpec, ScheduledTaskStatus
from pynchy.api.workspace import WorkspaceSpec, WorkspaceStatus

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "GROUP_VERSION",
    "KINDS",
    "KINDS_BY_NAME",
    "AgentRun",
    "AgentRunSpec",
    "AgentRunStatus",
    "Condition",
    "Group",
    "GroupSpec",
    "GroupStatus",
    "Kind",
    "ScheduledTask",
    "ScheduledTaskSpec",
    "ScheduledTaskStatus",
    "Workspace",
    "WorkspaceSpec",
    "WorkspaceStatus",
]
