"""Standard conditions (metav1.Condition) as plain dicts, with stable transition times."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Cond:
    type: str
    status: bool
    reason: str
    message: str = ""


def merge_conditions(
    existing: list[dict[str, Any]], wanted: list[Cond], generation: int, *, drop: tuple[str, ...] = (), now: str = ""
) -> list[dict[str, Any]]:
    """The new conditions list: `wanted` set, `drop` removed, others kept.

    lastTransitionTime changes only when a condition's status changes, so re-stating the
    same state produces an identical list (and no status write).
    """
    by_type = {c["type"]: c for c in existing}
    out: list[dict[str, Any]] = []
    wanted_types = {w.type for w in wanted}
    for w in wanted:
        status = "True" if w.status else "False"
        old = by_type.get(w.type)
        transition = old["lastTransitionTime"] if old and old.get("status") == status else (now or now_rfc3339())
        out.append(
            {
                "type": w.type,
                "status": status,
                "reason": w.reason,
                "message": w.message,
                "lastTransitionTime": transition,
                "observedGeneration": generation,
            }
        )
    out += [c for c in existing if c["type"] not in wanted_types and c["type"] not in drop]
    return out


def condition(conds: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    return next((c for c in conds or [] if c.get("type") == type_), None)
