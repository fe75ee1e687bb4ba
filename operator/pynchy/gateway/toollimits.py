"""Limits on the agent tools that reach people or create work: `send_message` per minute, and for
`schedule_task` how many of the agent's tasks may exist and how often one may fire.

A Group's `spec.agent.toolLimits` overrides the gateway's defaults field by field. The limits are
the calling Group's (an admin Group acting for another spends its own). Every refusal is a
sentence the model can act on: the limit, the Group, and the field an admin changes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pynchy.api.group import ToolLimits
from pynchy.gateway.ratelimit import SlidingWindow
from pynchy.schedule import MIN_INTERVAL, shortest_gap
from pynchy_agent.protocol import ScheduleTaskArgs

FIELD = "spec.agent.toolLimits"
SEND_WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class LimitValues:
    """The limits in effect for one Group."""

    send_messages_per_minute: int
    max_scheduled_tasks: int
    min_schedule_interval_seconds: int

    def over(self, spec: ToolLimits | None) -> LimitValues:
        """The Group's values where it sets them, these elsewhere."""
        if spec is None:
            return self
        return LimitValues(
            _first(spec.send_messages_per_minute, self.send_messages_per_minute),
            _first(spec.max_scheduled_tasks, self.max_scheduled_tasks),
            _first(spec.min_schedule_interval_seconds, self.min_schedule_interval_seconds),
        )


def _first(value: int | None, default: int) -> int:
    return default if value is None else value


# -- the refusals (pure) -------------------------------------------------------------------


def send_refusal(limit: int, group: str, retry_after: float) -> str:
    if limit == 0:
        return f"send_message is turned off for Group {group}; an admin can allow it with {FIELD}.sendMessagesPerMinute"
    return (
        f"send_message limit reached: {limit} messages per minute for Group {group}; try again in "
        f"{max(1, math.ceil(retry_after))} s (an admin can raise {FIELD}.sendMessagesPerMinute)"
    )


def task_count_refusal(limit: int, group: str, existing: int) -> str | None:
    """The refusal when Group `group`'s agent already has `existing` tasks of at most `limit`."""
    if limit == 0:
        return f"schedule_task is turned off for Group {group}; an admin can allow it with {FIELD}.maxScheduledTasks"
    if existing < limit:
        return None
    return (
        f"schedule_task limit reached: Group {group} has {existing} tasks its agent created and may have at most "
        f"{limit}; cancel one (list_tasks shows them) or ask an admin to raise {FIELD}.maxScheduledTasks"
    )


@dataclass(frozen=True)
class _Repeating:
    """What the spacing of a requested schedule depends on (a `once` never repeats)."""

    cron: str | None
    interval: str | None
    once: datetime | None = None


def spacing_refusal(args: ScheduleTaskArgs, min_seconds: int, group: str, now: datetime) -> str | None:
    """The refusal when the requested schedule fires more often than every `min_seconds`.

    None also when the schedule cannot be evaluated or sets not exactly one kind: the tool's own
    check and the API server's validation then say what is wrong, in their words.
    """
    if sum(1 for v in (args.cron, args.interval, args.once) if v) != 1 or args.once:
        return None
    limit = timedelta(seconds=min_seconds)
    if limit <= MIN_INTERVAL:
        return None  # the API's own minimum already holds
    try:
        gap = shortest_gap(_Repeating(args.cron or None, args.interval or None), args.time_zone, now, stop_below=limit)
    except ValueError:
        return None
    if gap is None or gap >= limit:
        return None
    what = f"interval {args.interval}" if args.interval else f"cron {args.cron!r}"
    return (
        f"schedule_task refused: {what} runs as often as every {int(gap.total_seconds())} s, and Group {group} may "
        f"schedule runs at most every {min_seconds} s; choose a longer interval or a sparser cron expression, or "
        f"ask an admin to lower {FIELD}.minScheduleIntervalSeconds"
    )


# -- the one piece of state: send_message's window per Group -------------------------------


class SendLimiter:
    """send_message calls per calling Group in a sliding minute (see `ratelimit` for why in memory)."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._window: SlidingWindow[tuple[str, str]] = SlidingWindow(SEND_WINDOW_SECONDS)
        self._monotonic = monotonic

    def take(self, namespace: str, group: str, limit: int) -> str | None:
        """Count one call; the refusal instead when the Group is over its limit."""
        wait = self._window.acquire((namespace, group), limit, self._monotonic())
        return send_refusal(limit, group, wait) if wait > 0 else None

    def __len__(self) -> int:
        return len(self._window)
