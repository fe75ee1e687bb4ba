"""Is the live object already what we want? (So a no-op reconcile sends no write.)"""

from __future__ import annotations

from typing import Any

_META_KEYS = ("name", "namespace", "labels", "annotations", "ownerReferences")


def _empty(value: Any) -> bool:
    return value is None or value == [] or value == {}


def contains(desired: Any, actual: Any) -> bool:
    """True when every field set in `desired` has the same value in `actual`.

    Fields the API server adds (defaults, status, managedFields) are ignored; an empty
    desired list or map matches a missing one, since the server may drop empty values.
    """
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return _empty(desired) and _empty(actual)
        for key, value in desired.items():
            if key not in actual:
                if _empty(value):
                    continue
                return False
            if not contains(value, actual[key]):
                return False
        return True
    if isinstance(desired, list):
        if actual is None:
            return not desired
        if not isinstance(actual, list) or len(desired) != len(actual):
            return False
        return all(contains(d, a) for d, a in zip(desired, actual, strict=True))
    return bool(desired == actual)


def up_to_date(desired: dict[str, Any], actual: dict[str, Any]) -> bool:
    """Compare a desired manifest to the live object: owned metadata plus everything outside metadata."""
    want_meta = desired.get("metadata", {})
    have_meta = actual.get("metadata", {})
    for key in _META_KEYS:
        want = want_meta.get(key)
        if key == "ownerReferences":
            # An empty desired list means "no owner": the live list must be empty too.
            have = have_meta.get(key) or []
            if want is not None and (len(want) != len(have) or not contains(want, have)):
                return False
        elif want is not None and not contains(want, have_meta.get(key)):
            return False
    body = {k: v for k, v in desired.items() if k not in ("metadata", "apiVersion", "kind")}
    return contains(body, actual)
