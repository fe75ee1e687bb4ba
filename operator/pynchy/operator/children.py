"""Apply desired children, then prune the ones no longer desired (by owner UID)."""

from __future__ import annotations

from typing import Any

from pynchy.kube.api import KubeApi
from pynchy.logs import get_logger
from pynchy.operator.diff import up_to_date

log = get_logger(__name__)


async def sync_children(
    api: KubeApi,
    namespace: str,
    selector: dict[str, str],
    kinds: tuple[str, ...],
    desired: list[dict[str, Any]],
    owner_uid: str,
) -> dict[str, dict[str, Any]]:
    """Make the children in `namespace` matching `selector` equal `desired`.

    Writes only what differs. Returns the live objects by "Kind/name". Objects that match
    the selector but are not desired are deleted only if `owner_uid` controls them, so a
    retained volume (no owner) or someone else's object is never removed.
    """
    live: dict[str, dict[str, Any]] = {}
    wanted = {f"{d['kind']}/{d['metadata']['name']}": d for d in desired}
    # Desired children carry the selector's labels, so listing by it finds every one that exists.
    assert {d["kind"] for d in desired} <= set(kinds), "every desired kind must be listed"
    for kind in kinds:
        for obj in await api.list(kind, namespace, selector):
            live[f"{kind}/{obj['metadata']['name']}"] = obj
    for key, obj in wanted.items():
        current = live.get(key)
        if current is not None and up_to_date(obj, current):
            continue
        # Server-side apply creates, updates, or adopts a same-named object outside the selector.
        log.info("applying child", child=key, namespace=namespace, action="update" if current else "create")
        live[key] = await api.apply(obj)
    for key, obj in list(live.items()):
        if key in wanted:
            continue
        refs = obj["metadata"].get("ownerReferences") or []
        if any(r.get("uid") == owner_uid and r.get("controller") for r in refs):
            log.info("pruning child", child=key, namespace=namespace)
            kind = key.split("/", 1)[0]
            await api.delete(kind, namespace, obj["metadata"]["name"], uid=obj["metadata"].get("uid"))
        del live[key]
    return live
