"""A list+watch cache of one resource kind, fed into an asyncio loop (what client-go calls an informer).

The official client's watch is blocking, so it runs in a daemon thread; events are handed to
the loop with call_soon_threadsafe. On `410 Gone` it re-lists; on errors it backs off.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from pynchy.kube import official
from pynchy.logs import get_logger

log = get_logger(__name__)
Handler = Callable[[str, dict[str, Any]], None]  # (event type, object)


class Informer:
    def __init__(
        self,
        client: ApiClient,
        group: str,
        version: str,
        plural: str,
        namespaces: list[str] | None = None,
        on_event: Handler | None = None,
    ) -> None:
        self._api = CustomObjectsApi(client)
        self._gvp = (group, version, plural)
        self._namespaces: list[str | None] = list(namespaces) if namespaces else [None]  # None: all namespaces
        self._on_event = on_event
        self.store: dict[tuple[str, str], dict[str, Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._synced = 0
        self._synced_event = asyncio.Event()
        self._watches: list[official.Watch] = []
        self.last_error: str | None = None

    async def start(self, timeout: float = 30.0) -> None:
        self._loop = asyncio.get_running_loop()
        self._synced_event = asyncio.Event()
        for ns in self._namespaces:
            t = threading.Thread(target=self._run, args=(ns,), name=f"informer-{self._gvp[2]}", daemon=True)
            t.start()
            self._threads.append(t)
        try:
            await asyncio.wait_for(self._synced_event.wait(), timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(
                f"could not list {self._gvp[2]}.{self._gvp[0]} within {timeout:.0f}s: {self.last_error or 'no answer'}"
            ) from None

    def stop(self) -> None:
        self._stop.set()
        for w in self._watches:
            w.stop()

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.store.get((namespace, name))

    def items(self) -> list[dict[str, Any]]:
        return list(self.store.values())

    # -- thread side --------------------------------------------------------------------

    def _deliver(self, kind: str, obj: dict[str, Any]) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._apply, kind, obj)

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        if kind == "DELETED":
            self.store.pop(key, None)
        elif kind == "SYNCED":
            self._synced += 1
            if self._synced >= len(self._namespaces):
                self._synced_event.set()
            return
        else:
            self.store[key] = obj
        if self._on_event is not None:
            try:
                self._on_event(kind, obj)
            except Exception:
                log.exception("informer handler failed", kind=kind, name=key[1])

    def _run(self, ns: str | None) -> None:
        backoff = 0.5
        first = True
        while not self._stop.is_set():
            try:
                listed = self._list_fn(ns)()
                rv = listed["metadata"]["resourceVersion"]
                seen = set()
                for obj in listed.get("items", []):
                    seen.add((obj["metadata"]["namespace"], obj["metadata"]["name"]))
                    self._deliver("ADDED", obj)
                # Objects deleted while we were not watching.
                for key, obj in list(self.store.items()):
                    if key not in seen and (ns is None or key[0] == ns):
                        self._deliver("DELETED", obj)
                if first:
                    self._deliver("SYNCED", {"metadata": {"name": ""}})
                    first = False
                backoff = 0.5
                while not self._stop.is_set():
                    w = official.Watch()
                    self._watches.append(w)
                    try:
                        for event in w.stream(
                            self._list_fn(ns), resource_version=rv, timeout_seconds=240, allow_watch_bookmarks=True
                        ):
                            obj = event["object"]
                            rv = obj["metadata"]["resourceVersion"]
                            if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                                self._deliver(event["type"], obj)
                    finally:
                        self._watches.remove(w)
            except ApiException as exc:
                if exc.status == 410:  # resourceVersion too old: re-list
                    continue
                self.last_error = f"{exc.status} {exc.reason}"
                log.warning("watch failed; retrying", plural=self._gvp[2], status=exc.status, retry_in=backoff)
            except Exception as exc:
                if self._stop.is_set():
                    return
                self.last_error = str(exc)
                log.warning("watch failed; retrying", plural=self._gvp[2], error=str(exc), retry_in=backoff)
            time.sleep(backoff)
            backoff = min(backoff * 2, 30)

    def _list_fn(self, ns: str | None) -> Callable[..., Any]:
        g, v, p = self._gvp
        if ns is None:
            return lambda **kw: self._api.list_cluster_custom_object(g, v, p, **kw)
        return lambda **kw: self._api.list_namespaced_custom_object(g, v, ns, p, **kw)
