"""Workspace: persistent files an agent works in, optionally cloned from git."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pynchy.api.base import (
    ApiModel,
    Condition,
    DeletionPolicy,
    LocalObjectReference,
    Timestamp,
    cel,
    conditions_field,
    deletion_policy_field,
    observed_generation_field,
    storage_class_field,
    storage_class_immutable,
    validations,
    volume_size_field,
)


class WorkspaceStorage(ApiModel):
    """The PersistentVolumeClaim behind the workspace."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": validations(
            cel(
                "self.accessMode == oldSelf.accessMode",
                "accessMode cannot change once the volume exists; create a new Workspace instead",
                field_path=".accessMode",
            ),
            storage_class_immutable("Workspace"),
        )
    }

    size: str = volume_size_field("5Gi")
    storage_class_name: str | None = storage_class_field()
    access_mode: Literal["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany"] = Field(
        default="ReadWriteOnce",
        description="Volume access mode. ReadWriteMany is needed when several Groups' pods run at once on "
        "different nodes.",
    )
    deletion_policy: DeletionPolicy = deletion_policy_field("Workspace")


class GitSource(ApiModel):
    """A git repository cloned into the workspace on first use."""

    url: str = Field(
        description="Repository URL: https://host/owner/repo.git or git@host:owner/repo.git.",
        max_length=2048,
        json_schema_extra=validations(
            cel(
                "self.matches('^https://[^\\\\s/]+/.+') || self.matches('^ssh://[^\\\\s]+$') "
                "|| self.matches('^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\\\\s]+$')",
                "url must be an https://, ssh:// or user@host:path git URL",
            )
        ),
    )
    branch: str = Field(
        default="main",
        description="Branch to check out.",
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9._/-]+$",
        json_schema_extra=validations(
            cel(
                "!self.contains('..') && !self.startsWith('/') && !self.endsWith('/')", "branch is not a valid ref name"
            )
        ),
    )
    credentials_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description="Secret with either 'username' and 'password' (https) or 'ssh-privatekey' (ssh) keys.",
    )
    worktree_per_group: bool = Field(
        default=True,
        description="Give each Group that uses this Workspace its own git worktree and branch, so "
        "agents never edit each other's checkouts.",
    )


class WorkspaceSpec(ApiModel):
    """Desired state of a Workspace."""

    storage: WorkspaceStorage = Field(default_factory=WorkspaceStorage, description="The workspace volume.")
    git: GitSource | None = Field(default=None, description="Optional repository cloned into the workspace.")


class WorkspaceStatus(ApiModel):
    """Observed state of a Workspace."""

    observed_generation: int | None = observed_generation_field()
    conditions: list[Condition] = conditions_field()
    claim_name: str | None = Field(
        default=None, description="The PersistentVolumeClaim holding the files.", max_length=253
    )
    git_url: str | None = Field(default=None, description="Repository the workspace is cloned from.", max_length=2048)
    git_branch: str | None = Field(default=None, description="Branch checked out.", max_length=255)
    last_clone_time: Timestamp | None = Field(default=None, description="When the repository was first cloned.")
