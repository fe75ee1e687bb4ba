"""A small asyncio REST client for the API server, with list+watch.

Credentials come from a kubeconfig through the official client's loader (client
certificates, tokens, exec plugins); requests go over aiohttp so watches can be cancelled
the moment the dev node stops.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from kubernetes.client import Configuration

from pynchy.kube import official
from pynchy.kube.api import KubeError, KubeNotFoundError, kube_error, retry_after_seconds
from pynchy.logs import get_logger

log = get_logger(__name__)

Handler = Callable[[str, dict[str, Any]], Awaitable[None]]


def q(segment: str) -> str:
    return quote(segment, safe="")


def pods_path(namespace: str | None) -> str:
    return f"/api/v1/namespaces/{q(namespace)}/pods" if namespace else "/api/v1/pods"


def pod_path(namespace: str, name: str, sub: str = "") -> str:
    return f"/api/v1/namespaces/{q(namespace)}/pods/{q(name)}" + (f"/{sub}" if sub else "")


def config_object_path(namespace: str, kind: str, name: str) -> str:
    """The path of a Secret (kind "Secret") or else a ConfigMap."""
    plural = "secrets" if kind == "Secret" else "configmaps"
    return f"/api/v1/namespaces/{q(namespace)}/{plural}/{q(name)}"


class Kube:
    """One aiohttp session against the cluster of a kubeconfig; open() inside the event loop.

    Failures raise the operator's KubeError family (`kube_error`; status 0: no connection).
    Unlike the operator, the dev node does not retry 409s blindly: its callers test for a
    conflict first, since on binding or deletion it means another actor already did it.
    """

    def __init__(self, kubeconfig: Path) -> None:
        cfg = Configuration()
        official.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg, persist_config=False)
        self._cfg = cfg
        self.host = cfg.host.rstrip("/")
        ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert) if cfg.ssl_ca_cert else ssl.create_default_context()
        if not cfg.verify_ssl:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        self._ssl = ctx
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl, limit=32))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        token = self._cfg.get_api_key_with_prefix("authorization")  # refreshes exec-plugin tokens
        if token:
            headers["Authorization"] = token
        return headers

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("Kube.open() was not called")
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> Any:
        data = None if body is None else json.dumps(body)
        try:
            async with self.session.request(
                method,
                self.host + path,
                params=query,
                data=data,
                headers=self._headers(content_type if data is not None else None),
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    raise _error(resp.status, text, resp.headers.get("Retry-After"))
                return json.loads(text) if text else None
        except KubeError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise kube_error(0, type(exc).__name__, str(exc) or type(exc).__name__) from None

    async def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """A request the server answers with an object (the resource itself, or a list)."""
        obj: dict[str, Any] = await self.request(method, path, **kwargs)
        return obj

    # -- verbs ------------------------------------------------------------------------

    async def get(self, path: str) -> dict[str, Any] | None:
        try:
            return await self._object("GET", path)
        except KubeNotFoundError:
            return None

    async def create(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        return await self._object("POST", path, body=obj)

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self._object("PATCH", path, body=patch, content_type="application/merge-patch+json")

    async def delete(self, path: str, body: dict[str, Any] | None = None) -> None:
        await self.request("DELETE", path, body=body)

    # -- watch ------------------------------------------------------------------------

    async def watch_stream(self, path: str, query: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        """Raw watch events ({type, object}) until the server closes the stream."""
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=30, sock_read=int(query.get("timeoutSeconds", 300)) + 30
        )
        try:
            async with self.session.get(
                self.host + path, params={**query, "watch": "1"}, headers=self._headers(None), timeout=timeout
            ) as resp:
                if resp.status >= 400:
                    raise _error(resp.status, await resp.text(), resp.headers.get("Retry-After"))
                buf = b""
                async for chunk in resp.content.iter_any():
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        if line.strip():
                            yield json.loads(line)
        except KubeError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise kube_error(0, type(exc).__name__, str(exc) or type(exc).__name__) from None


def _error(status: int, text: str, retry_after: str | None = None) -> KubeError:
    reason, message, body = "", text[:500], None
    try:
        body = json.loads(text)
        reason = str(body.get("reason", ""))
        message = str(body.get("message", message))
    except (ValueError, AttributeError):
        pass
    return kube_error(status, reason, message, retry_after_seconds(retry_after, body))


async def informer(
    kube: Kube,
    path: str,
    handler: Handler,
    *,
    query: dict[str, str] | None = None,
    synced: asyncio.Event | None = None,
    what: str = "",
) -> None:
    """List, then watch from the list's resourceVersion, forever; relist on 410 Gone or errors.

    ``handler(type, obj)`` gets ADDED/MODIFIED/DELETED; after a relist, objects that vanished
    meanwhile are reported DELETED. A handler that raises is logged and never stops the loop.
    """
    query = dict(query or {})
    known: dict[str, dict[str, Any]] = {}
    delay = 0.5

    async def call(kind: str, obj: dict[str, Any]) -> None:
        try:
            await handler(kind, obj)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handler failed", watch=what, kind=kind, object=(obj.get("metadata") or {}).get("name"))

    while True:
        try:
            listing = await kube.request("GET", path, query=query)
            rv = listing["metadata"]["resourceVersion"]
            items = {i["metadata"]["uid"]: i for i in listing.get("items") or []}
            for uid, obj in list(known.items()):
                if uid not in items:
                    await call("DELETED", obj)
            known = items
            for obj in items.values():
                await call("ADDED", obj)
            if synced is not None:
                synced.set()
            delay = 0.5
            while True:
                expired = False
                async for event in kube.watch_stream(
                    path, {**query, "resourceVersion": rv, "allowWatchBookmarks": "true", "timeoutSeconds": "300"}
                ):
                    kind, obj = event.get("type", ""), event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            expired = True
                            break
                        raise kube_error(int(obj.get("code") or 0), str(obj.get("reason", "")), str(obj.get("message")))
                    rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                    if kind == "BOOKMARK":
                        continue
                    uid = obj["metadata"]["uid"]
                    if kind == "DELETED":
                        known.pop(uid, None)
                    else:
                        known[uid] = obj
                    await call(kind, obj)
                if expired:
                    break
        except asyncio.CancelledError:
            raise
        except KubeError as exc:
            if exc.status == 410:
                continue
            log.warning("watch failed; relisting", watch=what, error=str(exc), retry_in=delay)
        except Exception:
            log.exception("watch failed; relisting", watch=what, retry_in=delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)
