"""AgentRun → token Secret + one agent Pod, admitted under the concurrency limits; a status that
follows the pod; finished runs removed after their TTL or beyond the Group's history limit.

A run never starts twice: the pod is named after the run and is only ever created while the run has
no `status.podName`. A pod that disappears before it finished makes the run Failed (PodLost).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from pynchy.api.resources import AgentRun, Group, Workspace
from pynchy.api.validation import format_errors
from pynchy.errors import TemporaryError
from pynchy.kube.api import KubeApi, KubeError
from pynchy.logs import get_logger
from pynchy.operator.admission import FINISHED_PHASES, RunIndex, run_view
from pynchy.operator.build.agentrun import RunInputs, agent_pod, parse_time, token_secret
from pynchy.operator.build.common import (
    ANNOTATION_CONFIG_HASH,
    ANNOTATION_TOKEN_ISSUED_AT,
    group_config_map_name,
    owner_reference,
    run_token_secret_name,
)
from pynchy.operator.conditions import Cond, condition, merge_conditions, now_rfc3339
from pynchy.operator.diff import up_to_date
from pynchy.operator.events import record_event
from pynchy.operator.settings import OperatorSettings
from pynchy.operator.status import publish

log = get_logger(__name__)
MAX_MESSAGE = 4000  # status.message allows 4096
RETRY_REJECTED_SECONDS = 60.0
RUN_CONDITIONS = ("Ready", "Reconciling", "Stalled", "Complete", "Failed", "ConfigCurrent")

# -- pure: pod → run outcome, outcome → status ------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    phase: str
    reason: str
    message: str
    start_time: str | None = None
    completion_time: str | None = None


def _reason(value: Any) -> str:
    """A kubelet reason as a condition reason (CamelCase letters, digits and '_')."""
    text = re.sub(r"[^A-Za-z0-9_]", "", str(value or ""))[:128]
    return text if text[:1].isalpha() else ""


def _agent_state(status: dict[str, Any]) -> dict[str, Any]:
    statuses = status.get("containerStatuses") or []
    agent = next((c for c in statuses if c.get("name") == "agent"), statuses[0] if statuses else {})
    return agent.get("state") or {}


def _memory_limit(pod: dict[str, Any]) -> str:
    containers = (pod.get("spec") or {}).get("containers") or []
    agent = next((c for c in containers if c.get("name") == "agent"), containers[0] if containers else {})
    return str(((agent.get("resources") or {}).get("limits") or {}).get("memory") or "no limit set")


def pod_outcome(pod: dict[str, Any], now: str) -> Outcome:
    """What the agent pod says about the run (`now` stands in for a missing finish time)."""
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    state = _agent_state(status)
    terminated = state.get("terminated") or {}
    start = status.get("startTime") or (state.get("running") or {}).get("startedAt") or terminated.get("startedAt")
    finished = terminated.get("finishedAt") or now
    name = pod["metadata"]["name"]
    if phase == "Succeeded":
        message = (terminated.get("message") or "").strip() or "The agent exited with code 0."
        return Outcome("Succeeded", "Succeeded", message[:MAX_MESSAGE], start, finished)
    if phase == "Failed":
        if status.get("reason") == "DeadlineExceeded":
            message = status.get("message") or "The run reached its time limit (spec.agent.timeoutSeconds)."
            return Outcome("TimedOut", "DeadlineExceeded", message[:MAX_MESSAGE], start, finished)
        if terminated:
            code = terminated.get("exitCode")
            reason = _reason(terminated.get("reason")) or f"ExitCode{code}"
            message = (terminated.get("message") or "").strip() or f"exit code {code}"
            if reason == "OOMKilled":
                # The termination message is whatever the runner last said; say first what happened.
                message = f"OOMKilled: the agent used more than its memory limit ({_memory_limit(pod)}). {message}"
        else:
            reason = _reason(status.get("reason")) or "PodFailed"
            message = status.get("message") or f"agent pod {name} failed"
        return Outcome("Failed", reason, message[:MAX_MESSAGE], start, finished)
    if phase == "Running":
        return Outcome("Running", "Running", f"agent pod {name} is running", start)
    if phase == "Unknown":
        message = status.get("message") or f"the node of agent pod {name} does not report its state"
        return Outcome("Running", "PodUnknown", message[:MAX_MESSAGE], start)
    waiting = state.get("waiting") or {}
    if waiting:
        message = ": ".join(str(p) for p in (waiting.get("reason"), waiting.get("message")) if p)
    else:
        scheduled = condition(status.get("conditions"), "PodScheduled")
        if scheduled and scheduled.get("status") == "False" and scheduled.get("message"):
            message = scheduled["message"]
        elif not (pod.get("spec") or {}).get("nodeName"):
            message = f"agent pod {name} is waiting to be scheduled"
        else:
            message = f"agent pod {name} is starting"
    return Outcome("Pending", "PodPending", message[:MAX_MESSAGE])


def run_status(
    raw: dict[str, Any], outcome: Outcome, *, pod_name: str | None = None, config: Cond | None = None, now: str = ""
) -> dict[str, Any]:
    """Our status fields only (never turnsServed, sessionId or usage, which the gateway writes).

    Conditions: Ready (running or succeeded), Reconciling (not finished: kstatus InProgress),
    Complete (succeeded), Failed + Stalled (failed or timed out: kstatus Failed), ConfigCurrent
    (while a pod runs: does it run the Group's current configuration?).
    """
    generation = int(raw["metadata"].get("generation", 0))
    old = raw.get("status") or {}
    phase = outcome.phase
    finished = phase in FINISHED_PHASES
    failed = phase in ("Failed", "TimedOut")
    wanted = [Cond("Ready", phase in ("Running", "Succeeded"), outcome.reason, outcome.message)]
    if not finished:
        wanted.append(Cond("Reconciling", True, outcome.reason, outcome.message))
    if phase == "Succeeded":
        wanted.append(Cond("Complete", True, outcome.reason, outcome.message))
    if failed:
        wanted += [
            Cond("Failed", True, outcome.reason, outcome.message),
            Cond("Stalled", True, outcome.reason, outcome.message),
        ]
    if config is not None and not finished:
        wanted.append(config)
    drop = tuple(t for t in RUN_CONDITIONS if t not in {w.type for w in wanted})
    if not finished and config is None:
        drop = tuple(t for t in drop if t != "ConfigCurrent")  # unknown now: keep what we knew
    fields: dict[str, Any] = {"observedGeneration": generation, "phase": phase, "reason": outcome.reason}
    fields["message"] = outcome.message
    pod_name = pod_name or old.get("podName")
    if pod_name:
        fields["podName"] = pod_name
    start = old.get("startTime") or outcome.start_time
    if start:
        fields["startTime"] = start
    completion = old.get("completionTime") or outcome.completion_time
    if finished and completion:
        fields["completionTime"] = completion
    fields["conditions"] = merge_conditions(old.get("conditions") or [], wanted, generation, drop=drop, now=now)
    return fields


def config_condition(pod: dict[str, Any], desired_hash: str) -> Cond:
    live = (pod["metadata"].get("annotations") or {}).get(ANNOTATION_CONFIG_HASH)
    if live == desired_hash:
        return Cond("ConfigCurrent", True, "ConfigCurrent", "The agent pod runs the Group's current configuration.")
    return Cond(
        "ConfigCurrent",
        False,
        "ConfigChanged",
        "The Group's configuration changed after this pod started. The pod is not restarted: the gateway "
        "gives it no new turns, so it ends between turns, and the next run starts with the new configuration.",
    )


def ttl_remaining(raw: dict[str, Any], default_ttl: int, now: float) -> float:
    """Seconds until a finished run is deleted (≤ 0: now)."""
    ttl = (raw.get("spec") or {}).get("ttlSecondsAfterFinished")
    if not isinstance(ttl, int) or ttl < 0:
        ttl = default_ttl
    status = raw.get("status") or {}
    finished = status.get("completionTime") or raw["metadata"]["creationTimestamp"]
    return parse_time(finished) + ttl - now


# -- reading what a run needs ------------------------------------------------------------------


@dataclass
class Resolved:
    """The run's Group and what its pod is built from; `problem` says why no run may start now."""

    raw: dict[str, Any] | None = None
    group: Group | None = None
    inputs: RunInputs | None = None
    problem: str = ""


def group_not_ready(raw: dict[str, Any]) -> str:
    """Why the Group cannot run an agent now, from its status ("" when it is Ready at its latest spec)."""
    name = raw["metadata"]["name"]
    status = raw.get("status") or {}
    ready = condition(status.get("conditions"), "Ready")
    accepted = condition(status.get("conditions"), "Accepted")
    if not ready or ready.get("status") != "True":
        # Not accepted: the Accepted message says what to fix (Ready only points to it).
        why = accepted if accepted and accepted.get("status") == "False" else ready
        detail = why.get("message") if why else "it has not been reconciled yet"
        return f"Group {name} is not ready: {detail}"
    if status.get("observedGeneration") != raw["metadata"].get("generation"):
        return f"Group {name} is not ready: its latest change is not reconciled yet"
    return ""


async def resolve(api: KubeApi, namespace: str, name: str) -> Resolved:
    """Read the Group, its Workspace and its ConfigMap's hash. Inputs are resolved even for a Group
    that is not Ready (a running pod is compared with them); `problem` then says why no run may start."""
    raw = await api.get("Group", namespace, name)
    if raw is None:
        return Resolved(
            problem=f"Group {name!r} does not exist in namespace {namespace!r}; create it or fix spec.groupRef"
        )
    not_ready = group_not_ready(raw)
    try:
        g = Group.from_k8s(raw)
    except ValidationError:
        return Resolved(raw, problem=not_ready or f"Group {name} has a spec the operator rejects")
    ws: Workspace | None = None
    if g.spec.workspace_ref:
        ws_raw = await api.get("Workspace", namespace, g.spec.workspace_ref.name)
        try:
            ws = Workspace.from_k8s(ws_raw) if ws_raw is not None else None
        except ValidationError:
            ws = None
        if ws is None:
            problem = f"Group {name} is not ready: Workspace {g.spec.workspace_ref.name} is unusable"
            return Resolved(raw, g, problem=not_ready or problem)
    cm = await api.get("ConfigMap", namespace, group_config_map_name(name))
    config_hash = ((cm or {}).get("metadata", {}).get("annotations") or {}).get(ANNOTATION_CONFIG_HASH)
    if not config_hash:
        return Resolved(raw, g, problem=not_ready or f"Group {name} is not ready: its ConfigMap does not exist yet")
    return Resolved(raw, g, RunInputs(config_hash=config_hash, workspace=ws), not_ready)


# -- the reconcile -----------------------------------------------------------------------------


class RunReconciler:
    def __init__(
        self, api: KubeApi, settings: OperatorSettings, index: RunIndex, clock: Callable[[], float] = time.time
    ) -> None:
        self.api = api
        self.settings = settings
        self.index = index
        self.clock = clock

    async def reconcile(self, raw: dict[str, Any]) -> float | None:
        """Returns seconds until the run needs another look (TTL, retry), or None."""
        meta = raw["metadata"]
        ns, name = meta["namespace"], meta["name"]
        key = (ns, name)
        self.index.observe_run(raw, wake=False)
        status = raw.get("status") or {}
        if status.get("phase") in FINISHED_PHASES:
            return await self._after_finish(raw)
        try:
            run = AgentRun.from_k8s({k: v for k, v in raw.items() if k != "status"})
        except ValidationError as exc:
            outcome = Outcome("Failed", "InvalidSpec", "; ".join(format_errors(exc))[:MAX_MESSAGE], None, now_rfc3339())
            return await self._finish(raw, outcome)
        group = run.spec.group_ref.name

        pod = await self.api.get("Pod", ns, name)
        if pod is not None and not any(
            r.get("uid") == meta["uid"] and r.get("controller") for r in pod["metadata"].get("ownerReferences") or []
        ):
            # Someone else's pod (or a deleted run's, still terminating) holds the name.
            message = f"a pod named {name} exists that this AgentRun does not own; it starts when that pod is gone"
            self.index.set_startable(key, False)
            await self._publish(raw, Outcome("Pending", "PodConflict", message))
            return RETRY_REJECTED_SECONDS
        if pod is not None:
            self.index.set_pod(key, (pod.get("status") or {}).get("phase") or "Pending")
            return await self._follow(raw, pod, group)
        self.index.set_pod(key, None)
        if status.get("podName") or key in self.index.created:
            message = (
                f"agent pod {name} disappeared before the run finished; runs are never started "
                "twice, so create a new AgentRun to run again"
            )
            return await self._finish(raw, Outcome("Failed", "PodLost", message, None, now_rfc3339()))
        return await self._start(raw, group)

    async def _start(self, raw: dict[str, Any], group: str) -> float | None:
        meta = raw["metadata"]
        ns, name = meta["namespace"], meta["name"]
        key = (ns, name)
        resolved = await resolve(self.api, ns, group)
        if resolved.raw is not None:
            await self._ensure_owner(raw, resolved.raw)
        if resolved.problem or resolved.group is None or resolved.inputs is None:
            self.index.set_startable(key, False)
            await self._publish(raw, Outcome("Pending", "GroupNotReady", resolved.problem))
            return None
        view = run_view(raw)
        assert view is not None  # the spec parsed, so groupRef is there
        async with self.index.lock:
            await self.index.seed(self.api, list(self.settings.namespaces))
            why = self.index.admit(view)
        if why is not None:
            await self._publish(raw, Outcome("Pending", "Queued", why))
            return None
        try:
            await self._ensure_secret(raw, resolved.group, int(self.clock()))
            pod = await self.api.create(agent_pod(raw, resolved.group, resolved.inputs, self.settings))
        except KubeError as exc:
            if exc.status == 409:
                return 0.0  # the pod exists after all (a lagging read): adopt it on the next pass
            self.index.unadmit(key)
            if isinstance(exc, TemporaryError) or exc.gone:
                raise
            message = f"the API server refused the agent pod: {exc.message}"
            await self._publish(raw, Outcome("Pending", "PodRejected", message[:MAX_MESSAGE]))
            return RETRY_REJECTED_SECONDS
        except BaseException:
            self.index.unadmit(key)  # not known to exist: the next pass looks before creating again
            raise
        # Known to exist now: should it vanish before status.podName is written, the run is lost, not redone.
        self.index.created.add(key)
        log.info("agent pod created", namespace=ns, run=name, group=group)
        self.index.set_pod(key, (pod.get("status") or {}).get("phase") or "Pending")
        await self._publish(raw, pod_outcome(pod, now_rfc3339()), pod_name=name)
        return None

    async def _follow(self, raw: dict[str, Any], pod: dict[str, Any], group: str) -> float | None:
        """The pod exists: report it; flag a configuration that changed since it started."""
        outcome = pod_outcome(pod, now_rfc3339())
        name = pod["metadata"]["name"]
        if outcome.phase in FINISHED_PHASES:
            return await self._finish(raw, outcome, pod_name=name)
        resolved = await resolve(self.api, raw["metadata"]["namespace"], group)
        config = None
        if resolved.group is not None and resolved.inputs is not None:
            desired = agent_pod(raw, resolved.group, resolved.inputs, self.settings)
            config = config_condition(pod, desired["metadata"]["annotations"][ANNOTATION_CONFIG_HASH])
            if outcome.phase == "Pending":
                # The kubelet reads the token when the container starts: keep it there until then.
                await self._ensure_secret(raw, resolved.group, parse_time(pod["metadata"]["creationTimestamp"]))
        await self._publish(raw, outcome, pod_name=name, config=config)
        return None

    async def _finish(self, raw: dict[str, Any], outcome: Outcome, pod_name: str | None = None) -> float | None:
        meta = raw["metadata"]
        fields = run_status(raw, outcome, pod_name=pod_name)
        if await publish(self.api, raw, fields):
            log.info("agent run finished", namespace=meta["namespace"], run=meta["name"], phase=outcome.phase)
            if outcome.phase != "Succeeded":
                await record_event(self.api, raw, "Warning", outcome.reason, outcome.message)
        raw = {**raw, "status": {**(raw.get("status") or {}), **fields}}
        self.index.finish((meta["namespace"], meta["name"]), fields.get("completionTime", ""))
        return await self._after_finish(raw)

    async def _after_finish(self, raw: dict[str, Any]) -> float | None:
        """History limit per Group, then the TTL. Deleting the run deletes its pod and Secret (owned)."""
        meta = raw["metadata"]
        ns, name = meta["namespace"], meta["name"]
        view = run_view(raw)
        if view is not None:
            async with self.index.lock:
                excess = self.index.take_history_excess(ns, view.group)
            for old in excess:
                log.info("deleting finished run beyond the history limit", namespace=old.namespace, run=old.name)
                await self.api.delete("AgentRun", old.namespace, old.name, uid=old.uid or None)
            if any(old.key == (ns, name) for old in excess):
                return None
        remaining = ttl_remaining(raw, self.settings.run_ttl_seconds, self.clock())
        if remaining > 0:
            return remaining
        log.info("deleting finished run after its TTL", namespace=ns, run=name)
        await self.api.delete("AgentRun", ns, name, uid=meta["uid"])
        self.index.forget_run((ns, name))
        return None

    # -- writes --------------------------------------------------------------------------------

    async def _publish(
        self, raw: dict[str, Any], outcome: Outcome, *, pod_name: str | None = None, config: Cond | None = None
    ) -> None:
        await publish(self.api, raw, run_status(raw, outcome, pod_name=pod_name, config=config))

    async def _ensure_owner(self, raw: dict[str, Any], group: dict[str, Any]) -> None:
        """The run belongs to its Group (deleting the Group deletes its runs): one metadata patch, once."""
        meta = raw["metadata"]
        refs = meta.get("ownerReferences") or []
        if any(r.get("uid") == group["metadata"]["uid"] for r in refs):
            return
        ref = owner_reference(group)
        if any(r.get("controller") for r in refs):
            ref["controller"] = False  # created by another controller (for example a ScheduledTask)
        body = {"metadata": {"ownerReferences": [*refs, ref], "resourceVersion": meta["resourceVersion"]}}
        await self.api.request(
            "PATCH",
            self.api.path("AgentRun", meta["namespace"], meta["name"]),
            body=body,
            content_type="application/merge-patch+json",
        )

    async def _ensure_secret(self, raw: dict[str, Any], g: Group, issued_at: int) -> None:
        """The run's token. Once issued, its issue time (kept in an annotation) is reused, so the same
        Secret is rendered again and a re-reconcile writes nothing."""
        meta = raw["metadata"]
        live = await self.api.get("Secret", meta["namespace"], run_token_secret_name(meta["name"]))
        if live is not None:
            stamp = (live["metadata"].get("annotations") or {}).get(ANNOTATION_TOKEN_ISSUED_AT)
            with contextlib.suppress(ValueError):
                issued_at = parse_time(stamp) if stamp else issued_at
        desired = token_secret(raw, g, self.settings, issued_at)
        if live is None or not up_to_date(desired, live):
            await self.api.apply(desired)
