"""Write status only when it changed, and post an Event when acceptance fails."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from pynchy.api.validation import format_errors
from pynchy.errors import TemporaryError
from pynchy.kube.api import KubeApi, KubeError
from pynchy.operator.checks import CheckResult, Problem
from pynchy.operator.children import sync_children
from pynchy.operator.conditions import Cond, condition, merge_conditions
from pynchy.operator.events import record_event


def acceptance(problems: list[Problem]) -> Cond:
    if not problems:
        return Cond("Accepted", True, "Accepted", "All references resolved.")
    reason = problems[0].reason if len({p.reason for p in problems}) == 1 else "InvalidReferences"
    return Cond("Accepted", False, reason, "; ".join(p.message for p in problems))


def status_fields(raw: dict[str, Any], accepted: Cond, ready: Cond, **fields: Any) -> dict[str, Any]:
    """observedGeneration, `fields`, and the conditions: Accepted, Ready, and kstatus' Stalled while
    the spec cannot be acted on. Transition times are kept from the live status."""
    generation = int(raw["metadata"].get("generation", 0))
    existing = (raw.get("status") or {}).get("conditions") or []
    wanted = [accepted, ready]
    drop: tuple[str, ...] = ("Stalled",)
    if not accepted.status:
        wanted.append(Cond("Stalled", True, accepted.reason, accepted.message))
        drop = ()
    conditions = merge_conditions(existing, wanted, generation, drop=drop)
    return {"observedGeneration": generation, **fields, "conditions": conditions}


async def sync_or_refusal(
    api: KubeApi, raw: dict[str, Any], selector: dict[str, str], kinds: tuple[str, ...], desired: list[dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]] | None, Cond | None]:
    """Apply the children. A refusal that will not pass by retrying (422, 403, ...) becomes a Ready=False
    condition; temporary API errors propagate to the work queue's backoff."""
    meta = raw["metadata"]
    try:
        return await sync_children(api, meta["namespace"], selector, kinds, desired, meta["uid"]), None
    except TemporaryError:
        raise
    except KubeError as exc:
        return None, Cond("Ready", False, "ApplyFailed", f"the API server refused a child object: {exc.message}")


async def publish(api: KubeApi, raw: dict[str, Any], new_fields: dict[str, Any]) -> dict[str, Any] | None:
    """Merge-patch `new_fields` into status if any differs; post a Warning Event when Accepted turns
    False (or its reason changes). Returns the object as written, or None when nothing was written."""
    old = raw.get("status") or {}
    if all(old.get(k) == v for k, v in new_fields.items()):
        return None
    meta = raw["metadata"]
    written = await api.patch_status(raw["kind"], meta["namespace"], meta["name"], new_fields)
    before = condition(old.get("conditions"), "Accepted")
    after = condition(new_fields.get("conditions"), "Accepted")
    if (
        after
        and after["status"] == "False"
        and (before is None or before["status"] != "False" or before["reason"] != after["reason"])
    ):
        await record_event(api, raw, "Warning", after["reason"], after["message"])
    return written or {"metadata": meta}  # the API always answers with the object


NOT_ACCEPTED = Cond("Ready", False, "NotAccepted", "The spec is not accepted; see the Accepted condition.")


def invalid_spec_fields(raw: dict[str, Any], exc: ValidationError) -> tuple[dict[str, Any], Problem]:
    """The status of a stored object our models reject (for example written under an older schema)."""
    problem = Problem("InvalidSpec", "; ".join(format_errors(exc)))
    return status_fields(raw, acceptance([problem]), NOT_ACCEPTED), problem


async def publish_invalid_spec(api: KubeApi, raw: dict[str, Any], exc: ValidationError) -> CheckResult:
    """Report a spec our models reject, never crash."""
    fields, problem = invalid_spec_fields(raw, exc)
    await publish(api, raw, fields)
    return CheckResult(problems=[problem])
