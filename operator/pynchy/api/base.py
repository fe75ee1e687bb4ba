"""Shared building blocks of the pynchy.dev API types.

Every model is strict (no type coercion) and closed (unknown fields are errors), so a
typo in a manifest is reported with its field path instead of being ignored. Field names
are camelCase on the wire, snake_case in Python.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

API_GROUP = "pynchy.dev"
API_VERSION = "v1alpha1"
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"

# Kubernetes object names that become part of child names and label values.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# CamelCase machine-readable reasons, as in metav1.Condition.
REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
# A resource.Quantity as kubectl writes it ("1Gi", "500m", "2").
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"


def cel(rule: str, message: str, *, field_path: str | None = None, reason: str | None = None) -> dict[str, str]:
    """One CEL `x-kubernetes-validations` entry; `message` must say what to fix."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    """`json_schema_extra` carrying CEL rules for a model or a field."""
    return {"x-kubernetes-validations": list(rules)}


class ApiModel(BaseModel):
    """Base of every spec/status type: strict, closed, camelCase aliases."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        strict=True,
        frozen=False,
        validate_default=False,
    )

    @classmethod
    def from_k8s(cls, data: Any) -> Self:
        """Validate data decoded from the Kubernetes API (JSON semantics: timestamps are strings)."""
        # Wire names only: `allowed_senders` is not a field the API server knows.
        return cls.model_validate_json(json.dumps(data), by_alias=True, by_name=False)

    def to_k8s(self) -> dict[str, Any]:
        """Serialise to the wire form, leaving out unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp needs a time zone offset, for example 2026-01-02T09:00:00Z")
    return value


Timestamp = Annotated[datetime, AfterValidator(_utc)]


class LocalObjectReference(ApiModel):
    """A reference to an object of a known kind in the same namespace."""

    name: str = Field(
        description="Name of the referenced object in this namespace.",
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
    )


class SecretKeySelector(ApiModel):
    """A key of a Secret in the same namespace."""

    name: str = Field(
        description="Name of the Secret in this namespace.", min_length=1, max_length=253, pattern=DNS_SUBDOMAIN
    )
    key: str = Field(
        description="Key inside the Secret's data.",
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
    )


class ConfigMapKeySelector(ApiModel):
    """A key of a ConfigMap in the same namespace."""

    name: str = Field(
        description="Name of the ConfigMap in this namespace.", min_length=1, max_length=253, pattern=DNS_SUBDOMAIN
    )
    key: str = Field(
        description="Key inside the ConfigMap's data.",
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
    )


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """An observation of one aspect of the object's state (metav1.Condition)."""

    type: str = Field(
        description="Type of condition in CamelCase, for example Ready or Accepted.",
        min_length=1,
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    )
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown.")
    reason: str = Field(
        description="Machine-readable CamelCase reason for the last transition.",
        min_length=1,
        max_length=1024,
        pattern=REASON,
    )
    message: str = Field(
        default="",
        description="Human-readable details about the transition: what happened and what to fix.",
        max_length=32768,
    )
    last_transition_time: Timestamp = Field(description="When the condition last changed status (RFC 3339).")
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="The metadata.generation this condition was computed from.",
    )


def conditions_field() -> Any:
    """The standard `conditions` list: keyed by type, as in every built-in API."""
    return Field(
        default_factory=list,
        description="Current state of the object as standard conditions (Accepted, Ready, ...).",
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


def observed_generation_field() -> Any:
    return Field(
        default=None,
        ge=0,
        description="The metadata.generation the operator last reconciled; status is stale while it lags.",
    )


class ResourceList(ApiModel):
    """Amounts of compute resources."""

    cpu: str | None = Field(default=None, description="CPU, for example 500m or 2.", max_length=32, pattern=QUANTITY)
    memory: str | None = Field(
        default=None, description="Memory, for example 512Mi or 2Gi.", max_length=32, pattern=QUANTITY
    )
    ephemeral_storage: str | None = Field(
        default=None,
        alias="ephemeral-storage",
        description="Local ephemeral storage, for example 1Gi.",
        max_length=32,
        pattern=QUANTITY,
    )


class ResourceRequirements(ApiModel):
    """Compute resources of the agent container."""

    requests: ResourceList | None = Field(default=None, description="Minimum resources the scheduler reserves.")
    limits: ResourceList | None = Field(default=None, description="Maximum resources the container may use.")


DeletionPolicy = Literal["Retain", "Delete"]


# -- persistent volume fields shared by Group.spec.state and Workspace.spec.storage ----------


def volume_size_field(default: str) -> Any:
    return Field(
        default=default,
        description=f"Requested size, for example {default}; may grow but not shrink.",
        max_length=32,
        pattern=r"^[0-9]+(Ki|Mi|Gi|Ti)$",
    )


def storage_class_field() -> Any:
    return Field(
        default=None,
        description="StorageClass; empty uses the cluster default.",
        max_length=253,
        pattern=DNS_SUBDOMAIN,
    )


def deletion_policy_field(owner: str) -> Any:
    return Field(
        default="Retain",
        description=f"What happens to the volume when the {owner} is deleted: Retain keeps it, Delete removes it.",
    )


def storage_class_immutable(owner: str) -> dict[str, str]:
    """PVC storage classes cannot change; say so at apply time instead of failing in the operator."""
    return cel(
        "has(self.storageClassName) == has(oldSelf.storageClassName) && "
        "(!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",
        f"storageClassName cannot change once the volume exists; create a new {owner} instead",
        field_path=".storageClassName",
    )
