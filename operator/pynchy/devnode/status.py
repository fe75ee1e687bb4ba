"""Pod status as a kubelet writes it: container states, conditions, phase (pure helpers)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

LOOPBACK = "127.0.0.1"
RUNTIME = "pynchy-devnode"
TERMINAL = ("Succeeded", "Failed")

# Messages and reasons the kubelet uses, so `kubectl describe` reads the same.
DEADLINE_REASON = "DeadlineExceeded"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
SHUTDOWN_REASON = "Terminated"
SHUTDOWN_MESSAGE = "Pod was terminated in response to the dev node stopping."
LOST_REASON = "DevNodeRestarted"
LOST_MESSAGE = (
    "The dev node restarted and this pod's processes are gone: the dev node runs containers as its own "
    "child processes, which do not survive it."
)
UNKNOWN_CONTAINER_MESSAGE = "The container could not be located when the pod was terminated"


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    """A MicroTime (Lease renewTime)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pod_addresses() -> dict[str, Any]:
    """The status address fields of every dev node pod: it runs on the host's network."""
    return {"hostIP": LOOPBACK, "hostIPs": [{"ip": LOOPBACK}], "podIP": LOOPBACK, "podIPs": [{"ip": LOOPBACK}]}


def exit_code(returncode: int) -> int:
    """A Popen return code as a container exit code: killed by signal N → 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def terminated_reason(code: int) -> str:
    return "Completed" if code == 0 else "Error"


@dataclass
class ContainerRecord:
    """What the dev node knows about one container; renders a containerStatuses entry."""

    name: str
    image: str
    state: dict[str, Any] = field(default_factory=dict)
    last_state: dict[str, Any] = field(default_factory=dict)
    restart_count: int = 0
    container_id: str = ""

    def waiting(self, reason: str, message: str = "") -> None:
        self.state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}

    def running(self, pid: int, started_at: str) -> None:
        self.container_id = f"{RUNTIME}://{pid}"
        self.state = {"running": {"startedAt": started_at}}

    def terminated(
        self, code: int, *, started_at: str | None, finished_at: str, reason: str | None = None, message: str = ""
    ) -> None:
        t: dict[str, Any] = {"exitCode": code, "reason": reason or terminated_reason(code), "finishedAt": finished_at}
        if started_at:
            t["startedAt"] = started_at
        if message:
            t["message"] = message
        if self.container_id:
            t["containerID"] = self.container_id
        self.state = {"terminated": t}

    def restarting(self, reason: str, message: str) -> None:
        """Keep the finished run as lastState and wait to be started again."""
        if "terminated" in self.state:
            self.last_state = self.state
        self.waiting(reason, message)

    @property
    def is_running(self) -> bool:
        return "running" in self.state

    @property
    def exit_code(self) -> int | None:
        t = self.state.get("terminated")
        return None if t is None else int(t["exitCode"])

    def to_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": self.is_running,
            "started": self.is_running,
            "restartCount": self.restart_count,
            "state": self.state or {"waiting": {"reason": "ContainerCreating"}},
            "lastState": self.last_state,
        }
        if self.container_id:
            status["containerID"] = self.container_id
        return status


class Conditions:
    """Pod conditions with stable lastTransitionTime (kept while the status does not change)."""

    def __init__(self, existing: list[Mapping[str, Any]] | None = None) -> None:
        self._items: dict[str, dict[str, Any]] = {c["type"]: dict(c) for c in existing or [] if "type" in c}

    def set(self, type_: str, status: bool, reason: str = "", message: str = "") -> None:
        value = "True" if status else "False"
        old = self._items.get(type_)
        cond: dict[str, Any] = {"type": type_, "status": value, "lastProbeTime": None}
        cond["lastTransitionTime"] = (
            old.get("lastTransitionTime")
            if old and old.get("status") == value and old.get("lastTransitionTime")
            else now()
        )
        if reason:
            cond["reason"] = reason
        if message:
            cond["message"] = message
        self._items[type_] = cond

    def to_list(self) -> list[dict[str, Any]]:
        order = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
        rank = {t: i for i, t in enumerate(order)}
        return sorted(self._items.values(), key=lambda c: (rank.get(c["type"], len(order)), c["type"]))


def set_pod_conditions(
    conds: Conditions,
    *,
    phase: str,
    init: list[ContainerRecord],
    main: list[ContainerRecord],
    sandbox_ready: bool,
) -> None:
    """Initialized / ContainersReady / Ready / PodReadyToStartContainers from the container records."""
    conds.set("PodScheduled", True)
    conds.set("PodReadyToStartContainers", sandbox_ready)
    pending_init = [r.name for r in init if r.exit_code != 0]
    if pending_init:
        conds.set(
            "Initialized",
            False,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(pending_init)}]",
        )
    else:
        conds.set("Initialized", True)
    unready = [r.name for r in main if not r.is_running]
    if phase in TERMINAL:
        conds.set("ContainersReady", False, "PodCompleted")
        conds.set("Ready", False, "PodCompleted")
    elif unready:
        message = f"containers with unready status: [{' '.join(unready)}]"
        conds.set("ContainersReady", False, "ContainersNotReady", message)
        conds.set("Ready", False, "ContainersNotReady", message)
    else:
        conds.set("ContainersReady", True)
        conds.set("Ready", True)


def phase_from_exit(code: int) -> str:
    return "Succeeded" if code == 0 else "Failed"


def termination_message(file_text: str | None, log_tail: str | None, policy: str, code: int) -> str:
    """The terminated state's message: the file's content, else (FallbackToLogsOnError) the log tail."""
    text = (file_text or "")[:4096]
    if not text and policy == "FallbackToLogsOnError" and code != 0 and log_tail:
        lines = log_tail.splitlines()[-80:]
        text = "\n".join(lines)[-2048:]
    return text


def node_selector_matches(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())
