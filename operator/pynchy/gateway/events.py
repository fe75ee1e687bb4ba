"""The Kubernetes Events the gateway posts, for a person reading `kubectl describe` or `kubectl get
events`: a message the delivery loop gave up on, a Group's budget nearly or fully used. (A failed
AgentRun's Warning is the operator's, which knows why: DeadlineExceeded, PodFailed, OOMKilled.)
Each method turns what one part saw into one Event; the recorder
(`pynchy.kube.events`) aggregates repeats and posts them best-effort in the background."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pynchy.gateway.agentruns import API_VERSION
from pynchy.gateway.budget import Verdict
from pynchy.gateway.routing import Directory
from pynchy.kube.events import EventType, ObjectRef
from pynchy.store.models import OutboundRow

REPORTING_CONTROLLER = "pynchy.dev/gateway"
Record = Callable[[ObjectRef, EventType, str, str, str], None]  # (regarding, type, reason, action, note)


@dataclass(eq=False)  # a service: identity, not value
class GatewayEvents:
    record: Record
    directory: Directory  # the Groups' uids

    def group(self, namespace: str, group: str) -> ObjectRef:
        entry = self.directory.get(namespace, group)
        return ObjectRef(API_VERSION, "Group", namespace, group, entry.uid if entry is not None else "")

    def delivery_gave_up(self, row: OutboundRow, error: str) -> None:
        """The delivery loop gave a message up (its last attempt or a permanent error)."""
        note = f"gave up delivering a message to {row.channel} channel {row.channel_id}: {error}"
        self.record(self.group(row.namespace, row.group), "Warning", "DeliveryFailed", "Deliver", note)

    def budget_notice(self, namespace: str, group: str, verdict: Verdict) -> None:
        """The spend guard posted a budget notice to the Group's channel (once per period and kind)."""
        if verdict.state == "exceeded":
            self.record(self.group(namespace, group), "Warning", "BudgetReached", "CheckBudget", verdict.message)
        elif verdict.state == "warning":
            self.record(self.group(namespace, group), "Normal", "BudgetWarning", "CheckBudget", verdict.message)
