"""Which Group a channel message belongs to, and whether it starts a turn.

`Directory` is an index over the Group watch cache: (channel kind, channel id) → Group. The rest
are pure functions of the Group's spec and the message, so the rules are tested without a server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from pynchy.aio import LogOnce
from pynchy.api.group import GroupSpec
from pynchy.gateway.channels.base import Inbound
from pynchy.gateway.commands import Command, parse_command, parse_decision
from pynchy.logs import get_logger

log = get_logger(__name__)
ChannelKey = tuple[str, str]  # (kind, channel id)


@dataclass(frozen=True)
class GroupEntry:
    namespace: str
    name: str
    uid: str
    created: str  # creationTimestamp: the oldest Group wins a contested channel
    spec: GroupSpec

    def reply_thread(self, inbound: Inbound) -> str | None:
        """Where a reply to `inbound` goes: its thread (a new one under the message itself) or the channel."""
        for binding in self.spec.channels:
            if binding.slack is not None and binding.slack.channel_id == inbound.channel_id:
                if binding.slack.reply_in == "channel":
                    return None
                return inbound.thread or inbound.external_id
        return None

    def default_channel(self) -> ChannelKey:
        """The first channel: where replies nobody asked for in a channel (schedules, send_message) go."""
        binding = self.spec.channels[0]
        if binding.slack is not None:
            return ("slack", binding.slack.channel_id)
        assert binding.local is not None  # CEL: exactly one
        return ("local", binding.local.name)


class Directory:
    """Groups by channel, kept current by the Group informer's events."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, str], GroupEntry] = {}
        self._by_channel: dict[ChannelKey, list[GroupEntry]] = {}
        self._warned: LogOnce[ChannelKey] = LogOnce()

    def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        self._groups.pop(key, None)
        if kind != "DELETED":
            try:
                spec = GroupSpec.from_k8s(obj.get("spec") or {})  # JSON semantics, as the API server wrote it
            except ValidationError as exc:
                # The CRD's schema makes this rare; the operator reports it on the Group.
                log.warning("group spec invalid; not routed", namespace=key[0], group=key[1], errors=exc.error_count())
            else:
                created = str(meta.get("creationTimestamp") or "")
                self._groups[key] = GroupEntry(key[0], key[1], meta.get("uid", ""), created, spec)
        self._reindex()

    def _reindex(self) -> None:
        index: dict[ChannelKey, list[GroupEntry]] = {}
        for entry in self._groups.values():
            for binding in entry.spec.channels:
                if binding.slack is not None:
                    index.setdefault(("slack", binding.slack.channel_id), []).append(entry)
                if binding.local is not None:
                    index.setdefault(("local", binding.local.name), []).append(entry)
        for channel, entries in index.items():
            entries.sort(key=lambda e: (e.created, e.namespace, e.name))
            if len(entries) > 1 and self._warned.first(channel):
                log.warning(
                    "several Groups claim one channel; the oldest gets its messages",
                    channel=f"{channel[0]}:{channel[1]}",
                    groups=[f"{e.namespace}/{e.name}" for e in entries],
                )
        self._by_channel = index

    def lookup(self, kind: str, channel_id: str) -> GroupEntry | None:
        entries = self._by_channel.get((kind, channel_id))
        return entries[0] if entries else None

    def get(self, namespace: str, name: str) -> GroupEntry | None:
        return self._groups.get((namespace, name))

    def entries(self) -> list[GroupEntry]:
        return list(self._groups.values())

    def local_channels(self) -> list[str]:
        return sorted(cid for kind, cid in self._by_channel if kind == "local")


# -- the rules -------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What to do with a message routed to a Group."""

    action: str  # 'turn' | 'command' | 'ignore'
    text: str = ""  # the prompt (aliases removed) for a turn
    command: Command | None = None
    reason: str = ""
    argument: str = ""  # a command's argument: the approval id of approve/deny


def sender_allowed(allowed: list[str], sender: str, owner: str | None) -> bool:
    for entry in allowed:
        if entry == "*" or entry == sender:
            return True
        if entry == "owner" and (sender == "owner" or (owner is not None and sender == f"slack:{owner}")):
            return True
    return False


def strip_alias(text: str, aliases: list[str]) -> str | None:
    """The text without a leading alias ('pynchy, do x' / '@pynchy do x'), or None if it has none."""
    if not aliases:
        return None
    names = "|".join(re.escape(a) for a in aliases)
    match = re.match(rf"^\s*@?(?:{names})\b[\s,:;!.-]*", text, re.IGNORECASE)
    return text[match.end() :] if match else None


def decide(entry: GroupEntry, inbound: Inbound, owner: str | None, *, agent_thread: bool = False) -> Decision:
    """`agent_thread`: the message is in a thread the agent is already answering in, which counts
    as addressing it (people reply in a thread without mentioning the bot again)."""
    spec = entry.spec
    if not sender_allowed(spec.allowed_senders, inbound.sender, owner):
        return Decision("ignore", reason=f"sender {inbound.sender} is not in allowedSenders")
    text = inbound.text.strip()
    addressed = inbound.mentioned or inbound.direct or inbound.channel == "local" or agent_thread
    without_alias = strip_alias(text, spec.trigger.aliases)
    if without_alias is not None:
        text, addressed = without_alias.strip(), True
    command = parse_command(text)
    decision = parse_decision(text)
    if decision is not None and (addressed or spec.trigger.mode == "always"):
        return Decision("command", command=decision[0], argument=decision[1])
    if command is not None and (addressed or spec.trigger.mode == "always"):
        return Decision("command", command=command)
    if spec.trigger.mode == "mention" and not addressed:
        return Decision("ignore", reason="not addressed to the agent (trigger mode 'mention')")
    if not text:
        return Decision("ignore", reason="empty message")
    return Decision("turn", text=text)
