"""ScheduledTask + a due time → the AgentRun for that firing.

Pure. The run's name comes from the task and the due time (``schedule.naming.run_name``), so
creating it twice is a 409 Conflict: the API server itself makes each firing happen once.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pynchy.api.base import GROUP_VERSION
from pynchy.api.resources import ScheduledTask
from pynchy.operator.build.common import LABEL_GROUP, LABEL_SCHEDULED_TASK, owner_reference, timestamp
from pynchy.schedule import run_name

# The kind scheduled_run emits; the task deletes its own runs (history limits), by name.
OWNED_KINDS: tuple[str, ...] = ("AgentRun",)


def scheduled_run(task: ScheduledTask, raw: dict[str, Any], scheduled_time: dt.datetime) -> dict[str, Any]:
    """The AgentRun for the firing of ``task`` due at ``scheduled_time``.

    ``raw`` is the task as the API server returned it (for its apiVersion, namespace and uid).
    The run is controlled by the task; the AgentRun controller adds the Group as a second,
    non-controller owner, so deleting the task leaves started runs to finish and to their TTL.
    ttlSecondsAfterFinished is left to the operator default.
    """
    meta = raw["metadata"]
    spec = task.spec
    group = spec.group_ref.name
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "AgentRun",
        "metadata": {
            "name": run_name(meta["name"], scheduled_time),
            "namespace": meta["namespace"],
            "labels": {LABEL_GROUP: group, LABEL_SCHEDULED_TASK: meta["name"]},
            "ownerReferences": [owner_reference(raw)],
        },
        "spec": {
            "groupRef": {"name": group},
            "trigger": {
                "kind": "Schedule",
                "scheduledTaskRef": {"name": meta["name"]},
                "scheduledTime": timestamp(scheduled_time),
            },
            "prompt": spec.prompt,
            "contextMode": spec.context_mode,
            "deliver": spec.deliver,
        },
    }
