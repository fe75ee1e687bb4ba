"""Pynchy's agent tools, executed in the gateway and authorised here (never in the pod).

A non-admin Group may act only on its own chat and tasks; an admin Group may name another
Group in the same namespace. `send_message` and `schedule_task` are limited per calling Group
(`toollimits.py`). Every call is written to the audit table, allowed or not.

The ScheduledTasks the agent creates are owned by their Group (an ownerReference, not controller:
the task's controller is the operator), so the garbage collector deletes them with the Group.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from pydantic import ValidationError

from pynchy.aio import KeyedLocks
from pynchy.api.validation import format_errors
from pynchy.errors import PynchyError
from pynchy.gateway.agentruns import API_VERSION
from pynchy.gateway.db import Db
from pynchy.gateway.routing import Directory, GroupEntry
from pynchy.gateway.toollimits import LimitValues, SendLimiter, spacing_refusal, task_count_refusal
from pynchy.kube.api import KubeApi, KubeError
from pynchy.store import records
from pynchy_agent.protocol import (
    TOOLS,
    ForgetMemoryArgs,
    RecallMemoriesArgs,
    SaveMemoryArgs,
    ScheduleTaskArgs,
    SendMessageArgs,
    TargetArgs,
    TaskArgs,
    ToolResult,
)


@dataclass(frozen=True)
class Caller:
    namespace: str
    group: str
    run: str
    admin: bool


LABEL_CREATED_BY = "pynchy.dev/created-by"
ANNOTATION_CREATED_BY_GROUP = "pynchy.dev/created-by-group"


class ToolError(PynchyError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def scheduled_task(namespace: str, owner: GroupEntry, args: ScheduleTaskArgs, caller: Caller) -> dict[str, Any]:
    """The ScheduledTask an agent asked for, owned by the Group it runs for (the API server validates the
    schedule). `controller: false`: the operator, not the Group, is the task's controller."""
    schedule = {k: v for k, v in {"cron": args.cron, "interval": args.interval, "once": args.once}.items() if v}
    target = owner.name
    return {
        "apiVersion": API_VERSION,
        "kind": "ScheduledTask",
        "metadata": {
            "name": args.name,
            "namespace": namespace,
            "labels": {"pynchy.dev/group": target, LABEL_CREATED_BY: "agent"},
            "annotations": {"pynchy.dev/created-by-run": caller.run, ANNOTATION_CREATED_BY_GROUP: caller.group},
            "ownerReferences": [
                {"apiVersion": API_VERSION, "kind": "Group", "name": target, "uid": owner.uid, "controller": False}
            ],
        },
        "spec": {
            "groupRef": {"name": target},
            "prompt": args.prompt,
            "schedule": schedule,
            "timeZone": args.time_zone,
            "contextMode": args.context_mode,
        },
    }


def _task_group(task: dict[str, Any]) -> str | None:
    """The Group a ScheduledTask object belongs to (its spec is CRD-validated: groupRef is required)."""
    ref = (task.get("spec") or {}).get("groupRef") or {}
    name = ref.get("name")
    return name if isinstance(name, str) else None


def _task_summary(task: dict[str, Any]) -> dict[str, Any]:
    spec, status = task.get("spec") or {}, task.get("status") or {}
    return {
        "name": task["metadata"]["name"],
        "schedule": spec.get("schedule"),
        "timeZone": spec.get("timeZone"),
        "suspended": bool(spec.get("suspend")),
        "nextRun": status.get("nextScheduleTime"),
        "lastRun": status.get("lastScheduleTime"),
        "prompt": (spec.get("prompt") or "")[:200],
    }


SendMessage = Callable[[str, str, str], Awaitable[None]]  # (namespace, group, text)
Handler = Callable[["Caller", str, Any], Awaitable[ToolResult]]
Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Tools:
    def __init__(
        self,
        api: KubeApi,
        db: Db,
        directory: Directory,
        send: SendMessage,
        limits: LimitValues,
        *,
        clock: Clock = _utc_now,
    ) -> None:
        self.api = api
        self.db = db
        self.directory = directory
        self.send = send
        self.limits = limits  # the gateway's defaults; each Group's spec.agent.toolLimits overrides them
        self.sends = SendLimiter()  # per calling Group, in memory (see gateway/ratelimit.py)
        self.clock = clock
        # schedule_task of one calling Group, one at a time: its count holds until its create is done.
        self._task_locks: KeyedLocks[tuple[str, str]] = KeyedLocks()

    async def call(self, caller: Caller, name: str, arguments: dict[str, Any]) -> ToolResult:
        if name not in TOOLS:
            raise ToolError(404, f"unknown tool {name!r}; available: {', '.join(TOOLS)}")
        model = TOOLS[name][0]
        try:
            args = model.model_validate(arguments)
        except ValidationError as exc:
            raise ToolError(422, f"invalid arguments for {name}: " + "; ".join(format_errors(exc))) from None
        target = getattr(args, "group", None) or caller.group
        if target != caller.group and not caller.admin:
            detail = f"group {caller.group} is not an admin group and may act only on itself"
            await self._audit(caller, name, target, allowed=False, detail=detail)
            raise ToolError(403, f"refused: {detail}; leave 'group' empty to act on this group")
        async with self._serialised(caller, name):
            try:
                refusal = await self._over_limit(caller, name, args)
            except ToolError as exc:
                refusal = exc
            detail = str(refusal) if refusal is not None else str(args.wire())[:1000]
            await self._audit(caller, name, target, allowed=refusal is None, detail=detail)
            if refusal is not None:
                raise refusal
            if target != caller.group and self.directory.get(caller.namespace, target) is None:
                raise ToolError(404, f"Group {target!r} does not exist in namespace {caller.namespace}")
            handler = cast(Handler, getattr(self, f"_{name}"))  # every name in TOOLS has a _<name> method
            return await handler(caller, target, args)

    async def _audit(self, caller: Caller, name: str, target: str, *, allowed: bool, detail: str) -> None:
        await self.db.call(
            records.audit,
            namespace=caller.namespace,
            group=caller.group,
            run=caller.run,
            action=name,
            allowed=allowed,
            target_group=target,
            detail=detail,
        )

    # -- limits ------------------------------------------------------------------------

    def _serialised(self, caller: Caller, name: str) -> AbstractAsyncContextManager[Any]:
        if name == "schedule_task":
            return self._task_locks((caller.namespace, caller.group))
        return nullcontext()

    def _limits_of(self, namespace: str, group: str) -> LimitValues:
        entry = self.directory.get(namespace, group)
        return self.limits.over(entry.spec.agent.tool_limits if entry is not None else None)

    async def _over_limit(self, caller: Caller, name: str, args: Any) -> ToolError | None:
        """The refusal when the call would exceed the calling Group's limits (a send is counted here)."""
        limits = self._limits_of(caller.namespace, caller.group)
        if name == "send_message":
            text = self.sends.take(caller.namespace, caller.group, limits.send_messages_per_minute)
            return ToolError(429, text) if text else None
        if name != "schedule_task":
            return None
        most = limits.max_scheduled_tasks
        text = task_count_refusal(most, caller.group, 0) if most == 0 else None  # turned off
        text = text or spacing_refusal(args, limits.min_schedule_interval_seconds, caller.group, self.clock())
        if text is None:  # the one limit that needs a request, last
            text = task_count_refusal(most, caller.group, await self._agent_task_count(caller))
        return ToolError(403, text) if text else None

    async def _agent_task_count(self, caller: Caller) -> int:
        """ScheduledTasks the calling Group's agent created that exist now (not those a person applied)."""
        try:
            items = await self.api.list("ScheduledTask", caller.namespace, labels={LABEL_CREATED_BY: "agent"})
        except KubeError as exc:  # a refusal like the others, so that it is audited and the model reads why
            raise ToolError(503, f"could not count the Group's tasks ({exc.message}); try again shortly") from None
        return sum(
            1
            for t in items
            if (t["metadata"].get("annotations") or {}).get(ANNOTATION_CREATED_BY_GROUP) == caller.group
            and not t["metadata"].get("deletionTimestamp")
        )

    # -- chat --------------------------------------------------------------------------

    async def _send_message(self, caller: Caller, target: str, args: SendMessageArgs) -> ToolResult:
        await self.send(caller.namespace, target, args.text)
        return ToolResult(text=f"Message sent to {target}.")

    async def _reset_context(self, caller: Caller, target: str, args: Any) -> ToolResult:
        def mark(session: Any) -> None:
            row = records.group_session(session, caller.namespace, target)
            row.reset_pending = True

        await self.db.call(mark)
        return ToolResult(text="The conversation will start fresh with the next message; memories are kept.")

    # -- tasks -------------------------------------------------------------------------

    async def _schedule_task(self, caller: Caller, target: str, args: ScheduleTaskArgs) -> ToolResult:
        if sum(1 for v in (args.cron, args.interval, args.once) if v) != 1:
            raise ToolError(422, "set exactly one of cron, interval or once")
        owner = self.directory.get(caller.namespace, target)
        if owner is None:  # the Group went away meanwhile; a task it would not own must not be left behind
            raise ToolError(404, f"Group {target!r} does not exist in namespace {caller.namespace}")
        try:
            await self.api.create(scheduled_task(caller.namespace, owner, args, caller))
        except KubeError as exc:
            if exc.status == 409:
                raise ToolError(409, f"a task named {args.name!r} already exists; pick another name") from None
            if exc.status in (400, 422):
                raise ToolError(422, f"the task was refused: {exc.message}") from None
            raise
        return ToolResult(text=f"Scheduled task {args.name} created for {target}.", data={"name": args.name})

    async def _tasks(self, namespace: str, target: str) -> list[dict[str, Any]]:
        items = await self.api.list("ScheduledTask", namespace)
        return [t for t in items if _task_group(t) == target]

    async def _own_task(self, caller: Caller, target: str, name: str) -> dict[str, Any]:
        task = await self.api.get("ScheduledTask", caller.namespace, name)
        if task is None or _task_group(task) != target:
            raise ToolError(404, f"no task named {name!r} for group {target}; list_tasks shows them")
        return task

    async def _list_tasks(self, caller: Caller, target: str, args: TargetArgs) -> ToolResult:
        tasks = [_task_summary(t) for t in await self._tasks(caller.namespace, target)]
        lines = [f"- {t['name']}: {t['schedule']} next={t['nextRun']} suspended={t['suspended']}" for t in tasks]
        return ToolResult(text="\n".join(lines) or f"{target} has no scheduled tasks.", data=tasks)

    async def _set_suspend(self, caller: Caller, target: str, name: str, suspend: bool) -> None:
        task = await self._own_task(caller, target, name)
        await self.api.request(
            "PATCH",
            self.api.path("ScheduledTask", caller.namespace, name),
            body={"metadata": {"resourceVersion": task["metadata"]["resourceVersion"]}, "spec": {"suspend": suspend}},
            content_type="application/merge-patch+json",
        )

    async def _pause_task(self, caller: Caller, target: str, args: TaskArgs) -> ToolResult:
        await self._set_suspend(caller, target, args.name, True)
        return ToolResult(text=f"Task {args.name} paused.")

    async def _resume_task(self, caller: Caller, target: str, args: TaskArgs) -> ToolResult:
        await self._set_suspend(caller, target, args.name, False)
        return ToolResult(text=f"Task {args.name} resumed.")

    async def _cancel_task(self, caller: Caller, target: str, args: TaskArgs) -> ToolResult:
        task = await self._own_task(caller, target, args.name)
        await self.api.delete("ScheduledTask", caller.namespace, args.name, uid=task["metadata"]["uid"])
        return ToolResult(text=f"Task {args.name} cancelled.")

    # -- memory ------------------------------------------------------------------------

    async def _save_memory(self, caller: Caller, target: str, args: SaveMemoryArgs) -> ToolResult:
        existed = await self.db.call(records.save_memory, caller.namespace, target, args.key, args.content)
        return ToolResult(text=f"{'Updated' if existed else 'Saved'} memory {args.key!r}.")

    async def _recall_memories(self, caller: Caller, target: str, args: RecallMemoriesArgs) -> ToolResult:
        rows = await self.db.call(records.recall_memories, caller.namespace, target, args.query)
        data = [{"key": r.key, "content": r.content} for r in rows]
        text = "\n".join(f"- {r.key}: {r.content}" for r in rows) or "No memories found."
        return ToolResult(text=text, data=data)

    async def _forget_memory(self, caller: Caller, target: str, args: ForgetMemoryArgs) -> ToolResult:
        if not await self.db.call(records.forget_memory, caller.namespace, target, args.key):
            raise ToolError(404, f"no memory with key {args.key!r}")
        return ToolResult(text=f"Forgot {args.key!r}.")
